"""The refinement's own terms, beside the biomechanical loss: the sliding-aware diffusion D and the fold barrier.

Conventions (those of :mod:`scripts.refinement.optimiser`): the field ``u_vox`` (1, 3, X, Y, Z) in voxels of its
grid, ``spacing`` (3,) mm per voxel of that grid; the sliding band ``sliding`` (1, 1, X, Y, Z) bool and its unit
normals ``normals`` (1, 3, X, Y, Z) (mm frame, channel k along array axis k); the wall's side ``side``
(1, 1, X, Y, Z): 1 on the inner side of the sliding wall (the cavity), 0 on the outer side, -1 where it is not known
(an organ-organ pair band inside the cavity).

**D, the diffusion** (:func:`forward_diffusion`): the mean squared FORWARD difference of u in mm / mm over the pairs of
neighbouring voxels along each axis. The central differences of the mechanics do not see a checkerboard; D does.
The tangential jump at the wall must stay free, so a pair is charged by where it lies:

* both voxels off the band: in full;
* one in the band, one off it: not at all;
* both in the band, their sides known: the pair CROSSES the wall when the sides differ, and then only the normal
  component u . n is charged (the slip is free, a gap or an overlap is not); a pair on one side is charged in full;
* both in the band, a side unknown (or no ``side`` given): ``|Delta u . n|^2 + (1 - |n_a|)^2 |Delta u_t|^2``, the
  weight guessing from the normal how often a pair along axis a crosses the interface.

Why the side matters: the guess charged a pair that crosses an oblique wall (at 45 degrees 0.09 of the jump squared),
so the optimum moved the jump off the wall onto the free pairs between the band and the voxels beyond it: the slip
came out as a ramp over three voxel pairs, with the contents next to the wall lagging. On the real CT (seed 0, clean
labels) the refined field's D was 0.037, and 0.075 once its tangential part on the band was replaced by each side's
interior field (a step at the wall): the guess made the step dearer than the ramp. Charged by the side, a step at
the wall costs nothing (docs/README.md, *Walls nobody tuned on*).

**The fold barrier** (:func:`forward_fold_barrier`): mean of relu(tau - det J_f)^2 over the cells not in the band, J_f
the forward-difference Jacobian (the central differences of the losses miss folds between voxels, which appear once
the field is upsampled).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from scripts.losses.mechanics import jacobian_det

__all__ = ["forward_diffusion", "forward_fold_barrier"]


def forward_diffusion(
    u_vox: torch.Tensor,
    spacing_t: torch.Tensor,
    spacing: Sequence[float],
    sliding: torch.Tensor | None,
    normals: torch.Tensor | None,
    side: torch.Tensor | None = None,
) -> torch.Tensor:
    """D of the field u = ``u_vox * spacing_t`` (voxels times the voxel size, (1, 3, 1, 1, 1)), see the module
    docstring: the sum over the axes of the mean charge of that axis' pairs. Without a band (``sliding`` or
    ``normals`` None, or no sliding voxel) every pair is charged in full."""
    u_mm = u_vox * spacing_t
    if sliding is None or normals is None or not bool(sliding.any()):
        return sum(torch.diff(u_mm, dim=2 + a).div(s).square().sum(dim=1).mean() for a, s in enumerate(spacing))
    un = (u_mm * normals).sum(dim=1, keepdim=True)
    ut = None  # the tangential part, computed once if some pair's side must be guessed
    total = u_mm.new_zeros(())
    for axis, s in enumerate(spacing):
        n_pairs = u_mm.shape[2 + axis] - 1
        a, b = sliding.narrow(2 + axis, 0, n_pairs), sliding.narrow(2 + axis, 1, n_pairs)
        outside, inside = ~a & ~b, a & b
        full = torch.diff(u_mm, dim=2 + axis).div(s).square().sum(dim=1, keepdim=True)
        normal = torch.diff(un, dim=2 + axis).div(s).square()
        charge = outside.to(u_mm.dtype) * full
        guessed = inside
        if side is not None:
            sa, sb = side.narrow(2 + axis, 0, n_pairs), side.narrow(2 + axis, 1, n_pairs)
            known = inside & (sa >= 0) & (sb >= 0)
            crossing = known & (sa != sb)
            charge = charge + (known & ~crossing).to(u_mm.dtype) * full + crossing.to(u_mm.dtype) * normal
            guessed = inside & ~known
        if side is None or bool(guessed.any()):  # the tangential part only where the side must be guessed
            ut = u_mm - un * normals if ut is None else ut
            weight = (1.0 - normals[:, axis : axis + 1].narrow(2 + axis, 0, n_pairs).abs()).square()
            tangential = torch.diff(ut, dim=2 + axis).div(s).square().sum(dim=1, keepdim=True) * weight
            charge = charge + guessed.to(u_mm.dtype) * (normal + tangential)
        total = total + charge.mean()
    return total


def forward_fold_barrier(u_vox: torch.Tensor, keep: torch.Tensor | None, tau: float = 0.2) -> torch.Tensor:
    """Mean of relu(tau - det J_f)^2 over the cells whose base voxel is in ``keep`` ((1, 1, X, Y, Z) bool, the
    voxels off the band; None: every cell), J_f by forward differences of ``u_vox`` (voxels)."""
    n = [m - 1 for m in u_vox.shape[2:]]
    base = u_vox[:, :, : n[0], : n[1], : n[2]]
    cols = []
    for axis in range(3):
        idx = [slice(None), slice(None), slice(0, n[0]), slice(0, n[1]), slice(0, n[2])]
        idx[2 + axis] = slice(1, n[axis] + 1)
        cols.append(u_vox[tuple(idx)] - base)  # (B, 3, ...) d u / d i_axis
    g = [[cols[axis][:, k] for axis in range(3)] for k in range(3)]
    det = jacobian_det(g)
    term = F.relu(tau - det).square()
    if keep is None:
        return term.mean()
    k = keep[:, 0, : n[0], : n[1], : n[2]].to(term.dtype)
    return (term * k).sum() / k.sum().clamp_min(1.0)
