"""Known-motion metrics: endpoint error against a true field and the sliding jump ratio across an interface.

Conventions (as the rest of the bundle): a displacement field ``ddf`` is (B, D, *S), D = 2 or 3, channel k along
array axis k, mapping fixed-grid points to moving points (``warped(x) = moving(x + u(x))``). Fields are in voxels
and converted to mm with ``spacing`` (float, (D,) or (B, D) mm per array axis); with ``spacing=None`` the voxel is
the unit (the synthetic sets: "1 mm" voxels). ``units="mm"`` says the fields are already in mm (then ``spacing``
still places the sampling points of the jump ratio). Interface normals (B, D, *S) or (D, *S) are unit vectors in
the physical (mm) frame, component k along array axis k (:func:`scripts.regions.masks.compute_normals`).

**Endpoint error** (:func:`endpoint_error`): ``|u_pred(x) - u_true(x)|`` in mm over the voxels of a mask; per pair
its mean and 95th percentile (linear interpolation, as ``torch.quantile``).

**Sliding jump ratio** (:func:`sliding_jump_ratio`). For every interface voxel x (``interface_mask``) with unit
normal n, the field is sampled (trilinear, border padding) on both sides along n at distances h and 2h (mm), and
each side is extrapolated linearly back to x::

    u+(x) = 2 u(x + h n) - u(x + 2h n),    u-(x) = 2 u(x - h n) - u(x - 2h n)
    J(x)  = (I - n nᵀ) (u+(x) - u-(x))     (tangential jump, mm)

The one-sided extrapolation makes J exactly 0 for any field linear across the interface (a translation, a rotation,
a uniform shear: smooth motion is not slip) and exactly the slip for a field constant on either side; whatever
changes within ~h of the interface counts as slip (h is the resolution of the metric). With
``extrapolate=False`` the plain difference ``u(x + h n) - u(x - h n)`` is used instead (biased by 2h · du/dn).
With J_t from the true field and J_p from the predicted one, over the voxels V where ``|J_t| >= min_jump_mm``::

    slip_ratio = sum_V <J_p, J_t / |J_t|> / sum_V |J_t|

i.e. the |J_t|-weighted mean of the per-voxel ratio "predicted jump projected on the true jump direction / true
jump": 1 = the full slip, 0 = none (continuous field), negative = slip the wrong way. Weighting by |J_t| and
thresholding keeps voxels with a vanishing true jump from dominating. Also returned: ``true_jump_mm`` (mean |J_t|
over V) and ``pred_jump_mm`` (mean |J_p| over V); NaN when V is empty. Choose h larger than the interface band's
half-thickness plus one voxel (so the trilinear stencils of x ± h n lie wholly on one side) and 2h within the
objects; default ``2 * max(spacing)``.

:func:`known_motion_metrics` applies both to a batch of the workflows (``pred`` of the network, ``target`` of
:class:`scripts.networks.registration.PrepareRegistrationBatch`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scripts.losses.mechanics import SpacingLike, as_spacing, check_field

__all__ = ["endpoint_error", "sliding_jump_ratio", "known_motion_metrics", "sample_field"]


def _to_mm(ddf: torch.Tensor, spacing: torch.Tensor, units: str) -> torch.Tensor:
    """(B, D, *S) field in mm; ``spacing`` (B, D)."""
    if units not in ("voxel", "mm"):
        raise ValueError(f"units must be 'voxel' or 'mm', got {units!r}")
    if units == "mm":
        return ddf
    return ddf * spacing.view(*spacing.shape, *([1] * (ddf.ndim - 2)))


def _check_pair(pred_ddf: torch.Tensor, true_ddf: torch.Tensor) -> int:
    ndim = check_field(pred_ddf)
    if tuple(true_ddf.shape) != tuple(pred_ddf.shape):
        raise ValueError(f"pred_ddf {tuple(pred_ddf.shape)} and true_ddf {tuple(true_ddf.shape)} differ in shape")
    return ndim


def _mask(mask: torch.Tensor | None, like: torch.Tensor, name: str) -> torch.Tensor:
    """(B, *S) bool from a (B, 1, *S) or (B, *S) mask (all True when None)."""
    shape = (like.shape[0], *like.shape[2:])
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=like.device)
    m = mask[:, 0] if mask.ndim == like.ndim else mask
    if tuple(m.shape) != shape:
        raise ValueError(f"{name} must be (B, 1, *S) or (B, *S) = {shape}, got {tuple(mask.shape)}")
    return m.to(like.device) > 0


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(values, q)`` (linear interpolation) for 1D inputs of any size (torch's stops at 2^24)."""
    ordered = values.flatten().sort().values
    pos = q * (ordered.numel() - 1)
    lo = int(pos)
    hi = min(lo + 1, ordered.numel() - 1)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])


def endpoint_error(
    pred_ddf: torch.Tensor,
    true_ddf: torch.Tensor,
    mask: torch.Tensor | None = None,
    spacing: SpacingLike = None,
    units: str = "voxel",
) -> dict[str, torch.Tensor]:
    """Endpoint error |u_pred - u_true| (mm) over a mask, per pair.

    Args:
        pred_ddf, true_ddf: (B, D, *S) displacement fields (voxels, or mm with ``units="mm"``).
        mask: (B, 1, *S) or (B, *S), nonzero where to measure (all voxels if None).
        spacing: mm per array axis: float, (D,) or (B, D); None = voxel units.

    Returns:
        ``epe_mean`` and ``epe_p95`` (B,) mm; NaN for a pair with an empty mask.
    """
    ndim = _check_pair(pred_ddf, true_ddf)
    batch = pred_ddf.shape[0]
    sp = as_spacing(spacing, ndim, batch, pred_ddf.float())
    diff = _to_mm(pred_ddf.float() - true_ddf.float().to(pred_ddf.device), sp, units)
    error = diff.norm(dim=1)  # (B, *S)
    m = _mask(mask, pred_ddf, "mask")
    mean = torch.full((batch,), float("nan"), device=pred_ddf.device)
    p95 = mean.clone()
    for b in range(batch):
        values = error[b][m[b]]
        if values.numel():
            mean[b] = values.mean()
            p95[b] = _quantile(values, 0.95)
    return {"epe_mean": mean, "epe_p95": p95}


def sample_field(field: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear (bilinear in 2D) samples of one field at voxel coordinates, border padding.

    Args:
        field: (C, *S) values on the grid.
        points: (N, D) voxel coordinates, column k along array axis k (voxel i at coordinate i).

    Returns:
        (N, C).
    """
    ndim = points.shape[-1]
    if field.ndim != ndim + 1:
        raise ValueError(f"field must be (C, *S) with {ndim} spatial axes, got {tuple(field.shape)}")
    size = torch.tensor(field.shape[1:], dtype=points.dtype, device=points.device)
    norm = 2.0 * points / (size - 1).clamp(min=1) - 1.0  # align_corners=True
    grid = norm.flip(-1).view(1, -1, *([1] * (ndim - 1)), ndim)  # grid_sample wants (x, y, z) = axes (last .. 0)
    out = F.grid_sample(field[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(field.shape[0], -1).T


def _jumps(field_mm: torch.Tensor, points: torch.Tensor, offset: torch.Tensor, extrapolate: bool) -> torch.Tensor:
    """(N, D) jump u+ - u- of one (D, *S) mm field at points (N, D) voxels; offset (N, D) = h n in voxels."""
    if extrapolate:
        plus = 2 * sample_field(field_mm, points + offset) - sample_field(field_mm, points + 2 * offset)
        minus = 2 * sample_field(field_mm, points - offset) - sample_field(field_mm, points - 2 * offset)
        return plus - minus
    return sample_field(field_mm, points + offset) - sample_field(field_mm, points - offset)


def sliding_jump_ratio(
    pred_ddf: torch.Tensor,
    true_ddf: torch.Tensor,
    interface_mask: torch.Tensor,
    normals: torch.Tensor,
    spacing: SpacingLike = None,
    h_mm: float | None = None,
    min_jump_mm: float = 0.5,
    extrapolate: bool = True,
    units: str = "voxel",
) -> dict[str, torch.Tensor]:
    """Predicted over true tangential displacement jump across a sliding interface (see the module docstring).

    Args:
        pred_ddf, true_ddf: (B, D, *S) displacement fields (voxels, or mm with ``units="mm"``).
        interface_mask: (B, 1, *S) or (B, *S), nonzero on the interface voxels (e.g. the sliding band).
        normals: (B, D, *S) or (D, *S) unit normals in the mm frame on the interface voxels (their sign is free:
            flipping n flips both jumps). Interface voxels with a zero normal are skipped.
        spacing: mm per array axis: float, (D,) or (B, D); None = voxel units.
        h_mm: sampling distance h along the normal, mm (default ``2 * max(spacing)``).
        min_jump_mm: interface voxels whose true jump is below this are left out.
        extrapolate: one-sided linear extrapolation to the interface (default) or the plain difference.

    Returns:
        ``slip_ratio``, ``true_jump_mm``, ``pred_jump_mm`` (B,); NaN for a pair without a true jump.
    """
    ndim = _check_pair(pred_ddf, true_ddf)
    batch, device = pred_ddf.shape[0], pred_ddf.device
    if normals.ndim == ndim + 1:
        normals = normals[None].expand(batch, *normals.shape)
    if tuple(normals.shape) != tuple(pred_ddf.shape):
        raise ValueError(f"normals must be (B, D, *S) = {tuple(pred_ddf.shape)} or (D, *S), got {tuple(normals.shape)}")
    if min_jump_mm <= 0:
        raise ValueError(f"min_jump_mm must be positive, got {min_jump_mm}")
    sp = as_spacing(spacing, ndim, batch, pred_ddf.float())
    pred_mm = _to_mm(pred_ddf.float(), sp, units)
    true_mm = _to_mm(true_ddf.float().to(device), sp, units)
    normals = normals.float().to(device)
    m = _mask(interface_mask, pred_ddf, "interface_mask") & (normals.norm(dim=1) > 0.5)
    nan = torch.full((batch,), float("nan"), device=device)
    ratio, true_jump, pred_jump = nan.clone(), nan.clone(), nan.clone()
    for b in range(batch):
        h = float(2 * sp[b].max()) if h_mm is None else float(h_mm)
        if h <= 0:
            raise ValueError(f"h_mm must be positive, got {h_mm}")
        idx = torch.nonzero(m[b]).float()  # (N, D) voxel coordinates
        if not idx.shape[0]:
            continue
        n = normals[b][(slice(None), *m[b].nonzero(as_tuple=True))].T  # (N, D) mm frame
        n = n / n.norm(dim=1, keepdim=True)
        offset = h * n / sp[b]  # voxels
        tangential = torch.eye(ndim, device=device) - n[:, :, None] * n[:, None, :]  # (N, D, D)
        j_true = (tangential @ _jumps(true_mm[b], idx, offset, extrapolate)[:, :, None])[..., 0]
        j_pred = (tangential @ _jumps(pred_mm[b], idx, offset, extrapolate)[:, :, None])[..., 0]
        size = j_true.norm(dim=1)
        valid = size >= min_jump_mm
        if not bool(valid.any()):
            continue
        direction = j_true[valid] / size[valid, None]
        ratio[b] = (j_pred[valid] * direction).sum() / size[valid].sum()
        true_jump[b] = size[valid].mean()
        pred_jump[b] = j_pred[valid].norm(dim=1).mean()
    return {"slip_ratio": ratio, "true_jump_mm": true_jump, "pred_jump_mm": pred_jump}


def known_motion_metrics(
    pred: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    h_mm: float | None = None,
    min_jump_mm: float = 0.5,
) -> dict[str, torch.Tensor]:
    """The known-motion metrics of a batch: name -> (B,); empty when the batch has no ``true_ddf``.

    Args:
        pred: ``ddf`` (B, D, *S) voxels (:class:`scripts.networks.registration.RegistrationNet`).
        target: ``true_ddf`` (B, D, *S) voxels; optional ``object_mask`` (B, 1, *S) (where the endpoint error is
            measured; all voxels if absent), ``spacing`` (B, D) mm, and ``interface_mask`` (B, 1, *S) with
            ``normals`` (B, D, *S) for the jump ratio.

    Returns:
        ``epe_mean``, ``epe_p95`` (mm), ``epe_mean_before`` (mm, the identity field's: mean true displacement) and,
        with ``interface_mask``, ``slip_ratio``, ``true_jump_mm``.
    """
    if "true_ddf" not in target:
        return {}
    ddf = pred["ddf"].float()
    true_ddf = target["true_ddf"].float().to(ddf.device)
    spacing, mask = target.get("spacing"), target.get("object_mask")
    out = endpoint_error(ddf, true_ddf, mask, spacing)
    out["epe_mean_before"] = endpoint_error(torch.zeros_like(ddf), true_ddf, mask, spacing)["epe_mean"]
    if "interface_mask" in target:
        if "normals" not in target:
            raise KeyError("interface_mask needs normals (B, D, *S) in the batch for the slip ratio")
        jump = sliding_jump_ratio(
            ddf, true_ddf, target["interface_mask"], target["normals"], spacing, h_mm, min_jump_mm
        )
        out["slip_ratio"], out["true_jump_mm"] = jump["slip_ratio"], jump["true_jump_mm"]
    return out
