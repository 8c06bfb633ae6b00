"""Finite differences along one array axis whose backward pass is one allocation, not a dozen.

Every regulariser differentiates the field: the mechanics (:mod:`scripts.losses.mechanics`) by central differences
(``torch.gradient`` with ``edge_order=1``: one-sided at the grid's border), the refinement's diffusion and fold barrier
(:mod:`scripts.refinement.terms`) by forward differences (``torch.diff``). Both are built from slices, and autograd
differentiates a slice by allocating a zero tensor of the whole input and copying the gradient into it: a central
difference costs six such zero-filled volumes in the backward pass, a forward difference two. In the refinement's
iteration at 97 x 81 x 129 those fills were the largest single item (about 70 of 465 ms on one thread,
``python -m benchmarks.profile_refine --table 25``). The two functions here give the same values as ``torch.gradient``
and ``torch.diff`` and write their adjoint directly into one new tensor. :func:`weighted_squared_difference` gives the
diffusion's weighted sum of squared forward differences with a backward pass of two volumes (bundle 0.9.17).

Shapes: any tensor ``x``, ``dim`` an axis of it with at least 2 entries; the output has ``x``'s shape (central) or
one entry less along ``dim`` (forward; the same shape with ``pad=True``, the last entry 0).
"""

from __future__ import annotations

import torch

__all__ = ["central_difference", "forward_difference", "weighted_squared_difference"]


def _check(x: torch.Tensor, dim: int) -> int:
    dim = dim % x.ndim
    if x.shape[dim] < 2:
        raise ValueError(f"a finite difference along axis {dim} needs at least 2 entries, got shape {tuple(x.shape)}")
    return dim


class _Central(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, scale):
        n = x.shape[dim]
        out = torch.empty_like(x)
        torch.sub(x.narrow(dim, 1, 1), x.narrow(dim, 0, 1), out=out.narrow(dim, 0, 1))
        torch.sub(x.narrow(dim, n - 1, 1), x.narrow(dim, n - 2, 1), out=out.narrow(dim, n - 1, 1))
        if n > 2:
            inner = out.narrow(dim, 1, n - 2)
            torch.sub(x.narrow(dim, 2, n - 2), x.narrow(dim, 0, n - 2), out=inner)
            inner.mul_(0.5)
        if scale is not None:
            out.mul_(scale)
        ctx.dim, ctx.scale = dim, scale
        return out

    @staticmethod
    def backward(ctx, grad):
        dim, scale = ctx.dim, ctx.scale
        n = grad.shape[dim]
        # the adjoint: out[i] takes +h[i] to x[i + 1] and -h[i] to x[i - 1] (x[i] itself at the border), with h the
        # incoming gradient (times the scale), halved on the interior entries
        h = grad * (0.5 if scale is None else 0.5 * scale)
        for edge in (0, n - 1):
            h.narrow(dim, edge, 1).mul_(2.0)
        dx = torch.empty_like(grad)
        torch.add(h.narrow(dim, 0, 1), h.narrow(dim, 1, 1), out=dx.narrow(dim, 0, 1)).neg_()
        torch.add(h.narrow(dim, n - 2, 1), h.narrow(dim, n - 1, 1), out=dx.narrow(dim, n - 1, 1))
        if n > 2:
            torch.sub(h.narrow(dim, 0, n - 2), h.narrow(dim, 2, n - 2), out=dx.narrow(dim, 1, n - 2))
        return dx, None, None


class _Forward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, pad):
        n = x.shape[dim]
        if pad:
            out = torch.empty_like(x)
            out.narrow(dim, n - 1, 1).zero_()
            torch.sub(x.narrow(dim, 1, n - 1), x.narrow(dim, 0, n - 1), out=out.narrow(dim, 0, n - 1))
        else:
            out = torch.diff(x, dim=dim)
        ctx.dim, ctx.n = dim, n
        return out

    @staticmethod
    def backward(ctx, grad):
        return _forward_adjoint(grad, ctx.dim, ctx.n), None, None


def _forward_adjoint(grad: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    """The adjoint of the forward difference along ``dim`` of a length-``n`` axis, applied to ``grad`` (n - 1 along
    ``dim``): out[i] = x[i + 1] - x[i], so x[j] receives g[j - 1] - g[j], the first -g[0], the last g[n - 2]."""
    shape = list(grad.shape)
    shape[dim] = n
    dx = grad.new_empty(shape)
    torch.neg(grad.narrow(dim, 0, 1), out=dx.narrow(dim, 0, 1))
    dx.narrow(dim, n - 1, 1).copy_(grad.narrow(dim, n - 2, 1))
    if n > 2:
        torch.sub(grad.narrow(dim, 0, n - 2), grad.narrow(dim, 1, n - 2), out=dx.narrow(dim, 1, n - 2))
    return dx


class _WeightedSquares(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, weight):
        diff = torch.diff(x, dim=dim)
        weighted = diff * weight
        value = torch.vdot(weighted.reshape(-1), diff.reshape(-1))
        ctx.save_for_backward(weighted)
        ctx.dim, ctx.shape = dim, x.shape
        return value

    @staticmethod
    def backward(ctx, grad):
        (weighted,) = ctx.saved_tensors
        # d value / d diff = 2 weight diff, then the adjoint of the forward difference
        return _forward_adjoint(weighted * (2.0 * grad), ctx.dim, ctx.shape[ctx.dim]), None, None


def central_difference(x: torch.Tensor, dim: int, scale: float | torch.Tensor | None = None) -> torch.Tensor:
    """``torch.gradient(x, dim=dim, edge_order=1)[0]`` (unit spacing: (x[i+1] - x[i-1]) / 2 inside, one-sided at
    both ends), times ``scale`` (a number or a tensor that broadcasts to ``x``, e.g. (B, 1, ...) per batch item, not
    differentiated), same shape as ``x``."""
    if isinstance(scale, torch.Tensor) and scale.requires_grad:
        raise ValueError("central_difference: the scale is a constant (the voxel size), it must not require grad")
    return _Central.apply(x, _check(x, dim), scale)


def forward_difference(x: torch.Tensor, dim: int, pad: bool = False) -> torch.Tensor:
    """``torch.diff(x, dim=dim)`` (x[i+1] - x[i], one entry less along ``dim``); ``pad=True``: the same shape as
    ``x``, the last entry along ``dim`` 0."""
    return _Forward.apply(x, _check(x, dim), bool(pad))


def weighted_squared_difference(x: torch.Tensor, dim: int, weight: float | torch.Tensor) -> torch.Tensor:
    """``(torch.diff(x, dim=dim).square() * weight).sum()``, the scalar, with a backward pass of two volumes (the
    weighted difference kept from the forward pass, and the adjoint of the difference) instead of autograd's chain of
    square, product and sum. ``weight``: a number or a tensor that broadcasts to the difference (not differentiated)."""
    if isinstance(weight, torch.Tensor) and weight.requires_grad:
        raise ValueError("weighted_squared_difference: the weight is a constant, it must not require grad")
    return _WeightedSquares.apply(x, _check(x, dim), weight)
