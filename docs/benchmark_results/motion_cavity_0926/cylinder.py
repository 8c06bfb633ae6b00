"""The moved cavity on the sliding cylinder of tests/test_label_free.py with a shorter first pass: each SHARE:F runs
``configs/refine.json`` without a segmentation through the bundle's workflow, ``--refine_motion_cavity F``, the first
pass (the one without labels: bones by HU, no normals) at SHARE of each level's iterations (patched in for this
measurement; the bundle runs them all), and prints the error at the cylinder's wall and in the body, the moved
cavity's size and the refinement's seconds.

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_0926/cylinder.py 1:0.6 0.5:0.6 0.75:0.6 0.5:0.5 0.5:0.7
"""

import json
import math
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from scripts.inference.predict import run_inference_workflow
from scripts.refinement import inferer
from tests.test_label_free import _sliding_pair

SHARE = {"value": 1.0}
refine_pair = inferer.refine_pair


def first_pass_share(*args, **kwargs):
    """``refine_pair`` with SHARE of the iterations for the pass without labels (its bones by HU, no normals)."""
    if kwargs.get("normals") is None and kwargs.get("regulariser") == "rigidity_jacobian":
        iterations = kwargs.get("iterations", (150, 100, 60))
        kwargs["iterations"] = [max(1, math.ceil(SHARE["value"] * i)) for i in iterations]
    return refine_pair(*args, **kwargs)


inferer.refine_pair = first_pass_share
torch.set_num_threads(1)
with tempfile.TemporaryDirectory() as folder:
    pair = _sliding_pair(Path(folder))
    for spec in sys.argv[1:]:
        share, fraction = (float(x) for x in spec.split(":"))
        SHARE["value"] = share
        out = Path(folder) / spec.replace(":", "_")
        run_inference_workflow(None, ("inference.json", "refine.json"), fixed=pair["fixed"], moving=pair["moving"],
                               output_dir=str(out), progress=False, refine_motion_cavity=fraction)  # fmt: skip
        entry = json.loads((out / "summary.json").read_text())["pairs"][0]
        ddf = nib.load(entry["outputs"]["ddf"]).get_fdata()[..., 0, :] * np.array([-1.0, -1.0, 1.0])  # LPS -> RAS
        error = np.linalg.norm(ddf - pair["true"], axis=-1)[:, :, 3:-3]
        report = entry["refinement"]
        print(f"share {share} F {fraction}: wall {error[pair['wall']].mean():.2f} mm, body {error.mean():.2f} mm, "
              f"moved cavity {report['motion_cavity']['content_voxels']} voxels of the cylinder's "
              f"{int(pair['cylinder'].sum())}, {report['seconds']:.1f} s", flush=True)  # fmt: skip
