"""Parameter sweep of refine_pair on the real 3 mm abdomen CT deformed with a known field (small and quick).

Case: ``../shared/data/totalsegmentator_example/example_ct_sm`` (122 x 101 x 30, 3 mm) and its TotalSegmentator
segmentation; moving = :func:`scripts.synthesis.phantom.deform_ct` (seed 0, smooth_mm 6); the answer is the inverse of
that field (fixed-point iteration); regions from :func:`scripts.regions.cavity.cavity_regions`. Prints, per
configuration (a JSON dict of refine_pair keyword arguments): the mean endpoint error in the body (mm), the seconds,
the folding percentages [outside the sliding band, outside the band (dilated by one voxel) after upsampling the field
by 2, in the band] and the rigidity error on the rigid voxels.

Usage::

    python benchmarks/sweep_refine.py '{}' '{"regulariser": "jacobian"}' '{"gamma": 0.5}'
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scripts.evaluation.metrics import rigidity_error
from scripts.losses.mechanics import jacobian_determinant
from scripts.refinement.optimiser import refine_pair
from scripts.refinement.pyramid import resize_field
from scripts.regions.cavity import cavity_regions
from scripts.synthesis.phantom import deform_ct, inverse_ddf

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
DATA = BUNDLE_ROOT.parent / "shared" / "data" / "totalsegmentator_example"


def load_case() -> dict:
    import nibabel as nib

    ct = np.asarray(nib.load(str(DATA / "example_ct_sm.nii.gz")).dataobj).astype(np.float32)
    seg = np.asarray(nib.load(str(DATA / "example_seg.nii.gz")).dataobj).astype(np.int32)
    out = deform_ct(ct, seg, (3, 3, 3), np.random.default_rng(0), smooth_mm=6.0)

    def norm(a):
        return torch.from_numpy(np.clip((a + 200) / 450, 0, 1))[None, None].float()

    true = torch.from_numpy(inverse_ddf(out["ddf"]))[None]
    mask, normals, side = cavity_regions(seg, (3, 3, 3), image=ct, return_side=True)
    fixed = norm(ct)
    return dict(
        fixed=fixed,
        moving=norm(out["moving"]),
        true=true,
        body=fixed > 0.05,
        mask=torch.from_numpy(mask)[None, None].float(),
        normals=torch.from_numpy(normals)[None],
        side=torch.from_numpy(side)[None, None].float(),
    )


def evaluate(case: dict, ddf: torch.Tensor) -> dict:
    from torch.nn import functional as F

    sp = torch.full((1, 3, 1, 1, 1), 3.0)
    epe = float(((ddf - case["true"]) * sp).norm(dim=1, keepdim=True)[case["body"]].mean())
    mask = case["mask"]
    det = jacobian_determinant(ddf)[0]
    up = resize_field(ddf, [2 * k - 1 for k in ddf.shape[2:]])
    near_band = F.interpolate(F.max_pool3d((mask == 2).float(), 3, 1, 1), size=up.shape[2:], mode="nearest")[0, 0]
    det_up = jacobian_determinant(up)[0]
    folds = [
        float((det[mask[0, 0] != 2] <= 0).float().mean() * 100),
        float((det_up[near_band == 0] <= 0).float().mean() * 100),
        float((det[mask[0, 0] == 2] <= 0).float().mean() * 100),
    ]
    return dict(
        epe_mm=round(epe, 3), folds_percent=[round(f, 3) for f in folds], rigidity=float(rigidity_error(ddf, mask, 3.0))
    )


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    case = load_case()
    print(json.dumps({"config": "identity", **evaluate(case, torch.zeros_like(case["true"]))}), flush=True)
    for kwargs in [json.loads(a) for a in argv] or [{}]:
        start = time.perf_counter()
        ddf, _ = refine_pair(
            case["fixed"],
            case["moving"],
            (3, 3, 3),
            reg_mask=case["mask"],
            normals=case["normals"],
            wall_side=case["side"],
            **kwargs,
        )
        result = {"config": kwargs, "seconds": round(time.perf_counter() - start, 1), **evaluate(case, ddf)}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
