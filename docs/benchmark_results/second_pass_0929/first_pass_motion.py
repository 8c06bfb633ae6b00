"""How far a first pass says the cavity's contents moved (a deep-breathing detector, measured in 0.9.29, not needed):
per case the labelled first pass (``refine_full`` without its second pass) and the median and 95th percentile of its
displacement's size relative to the bones' mean, over the labels' cavity side, against the same of the true field
over the true cavity. ``w:<anatomy>:<seed>[:d]``: ``benchmarks.benchmark_walls``' default wall (``:d``: deep breathing,
15-30 mm as a flow); other names as ``../motion_cavity_0927/grow.py`` names them.

    PYTHONPATH=. python docs/benchmark_results/second_pass_0929/first_pass_motion.py w:phantom:0,w:phantom:0:d,gen0
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "motion_cavity_0927"))
from grow import any_case  # noqa: E402  (the 0.9.27 folder's script)

from benchmarks.benchmark_ct_refine import run_method  # noqa: E402
from benchmarks.benchmark_walls import wall_case  # noqa: E402
from scripts.regions.cavity import cavity_regions  # noqa: E402
from scripts.regions.label_free import motion_size  # noqa: E402
from scripts.regions.labels import RIGID  # noqa: E402


def named_case(name: str) -> dict:
    if name.startswith("w:"):
        _, anatomy, seed, *deep = name.split(":")
        motion = dict(amplitude_mm=(15.0, 30.0), flow_steps=7) if deep else {}
        return wall_case(anatomy, int(seed), "default", **motion)
    return any_case(name)


def sizes(field_mm: np.ndarray, bones: np.ndarray, where: np.ndarray) -> np.ndarray:
    """The 50th and 95th percentiles over ``where`` of the field's size relative to ``bones`` (mm; ``motion_size``)."""
    return np.percentile(motion_size(field_mm, bones)[where], [50, 95])


def main(names: list[str]) -> None:
    for name in names:
        case = named_case(name)
        spacing = np.asarray(case["spacing"], float)[:, None, None, None]
        ddf, seconds, _ = run_method("refine_full", case, {"similarity": "lncc", "second_iterations": 0}, {})
        mask, _, side = cavity_regions(case["fixed_seg"], spacing.ravel(), image=case["fixed"], return_side=True)
        found = sizes(ddf * spacing, mask == RIGID, side == 1)
        true = sizes(case["ddf"] * spacing, case["bones"], case["cavity"])
        print(
            f"{name}: first pass p50/p95 {found[0]:.1f}/{found[1]:.1f} mm, true {true[0]:.1f}/{true[1]:.1f} mm, "
            f"{seconds:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1].split(","))
