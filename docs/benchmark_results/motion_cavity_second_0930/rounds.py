"""A second round of the moved cavity (a lead for deep breathing, where the first field catches too little of the
motion for its moved region to lie on the wall): per case the product's path without a segmentation (0.9.30: the
first pass, the cavity its field moved, the labelled refinement in it with its second pass from the field), then the
cavity that this labelled field moved (the same rule, from the labelled field) and the labelled refinement again.
Cases: ``phantom-deep<seed>`` and ``ct-deep<seed>`` (``benchmarks.benchmark_walls``'s default wall, contents moving
15-30 mm as with ``--amplitude-mm 15,30 --flow-steps 7``; the phantom is the tuning anatomy, the CT the held-out
subject) and the names of ``../motion_cavity_0927/grow.py`` (``dcm<seed>-cranial``, ``val<i>``, ``phantom<seed>``).

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_second_0930/rounds.py phantom-deep0,dcm0-cranial
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "motion_cavity_0927"))
sys.path.insert(0, str(Path(__file__).parent.parent / "second_pass_0929"))
from grow import any_case  # noqa: E402  (the 0.9.27 folder's script)
from moved_cavity_second import result  # noqa: E402  (the 0.9.29 folder's script)

from benchmarks.benchmark_ct_refine import run_method  # noqa: E402
from benchmarks.benchmark_walls import wall_case  # noqa: E402
from benchmarks.ct_evaluation import case_regions, evaluate  # noqa: E402
from scripts.regions import label_free  # noqa: E402
from scripts.regions.cavity import body_mask  # noqa: E402
from scripts.regions.labels import RIGID  # noqa: E402

LABELLED = {"similarity": "lncc", "second_step_start": False}  # configs/refine.json's moved cavity (0.9.30)


def case_of(name: str) -> dict:
    anatomy, _, seed = name.partition("-deep")
    if seed:
        return wall_case(anatomy, int(seed), "default", amplitude_mm=(15.0, 30.0), flow_steps=7)
    return any_case(name)


def main(names: list[str]) -> None:
    for name in names:
        case = case_of(name)
        regions, spacing = case_regions(case, 6.0), np.asarray(case["spacing"], float)
        bones, body = label_free.image_bones(case["fixed"])[0] == RIGID, body_mask(case["fixed"])
        start = time.perf_counter()
        ddf, _, _ = run_method("refine_image", case, {"similarity": "lncc"}, {})
        out = []
        for round_ in (1, 2):
            seg = label_free.motion_labels(ddf * spacing[:, None, None, None], bones, body, 0.6, spacing=spacing)
            ddf, _, own = run_method("refine_full", {**case, "fixed_seg": seg}, LABELLED, {})
            out.append(result(f"round {round_}", evaluate(ddf, case, regions, own), time.perf_counter() - start))
        print(name + ": " + " | ".join(out), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1].split(","))
