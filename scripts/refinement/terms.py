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

**The fold barrier** (:func:`forward_fold_barrier`): weighted mean of relu(tau - det J_f)^2 over the cells (the
refinement weighs the band's cells a tenth of the others: it may slide, a band estimated a voxel off the wall should
not fold off it), J_f the forward-difference Jacobian (the central differences of the losses miss folds between
voxels, which appear once the field is upsampled).

Speed: what decides how a pair or a cell is charged (the band, the sides, the normals) is fixed for a level, so it is
computed once per level as weights (:func:`diffusion_weights`, :func:`fold_weights`, the pair counts and voxel sizes
folded in), and an iteration only differences the field (:mod:`scripts.losses.differences`) and sums the weighted
squares (:func:`weighted_diffusion`, :func:`forward_fold_barrier` with ``weights``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from scripts.losses.differences import forward_difference
from scripts.losses.mechanics import jacobian_det

__all__ = ["diffusion_weights", "fold_weights", "forward_diffusion", "forward_fold_barrier", "weighted_diffusion"]


def diffusion_weights(
    spacing: Sequence[float],
    shape: Sequence[int],
    sliding: torch.Tensor | None,
    normals: torch.Tensor | None,
    side: torch.Tensor | None = None,
) -> list[dict[str, torch.Tensor | float]]:
    """Per axis, how D charges each pair of a field on the grid ``shape`` (X, Y, Z) (see the module docstring): a dict
    with ``full`` (weight of the squared difference of u), and where the band has such pairs ``normal`` (of u . n) and
    ``tangential`` (of the tangential part; a side that must be guessed), each a (1, 1, ...) tensor over the pairs
    along that axis, or a number for every pair alike; each already divided by the squared voxel size and the number
    of pairs (so that the sum of the weighted squares is the mean charge)."""
    out: list[dict[str, torch.Tensor | float]] = []
    band = sliding is not None and normals is not None and bool(sliding.any())
    for axis, s in enumerate(spacing):
        n_pairs = shape[axis] - 1
        scale = 1.0 / (s * s * n_pairs * math.prod(m for a, m in enumerate(shape) if a != axis))
        if not band:
            out.append({"full": scale})
            continue
        a, b = sliding.narrow(2 + axis, 0, n_pairs), sliding.narrow(2 + axis, 1, n_pairs)
        full, guessed = ~a & ~b, a & b
        crossing = torch.zeros_like(full)
        if side is not None:
            sa, sb = side.narrow(2 + axis, 0, n_pairs), side.narrow(2 + axis, 1, n_pairs)
            known = guessed & (sa >= 0) & (sb >= 0)
            crossing = known & (sa != sb)
            full, guessed = full | (known & ~crossing), guessed & ~known
        weights = {"full": full.float() * scale}
        if bool((crossing | guessed).any()):
            weights["normal"] = (crossing | guessed).float() * scale
        if side is None or bool(guessed.any()):
            tangential = (1.0 - normals[:, axis : axis + 1].narrow(2 + axis, 0, n_pairs).abs()).square()
            weights["tangential"] = guessed.float() * tangential * scale
        out.append(weights)
    return out


def weighted_diffusion(
    u_mm: torch.Tensor, weights: Sequence[dict[str, torch.Tensor | float]], normals: torch.Tensor | None
) -> torch.Tensor:
    """D of the field ``u_mm`` (1, 3, X, Y, Z) in mm with the per-axis ``weights`` of :func:`diffusion_weights`
    (``normals`` needed where they hold ``normal`` or ``tangential``)."""
    total = u_mm.new_zeros(())
    un = ut = None  # the normal and tangential parts, computed once if some pair needs them
    for axis, w in enumerate(weights):
        full = forward_difference(u_mm, 2 + axis).square().sum(dim=1, keepdim=True)
        total = total + (full * w["full"]).sum()
        if "normal" in w:
            un = (u_mm * normals).sum(dim=1, keepdim=True) if un is None else un
            total = total + (forward_difference(un, 2 + axis).square() * w["normal"]).sum()
        if "tangential" in w:
            un = (u_mm * normals).sum(dim=1, keepdim=True) if un is None else un
            ut = u_mm - un * normals if ut is None else ut
            tangential = forward_difference(ut, 2 + axis).square().sum(dim=1, keepdim=True)
            total = total + (tangential * w["tangential"]).sum()
    return total


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
    ``normals`` None, or no sliding voxel) every pair is charged in full. (The refinement computes the weights once
    per level: :func:`diffusion_weights`, :func:`weighted_diffusion`.)"""
    weights = diffusion_weights(spacing, u_vox.shape[2:], sliding, normals, side)
    return weighted_diffusion(u_vox * spacing_t, weights, normals)


def fold_weights(shape: Sequence[int], keep: torch.Tensor | None) -> torch.Tensor:
    """The fold barrier's weight per cell, (1, 1, X, Y, Z): the cells whose forward neighbours exist (not on the last
    slice of an axis), each weighing what ``keep`` holds at its base voxel (bool: 1 or 0; or a weight per voxel; None:
    1 everywhere), divided by the sum of those weights."""
    weights = torch.zeros((1, 1) + tuple(shape))
    cells = tuple(slice(0, m - 1) for m in shape)
    weights[(0, 0) + cells] = 1.0 if keep is None else keep[(0, 0) + cells].float()
    return weights / weights.sum().clamp_min(1.0)


def forward_fold_barrier(
    u_vox: torch.Tensor, keep: torch.Tensor | None, tau: float = 0.2, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of relu(tau - det J_f)^2 over the cells whose base voxel is in ``keep`` ((1, 1, X, Y, Z) bool, e.g. the
    voxels off the band, or a weight per voxel as :func:`fold_weights` takes it; None: every cell), J_f by forward
    differences of ``u_vox`` (voxels). ``weights``: those of :func:`fold_weights` (then ``keep`` is not read)."""
    weights = fold_weights(u_vox.shape[2:], keep) if weights is None else weights
    # forward differences padded to the grid (0 on the last slice): the cells off the grid's far faces weigh 0
    cols = [forward_difference(u_vox, 2 + axis, pad=True) for axis in range(3)]  # (B, 3, ...) d u / d i_axis
    det = jacobian_det([[cols[axis][:, k] for axis in range(3)] for k in range(3)])
    return (F.relu(tau - det).square() * weights[:, 0]).sum()
