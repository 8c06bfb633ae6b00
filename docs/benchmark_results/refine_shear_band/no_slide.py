"""A pair with no slip: the known motion of tests/test_refine_workflow.py (a crop of the held-out CT deformed by a
smooth field with rigid vertebrae, scripts/synthesis/phantom.py deform_ct), refined without a segmentation through
the bundle's workflow (configs/refine.json, 40/30/20 iterations, 20 in the second pass), the shear band at each given
threshold (null: none, no second pass); prints the body's mean endpoint error and the band's size (its log line).

    PYTHONPATH=. python docs/benchmark_results/refine_shear_band/no_slide.py null 0.35 1.0
"""

import json
import logging
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from scripts.inference.predict import run_inference_workflow
from scripts.synthesis.phantom import deform_ct, inverse_ddf

torch.set_num_threads(1)
logging.basicConfig(level=logging.WARNING)
logging.getLogger("scripts.refinement.inferer").setLevel(logging.INFO)
data_dir = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "totalsegmentator_example"
img, seg = nib.load(data_dir / "example_ct_sm.nii.gz"), nib.load(data_dir / "example_seg.nii.gz")
crop = (slice(20, 100), slice(10, 90), slice(0, 30))  # as the test's fixture
data = np.asanyarray(img.dataobj)[crop].astype(np.int16)
labels = np.asanyarray(seg.dataobj)[crop].astype(np.uint8)
affine = img.affine.copy()
affine[:3, 3] += affine[:3, :3] @ np.array([20, 10, 0])
moved = deform_ct(data, labels, (3.0, 3.0, 3.0), np.random.default_rng(1))
true_mm = np.einsum("ck,k...->...c", affine[:3, :3], inverse_ddf(moved["ddf"]))
with tempfile.TemporaryDirectory() as folder:
    paths = {}
    for name, array in (("fixed", data), ("moving", moved["moving"])):
        paths[name] = str(Path(folder) / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(array, affine), paths[name])
    for value in sys.argv[1:]:
        out = Path(folder) / f"out_{value}"
        band = None if value == "null" else float(value)
        run_inference_workflow(None, ("inference.json", "refine.json"), **paths, output_dir=str(out),
                               refine_shear_band=band, refine_iterations=[40, 30, 20], refine_second_iterations=20,
                               progress=False)  # fmt: skip
        entry = json.loads((out / "summary.json").read_text())["pairs"][0]
        ddf = nib.load(entry["outputs"]["ddf"]).get_fdata()[..., 0, :] * np.array([-1.0, -1.0, 1.0])  # LPS -> RAS
        epe = float(np.linalg.norm(ddf - true_mm, axis=-1)[data > -500].mean())
        print(f"shear band {value}: body endpoint error {epe:.3f} mm", flush=True)
