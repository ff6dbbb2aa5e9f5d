"""jaxseg's lesion-wise scores of the same cases, compared with the organisers'."""
import sys, glob, json, os, numpy as np, nibabel as nib
from jaxseg import lesionwise
year, cases = sys.argv[1], sys.argv[2]
rules = lesionwise.RULE_SETS['GLI 2023' if year == '2023' else 'GLI 2024']
theirs = json.load(open(f'{cases}/theirs_{year}.json'))
worst, bad = 0.0, []
for seg in sorted(glob.glob(f'{cases}/*-seg.nii.gz')):
    cid = os.path.basename(seg)[:19]
    p = nib.load(seg.replace('-seg.', '-pred.'))
    pred = np.asarray(p.dataobj).astype(np.int64)
    gt = np.asarray(nib.load(seg).dataobj).astype(np.int64)
    mine = lesionwise.case_scores(pred, gt, p.header.get_zooms(), rules)
    for region, t in theirs[cid].items():
        for key, theirs_key in (('dice', 'LesionWise_Score_Dice'), ('hd95', 'LesionWise_Score_HD95'),
                                ('tp', 'Num_TP'), ('fp', 'Num_FP'), ('fn', 'Num_FN')):
            d = abs(mine[region][key] - t[theirs_key])
            worst = max(worst, d)
            if d > 1e-6: bad.append((cid, region, key, mine[region][key], t[theirs_key]))
print(f'{year}: {len(theirs)} cases x {len(rules.regions)} regions, '
      f'max |jaxseg - organisers| = {worst:.3g}, differing: {len(bad)}')
for b in bad[:15]: print(b)
