"""Does the LSTM-U-Net's feedback help? U-Net, LSTM-U-Net with T = 1 (no feedback) to 4
at the bottleneck, and T = 3 and T = 1 with ConvLSTMs in encoder, bottleneck and
decoder; three seeds each; every arm compared with T = 1, the same network without
feedback.

  python experiment.py --sweep=configs/sweeps/feedback.py --workdir=runs/feedback
  python experiment.py --sweep=configs/sweeps/feedback.py:3d --workdir=runs/feedback_3d

Variants: '2d' (default) and '3d' on the embedded data, 'seed2d' on the real 2D slices
of ../shared/data/seed_2d; a '_time' suffix ('2d_time') gives every run the same
training time (train.time_budget_minutes) instead of the same number of steps.
"""

# 3D: the config's 300 steps leave the 32^3 models undertrained (Dice 0.35-0.51, one
# U-Net seed all background), so the sweep trains 4x longer.
DATA = {'2d': ('', {}), '3d': (':3d', {'train.num_steps': 1200}),
        'seed2d': ('', {'data.root': '../shared/data/seed_2d', 'data.image_size': (128, 128),
                        'train.num_steps': 300, 'train.batch_size': 4})}
MINUTES = {'2d': 2.0, '3d': 4.0, 'seed2d': 3.0}


def get_sweep(variant='2d'):
  data, _, budget = variant.partition('_')
  if data not in DATA or budget not in ('', 'time'):
    raise ValueError(f'unknown sweep variant {variant!r}; use one of {sorted(DATA)}, each '
                     'optionally with _time')
  suffix, data_overrides = DATA[data]
  overrides = dict(data_overrides)
  if budget:
    overrides.update({'train.time_budget_minutes': MINUTES[data], 'train.num_steps': 100_000})
  lstm = f'configs/lstm_unet.py{suffix}'
  arms = {'unet': (f'configs/unet.py{suffix}', {})}
  for t in (1, 2, 3, 4):
    arms[f'T{t}'] = (lstm, {'model.num_iterations': t})
  arms['T3_enc_dec'] = (lstm, {'model.num_iterations': 3,
                               'model.lstm_at': ('encoder0', 'bottleneck', 'decoder0')})
  # The same placement without feedback: whether T3_enc_dec's gain is the loop's.
  arms['T1_enc_dec'] = (lstm, {'model.num_iterations': 1,
                               'model.lstm_at': ('encoder0', 'bottleneck', 'decoder0')})
  return dict(arms=arms, seeds=(0, 1, 2), overrides=overrides, baseline='T1')
