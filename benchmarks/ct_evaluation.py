"""The CT benchmark's evaluation (:mod:`benchmarks.benchmark_ct_refine`, :mod:`benchmarks.benchmark_walls`): the
regions of a known-motion case from its TRUE geometry and every metric of one field on them, as the benchmark's
docstring lists them. Fields are (3, X, Y, Z) in voxels of the fixed grid, ``warped(x) = moving(x + u(x))``."""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.blocks import Warp
from scipy import ndimage as ndi

from scripts.evaluation.metrics import rigidity_error
from scripts.evaluation.motion_metrics import endpoint_error, sliding_jump_ratio
from scripts.losses.mechanics import jacobian_determinant
from scripts.synthesis.breathing import bone_ids, cavity_ids

__all__ = ["batched", "body_mask", "case_regions", "evaluate"]


def batched(a: np.ndarray) -> torch.Tensor:
    """(1, *a.shape) tensor of the array."""
    return torch.from_numpy(np.ascontiguousarray(a))[None]


def body_mask(image: np.ndarray, threshold: float = -500.0) -> np.ndarray:
    """Largest component of HU > threshold, holes filled slice by slice along the last axis."""
    labels, n = ndi.label(image > threshold)
    if n == 0:
        return np.zeros(image.shape, bool)
    body = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return np.stack([ndi.binary_fill_holes(body[..., k]) for k in range(body.shape[-1])], axis=-1)


def _dice(a: np.ndarray, b: np.ndarray, labels) -> float:
    values = []
    for lab in labels:
        x, y = a == lab, b == lab
        if x.sum() >= 50:
            values.append(2.0 * (x & y).sum() / (x.sum() + y.sum()))
    return float(np.mean(values)) if values else float("nan")


def case_regions(case: dict, band_mm: float) -> dict[str, np.ndarray]:
    """Evaluation regions (bool (X, Y, Z)) from the TRUE geometry: body, organs, bones, band around the wall, the body
    outside the cavity (bones excluded), and the body and the band seen from the moving image."""
    cav, spacing = case["cavity"], case["spacing"]
    body = body_mask(case["fixed"])
    d_in = ndi.distance_transform_edt(cav, sampling=spacing)
    d_out = ndi.distance_transform_edt(~cav, sampling=spacing)
    band = ((cav & (d_in <= band_mm)) | (~cav & (d_out <= band_mm))) & body
    organs = np.isin(case["fixed_seg"], cavity_ids()) & cav
    # body_seen: the body voxels whose true correspondence x + u(x) lies inside the moving image (no method can
    # recover the rest: what moved in from outside the field of view, a slab as deep as the motion at its ends)
    target = np.stack(np.meshgrid(*[np.arange(n) for n in cav.shape], indexing="ij")) + case["ddf"]
    inside = np.all((target >= 0) & (target <= np.array(cav.shape)[:, None, None, None] - 1), axis=0)
    outside = body & ~cav & ~case["bones"]
    return {
        "body": body,
        "organs": organs,
        "bones": case["bones"],
        "band": band,
        "outside": outside,
        "body_seen": body & inside,
        "band_seen": band & inside,
    }


def evaluate(
    ddf: np.ndarray, case: dict, regions: dict[str, np.ndarray], own_band: np.ndarray | None = None
) -> dict[str, float]:
    """All metrics of one field (see the module docstring); ``own_band``: the sliding band the method was given
    (fold % outside it and inside it; outside: the whole grid for a method without one)."""
    spacing = [float(s) for s in case["spacing"]]
    pred, true = batched(ddf).float(), batched(case["ddf"]).float()
    out: dict[str, float] = {}
    for name, mask in regions.items():
        epe = endpoint_error(pred, true, batched(mask)[None], spacing)
        out[f"epe_{name}"], out[f"epe95_{name}"] = float(epe["epe_mean"][0]), float(epe["epe_p95"][0])
    warped = Warp(mode="nearest", padding_mode="zeros")(batched(case["moving_seg"].astype(np.float32))[None], pred)
    warped = warped[0, 0].round().numpy().astype(int)
    seg = case["fixed_seg"].astype(int)
    # the share of the organs' true motion that the field recovers along it: sum(p . t) / sum(|t|^2), in mm
    mm = torch.tensor(spacing, dtype=torch.float32).view(3, 1, 1, 1)
    organs = torch.from_numpy(regions["organs"])
    p_mm, t_mm = (pred[0] * mm)[:, organs], (true[0] * mm)[:, organs]
    out["motion_organs"] = float((p_mm * t_mm).sum() / (t_mm * t_mm).sum().clamp_min(1e-12))
    out["dice_organs"] = _dice(seg, warped, [i for i in cavity_ids() if (seg == i).any()])
    out["dice_bones"] = _dice(seg, warped, [i for i in bone_ids() if (seg == i).any()])
    out["rigidity"] = float(rigidity_error(pred, batched(case["bones"].astype(np.float32))[None], spacing)[0])
    slip = sliding_jump_ratio(pred, true, batched(case["wall"])[None], batched(case["normals"]), spacing)
    out["slip"] = float(slip["slip_ratio"][0])
    if "body_seen" in regions:
        seen = batched(case["wall"] & regions["body_seen"])[None]
        out["slip_seen"] = float(
            sliding_jump_ratio(pred, true, seen, batched(case["normals"]), spacing)["slip_ratio"][0]
        )
    det = jacobian_determinant(pred)[0].numpy()
    out["fold_pct"] = float(100.0 * (det <= 0).mean())
    off = ~ndi.binary_dilation(case["wall"])
    out["fold_pct_off_band"] = float(100.0 * (det[off] <= 0).mean())
    own = np.ones(det.shape, bool) if own_band is None else ~own_band
    out["fold_pct_off_own_band"] = float(100.0 * (det[own] <= 0).mean())
    out["fold_voxels_off_own_band"] = float((det[own] <= 0).sum())
    out["fold_pct_in_own_band"] = float(100.0 * (det[~own] <= 0).mean()) if (~own).any() else 0.0  # the slip's folds
    return out
