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
folded in), and an iteration only differences the field and sums the weighted squares (:func:`weighted_diffusion`,
:func:`forward_fold_barrier` with ``weights``). Since bundle 0.9.17 the band's pairs (a few % of the grid) are
differenced from one gather of the field instead of over the whole grid, the full pairs' charge has a backward pass
of two volumes (:func:`scripts.losses.differences.weighted_squared_difference`), and the fold barrier's backward pass
visits only the cells under it (:class:`_FoldBarrier`). Values and gradients: those of autograd over the whole grid
(tests/test_refine_speed.py); time: ``python -m benchmarks.profile_refine``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from scripts.losses.differences import forward_difference, weighted_squared_difference
from scripts.losses.mechanics import cofactor_row, det3

__all__ = ["diffusion_weights", "fold_weights", "forward_diffusion", "forward_fold_barrier", "weighted_diffusion"]


def _band_pairs(pairs: torch.Tensor, axis: int, shape: Sequence[int], normals: torch.Tensor) -> tuple[dict, tuple]:
    """The pairs ``pairs`` ((1, 1, ...) bool over the pairs along ``axis``) as flat indices into the grid ``shape``:
    ``index`` (2 N,) the base voxels then their forward neighbours, ``normals`` the (3, N) normals at each; and the
    pairs' index into ``pairs`` (to gather their weights)."""
    coords = pairs[0, 0].nonzero().unbind(1)
    base = (coords[0] * shape[1] + coords[1]) * shape[2] + coords[2]
    stride = (shape[1] * shape[2], shape[2], 1)[axis]
    flat_normals = normals.reshape(normals.shape[1], -1)
    band = {
        "index": torch.cat([base, base + stride]),
        "normals": (flat_normals[:, base], flat_normals[:, base + stride]),
    }
    return band, (0, 0) + coords


def diffusion_weights(
    spacing: Sequence[float],
    shape: Sequence[int],
    sliding: torch.Tensor | None,
    normals: torch.Tensor | None,
    side: torch.Tensor | None = None,
) -> list[dict]:
    """Per axis, how D charges each pair of a field on the grid ``shape`` (X, Y, Z) (see the module docstring): a dict
    with ``full`` (weight of the squared difference of u: a (1, 1, ...) tensor over the pairs along that axis, or a
    number for every pair alike), and where the band has pairs charged otherwise, ``band``: those pairs (a few % of
    the grid) by index (:func:`_band_pairs`) with their weights ``normal`` (of u . n) and ``tangential`` (of the
    tangential part, where a side must be guessed; None if no pair needs it), (N,) each. Every weight is already
    divided by the squared voxel size and the number of pairs (so that the sum of the weighted squares is the mean
    charge). An iteration differences the band's pairs only, from one gather of the field."""
    out: list[dict] = []
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
        charged = crossing | guessed  # u . n charged on these pairs, the tangential part too where guessed
        if bool(charged.any()):
            pairs, cells = _band_pairs(charged, axis, shape, normals)
            pairs["normal"] = torch.full((len(cells[2]),), scale, device=sliding.device)
            pairs["tangential"] = None
            if bool(guessed.any()):
                tangential = (1.0 - normals[:, axis : axis + 1].narrow(2 + axis, 0, n_pairs).abs()).square()
                pairs["tangential"] = (guessed.float() * tangential * scale)[cells]
            weights["band"] = pairs
        out.append(weights)
    return out


def weighted_diffusion(u_mm: torch.Tensor, weights: Sequence[dict]) -> torch.Tensor:
    """D of the field ``u_mm`` (1, 3, X, Y, Z) in mm with the per-axis ``weights`` of :func:`diffusion_weights`."""
    if u_mm.ndim != 5 or u_mm.shape[:2] != (1, 3):
        raise ValueError(f"the diffusion takes one field (1, 3, X, Y, Z), got shape {tuple(u_mm.shape)}")
    total = u_mm.new_zeros(())
    flat = u_mm.reshape(u_mm.shape[1], -1)  # (3, V), a view
    for axis, w in enumerate(weights):
        total = total + weighted_squared_difference(u_mm, 2 + axis, w["full"])
        pairs = w.get("band")
        if pairs is None:
            continue
        here, there = flat.index_select(1, pairs["index"]).chunk(2, dim=1)  # (3, N) each, base and neighbour
        n_here, n_there = pairs["normals"]
        un_here, un_there = (here * n_here).sum(dim=0), (there * n_there).sum(dim=0)
        total = total + ((un_there - un_here).square() * pairs["normal"]).sum()
        if pairs["tangential"] is not None:
            jump = (there - un_there * n_there) - (here - un_here * n_here)
            total = total + (jump.square().sum(dim=0) * pairs["tangential"]).sum()
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
    return weighted_diffusion(u_vox * spacing_t, weights)


def fold_weights(shape: Sequence[int], keep: torch.Tensor | None) -> torch.Tensor:
    """The fold barrier's weight per cell, (1, 1, X, Y, Z): the cells whose forward neighbours exist (not on the last
    slice of an axis), each weighing what ``keep`` holds at its base voxel (bool: 1 or 0; or a weight per voxel; None:
    1 everywhere), divided by the sum of those weights."""
    weights = torch.zeros((1, 1) + tuple(shape))
    cells = tuple(slice(0, m - 1) for m in shape)
    weights[(0, 0) + cells] = 1.0 if keep is None else keep[(0, 0) + cells].float()
    return weights / weights.sum().clamp_min(1.0)


class _FoldBarrier(torch.autograd.Function):
    """sum(weights * relu(tau - det J_f)^2) whose backward visits only the cells under the barrier.

    The barrier is flat (zero gradient) wherever det J_f >= tau, which is nearly every cell of a refinement: autograd
    would differentiate the whole determinant and three padded differences (some forty volume passes) to add zeros.
    The forward pass keeps the few cells where it is not flat (their index, weight times shortfall and the nine
    derivatives there); the backward pass scatters d det / d J = cofactor(J) through the adjoint of the forward
    differences into one zero field."""

    @staticmethod
    def forward(ctx, u_vox, weights, tau):
        batch, _, *grid = u_vox.shape
        voxels = math.prod(grid)
        # J = I + du/di by forward differences padded to the grid (0 on the last slice, where the cells weigh 0):
        # jac[k][a] = delta_{ka} + d u_k / d i_a, (B, X, Y, Z) views of three (B, 3, X, Y, Z) tensors
        cols = [forward_difference(u_vox, 2 + axis, pad=True) for axis in range(3)]
        for axis in range(3):
            cols[axis][:, axis].add_(1.0)
        jac = [[cols[a][:, k] for a in range(3)] for k in range(3)]
        det = det3(jac)
        shortfall = det.neg_().add_(tau).clamp_min_(0.0)  # relu(tau - det), in det's memory
        weighted = shortfall * weights[:, 0]
        value = torch.vdot(weighted.reshape(-1), shortfall.reshape(-1))
        cells = weighted.reshape(-1).nonzero()[:, 0]  # flat over (B, X, Y, Z): the few cells under the barrier
        b, s = cells // voxels, cells % voxels
        at_cells = [cols[a].reshape(batch, 3, voxels)[b, k, s] for k in range(3) for a in range(3)]
        ctx.save_for_backward(b, s, weighted.reshape(-1)[cells], *at_cells)
        ctx.shape = tuple(u_vox.shape)
        return value

    @staticmethod
    def backward(ctx, grad):
        b, s, weighted, *flat = ctx.saved_tensors
        batch, _, *grid = ctx.shape
        voxels = math.prod(grid)
        rows = [flat[3 * k : 3 * k + 3] for k in range(3)]  # J at the cells
        du = torch.zeros(batch * 3 * voxels, dtype=weighted.dtype, device=weighted.device)
        h = -2.0 * grad * weighted  # d value / d det at each cell
        coords = torch.unravel_index(s, tuple(grid))
        strides = (grid[1] * grid[2], grid[2], 1)
        for k in range(3):
            cof = cofactor_row(rows, k)  # d det / d J[k][a]
            base = (b * 3 + k) * voxels + s
            for a in range(3):
                inside = coords[a] < grid[a] - 1  # on the last slice the padded difference is a constant 0
                g = (h * cof[a])[inside]
                du.index_add_(0, base[inside] + strides[a], g)
                du.index_add_(0, base[inside], -g)
        return du.reshape(ctx.shape), None, None


def forward_fold_barrier(
    u_vox: torch.Tensor, keep: torch.Tensor | None, tau: float = 0.2, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of relu(tau - det J_f)^2 over the cells whose base voxel is in ``keep`` ((1, 1, X, Y, Z) bool, e.g. the
    voxels off the band, or a weight per voxel as :func:`fold_weights` takes it; None: every cell), J_f by forward
    differences of ``u_vox`` (voxels). ``weights``: those of :func:`fold_weights` (then ``keep`` is not read).
    The padded differences are 0 on the last slice of each axis, where the cells weigh 0. The backward pass visits
    only the cells under the barrier (:class:`_FoldBarrier`)."""
    weights = fold_weights(u_vox.shape[2:], keep) if weights is None else weights
    if weights.requires_grad:
        raise ValueError("forward_fold_barrier: the weights are constants, they must not require grad")
    return _FoldBarrier.apply(u_vox, weights.to(u_vox.dtype), float(tau))
