"""How far the moved cavity's second pass may move its wall (``second_snap_mm``; 3 mm by default, one voxel of the
3 mm cases), measured after bundle 0.9.30 made that pass run from the first field: per case the first pass once, then
the labelled refinement in the cavity it moved with the second pass's snap at 0, 3 (the default) and 6 mm. The
lead's script (``../second_pass_0929/moved_cavity_second.py``) with these variants; cases as
``../motion_cavity_0927/grow.py`` names them.

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_second_0930/snap.py dcm0-cranial,val0,phantom0
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "second_pass_0929"))
from moved_cavity_second import main  # noqa: E402  (the 0.9.29 folder's script)

VARIANTS = {f"snap {mm:g}": {"second_step_start": False, "second_snap_mm": mm} for mm in (0.0, 3.0, 6.0)}

if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1].split(","), VARIANTS)
