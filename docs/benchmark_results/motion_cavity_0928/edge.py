"""Does the first field show whether the moved region's edge slides? Per case the first pass without labels
(``refine_image``), the band where it shears (``shear_band``, 0.35; % of the body off the bones), the moved region
(``motion_labels`` with the grid's spacing: % of the body, voxels grown) and the share of that region's edge within a
voxel of the band. Cases: ``nos<seed>@<mm>`` (``noslip.py``: no slip) and those of ``../motion_cavity_0927/grow.py``.
Measured, not adopted as a guard (docs/README.md, bundle 0.9.28).

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_0928/edge.py nos0@3,ct0,dcm0-cranial,val0
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
from scripts.regions.cavity import body_mask, wall_layers  # noqa: E402
from scripts.regions.label_free import MOTION_CONTENT_LABEL, image_bones, motion_labels, shear_band  # noqa: E402
from scripts.regions.labels import RIGID  # noqa: E402


def main(names: list[str]) -> None:
    for name in names:
        case = no_slip_case(*map(int, name[3:].split("@"))) if name.startswith("nos") else any_case(name)
        fixed, spacing = case["fixed"], np.asarray(case["spacing"], float)
        first, _, _ = run_method("refine_image", case, {"similarity": "lncc"}, {})
        field, bones, body = first * spacing[:, None, None, None], image_bones(fixed)[0] == RIGID, body_mask(fixed)
        band, _ = shear_band(field, spacing, body & ~bones)
        report = {}
        moved = motion_labels(field, bones, body, 0.6, spacing=spacing, report=report) == MOTION_CONTENT_LABEL
        edge = moved & wall_layers(moved)
        on = float(ndimage.binary_dilation(band)[edge].mean()) if edge.any() else 0.0
        print(f"{name}: band % {100 * band.sum() / (body & ~bones).sum():.2f}, moved % {100 * moved.mean():.1f} of "
              f"the grid, grown {report['grown']}, edge on band {on:.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1].split(","))
