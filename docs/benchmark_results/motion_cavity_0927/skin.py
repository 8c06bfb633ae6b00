"""Whether the moved region spills over the wall, and whether ``motion_labels`` then grows it: per case the first
pass without labels (``refine_image``), its moved region (0.6), the share of that region that lies outside the true
cavity (``adds``, of the cavity's size), and ``motion_labels``' report with the grid's spacing (``edge_near_skin``:
the share of its edge within 10 mm of the skin; ``grown``: the voxels added). Cases as in ``grow.py``.

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_0927/skin.py ct0,dcm0-cranial,phantom0,val1
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from grow import any_case  # noqa: E402  (this folder's script)

from benchmarks.benchmark_ct_refine import run_method  # noqa: E402
from scripts.regions.cavity import body_mask  # noqa: E402
from scripts.regions.label_free import MOTION_CONTENT_LABEL, image_bones, motion_labels  # noqa: E402
from scripts.regions.labels import RIGID  # noqa: E402

torch.set_num_threads(1)
for name in sys.argv[1].split(","):
    case = any_case(name)
    fixed, spacing, cavity = case["fixed"], np.asarray(case["spacing"]), case["cavity"]
    first, _, _ = run_method("refine_image", case, {"similarity": "lncc"}, {})
    field, bones, body = first * spacing[:, None, None, None], image_bones(fixed)[0] == RIGID, body_mask(fixed)
    moved = motion_labels(field, bones, body, 0.6, grow=0) == MOTION_CONTENT_LABEL
    report = {}
    motion_labels(field, bones, body, 0.6, spacing=spacing, report=report)
    print(f"{name}: adds {(moved & ~cavity).sum() / cavity.sum():.3f}, edge near the skin "
          f"{report['edge_near_skin']:.3f}, grown {report['grown']} voxels", flush=True)  # fmt: skip
