"""Does the first field show whether the moved region's edge slides? Per case the first pass without labels
(``refine_image``), the band where it shears (``shear_band``, 0.35; % of the body off the bones), the moved region
(``motion_labels`` with the grid's spacing: % of the grid, voxels grown), the share of its edge within a voxel of the
band, and the share of its edge across which the field steps as at a slip (:func:`edge_steps`). Both measured as
guards for the moved cavity, neither adopted (docs/README.md, bundle 0.9.28). Cases: ``nos<seed>@<mm>``
(``noslip.py``: no slip), ``deep<seed>`` (the real CT's default wall at deep breathing, as ``benchmarks.benchmark_walls
--amplitude-mm 15,30 --flow-steps 7``) and those of ``../motion_cavity_0927/grow.py``.

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_0928/edge.py nos0@3,ct0,dcm0-cranial,val0,deep0
"""

import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent.parent / "motion_cavity_0927"))
sys.path.insert(0, str(Path(__file__).parent))
from grow import any_case  # noqa: E402  (the 0.9.27 folder's script)
from noslip import no_slip_case  # noqa: E402  (this folder's)

from benchmarks.benchmark_ct_refine import run_method  # noqa: E402
from benchmarks.benchmark_walls import wall_case  # noqa: E402
from scripts.regions.cavity import body_mask, wall_layers  # noqa: E402
from scripts.regions.label_free import (  # noqa: E402
    MOTION_CONTENT_LABEL,
    image_bones,
    motion_labels,
    motion_size,
    normal_steps,
    shear_band,
    tangential_jump,
)
from scripts.regions.labels import RIGID  # noqa: E402


def edge_steps(field_mm: np.ndarray, contents: np.ndarray, spacing: np.ndarray, scale: float) -> float:
    """The share of the edge voxels of ``contents`` across which ``field_mm`` (3, X, Y, Z), mm, steps: along the
    edge's normal (of the contents smoothed by a Gaussian of 1.5 voxels, one voxel along its main axis a step) the
    tangential jump from 5 steps inside to 5 outside reaches 0.2 of ``scale`` (the 95th percentile of what moved) and
    0.75 of it lies within 2 steps (the shear band's step rule)."""
    smooth = ndimage.gaussian_filter(contents.astype(np.float64), 1.5)
    here = np.argwhere(contents & wall_layers(contents))
    normal = -np.stack([g[tuple(here.T)] for g in np.gradient(smooth, *spacing)], axis=1)
    length = np.linalg.norm(normal, axis=1)
    here, normal = here[length > 1e-9], normal[length > 1e-9] / length[length > 1e-9, None]
    if len(here) == 0:
        return 0.0
    step = normal_steps(normal, spacing)
    near, far = (tangential_jump(field_mm, here, step, normal, k) for k in (2.0, 5.0))
    return float(np.mean((far >= 0.2 * scale) & (near >= 0.75 * far)))


def main(names: list[str]) -> None:
    for name in names:
        if name.startswith("nos"):
            case = no_slip_case(*map(int, name[3:].split("@")))
        elif name.startswith("deep"):
            case = wall_case("ct", int(name[4:]), "default", amplitude_mm=(15.0, 30.0), flow_steps=7)
        else:
            case = any_case(name)
        fixed, spacing = case["fixed"], np.asarray(case["spacing"], float)
        first, _, _ = run_method("refine_image", case, {"similarity": "lncc"}, {})
        field, bones, body = first * spacing[:, None, None, None], image_bones(fixed)[0] == RIGID, body_mask(fixed)
        band, _ = shear_band(field, spacing, body & ~bones)
        report = {}
        moved = motion_labels(field, bones, body, 0.6, spacing=spacing, report=report) == MOTION_CONTENT_LABEL
        edge = moved & wall_layers(moved)
        on = float(ndimage.binary_dilation(band)[edge].mean()) if edge.any() else 0.0
        steps = edge_steps(field, moved, spacing, np.percentile(motion_size(field, bones)[body], 95))
        print(
            f"{name}: band % {100 * band.sum() / (body & ~bones).sum():.2f}, moved % {100 * moved.mean():.1f} of "
            f"the grid, grown {report['grown']}, edge on band {on:.3f}, edge steps {steps:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1].split(","))
