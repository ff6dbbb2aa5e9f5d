"""Export a trained model's predictor of one window, to run without jaxseg: ONNX (ONNX
Runtime, Triton, MONAI Deploy) or StableHLO (`jax.export.deserialize`), with a JSON
beside it (`FILE.json`) saying what the caller does around it. docs/export.md.

  python export.py --workdir=runs/lstm_unet --format=onnx --output=runs/lstm_unet.onnx
  python export.py --workdir=runs/brats3d --checkpoint=latest --format=stablehlo \\
      --output=runs/brats3d.stablehlo --platforms=cpu,cuda
  python -m jaxseg.onnx_predict --model runs/lstm_unet.onnx --input CASE_DIR --output out.nii.gz
"""

import sys

from absl import flags

from jaxseg import cli, model_export

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Workdir of a training run.', required=True)
flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number.")
flags.DEFINE_enum('format', None, list(model_export.FORMATS), 'File format.', required=True)
flags.DEFINE_string('output', None, 'The file to write; its JSON goes to FILE.json.',
                    required=True)
flags.DEFINE_list('platforms', ['cpu'], "StableHLO: the platforms to lower for (cpu, cuda, "
                  "rocm, tpu); one file serves them all.")


def main(argv):
  cli.parse_flags(argv, __doc__)

  def export():
    path, json_path = model_export.export_workdir(
        FLAGS.workdir, FLAGS.checkpoint, FLAGS.format, FLAGS.output, FLAGS.platforms)
    print(f'Wrote {path} and {json_path}')
  cli.run(export)


if __name__ == '__main__':
  main(sys.argv)
