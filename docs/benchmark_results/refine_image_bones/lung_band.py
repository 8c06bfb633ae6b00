"""A lead measured, not in the bundle: without a segmentation, let the lungs slide too (a sliding band from the image).

    PYTHONPATH=. python docs/benchmark_results/refine_image_bones/lung_band.py ct0,ct1,gen0,gen1 > lung_band.log

The fixed image's dark components inside the body (below -400 HU, not touching the grid's sides in the plane, at least
50 mL) are labelled as a lung, its other voxels above the bones' threshold as a vertebra; the refinement then runs as
with a segmentation (``refine_full`` of benchmarks/benchmark_ct_refine.py: cavity_regions from those labels, the
second pass). Against the case's own segmentation (``truth-seg``) and ``refine_image`` (bones from the image, no
sliding).
"""

import sys

import numpy as np
import torch
from scipy import ndimage as ndi

from benchmarks.benchmark_ct_refine import build_case, run_method
from benchmarks.ct_evaluation import case_regions, evaluate
from scripts.regions.label_free import image_bones
from scripts.regions.labels import TOTALSEG_V2_TOTAL

torch.set_num_threads(1)
MIN_ML = 50.0
for name in sys.argv[1].split(","):
    case = build_case(name)
    fixed, spacing = case["fixed"], np.asarray(case["spacing"], float)
    dark = fixed < -400
    labels, n = ndi.label(dark)
    sides = np.concatenate([labels[0].ravel(), labels[-1].ravel(), labels[:, 0].ravel(), labels[:, -1].ravel()])
    keep = np.zeros(n + 1, bool)
    keep[1:] = ndi.sum(dark, labels, range(1, n + 1)) * spacing.prod() / 1000.0 >= MIN_ML
    keep[np.unique(sides)] = False
    lungs = keep[labels]
    seg = np.zeros(fixed.shape, np.uint8)
    seg[lungs] = TOTALSEG_V2_TOTAL["lung_lower_lobe_left"]
    seg[(image_bones(fixed)[0] == 1) & ~lungs] = TOTALSEG_V2_TOTAL["vertebrae_L1"]
    regions = case_regions(case, 6.0)
    for label, method, given in (
        ("truth-seg", "refine_full", case),
        ("image-seg", "refine_full", dict(case, fixed_seg=seg)),
        ("refine_image", "refine_image", case),
    ):
        ddf, seconds, band = run_method(method, given, {}, {})
        r = evaluate(ddf, case, regions, band)
        scores = f"body {r['epe_body']:.3f}, organs {r['epe_organs']:.3f}, bones {r['epe_bones']:.3f}"
        scores += f", band {r['epe_band']:.3f} mm, rigidity {r['rigidity']:.4f}, slip {r['slip'] * 100:.1f} %"
        scores += f", fold % off the true band {r['fold_pct_off_band']:.3f}, {seconds:.1f} s"
        print(f"{name} {label:12s} ({int(lungs.sum())} lung voxels): {scores}", flush=True)
