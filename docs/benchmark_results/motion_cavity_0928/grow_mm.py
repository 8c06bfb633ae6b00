"""The moved cavity's growth on a finer grid: is it two voxels, or about 6 mm? ``../motion_cavity_0927/grow.py`` on
the DICOM series of ../shared/data (another patient than the held-out CT, the 0.9.27 choice's tuning subject) at
``<mm>`` mm instead of 3, moved cranially by the breathing generator (``dcm<seed>@<mm>-cranial``), the labelled
refinement without its second pass (as ``configs/refine.json`` without a segmentation since 0.9.28); ``true``: the
true cavity as the one content label. Lines as ``grow.py`` writes them (its ``--summary`` reads them).

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_0928/grow_mm.py 2 0,2,3,true 0,1,2
"""

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent / "motion_cavity_0927"))
from grow import DATA, main  # noqa: E402  (the 0.9.27 folder's script)

from benchmarks.training_cts import dicom_pair  # noqa: E402
from scripts.synthesis.breathing import make_breathing_case  # noqa: E402


@lru_cache(maxsize=None)
def series(mm: float) -> tuple:
    return dicom_pair(DATA, (mm, mm, mm))


def dicom_case(name: str) -> dict:
    """``dcm<seed>@<mm>-cranial``: the series at that spacing moved cranially by the generator with that seed."""
    seed, mm = name[3:].split("-")[0].split("@")
    return make_breathing_case(*series(float(mm)), np.random.default_rng(int(seed)), cranial=True)


if __name__ == "__main__":
    mm, variants, seeds = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
    names = [f"dcm{seed}@{mm}-cranial" for seed in seeds]
    main(variants, names, case_of=dicom_case, labelled={"similarity": "lncc", "second_iterations": 0})
