"""The moved cavity's fraction (``--refine_motion_cavity``, 0.6 of the first field's 95th percentile) with 0.9.30's
second pass (from the field), on the tuning cases: the DICOM series of ../shared/data at 3 mm moved cranially by the
breathing generator as usual (``dcm<seed>-cranial``) or with contents moving 15-30 mm (``deep<seed>``, as
``benchmarks.benchmark_walls --amplitude-mm 15,30 --flow-steps 7`` moves the held-out CT), the generated ``val<i>``
and ``phantom<seed>`` (as ``../motion_cavity_0927/grow.py`` names them). Per case the first pass once, then per
fraction the labelled refinement in the cavity it moved. The lead's script
(``../second_pass_0929/moved_cavity_second.py``) with these variants.

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_second_0930/fraction.py dcm0-cranial,val0,phantom0
"""

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "second_pass_0929"))
sys.path.insert(0, str(Path(__file__).parent.parent / "motion_cavity_0927"))
from grow import DATA, any_case  # noqa: E402  (the 0.9.27 folder's script)
from moved_cavity_second import main  # noqa: E402  (the 0.9.29 folder's script)

from benchmarks.training_cts import dicom_pair  # noqa: E402
from scripts.synthesis.breathing import make_breathing_case  # noqa: E402

VARIANTS = {f"fraction {f:g}": {"motion_cavity": f, "second_step_start": False} for f in (0.3, 0.45, 0.6)}


@lru_cache(maxsize=None)
def series() -> tuple:
    return dicom_pair(DATA, (3.0, 3.0, 3.0))


def case_of(name: str) -> dict:
    if not name.startswith("deep"):
        return any_case(name)
    rng = np.random.default_rng(int(name[4:]))
    return make_breathing_case(*series(), rng, amplitude_mm=(15.0, 30.0), flow_steps=7, cranial=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1].split(","), VARIANTS, case_of)
