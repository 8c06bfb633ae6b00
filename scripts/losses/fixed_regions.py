"""The biomechanical regulariser on a label map that stays the same from call to call (an optimisation's level).

:class:`~scripts.losses.biomechanical.BiomechanicalLoss` takes the label map with every call: it rounds it, finds the
rigid and sliding voxels (two ``nonzero`` over the grid), differentiates the whole field and gathers the nine
derivatives at those voxels. Autograd then differentiates each gather by a zero-filled volume per derivative and
region (eighteen) before adding them into the derivatives' gradients. The refinement calls it hundreds of times on
one level's labels. :class:`FixedRegionLoss` computes the same value from the same field:

* the regions are found once (:meth:`FixedRegionLoss.__init__`): the Jacobian region's weights, and for the rigid and
  sliding voxels the flat index of each voxel's two neighbours along each axis (one-sided at the grid's border, as
  ``torch.gradient(edge_order=1)``) with the step's factor (1/2 inside, 1 at the border) and the normals there;
* each call differentiates the whole field only for the log-Jacobian term, and computes the rigid and sliding voxels'
  derivatives from one gather of the field at their neighbours: one zero-filled field in the backward pass.

The derivatives, the terms and the weighting are those of :mod:`scripts.losses.mechanics` and
:mod:`scripts.losses.biomechanical` (tests/test_refine_speed.py checks value and gradient against
``BiomechanicalLoss`` for every mode and weighting). Speed: ``python -m benchmarks.profile_refine``.

Shapes: the field (B, D, *S), D = 3, in voxels (``units="voxel"``: the refinement's) with ``spacing`` (D,) mm; the
label map (B, 1, *S) with 0 (Jacobian), 1 (rigid), 2 (sliding); normals (B, D, *S) (mm frame).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from scripts.losses.biomechanical import BiomechanicalLoss, rigidity_term
from scripts.losses.mechanics import cofactor_row, det3, gradient_components, sliding_strain_energy
from scripts.regions.labels import RIGID, SLIDING

__all__ = ["FixedRegionLoss"]


class _Stencil:
    """Where the derivatives of a (3, B * V) flat field are taken at the voxels ``cells`` (flat over (B, *S)): the
    index of the forward and backward neighbour along each axis, clamped to the grid, and the step's factor."""

    def __init__(self, cells: torch.Tensor, grid: Sequence[int]):
        voxels = math.prod(grid)
        strides = (grid[1] * grid[2], grid[2], 1)
        coords = torch.unravel_index(cells % voxels, tuple(grid))
        plus, minus, factors = [], [], []
        for axis in range(3):
            c = coords[axis]
            up, down = (c < grid[axis] - 1).long(), (c > 0).long()
            plus.append(cells + up * strides[axis])
            minus.append(cells - down * strides[axis])
            # central (x[i+1] - x[i-1]) / 2 inside, one-sided x[1] - x[0] / x[n-1] - x[n-2] at the border
            factors.append(torch.where((up + down) == 2, 0.5, 1.0))
        self.size = int(cells.numel())
        self.index = torch.cat(plus + minus)
        self.factors = factors

    def derivatives(self, flat: torch.Tensor, scales: list[list[float | None]]) -> list[list[torch.Tensor]]:
        """The nine derivatives d u_k / d x_l at the voxels, (N,) each, from the (3, B * V) field ``flat``."""
        # one gather (one zero-filled field in the backward pass), split by unbind (whose backward is one stack;
        # slicing would fill a zeroed copy of the whole gather per slice)
        values = flat.index_select(1, self.index).reshape(18, self.size).unbind(0)  # [6 k + j], j: +0 +1 +2 -0 -1 -2
        comps = []
        for k in range(3):
            row = []
            for axis in range(3):
                diff = (values[6 * k + axis] - values[6 * k + 3 + axis]) * self.factors[axis]
                row.append(diff if scales[k][axis] is None else diff * scales[k][axis])
            comps.append(row)
        return comps


class _LogJacobianSum(torch.autograd.Function):
    """sum(weights * jacobian_term(det(I + grad))) of the nine derivatives ``grad`` (B, *S) each, with d det / d grad
    the cofactors of J: some twenty volume passes in the backward pass where autograd's chain through the
    determinant's products takes about forty-five (``weights`` None: every voxel 1)."""

    @staticmethod
    def forward(ctx, weights, eps, fold_penalty, *grad):
        jac = [[g + 1.0 if k == a else g for a, g in enumerate(grad[3 * k : 3 * k + 3])] for k in range(3)]
        det = det3(jac)
        log_det = torch.clamp(det, min=eps).log_()
        term = log_det.square()
        if fold_penalty > 0:
            term.add_(torch.relu(eps - det), alpha=fold_penalty)
        # d term / d det: 2 log(det) / det where the clamp passes (det >= eps), - fold_penalty where det < eps
        slope = log_det.mul_(2.0).div_(det).mul_(det >= eps)
        if fold_penalty > 0:
            slope.sub_((det < eps).to(det.dtype), alpha=fold_penalty)
        if weights is not None:
            term.mul_(weights)
            slope.mul_(weights)
        ctx.save_for_backward(slope, *[entry for row in jac for entry in row])
        return term.sum()

    @staticmethod
    def backward(ctx, grad_out):
        slope, *flat = ctx.saved_tensors
        jac = [flat[3 * k : 3 * k + 3] for k in range(3)]
        h = slope * grad_out
        grads = [c.mul_(h) for k in range(3) for c in cofactor_row(jac, k)]
        return (None, None, None, *grads)


class FixedRegionLoss:
    """``loss(ddf, reg_mask, normals)`` as a callable of the field alone, for a fixed ``reg_mask`` and ``normals``.

    Args:
        loss: the :class:`BiomechanicalLoss` whose value is computed (its mode, rigidity, eps, fold penalty,
            weighting; voxel units).
        reg_mask: (B, 1, *S) labels 0/1/2 (None: only the ``"jacobian"`` mode, which does not read it).
        normals: (B, 3, *S) unit normals (mm frame) on the sliding voxels (read in the full mode).
        spacing: (3,) mm per voxel of the grid.
    """

    def __init__(
        self,
        loss: BiomechanicalLoss,
        reg_mask: torch.Tensor | None,
        normals: torch.Tensor | None,
        spacing: Sequence[float],
    ):
        if loss.units != "voxel":
            raise ValueError(f"FixedRegionLoss takes fields in voxels, the loss has units={loss.units!r}")
        self.loss, self.spacing = loss, [float(s) for s in spacing]
        sp, unit = self.spacing, all(s == 1.0 for s in self.spacing)
        # d(u_k s_k) / d(i_a s_a) = (s_k / s_a) d u_k / d i_a, as scripts.losses.mechanics.gradient_components
        self.scales = [[None if unit else sp[k] / sp[a] for a in range(3)] for k in range(3)]
        self.rigid = self.sliding = None
        self.jacobian_weights, self.counts = None, {}
        if loss.mode == "jacobian":
            return
        if reg_mask is None:
            raise ValueError(f"mode {loss.mode!r} needs the regularisation label map reg_mask (0/1/2)")
        labels = reg_mask[:, 0].round()
        grid = tuple(labels.shape[1:])
        rigid, sliding = labels == RIGID, labels == SLIDING
        full = loss.mode == "rigidity_shearing_jacobian"
        region = ~(rigid | sliding) if full else ~rigid
        self.jacobian_weights = region.float()
        self.counts = {"total": float(labels.numel()), "jacobian": float(region.sum()), "rigidity": float(rigid.sum())}
        if bool(rigid.any()):
            self.rigid = _Stencil(rigid.reshape(-1).nonzero()[:, 0], grid)
        if full and bool(sliding.any()):
            if normals is None:
                raise ValueError("mode 'rigidity_shearing_jacobian' needs normals (B, D, *S) on sliding voxels")
            cells = sliding.reshape(-1).nonzero()[:, 0]
            self.sliding = _Stencil(cells, grid)
            flat_normals = normals.transpose(0, 1).reshape(normals.shape[1], -1)
            self.normals = [flat_normals[m, cells] for m in range(normals.shape[1])]
            self.counts["shearing"] = float(cells.numel())

    def __call__(self, ddf: torch.Tensor) -> torch.Tensor:
        """ddf (B, 3, *S) in voxels: the regulariser's total, as ``BiomechanicalLoss(ddf, reg_mask, normals)``."""
        return self.terms(ddf)["total"]

    def terms(self, ddf: torch.Tensor) -> dict[str, torch.Tensor]:
        """The terms ``jacobian``, ``rigidity``, ``shearing`` and ``total``, as :meth:`BiomechanicalLoss.terms`."""
        loss = self.loss
        grad = [c for row in gradient_components(ddf, self.spacing) for c in row]
        weights = self.jacobian_weights
        jacobian = _LogJacobianSum.apply(weights, loss.eps, loss.fold_penalty, *grad)
        zero = jacobian.new_zeros(())
        out = {"jacobian": jacobian / grad[0].numel(), "rigidity": zero, "shearing": zero}
        if loss.mode != "jacobian":
            out["jacobian"] = jacobian / max(self.counts["jacobian"], torch.finfo(jacobian.dtype).tiny)
            flat = ddf.transpose(0, 1).reshape(ddf.shape[1], -1)  # (3, B * V), a view for B = 1
            if self.sliding is not None:
                comps = self.sliding.derivatives(flat, self.scales)
                out["shearing"] = sliding_strain_energy(comps, self.normals).mean()
            if self.rigid is not None:
                out["rigidity"] = rigidity_term(self.rigid.derivatives(flat, self.scales), loss.rigidity).mean()
            if loss.weighting == "volume":
                for name in ("rigidity", "shearing", "jacobian"):
                    out[name] = out[name] * (self.counts.get(name, 0.0) / self.counts["total"])
        out["total"] = out["jacobian"] + out["rigidity"] + out["shearing"]
        return out
