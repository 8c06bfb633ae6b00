"""The refinement without a segmentation: the cavity from the first field's motion (``--refine_motion_cavity``).

Without labels the refinement (``refine_image_band``: the bones by HU, then the band where its first field shears)
recovers about half of the slip that a segmentation gives. Here the first field (``refine_image``) is used as a
motion segmentation instead, as ``--refine_motion_cavity FRAC`` does (:func:`scripts.regions.label_free.motion_labels`:
the body's voxels, the bones by HU out, that moved at least FRAC of the 95th percentile of the field's size relative
to the bones' mean displacement, their largest component, holes filled, become one organ label and the bones by HU
a vertebra); then ``configs/refine.json``'s labelled refinement runs from identity with that label map
(``refine_full``: the cavity, its band and side, the second pass). Both on the cases of
``benchmarks/benchmark_ct_refine.py``:

    PYTHONPATH=. python docs/benchmark_results/motion_cavity/motion_cavity.py 0.6 ct0,ct1,ct2
"""

import sys
import time

import numpy as np
import torch

from benchmarks.benchmark_ct_refine import build_case, run_method
from benchmarks.ct_evaluation import case_regions, evaluate
from scripts.regions.cavity import body_mask
from scripts.regions.label_free import MOTION_CONTENT_LABEL, image_bones, motion_labels
from scripts.regions.labels import RIGID

KEYS = ("slip", "epe_band", "epe_body", "epe_organs", "epe_outside", "rigidity", "fold_pct_off_band", "seconds")


def labels(ddf: np.ndarray, case: dict, frac: float) -> tuple[np.ndarray, float]:
    """(label map, Dice of its contents with the true cavity) from the first field ``ddf`` (3, X, Y, Z) voxels, as
    the inferer builds it (``--refine_motion_cavity``)."""
    fixed, spacing = case["fixed"], np.asarray(case["spacing"])
    bones = image_bones(fixed)[0] == RIGID
    seg = motion_labels(ddf * spacing[:, None, None, None], bones, body_mask(fixed), frac)
    contents = seg == MOTION_CONTENT_LABEL
    dice = 2 * (contents & case["cavity"]).sum() / max(contents.sum() + case["cavity"].sum(), 1)
    return seg, float(dice)


def main(frac: float, names: list[str]) -> None:
    torch.set_num_threads(1)
    for name in names:
        case = build_case(name)
        regions = case_regions(case, 6.0)
        rows = {}
        ddf, seconds, own = run_method("refine_image_band", case, {"similarity": "lncc"}, {})
        rows["refine_image_band"] = dict(evaluate(ddf, case, regions, own), seconds=seconds)
        start = time.perf_counter()
        first, _, _ = run_method("refine_image", case, {"similarity": "lncc"}, {})
        seg, dice = labels(first, case, frac)
        ddf, _, own = run_method("refine_full", {**case, "fixed_seg": seg}, {"similarity": "lncc"}, {})
        rows[f"motion_cavity {frac}"] = dict(evaluate(ddf, case, regions, own), seconds=time.perf_counter() - start)
        for method, row in rows.items():
            print(f"{name} {method}: " + ", ".join(f"{k} {row[k]:.4g}" for k in KEYS), flush=True)
        print(f"{name}: the motion's contents, Dice with the true cavity {dice:.3f}", flush=True)


if __name__ == "__main__":
    main(float(sys.argv[1]), sys.argv[2].split(","))
