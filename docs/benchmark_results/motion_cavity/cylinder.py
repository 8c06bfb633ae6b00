"""The cylinder of tests/test_label_free.py (a textured cylinder sliding 6 mm along its wall inside a body): the error
at its wall with no segmentation (the first pass alone; the shear band, the default; the moved cavity at 0.5 and
0.6) and with the true cylinder as the label map. From the bundle's root:

    D=docs/benchmark_results/motion_cavity; PYTHONPATH=.:tests python $D/cylinder.py > $D/cylinder.log 2> /dev/null
"""

import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from test_label_free import _sliding_pair

from scripts.inference.predict import run_inference_workflow

torch.set_num_threads(1)
folder = Path(tempfile.mkdtemp())
pair = _sliding_pair(folder)
labels = folder / "cylinder_seg.nii.gz"
nib.save(nib.Nifti1Image(np.where(pair["cylinder"], 5, 0).astype(np.uint8), np.diag([2.0, 2.0, 2.0, 1.0])), labels)
print(f"cylinder: {int(pair['cylinder'].sum())} voxels")
runs = {
    "first pass alone": dict(refine_shear_band="null"),
    "shear band (default)": {},
    "moved cavity 0.5": dict(refine_motion_cavity=0.5),
    "moved cavity 0.6": dict(refine_motion_cavity=0.6),
    "true cylinder as labels (liver)": dict(fixed_seg=str(labels)),
}
for name, options in runs.items():
    out = folder / name.replace(" ", "_")
    run_inference_workflow(None, ("inference.json", "refine.json"), fixed=pair["fixed"], moving=pair["moving"],
                           output_dir=str(out), progress=False, **options)  # fmt: skip
    entry = json.loads((out / "summary.json").read_text())["pairs"][0]
    ddf = nib.load(entry["outputs"]["ddf"]).get_fdata()[..., 0, :] * np.array([-1.0, -1.0, 1.0])  # LPS -> RAS
    error = float(np.linalg.norm(ddf - pair["true"], axis=-1)[:, :, 3:-3][pair["wall"]].mean())
    print(f"{name}: wall error {error:.2f} mm, {entry['refinement'].get('motion_cavity', '')}", flush=True)
