"""Pairs that slide nowhere: what the no-segmentation refinements cost there. ``nos<seed>@<mm>``: the real CT pair
of ``benchmarks/benchmark_inference.py --pair ct`` (``benchmarks.benchmark_refine.ct_crop_pair(seed)``: the abdomen
CT deformed smoothly, no slip, 1 mm) block-averaged to a grid of that many mm. Per case the body's endpoint error
(mean, mm) of no registration, the first pass alone (``refine_image``: the bones by HU, the log-Jacobian prior
elsewhere), the band's pass (``refine_image_band``) and the moved cavity (``refine_image_cavity``, as
``configs/refine.json`` without a segmentation since 0.9.28), the moved region's share of the body and whether it grew.

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_0928/noslip.py nos0@3,nos1@3,nos0@2
"""

import sys

import numpy as np
import torch

from benchmarks.benchmark_ct_refine import run_method
from benchmarks.benchmark_refine import ct_crop_pair
from scripts.regions.cavity import body_mask
from scripts.regions.label_free import MOTION_CONTENT_LABEL, image_bones, motion_labels
from scripts.regions.labels import RIGID


def block(a: np.ndarray, f: int) -> np.ndarray:
    """The mean of each f x f x f block of the last three axes (the rest cut off)."""
    s = [n // f * f for n in a.shape[-3:]]
    a = a[..., : s[0], : s[1], : s[2]]
    return a.reshape(*a.shape[:-3], s[0] // f, f, s[1] // f, f, s[2] // f, f).mean(axis=(-5, -3, -1))


def no_slip_case(seed: int, f: int) -> dict:
    pair = ct_crop_pair(seed)
    fixed, moving = (block(pair[k], f).astype(np.float32) for k in ("fixed_hu", "moving_hu"))
    return dict(fixed=fixed, moving=moving, spacing=np.full(3, float(f)), ddf=(block(pair["v"], f) / f))


def body_epe(case: dict, ddf: np.ndarray, body: np.ndarray) -> float:
    error = (ddf - case["ddf"]) * case["spacing"][:, None, None, None]
    return float(np.linalg.norm(error, axis=0)[body].mean())


def main(names: list[str]) -> None:
    for name in names:
        seed, mm = name[3:].split("@")
        case = no_slip_case(int(seed), int(mm))
        body, options = body_mask(case["fixed"]), {"similarity": "lncc"}
        row = {"none": body_epe(case, np.zeros_like(case["ddf"]), body)}
        for method in ("refine_image", "refine_image_band", "refine_image_cavity"):
            ddf, seconds, _ = run_method(method, case, options, {})
            row[method] = body_epe(case, ddf, body)
            if method == "refine_image":
                field, bones = ddf * case["spacing"][:, None, None, None], image_bones(case["fixed"])[0] == RIGID
                report = {}
                moved = motion_labels(field, bones, body, 0.6, spacing=case["spacing"], report=report)
                row["moved % of body"] = 100.0 * float((moved == MOTION_CONTENT_LABEL).sum()) / body.sum()
                row["grown"] = report["grown"]
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1].split(","))
