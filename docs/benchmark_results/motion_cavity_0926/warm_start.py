"""The moved cavity's labelled refinement started from the first pass's field with fewer iterations, against its start
from identity (``configs/refine.json``'s, bundle 0.9.25-0.9.26). Per case: ``refine_image`` (the first pass without a
segmentation), the moved cavity from its field (``motion_labels``, 0.6), then ``refine_full`` with that label map from
identity (``identity``) or from the first field (``field:I/J/K``: everywhere; ``cavity:I/J/K``: inside the cavity,
outside the bones' mean displacement; ``cavity0:I/J/K``: inside, zero outside) with those iterations per level, through
``benchmarks.benchmark_ct_refine``'s ``network_refine`` path (the first field stands in for the network's). Seconds
include the first pass. Measured (bundle 0.9.26): 2-3 points less slip at about 0.75 of the time; not kept.

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_0926/warm_start.py \\
        identity,field:40/30/20,field:75/50/30,cavity:40/30/20,cavity:75/50/30,cavity0:40/30/20 ct0,ct1
"""

import sys
import time

import numpy as np
import torch

from benchmarks.benchmark_ct_refine import build_case, run_method
from benchmarks.ct_evaluation import case_regions, evaluate
from scripts.regions.cavity import body_mask
from scripts.regions.label_free import image_bones, motion_labels
from scripts.regions.labels import RIGID

KEYS = ("slip", "epe_band", "epe_body", "epe_bones", "epe_outside", "rigidity", "fold_pct_off_band", "seconds")


class Start:
    """Stands in for the network of ``network_refine``: the first pass's field (its seconds counted by the caller)."""

    def __init__(self, ddf: np.ndarray, rigid: np.ndarray | None):
        self.network_field, self.rigid, self.ddf = ddf, rigid, ddf

    def __call__(self, fixed, moving, affine):
        return self.ddf, 0.0


def main(variants: list[str], names: list[str]) -> None:
    torch.set_num_threads(1)
    for name in names:
        case = build_case(name)
        regions = case_regions(case, 6.0)
        t0 = time.perf_counter()
        first, _, _ = run_method("refine_image", case, {"similarity": "lncc"}, {})
        t_first = time.perf_counter() - t0
        fixed, spacing = case["fixed"], np.asarray(case["spacing"])
        bones = image_bones(fixed)[0] == RIGID
        seg = motion_labels(first * spacing[:, None, None, None], bones, body_mask(fixed), 0.6)
        mean = first[:, bones].mean(axis=1) if bones.any() else np.zeros(3)
        rigid = np.broadcast_to(mean[:, None, None, None], first.shape).astype(np.float32).copy()
        for variant in variants:
            t = time.perf_counter()
            if variant == "identity":
                ddf, _, own = run_method("refine_full", {**case, "fixed_seg": seg}, {"similarity": "lncc"}, {})
            else:
                mode, iterations = variant.split(":")
                options = {
                    "similarity": "lncc",
                    "network": Start(first, None if mode == "cavity0" else rigid),
                    "network_refine_iterations": [int(i) for i in iterations.split("/")],
                    "network_start": "field" if mode == "field" else "cavity",
                }
                ddf, _, own = run_method("network_refine", {**case, "fixed_seg": seg}, options, {})
            row = dict(evaluate(ddf, case, regions, own), seconds=time.perf_counter() - t + t_first)
            print(f"{name} {variant}: " + ", ".join(f"{k} {row[k]:.4g}" for k in KEYS), flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(","), sys.argv[2].split(","))
