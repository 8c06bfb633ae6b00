"""Registration quality metrics (paper section 6.4), per pair and as MONAI/Ignite metrics.

Per-pair functions return a (B,) tensor; a value that is undefined for a pair (e.g. an empty
rigid region) is NaN, which MONAI's metric reduction skips. The ``*Metric`` classes are MONAI
``CumulativeIterationMetric``s: use them directly, or in an evaluator through
``monai.handlers.IgniteMetricHandler`` with an ``output_transform`` returning ``(y_pred, y)``.

- % folding voxels: 100 * #(det J <= 0) / #voxels (:func:`fold_percents`: off a sliding band and in it apart, as
  the refinement reports them).
- std of log det J (log of the clipped determinant, as in the loss) over the Jacobian region
  (``reg_mask != 2``: outside the sliding interfaces).
- rigidity error: mean of ||E||_F^2 over the rigid region (``reg_mask == 1``).
- MSE and global NCC of the warped moving image against the fixed one.
- Dice per label of integer label maps (:func:`dice_per_label`, labels absent from the fixed map are skipped, and
  Dice itself is reported, not 1 - Dice); :func:`dice` is its mean per pair.

These are the only implementations of fold %, std log J and Dice in the bundle: inference computes its statistics
on a det J map with :func:`folding_from_det` and :func:`std_log_from_det`.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction

from scripts.losses.mechanics import (
    SpacingLike,
    gradient_components,
    jacobian_det,
    jacobian_determinant,
    log_jacobian,
    strain_energy,
)
from scripts.regions.labels import RIGID, SLIDING

__all__ = [
    "pair_metrics",
    "dice",
    "dice_per_label",
    "folding_from_det",
    "std_log_from_det",
    "det_map_statistics",
    "folding_percentage",
    "fold_percents",
    "std_log_jacobian",
    "rigidity_error",
    "mse",
    "ncc",
    "FoldingMetric",
    "LogJacobianStdMetric",
    "RigidityErrorMetric",
    "NCCMetric",
]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _region(reg_mask: torch.Tensor | None, like: torch.Tensor, keep) -> torch.Tensor:
    """Boolean (B, N) region of a (B, 1, *S) label map, all voxels when the map is None."""
    if reg_mask is None:
        return torch.ones_like(_flat(like), dtype=torch.bool)
    labels = _flat(reg_mask.round())
    if labels.shape != _flat(like).shape:
        raise ValueError(f"reg_mask {tuple(reg_mask.shape)} is not on the field's grid {tuple(like.shape)}")
    return keep(labels)


def _masked_mean(values: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    count = region.sum(dim=1)
    total = torch.where(region, values, torch.zeros_like(values)).sum(dim=1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def folding_from_det(det: torch.Tensor) -> torch.Tensor:
    """Percentage of voxels with det J <= 0 of (B, ...) det J maps: (B,)."""
    return 100.0 * (_flat(det) <= 0).to(det.dtype).mean(dim=1)


def std_log_from_det(det: torch.Tensor, reg_mask: torch.Tensor | None = None, eps: float = 1e-9) -> torch.Tensor:
    """Std of log max(det J, eps) of (B, ...) det J maps over the voxels not labelled sliding in ``reg_mask``
    (same shape; None: all voxels): (B,)."""
    logj = _flat(log_jacobian(det, eps))
    region = _region(reg_mask, det, lambda lab: lab != SLIDING)
    mean = _masked_mean(logj, region)
    return _masked_mean((logj - mean[:, None]).square(), region).sqrt()


def det_map_statistics(det: torch.Tensor, eps: float = 1e-9, step: int = 2**22, overwrite: bool = False) -> dict:
    """Summary of ONE det J map of any size, in chunks of ``step`` voxels (float64 sums, two passes), without
    full-size temporaries: ``folding_percent`` and ``std_log_jacobian`` (the definitions of :func:`folding_from_det`
    and :func:`std_log_from_det` over all voxels) and ``jacobian_det``: min, max, mean, std, p1, p99. With
    ``overwrite`` the percentiles are taken in place (``det`` is scrambled: pass a map you no longer need)."""
    flat = det.reshape(-1)
    n = flat.numel()
    folds, total, low, high, log_total = 0, 0.0, float("inf"), float("-inf"), 0.0
    for a in range(0, n, step):
        part = flat[a : a + step]
        folds += int((part <= 0).sum())
        total += float(part.double().sum())
        low, high = min(low, float(part.min())), max(high, float(part.max()))
        log_total += float(log_jacobian(part, eps).double().sum())
    mean, log_mean = total / n, log_total / n
    sq, log_sq = 0.0, 0.0
    for a in range(0, n, step):
        part = flat[a : a + step].double()
        sq += float((part - mean).square().sum())
        log_sq += float((log_jacobian(part, eps) - log_mean).square().sum())
    values = flat.cpu().numpy() if overwrite else flat.cpu().numpy().copy()
    p1, p99 = np.percentile(values, [1, 99], overwrite_input=True)
    return {
        "folding_percent": 100.0 * folds / n,
        "jacobian_det": {"min": low, "max": high, "mean": mean, "std": (sq / max(n - 1, 1)) ** 0.5,
                         "p1": float(p1), "p99": float(p99)},  # fmt: skip
        "std_log_jacobian": (log_sq / n) ** 0.5,
    }


def _rigidity(energy: torch.Tensor, reg_mask: torch.Tensor) -> torch.Tensor:
    return _masked_mean(_flat(energy), _region(reg_mask, energy, lambda lab: lab == RIGID))


def folding_percentage(ddf: torch.Tensor, spacing: SpacingLike = None, units: str = "voxel") -> torch.Tensor:
    """Percentage of voxels with det J <= 0, per pair: (B,)."""
    return folding_from_det(jacobian_determinant(ddf, spacing, units))


def fold_percents(ddf: torch.Tensor, reg_mask: torch.Tensor | None) -> tuple[float, float]:
    """(% of the voxels outside the sliding band (all voxels without regions), % of those inside it) where det J <= 0;
    ddf (1, 3, *G), reg_mask (1, 1, *G). Outside the band a fold is a fault; inside it, a slip's (a tangential jump
    is no bijection of the voxel grid at the wall: the true fields of the known-motion cases fold there too)."""
    det = jacobian_determinant(ddf.float())[0]
    band = torch.zeros_like(det, dtype=torch.bool) if reg_mask is None else reg_mask[0, 0].round() == SLIDING
    return tuple(float(folding_from_det(det[m][None])[0]) if bool(m.any()) else 0.0 for m in (~band, band))


def std_log_jacobian(
    ddf: torch.Tensor,
    reg_mask: torch.Tensor | None = None,
    eps: float = 1e-9,
    spacing: SpacingLike = None,
    units: str = "voxel",
) -> torch.Tensor:
    """Standard deviation of log max(det J, eps) over voxels not labelled sliding, per pair: (B,)."""
    return std_log_from_det(jacobian_determinant(ddf, spacing, units), reg_mask, eps)


def rigidity_error(
    ddf: torch.Tensor, reg_mask: torch.Tensor, spacing: SpacingLike = None, units: str = "voxel"
) -> torch.Tensor:
    """Mean ||E||_F^2 over the rigid voxels (``reg_mask == 1``), per pair: (B,), NaN without rigid voxels."""
    return _rigidity(strain_energy(gradient_components(ddf, spacing, units)), reg_mask)


def mse(warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """Mean squared intensity difference per pair: (B,)."""
    return (_flat(warped) - _flat(fixed)).square().mean(dim=1)


def ncc(warped: torch.Tensor, fixed: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Global normalised cross-correlation in [-1, 1] per pair: (B,)."""
    a = _flat(warped) - _flat(warped).mean(dim=1, keepdim=True)
    b = _flat(fixed) - _flat(fixed).mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.square().sum(dim=1).sqrt() * b.square().sum(dim=1).sqrt() + eps)


class _PairMetric(CumulativeIterationMetric):
    """A CumulativeIterationMetric collecting one value per pair, mean-reduced over non-NaN values.

    ``y`` may be the workflow's target dict (:class:`scripts.networks.registration.PrepareRegistrationBatch`): its
    ``reg_mask`` is used as ``y`` and its per-pair ``spacing`` (mm), when present, overrides ``spacing``.
    """

    def __init__(self, spacing: SpacingLike = None, units: str = "voxel"):
        super().__init__()
        self.spacing, self.units = spacing, units

    def __call__(self, y_pred, y=None, **kwargs):
        if isinstance(y, dict):
            kwargs.setdefault("spacing", y.get("spacing"))
            y = y.get("reg_mask")
        return super().__call__(y_pred, y, **kwargs)

    def _spacing(self, spacing: SpacingLike) -> SpacingLike:
        return self.spacing if spacing is None else spacing

    def aggregate(self) -> torch.Tensor:
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("no values to aggregate: call the metric on at least one batch first")
        return do_metric_reduction(data, "mean")[0]


class FoldingMetric(_PairMetric):
    """% folding voxels. ``y_pred``: ddf (B, D, *S); ``y`` unused (or the target dict, for its spacing)."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, spacing=None) -> torch.Tensor:
        return folding_percentage(y_pred, self._spacing(spacing), self.units)[:, None]


class LogJacobianStdMetric(_PairMetric):
    """std log det J outside sliding voxels. ``y_pred``: ddf (B, D, *S); ``y``: reg_mask (B, 1, *S) or None."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, spacing=None) -> torch.Tensor:
        return std_log_jacobian(y_pred, y, spacing=self._spacing(spacing), units=self.units)[:, None]


class RigidityErrorMetric(_PairMetric):
    """Rigidity error over ``reg_mask == 1``. ``y_pred``: ddf (B, D, *S); ``y``: reg_mask (B, 1, *S)."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, spacing=None) -> torch.Tensor:
        return rigidity_error(y_pred, y, self._spacing(spacing), self.units)[:, None]


class NCCMetric(_PairMetric):
    """Global NCC. ``y_pred``: warped image (B, 1, *S); ``y``: fixed image (B, 1, *S)."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, spacing=None) -> torch.Tensor:
        return ncc(y_pred, y)[:, None]


def dice_per_label(warped_label: torch.Tensor, fixed_label: torch.Tensor, num_classes: int = 0) -> torch.Tensor:
    """Dice of every foreground label of two integer label maps of the same shape: (L,) float64 for labels
    1 .. L (L = ``num_classes - 1``, or the largest label present), NaN for a label absent from the fixed map.

    Raises:
        ValueError: negative labels or maps of different shapes.
    """
    f, w = fixed_label.reshape(-1).long(), warped_label.reshape(-1).long()
    if f.shape != w.shape:
        raise ValueError(f"label maps of different shapes: {tuple(warped_label.shape)} vs {tuple(fixed_label.shape)}")
    if f.numel() and (int(f.min()) < 0 or int(w.min()) < 0):
        raise ValueError("label maps must hold non-negative integer labels for Dice")
    size = max(int(num_classes), int(f.max()) + 1 if f.numel() else 1, int(w.max()) + 1 if w.numel() else 1)
    inter = torch.bincount(f[f == w], minlength=size).double()
    nf, nw = torch.bincount(f, minlength=size).double(), torch.bincount(w, minlength=size).double()
    values = torch.where(nf > 0, 2.0 * inter / (nf + nw).clamp_min(1.0), torch.full_like(inter, float("nan")))
    return values[1 : (int(num_classes) if num_classes else size)]


def dice(warped_label: torch.Tensor, fixed_label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean Dice over the foreground labels present in the fixed image, per pair: (B,).

    Args:
        warped_label: (B, 1, *S) integer labels or (B, C, *S) (soft) one-hot, argmax taken.
        fixed_label: (B, 1, *S) integer labels.
    """
    if warped_label.shape[1] > 1:
        warped_label = warped_label.argmax(dim=1, keepdim=True)
    values = [
        torch.nanmean(dice_per_label(w.round(), f.round(), num_classes)) for w, f in zip(warped_label, fixed_label)
    ]
    return torch.stack(values).to(device=fixed_label.device, dtype=torch.get_default_dtype())


def pair_metrics(
    pred: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    num_label_classes: int = 0,
    spacing: SpacingLike = None,
) -> dict[str, torch.Tensor]:
    """Every metric of the paper for a batch of pairs, before and after registration: name -> (B,).

    Args:
        pred: ``ddf`` (B, D, *S) voxels, ``warped`` (B, 1, *S), optional ``warped_label`` (B, C, *S).
        target: ``fixed``, ``moving`` (B, 1, *S), optional ``reg_mask`` (B, 1, *S), ``fixed_label``,
            ``moving_label`` (B, 1, *S) and ``spacing`` (B, D) mm.
        num_label_classes: label classes with background, for Dice (0: no Dice).
    """
    ddf, fixed = pred["ddf"].float(), target["fixed"].float()
    spacing = target.get("spacing", spacing)
    reg_mask = target.get("reg_mask")
    out = {
        "mse_before": mse(target["moving"], fixed),
        "mse": mse(pred["warped"], fixed),
        "ncc_before": ncc(target["moving"], fixed),
        "ncc": ncc(pred["warped"], fixed),
    }
    grad = gradient_components(ddf, spacing)  # one gradient for the three field metrics
    det = jacobian_det(grad)
    out["folding_percent"] = folding_from_det(det)
    out["std_log_jacobian"] = std_log_from_det(det, reg_mask, eps=1e-9)
    if reg_mask is not None:
        out["rigidity_error"] = _rigidity(strain_energy(grad), reg_mask)
    if num_label_classes > 0 and "warped_label" in pred and "fixed_label" in target:
        out["dice_before"] = dice(target["moving_label"], target["fixed_label"], num_label_classes)
        out["dice"] = dice(pred["warped_label"], target["fixed_label"], num_label_classes)
    return out
