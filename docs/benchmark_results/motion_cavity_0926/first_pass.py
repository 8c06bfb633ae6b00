"""The moved cavity with a shorter first pass (it only has to find the cavity): per case and per schedule I/J/K of the
first pass (``refine_image``, no segmentation; ``cI/J``: those levels on a grid twice as coarse as the working one,
the finest level skipped), the moved cavity from its field (``motion_labels``, 0.6; its Dice with the true cavity),
then ``refine_full`` from identity with that label map, as ``configs/refine.json`` runs it. Seconds: both. Measured
(bundle 0.9.26): half the iterations (75/50/30) level on the real CT, a point less slip on the generated cases, 20 %
less time, but the cylinder of tests/test_label_free.py then loses its slip (``cylinder.py``); the coarser levels only
cost the real CT 14-22 points of slip. Not kept.

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_0926/first_pass.py 150/100/60,75/50/30 ct0,ct1
    PYTHONPATH=. python docs/benchmark_results/motion_cavity_0926/first_pass.py c150/100,c75/50 ct0,ct1
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

KEYS = ("slip", "epe_band", "epe_body", "epe_bones", "epe_outside", "rigidity", "fold_pct_off_band", "seconds")


def main(schedules: list[str], names: list[str]) -> None:
    torch.set_num_threads(1)
    for name in names:
        case = build_case(name)
        regions = case_regions(case, 6.0)
        for schedule in schedules:
            t0 = time.perf_counter()
            coarse = schedule.startswith("c")
            iterations = [int(i) for i in schedule.lstrip("c").split("/")]
            options = {"similarity": "lncc", "iterations": iterations, "levels": len(iterations)}
            if coarse:  # one level coarser than the working grid: the finest level skipped
                options["grid_mm"] = 2.0 * float(min(case["spacing"]))
            first, _, _ = run_method("refine_image", case, options, {})
            t_first = time.perf_counter() - t0
            fixed, spacing = case["fixed"], np.asarray(case["spacing"])
            bones = image_bones(fixed)[0] == RIGID
            seg = motion_labels(first * spacing[:, None, None, None], bones, body_mask(fixed), 0.6)
            contents = seg == MOTION_CONTENT_LABEL
            dice = 2 * (contents & case["cavity"]).sum() / max(contents.sum() + case["cavity"].sum(), 1)
            ddf, _, own = run_method("refine_full", {**case, "fixed_seg": seg}, {"similarity": "lncc"}, {})
            row = dict(evaluate(ddf, case, regions, own), seconds=time.perf_counter() - t0)
            head = f"{name} first {schedule} ({t_first:.1f} s, Dice {dice:.3f}): "
            print(head + ", ".join(f"{k} {row[k]:.4g}" for k in KEYS), flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(","), sys.argv[2].split(","))
