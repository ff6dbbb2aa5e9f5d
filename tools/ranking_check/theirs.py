"""Runs the organisers' scripts (unchanged, from /tmp snapshots) on the cases."""
import sys, os, glob, json, warnings
warnings.simplefilter('ignore')
year, cases = sys.argv[1], os.path.abspath(sys.argv[2])
sys.path.insert(0, f'/tmp/org{year}')
import importlib
import numpy as np, pandas as pd
# pandas 1.3.4 (the 2023 requirements; no wheel for this Python) replaced inf in the
# numeric columns of a frame holding arrays; pandas 1.5 raises there. Same effect:
_replace = pd.DataFrame.replace
def _numeric_replace(self, to_replace=None, value=None, *args, **kwargs):
    if kwargs.get('inplace') or args:
        return _replace(self, to_replace, value, *args, **kwargs)
    out = self.copy()
    for column in out.columns:
        if out[column].dtype != object: out[column] = out[column].replace(to_replace, value)
    return out
pd.DataFrame.replace = _numeric_replace
module = importlib.import_module('metrics' if year == '2023' else 'metrics_GLI')
os.makedirs(f'/tmp/ranking_check_run{year}', exist_ok=True); os.chdir(f'/tmp/ranking_check_run{year}')
results = {}
for seg in sorted(glob.glob(f'{cases}/*-seg.nii.gz')):
    pred = seg.replace('-seg.', '-pred.')
    out = module.get_LesionWiseResults(pred, seg, 'BraTS-GLI')
    df = out[0] if isinstance(out, tuple) else out
    keys = ('LesionWise_Score_Dice', 'LesionWise_Score_HD95', 'Num_TP', 'Num_FP', 'Num_FN')
    results[os.path.basename(seg)[:19]] = {r['Labels']: {k: float(r[k]) for k in keys}
                                           for _, r in df.iterrows()}
json.dump(results, open(f'{cases}/theirs_{year}.json', 'w'), indent=1)
