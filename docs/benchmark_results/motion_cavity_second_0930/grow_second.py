"""The moved cavity's growth (two voxels, chosen in 0.9.27 with a second pass from the first field, kept in 0.9.28
without one) now that 0.9.30's labelled refinement in it runs its second pass from the first field again: 0.9.27's
``../motion_cavity_0927/grow.py`` with that refinement's options (LNCC, 120 iterations of the second pass, no step).
Lines as ``grow.py`` writes them (its ``--summary`` reads them).

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_second_0930/grow_second.py 1,2,3 dcm0-cranial,val0
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "motion_cavity_0927"))
from grow import main  # noqa: E402  (the 0.9.27 folder's script)

if __name__ == "__main__":
    labelled = {"similarity": "lncc", "second_iterations": 120, "second_step_start": False}  # configs/refine.json's
    main(sys.argv[1].split(","), sys.argv[2].split(","), labelled=labelled)
