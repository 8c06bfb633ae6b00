"""Could the image tell a pair that slides from one that does not? Per case the first pass without labels
(``refine_image``) and the moved cavity's labelled refinement (no second pass, as ``configs/refine.json`` without a
segmentation since 0.9.28), each field's LNCC (MONAI's loss, 7-voxel window, the CT window) and the MSE over the body
of the moving image warped by it against the fixed one, and both fields' body EPE. Cases: ``nos<seed>@<mm>``
(``noslip.py``: no slip) and the breathing tuning cases of ``../motion_cavity_0927/grow.py`` (``dcm``, ``val``,
``phantom``). Measured, not adopted as a guard (docs/README.md, bundle 0.9.28).

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_0928/sim.py nos0@3,dcm0-cranial,val0
"""

import sys
from pathlib import Path

import numpy as np
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss
from monai.networks.blocks import Warp

sys.path.insert(0, str(Path(__file__).parent.parent / "motion_cavity_0927"))
sys.path.insert(0, str(Path(__file__).parent))
from grow import any_case  # noqa: E402  (the 0.9.27 folder's script)
from noslip import body_epe, no_slip_case  # noqa: E402  (this folder's)

from benchmarks.benchmark_ct_refine import batched, normalise, run_method  # noqa: E402
from scripts.regions.cavity import body_mask  # noqa: E402
from scripts.regions.label_free import image_bones, motion_labels  # noqa: E402
from scripts.regions.labels import RIGID  # noqa: E402

LNCC = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=7)
WARP = Warp(mode="bilinear", padding_mode="border")


def similarity(case: dict, ddf: np.ndarray, body: np.ndarray) -> tuple[float, float]:
    """(LNCC loss, MSE over ``body``) of the moving image warped by ``ddf`` (voxels) against the fixed one."""
    fixed, moving = (batched(normalise(case[k]))[None] for k in ("fixed", "moving"))
    warped = WARP(moving, batched(ddf.astype(np.float32)))
    return float(LNCC(warped, fixed)), float(((warped - fixed)[0, 0].numpy()[body] ** 2).mean())


def main(names: list[str]) -> None:
    for name in names:
        case = no_slip_case(*map(int, name[3:].split("@"))) if name.startswith("nos") else any_case(name)
        spacing, body = np.asarray(case["spacing"], float), body_mask(case["fixed"])
        first, _, _ = run_method("refine_image", case, {"similarity": "lncc"}, {})
        bones = image_bones(case["fixed"])[0] == RIGID
        labels = motion_labels(first * spacing[:, None, None, None], bones, body, 0.6, spacing=spacing)
        options = {"similarity": "lncc", "second_iterations": 0}
        cavity, _, _ = run_method("refine_full", {**case, "fixed_seg": labels}, options, {})
        out = [name]
        for tag, ddf in (("none", np.zeros_like(first)), ("first", first), ("cavity", cavity)):
            out.append("{} lncc {:.5f} mse {:.6f}".format(tag, *similarity(case, ddf, body)))
        case["spacing"] = spacing
        out.append(f"epe first {body_epe(case, first, body):.3f} cavity {body_epe(case, cavity, body):.3f}")
        print(" | ".join(out), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1].split(","))
