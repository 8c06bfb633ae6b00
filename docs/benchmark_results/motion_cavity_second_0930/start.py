"""Where the moved cavity's second pass starts (bundle 0.9.30's choice), on the tuning cases: per case the first pass
without labels (``refine_image``), the cavity it moved (``motion_labels``, 0.6 of its 95th percentile, grown by two
voxels), then the labelled refinement with it (``refine_full``) three ways: no second pass (0.9.28-0.9.29), the second
pass (120 iterations) from the first field, and from a step at its wall (0.9.29's default with a segmentation). The
lead's script (``../second_pass_0929/moved_cavity_second.py``) with these variants; cases as
``../motion_cavity_0927/grow.py`` names them (``dcm<seed>-cranial``, ``val<i>``, ``phantom<seed>``, ...).

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_second_0930/start.py dcm0-cranial,val0,phantom0
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "second_pass_0929"))
from moved_cavity_second import main  # noqa: E402  (the 0.9.29 folder's script)

VARIANTS = {
    "none": {"second_iterations": 0},
    "field": {"second_iterations": 120, "second_step_start": False},
    "step": {"second_iterations": 120, "second_step_start": True},
}

if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1].split(","), VARIANTS)
