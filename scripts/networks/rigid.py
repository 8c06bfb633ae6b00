"""A rigid pre-alignment of the moving image on the bones, before the network (inference; training with
``--rigid_prealign true``).

A CT pair from two sessions (or two breath-holds with the patient moved on the table) differs by a rigid offset of
the whole patient plus the motion inside. The network has not learnt the offset: trained on generated pairs whose
offsets (<= 4 mm, <= 2 degrees) average to none, it does not move the bones (their endpoint error on the generated
held-out cases: 4.68 mm without it, 4.67 mm with it; docs/benchmark_results/ct_network_both_ways/). Classical
pipelines align rigidly (or affinely) before the deformable step; so does :class:`RegistrationNet` when given a
:class:`RigidPrealign`. Training may align its pairs the same way (``configs/train.json``, ``rigid_prealign``): the
network then learns the motion left after the alignment, which is what it is given at inference. The map is found
without gradients to the network (the images are detached); the loss sees the composed field.

**Why the bones.** A rigid fit to the whole body absorbs part of the breathing (the organs' slide along the body
axis) into a translation that moves the bones off (on the held-out CT breathing with no offset: more than 4 mm along
the body axis; the fit on the bones, less than 2.5 mm; tests/test_rigid_prealign.py). The bones move with the
patient and hardly with the breath, so the fit weighs the bright voxels (``bone_threshold``, on the network's input
scale) and the rest of the body 1000x less (for a scan with no bone).

**How.** Mean squared difference between the fixed image and the moving image resampled through the rigid map
M(p) = R (p - c) + c + t (p in mm on the network grid, c its centre; ``moving'(p) = moving(M(p))``), weighted as
above, minimised by L-BFGS over (rotation vector, translation) on a pyramid of the network grid (average pooling by
``levels``). Everything in mm (``spacing`` of the network grid): a rotation in voxel units would shear an
anisotropic grid. With ``d`` the network's field between fixed and the aligned moving image, the field between
fixed and moving is ``M(x + d(x)) - x`` (:func:`compose_rigid`): exact, no resampling of the rigid part.

Shapes: images (B, 1, *S); spacing (B, 3) mm or (3,); fields (B, 3, *S) in voxels along the array axes (MONAI
``Warp``'s convention, ``fixed(x) = moving(x + ddf(x))``); rotation (B, 3, 3); translation (B, 3) mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Warp
from torch import nn

__all__ = ["RigidPrealign", "rotation_matrix", "inverse_rigid", "rigid_sampling_field", "compose_rigid"]

BODY_THRESHOLD = 0.05  # on the network's input scale: above air (-1120 HU through the CT window [-1200, 400])
BODY_WEIGHT = 1e-3  # the body's weight against a bone voxel's (the fit of a scan with no bone)


def rotation_matrix(vector: torch.Tensor) -> torch.Tensor:
    """Rodrigues: rotation vectors (B, 3) (radians, axis times angle) -> matrices (B, 3, 3); exact at 0."""
    theta = vector.norm(dim=1).clamp_min(1e-12)[:, None, None]
    k = torch.zeros(vector.shape[0], 3, 3, dtype=vector.dtype, device=vector.device)
    x, y, z = vector.unbind(1)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 0], k[:, 1, 2], k[:, 2, 0], k[:, 2, 1] = -z, y, z, -x, -y, x
    k = k / theta
    eye = torch.eye(3, dtype=vector.dtype, device=vector.device).expand_as(k)
    return eye + torch.sin(theta) * k + (1 - torch.cos(theta)) * (k @ k)


def _points(shape: Sequence[int], spacing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p (B, 3, *S) mm of each voxel, c (B, 3, 1, 1, 1) the grid's centre in mm)."""
    axes = [torch.arange(n, dtype=spacing.dtype, device=spacing.device) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]
    sp = spacing.reshape(-1, 3, 1, 1, 1)
    centre = (torch.as_tensor(shape, dtype=spacing.dtype, device=spacing.device) - 1).reshape(1, 3, 1, 1, 1) / 2
    return grid * sp, centre * sp


def _mapped(rotation: torch.Tensor, translation: torch.Tensor, q: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """M(q) = R (q - c) + c + t for points q (B, 3, *S) mm."""
    return torch.einsum("bij,bj...->bi...", rotation, q - centre) + centre + translation.reshape(-1, 3, 1, 1, 1)


def inverse_rigid(rotation: torch.Tensor, translation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The map M^-1 as (R^T, -R^T t): M^-1(p) = R^T (p - c) + c - R^T t, about the same centre."""
    inverse = rotation.transpose(1, 2)
    return inverse, -(inverse @ translation[..., None])[..., 0]


def rigid_sampling_field(
    rotation: torch.Tensor, translation: torch.Tensor, shape: Sequence[int], spacing: torch.Tensor
) -> torch.Tensor:
    """M(p) - p in voxels (B, 3, *S): ``Warp(image, field)(p) = image(M(p))``."""
    p, centre = _points(shape, spacing)
    return (_mapped(rotation, translation, p, centre) - p) / spacing.reshape(-1, 3, 1, 1, 1)


def compose_rigid(
    rotation: torch.Tensor, translation: torch.Tensor, ddf: torch.Tensor, spacing: torch.Tensor
) -> torch.Tensor:
    """M(x + d(x)) - x in voxels (B, 3, *S), from a field ``ddf`` (voxels): with ``fixed(x) = image(x + d(x))`` and
    ``image(p) = moving(M(p))``, the field from fixed to moving."""
    sp = spacing.reshape(-1, 3, 1, 1, 1)
    p, centre = _points(ddf.shape[2:], spacing)
    return (_mapped(rotation, translation, p + ddf * sp, centre) - p) / sp


class RigidPrealign(nn.Module):
    """The rigid map that best aligns the moving image's bones with the fixed image's (module docstring).

    Args:
        bone_threshold: the bones' lowest value on the network's input scale (configs: 250 HU through the model's HU
            window).
        levels: pooling factors of the pyramid, coarse to fine.
        iterations: L-BFGS iterations per level (strong Wolfe line search; the parameters in units of 0.1 rad and
            10 mm, so that both move alike).
    """

    def __init__(
        self,
        bone_threshold: float = 0.9,
        levels: Sequence[int] = (4, 2, 1),
        iterations: Sequence[int] = (20, 20, 10),
    ):
        super().__init__()
        if len(levels) != len(iterations) or not levels or min(levels) < 1 or min(iterations) < 0:
            raise ValueError(
                f"levels {tuple(levels)} and iterations {tuple(iterations)}: one count >= 0 per level >= 1"
            )
        self.bone_threshold, self.levels, self.iterations = float(bone_threshold), tuple(levels), tuple(iterations)
        self.warp = Warp(mode="bilinear", padding_mode="border")

    @torch.enable_grad()
    def forward(
        self, fixed: torch.Tensor, moving: torch.Tensor, spacing: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """fixed, moving (B, 1, *S); spacing (B, 3) or (3,) mm -> (rotation (B, 3, 3), translation (B, 3) mm)."""
        if fixed.ndim != 5 or fixed.shape[1] != 1 or moving.shape != fixed.shape:
            raise ValueError(f"fixed and moving must be (B, 1, X, Y, Z) alike, got {tuple(fixed.shape)} and "
                             f"{tuple(moving.shape)}")  # fmt: skip
        fixed, moving = fixed.detach().float(), moving.detach().float()
        spacing = torch.as_tensor(spacing, dtype=fixed.dtype, device=fixed.device).reshape(-1, 3)
        spacing = spacing.expand(fixed.shape[0], 3)
        params = torch.zeros(fixed.shape[0], 6, dtype=fixed.dtype, device=fixed.device)  # (0.1 rad, 10 mm)
        for level, steps in zip(self.levels, self.iterations):
            f = F.avg_pool3d(fixed, level) if level > 1 else fixed
            m = F.avg_pool3d(moving, level) if level > 1 else moving
            weight = (f > self.bone_threshold).to(f.dtype) + BODY_WEIGHT * (f > BODY_THRESHOLD).to(f.dtype)
            weight = weight / weight.sum(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-6)
            shrink = torch.as_tensor(fixed.shape[2:], dtype=f.dtype) / torch.as_tensor(f.shape[2:], dtype=f.dtype)
            level_spacing = spacing * shrink.to(spacing.device)
            current = params.clone().requires_grad_(True)
            optimiser = torch.optim.LBFGS([current], lr=1.0, max_iter=int(steps), line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                optimiser.zero_grad()
                rotation, translation = rotation_matrix(current[:, :3] * 0.1), current[:, 3:] * 10.0
                aligned = self.warp(m, rigid_sampling_field(rotation, translation, f.shape[2:], level_spacing))
                loss = (weight * (aligned - f).square()).sum()
                loss.backward()
                return loss

            if steps:
                optimiser.step(closure)
            params = current.detach()
        return rotation_matrix(params[:, :3] * 0.1), params[:, 3:] * 10.0
