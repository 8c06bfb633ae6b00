"""MIND-SSC: modality independent neighbourhood descriptor, self-similarity context (Heinrich et al., 2013).

For every voxel x the descriptor has 12 channels, one per pair (p, q) of points of the six-neighbourhood
{+-d e_k} (d = ``dilation`` voxels) that are not opposite each other (the 12 edges of the octahedron):

    D_pq(x) = patch mean over |y - x| <= r of (I(y + p) - I(y + q))^2       (box filter, r = ``radius``)
    D'(x)   = D(x) - min_pq D_pq(x)
    V(x)    = mean_pq D'_pq(x), clamped to [1e-3, 1e3] x its mean over the volume
    MIND(x) = exp(-D'(x) / V(x)), divided by its maximum over the 12 channels

Dividing by the local variance estimate V makes the descriptor invariant to an affine intensity change a I + b
(a > 0) exactly and robust to monotone intensity maps; comparing descriptors by their mean squared difference is
the similarity used by many Learn2Reg CT methods. Self-similarity *context* compares the neighbours with each
other, never with the centre voxel, which makes it less sensitive to noise at the centre.

Spacing: with ``spacing`` given, the offsets and the patch radius are set per axis in mm (``dilation`` and
``radius`` count voxels of the finest axis), so that anisotropic grids see roughly isotropic neighbourhoods.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.utils import LossReduction
from torch import nn
from torch.nn import functional as F

__all__ = ["mind_ssc", "MINDSSCLoss", "SSC_PAIRS"]

# six-neighbourhood offsets (unit, per axis) and the 12 non-opposite pairs of them
_SIX = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
SSC_PAIRS = tuple((i, j) for i in range(6) for j in range(i + 1, 6) if i // 2 != j // 2)


def _per_axis(value: int, spacing: Sequence[float] | None) -> tuple[int, int, int]:
    """``value`` voxels of the finest axis, as whole voxels per axis (>= 1 if value >= 1)."""
    if spacing is None:
        return (int(value),) * 3
    s = [float(x) for x in spacing]
    if len(s) != 3 or min(s) <= 0:
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing}")
    return tuple(max(1 if value >= 1 else 0, int(round(value * min(s) / x))) for x in s)


def _box_filter(x: torch.Tensor, radius: Sequence[int]) -> torch.Tensor:
    """Mean over a (2r+1)^3 box, replicate padding, separable: (B, C, *S) -> same shape."""
    for axis, r in enumerate(radius):
        if r <= 0:
            continue
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        k = [1, 1, 1]
        k[axis] = 2 * r + 1
        x = F.avg_pool3d(F.pad(x, pad, mode="replicate"), kernel_size=tuple(k), stride=1)
    return x


def mind_ssc(
    image: torch.Tensor, radius: int = 1, dilation: int = 2, spacing: Sequence[float] | None = None
) -> torch.Tensor:
    """MIND-SSC descriptor of a (B, 1, X, Y, Z) image: (B, 12, X, Y, Z), values in (0, 1], differentiable.

    Args:
        image: (B, 1, X, Y, Z) float image.
        radius: patch radius (box filter), voxels (of the finest axis when ``spacing`` is given).
        dilation: distance of the six neighbours from the centre, voxels (idem).
        spacing: optional voxel size (mm) per axis, for per-axis offsets and radii.
    """
    if image.ndim != 5 or image.shape[1] != 1:
        raise ValueError(f"mind_ssc expects a (B, 1, X, Y, Z) image, got shape {tuple(image.shape)}")
    if radius < 0 or dilation < 1:
        raise ValueError(f"need radius >= 0 and dilation >= 1, got radius={radius}, dilation={dilation}")
    dil, rad = _per_axis(dilation, spacing), _per_axis(radius, spacing)
    size = image.shape[2:]
    pad = []
    for d in reversed(dil):
        pad += [d, d]
    padded = F.pad(image, pad, mode="replicate")

    def shifted(k: int) -> torch.Tensor:
        idx = [slice(None), slice(None)]
        for axis in range(3):
            start = dil[axis] + _SIX[k][axis] * dil[axis]
            idx.append(slice(start, start + size[axis]))
        return padded[tuple(idx)]

    shifts = [shifted(k) for k in range(6)]
    ssd = torch.cat([(shifts[i] - shifts[j]).square() for i, j in SSC_PAIRS], dim=1)
    ssd = _box_filter(ssd, rad)
    ssd = ssd - ssd.min(dim=1, keepdim=True).values
    var = ssd.mean(dim=1, keepdim=True)
    mean_var = var.mean(dim=(2, 3, 4), keepdim=True)
    tiny = torch.finfo(var.dtype).tiny
    var = torch.maximum(torch.minimum(var, mean_var * 1000.0), mean_var * 0.001).clamp_min(tiny)
    mind = torch.exp(-ssd / var)
    return mind / mind.max(dim=1, keepdim=True).values


class MINDSSCLoss(nn.Module):
    """Mean squared difference of the MIND-SSC descriptors of ``pred`` and ``target`` (MONAI-style loss).

    Args:
        radius, dilation: see :func:`mind_ssc`.
        reduction: ``"mean"`` (scalar), ``"sum"`` (scalar) or ``"none"`` ((B, 1, X, Y, Z), channel mean).
        spacing: optional voxel size (mm) for :func:`mind_ssc`.
    """

    def __init__(
        self,
        radius: int = 1,
        dilation: int = 2,
        reduction: LossReduction | str = LossReduction.MEAN,
        spacing: Sequence[float] | None = None,
    ):
        super().__init__()
        self.radius, self.dilation, self.spacing = radius, dilation, spacing
        self.reduction = LossReduction(reduction).value

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target: (B, 1, X, Y, Z) -> scalar (or (B, 1, X, Y, Z) with ``reduction="none"``)."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
        diff = (
            (
                mind_ssc(pred, self.radius, self.dilation, self.spacing)
                - mind_ssc(target, self.radius, self.dilation, self.spacing)
            )
            .square()
            .mean(dim=1, keepdim=True)
        )
        if self.reduction == LossReduction.MEAN.value:
            return diff.mean()
        if self.reduction == LossReduction.SUM.value:
            return diff.sum()
        return diff
