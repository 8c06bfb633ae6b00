"""The reference the closed-form losses are tested against: the full regulariser computed with per-voxel SVDs, as
the paper's reference code does (used by tests/test_losses.py and benchmarks/benchmark_losses.py)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from scripts.losses.biomechanical import region_mean
from scripts.losses.mechanics import SpacingLike, linear_strain, spatial_gradient
from scripts.regions.labels import JACOBIAN, RIGID, SLIDING

__all__ = ["svd_biomechanical_loss", "make_inputs"]


def svd_biomechanical_loss(
    ddf: torch.Tensor,
    reg_mask: torch.Tensor,
    normals: torch.Tensor,
    spacing: SpacingLike = None,
    eps: float = 1e-9,
) -> torch.Tensor:
    """The full regulariser (rigidity + shearing + log-Jacobian) computed with SVDs, as the reference code does.

    Same definitions as :class:`scripts.losses.biomechanical.BiomechanicalLoss` (``rigidity_shearing_jacobian``),
    but the squared eigenvalues come from ``torch.linalg.svdvals`` of explicit per-voxel 3x3 strain
    tensors and the determinant from ``torch.linalg.det``. For tests and this benchmark only.
    """
    grad = spatial_gradient(ddf, spacing)  # (B, 3, 3, *S)
    mats = grad.movedim((1, 2), (-2, -1))  # (B, *S, 3, 3)
    strain = linear_strain(grad).movedim((1, 2), (-2, -1))
    n = normals.movedim(1, -1)  # (B, *S, 3)
    g = torch.einsum("...ml,...m->...l", mats, n)
    strain_n = 0.5 * (n[..., :, None] * g[..., None, :] + g[..., :, None] * n[..., None, :])
    labels = reg_mask[:, 0].round()
    eye = torch.eye(3, dtype=ddf.dtype, device=ddf.device)
    det = torch.linalg.det(mats + eye)
    rigid = torch.linalg.svdvals(strain).square().sum(-1)
    shear = torch.linalg.svdvals(strain_n).square().sum(-1)
    jac = torch.log(torch.clamp(det, min=eps)).square()
    return (
        region_mean(jac, (labels == JACOBIAN).to(ddf.dtype))
        + region_mean(rigid, (labels == RIGID).to(ddf.dtype))
        + region_mean(shear, (labels == SLIDING).to(ddf.dtype))
    )


def make_inputs(shape: tuple[int, int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A smooth random ddf (1, 3, *shape) in voxels, a reg_mask with a rigid block, a sliding slab and
    the rest Jacobian (1, 1, *shape), and unit normals on the slab (1, 3, *shape)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 3, *[max(2, s // 8) for s in shape], generator=gen)
    ddf = 2.0 * F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)
    reg_mask = torch.zeros(1, 1, *shape)
    x, y, z = shape
    reg_mask[:, :, x // 4 : x // 2, y // 4 : 3 * y // 4, z // 4 : 3 * z // 4] = RIGID
    reg_mask[:, :, 5 * x // 8 : 5 * x // 8 + 2, :, :] = SLIDING
    normals = torch.zeros(1, 3, *shape)
    tilted = torch.tensor([1.0, 0.3, -0.2])
    normals[:, :, 5 * x // 8 : 5 * x // 8 + 2] = (tilted / tilted.norm()).reshape(1, 3, 1, 1, 1)
    return ddf, reg_mask, normals
