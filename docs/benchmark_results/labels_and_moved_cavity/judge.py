"""A second look by the image (a lead for issue 20, not adopted): per case the labelled default (``refine_full``
with a segmenter's labels) and the default without labels (``refine_image_cavity``, the moved cavity), each with its
slip, band, body EPE and bones; and how well each warped moving image matches the fixed one where the two fields
differ: the squared local NCC (3^3 window ``d1``, 5^3 ``d1r2``; over the body voxels where the fields differ by more
than 1 mm; ``d2``: 2 mm; ``body``: every body voxel) and the mean squared difference there (``mse_d1``), the images
normalised as the refinement sees them. Could such a judge pick the better of the two per pair? (docs/README.md,
*Walls nobody tuned on*, bundle 0.9.28's bullet.)

    PYTHONPATH=. python docs/benchmark_results/labels_and_moved_cavity/judge.py ct default,out2 0,1,2 segmenter
"""

import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from hybrid import LABELLED, perturbed_case  # noqa: E402  (this folder's)

from benchmarks.benchmark_ct_refine import normalise, run_method  # noqa: E402
from benchmarks.ct_evaluation import evaluate  # noqa: E402
from scripts.regions.cavity import body_mask  # noqa: E402


def warp(image: np.ndarray, ddf: np.ndarray) -> np.ndarray:
    """``image`` (X, Y, Z) at x + ``ddf`` (3, X, Y, Z, voxels): trilinear, the edge's value beyond it."""
    return ndimage.map_coordinates(image, np.indices(image.shape, dtype=np.float32) + ddf, order=1, mode="nearest")


def local_ncc2(a: np.ndarray, b: np.ndarray, radius: int = 1) -> np.ndarray:
    """The squared local NCC of ``a`` and ``b`` in cubes of 2 ``radius`` + 1 voxels."""
    mean = lambda x: ndimage.uniform_filter(x, 2 * radius + 1, mode="nearest")  # noqa: E731
    ma, mb = mean(a), mean(b)
    cov, va, vb = mean(a * b) - ma * mb, mean(a * a) - ma**2, mean(b * b) - mb**2
    return cov**2 / (va * vb + 1e-5)


def main(anatomy: str, walls: list[str], seeds: list[int], perturbation: str) -> None:
    for wall in walls:
        for seed in seeds:
            case, regions, seg = perturbed_case(anatomy, seed, wall, perturbation)
            spacing = np.asarray(case["spacing"], float)
            fixed, moving, body = normalise(case["fixed"]), normalise(case["moving"]), body_mask(case["fixed"])
            runs = {}
            for tag, method, given in (
                ("labels", "refine_full", {**case, "fixed_seg": seg}),
                ("moved", "refine_image_cavity", case),
            ):
                ddf, seconds, own = run_method(method, given, LABELLED, {})
                runs[tag] = (ddf, seconds, evaluate(ddf, case, regions, own))
            diff = np.linalg.norm((runs["labels"][0] - runs["moved"][0]) * spacing[:, None, None, None], axis=0)
            zones = {"d1": body & (diff > 1.0), "d2": body & (diff > 2.0), "body": body}
            line = f"{anatomy} {perturbation} {wall} {seed}:"
            for tag, (ddf, seconds, r) in runs.items():
                warped = warp(moving, ddf)
                ncc3, ncc5 = local_ncc2(fixed, warped, 1), local_ncc2(fixed, warped, 2)
                judged = {
                    name: float(ncc3[zone].mean()) if zone.any() else float("nan") for name, zone in zones.items()
                }
                judged["d1r2"] = float(ncc5[zones["d1"]].mean())
                judged["mse_d1"] = float(((fixed - warped) ** 2)[zones["d1"]].mean())
                line += (
                    f" | {tag} slip {r['slip']:.3f} band {r['epe_band']:.2f} body {r['epe_body']:.2f} "
                    f"rig {r['rigidity']:.4f} s {seconds:.1f} " + " ".join(f"{k} {v:.5f}" for k, v in judged.items())
                )
            print(line + f" | zone1 {int(zones['d1'].sum())} zone2 {int(zones['d2'].sum())}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    anatomy, walls, seeds, perturbation = sys.argv[1:5]
    main(anatomy, walls.split(","), [int(s) for s in seeds.split(",")], perturbation)
