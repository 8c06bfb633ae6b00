"""Variants of the bone mask from the image, for the refinement without a segmentation (how image_bones was chosen).

    python docs/benchmark_results/refine_image_bones/variants.py ct0,gen0 jac,raw,open,cc30,cc100

jac: the log-Jacobian prior alone; raw: the voxels above the threshold (scripts/regions/label_free.py, the bundle's
rule); open: that mask opened (3x3x3 cross); ccN: its 26-connected components of at least N voxels. Each on the
case's own grid with refine_pair's defaults, as benchmarks/benchmark_ct_refine.py's refine_image runs.
Run from the bundle's root with PYTHONPATH=. (1 thread).
"""

import sys
import time

import numpy as np
import torch
from scipy import ndimage as ndi

from benchmarks.benchmark_ct_refine import build_case, normalise
from benchmarks.ct_evaluation import batched, case_regions, evaluate
from scripts.refinement.optimiser import refine_pair
from scripts.regions.label_free import bone_threshold_hu

torch.set_num_threads(1)
for name in sys.argv[1].split(","):
    case = build_case(name)
    fixed, moving, spacing = case["fixed"], case["moving"], case["spacing"]
    regions = case_regions(case, 6.0)
    f, m = batched(normalise(fixed))[None], batched(normalise(moving))[None]
    threshold = bone_threshold_hu(fixed)
    for variant in sys.argv[2].split(","):
        kwargs = {"regulariser": "jacobian"}
        bone = fixed > threshold
        if variant.startswith("cc"):
            labels, n = ndi.label(bone, np.ones((3, 3, 3), bool))
            keep = np.zeros(n + 1, bool)
            keep[1:] = ndi.sum(bone, labels, range(1, n + 1)) >= int(variant[2:])
            bone = keep[labels]
        elif variant == "open":
            bone = ndi.binary_opening(bone)
        if variant != "jac":
            kwargs = {"regulariser": "rigidity_jacobian", "reg_mask": batched(bone.astype(np.float32))[None]}
        start = time.perf_counter()
        ddf, _ = refine_pair(f, m, list(spacing), **kwargs)
        seconds = time.perf_counter() - start
        r = evaluate(ddf[0].numpy(), case, regions)
        true = case["bones"]
        scores = f"body {r['epe_body']:.3f}, organs {r['epe_organs']:.3f}, bones {r['epe_bones']:.3f} mm"
        scores += f", rigidity {r['rigidity']:.4f}, slip {r['slip'] * 100:.1f} %, {seconds:.1f} s"
        cover = f"{(bone & true).sum() / true.sum():.2f} of the labelled bones, {(bone & ~true).sum()} voxels beyond"
        print(f"{name} {variant:6s} threshold {threshold:.0f} HU: {scores}; mask: {cover}", flush=True)
