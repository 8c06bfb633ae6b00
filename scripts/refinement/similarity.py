"""The refinement's image term: the moving image (or its MIND-SSC descriptor) warped by the field, against the fixed.

The values are MONAI's: :class:`GridWarp` samples as ``monai.networks.blocks.Warp(mode="bilinear",
padding_mode="border")`` does, :class:`FixedLNCC` is ``monai.losses.LocalNormalizedCrossCorrelationLoss`` (rectangular
window, its default smoothing constants) with the fixed image as its target; tests/test_refine_speed.py checks both
against MONAI (values and gradients to float rounding). They exist because the refinement calls them hundreds of
times on the same grid and the same fixed image, which the general versions cannot know (one iteration at 97 x 81 x
129 on one thread, ``python -m benchmarks.profile_refine``):

* MONAI's ``Warp`` adds the field to its cached voxel grid, then normalises each coordinate to [-1, 1] by writing into
  a permuted view of the sum, and reorders the coordinates by indexing; autograd copies the whole grid for each of
  those writes and again in the backward pass (168 ms forward and backward against 86 ms here, of which
  ``grid_sample`` itself takes 64). :class:`GridWarp` kept the normalised grid of each shape and added the field
  scaled and reordered in one expression. Since bundle 0.9.18 a one-channel image is sampled by hand
  (:class:`_Trilinear`: each voxel's eight corners by eight ``index_select`` of the flat image, three ``lerp``, the
  derivative by the corner planes' differences, computed with the value and kept for the backward pass). WHY:
  ``grid_sample``'s 3-D CPU kernel divides its work by batch item, so with the refinement's one pair it runs on one
  thread whatever the machine has; these are whole-volume tensor operations, parallel like the other terms (the
  iteration's similarity in ``python -m benchmarks.profile_refine`` at 97 x 81 x 129: 2 threads 101-163 -> 58-78
  ms, 1 thread 127 -> 98 ms; docs/benchmark_results/refine_speed_0918/). Since 0.9.19 a descriptor of several
  channels (MIND, 12) too: its cells found once, the image channels last so that a corner's channels come as one row,
  a chunk of voxels at a time, the derivatives kept (3 x 12 volumes, 145 MB at that grid) so that the backward pass
  is a sum over the channels (MIND's similarity term on 2 threads 557-569 -> 343-375 ms, a whole refinement with MIND
  71.1-76.3 -> 47.4-49.3 s; docs/benchmark_results/refine_speed_0919/);
* MONAI's LNCC filters five local sums per call, two of them of the fixed image, which does not change, by
  ``conv3d`` with a 1-channel kernel, a slow path on the CPU (81 ms; 48 by slices). :class:`FixedLNCC` computes the
  fixed image's sums once per level, and the moving image's three by a box filter whose backward pass is itself
  (:func:`box_sum`: a zero-padded symmetric window is self-adjoint). Since bundle 0.9.17 the loss is differentiated by
  hand (:class:`_FixedLNCCLoss`: the box sum of the local NCC's derivatives by the three sums), not by autograd
  through a dozen temporaries, and the box filter writes each axis' first two terms at once.

Conventions: images (1, C, X, Y, Z), fields (1, 3, X, Y, Z) in voxels, channel k along array axis k,
``warped(x) = moving(x + u(x))`` with voxel centres 0..n-1 (``align_corners=True``), border padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from scripts.losses.mind import mind_ssc

__all__ = ["SIMILARITIES", "FixedLNCC", "GridWarp", "Similarity", "box_sum"]

SIMILARITIES = ("lncc", "mind", "mse")
# voxels sampled at a time when the warped image has several channels (the MIND descriptor's 12: their corners
# (8, CHUNK_VOXELS, 12) float32 are 25 MB)
CHUNK_VOXELS = 1 << 16


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The sum over the (2 radius + 1)^3 window around each voxel of (B, C, X, Y, Z) ``x``, zeros beyond the grid.
    Per axis, the window's first two terms are written into a new tensor and the others added to it (one write and
    ``2 radius - 1`` additions per axis, instead of a copy and ``2 radius`` additions)."""
    for dim in (2, 3, 4):
        n = x.shape[dim]
        reach = min(radius, n - 1)
        out = torch.empty_like(x)
        # out[i] = x[i] + x[i - 1] where i - 1 exists (else x[0]), then the other shifts added
        out.narrow(dim, 0, 1).copy_(x.narrow(dim, 0, 1))
        if reach >= 1:
            torch.add(x.narrow(dim, 1, n - 1), x.narrow(dim, 0, n - 1), out=out.narrow(dim, 1, n - 1))
        for shift in range(1, reach + 1):
            if shift > 1:
                out.narrow(dim, shift, n - shift).add_(x.narrow(dim, 0, n - shift))
            out.narrow(dim, 0, n - shift).add_(x.narrow(dim, shift, n - shift))
        x = out
    return x


class _BoxSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, radius):
        ctx.radius = radius
        return _box(x, radius)

    @staticmethod
    def backward(ctx, grad):
        return _box(grad, ctx.radius), None


def box_sum(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The sum of (B, C, X, Y, Z) ``x`` over the ``kernel_size``^3 window around each voxel (odd size, zero padding):
    MONAI's ``separable_filtering`` with a kernel of ones, differentiable (its own adjoint)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"the LNCC window must be an odd number of voxels, got {kernel_size}")
    if x.ndim != 5:
        raise ValueError(f"box_sum takes (B, C, X, Y, Z) images, got shape {tuple(x.shape)}")
    return _BoxSum.apply(x, kernel_size // 2)


class _FixedLNCCLoss(torch.autograd.Function):
    """-mean(cc) of :meth:`FixedLNCC.local`, differentiated by hand: with the moving window sums p, q = sum pred^2 and
    r = sum target * pred, cc = (cross^2 + nr) / (t_var p_var), cross = r - p t / V, p_var = max(q - p^2 / V, dr),
    the loss' gradient is the box sum (its own adjoint) of d cc / d(p, q, r), times (1, 2 pred, target). Autograd's
    chain through the same expression keeps a dozen temporaries per call."""

    @staticmethod
    def forward(ctx, pred, lncc):
        stacked = torch.empty((pred.shape[0], 3) + tuple(pred.shape[2:]), dtype=pred.dtype, device=pred.device)
        stacked[:, 0] = pred[:, 0]
        torch.mul(pred[:, 0], pred[:, 0], out=stacked[:, 1])
        torch.mul(lncc.target[:, 0], pred[:, 0], out=stacked[:, 2])
        p_sum, q_sum, r_sum = _box(stacked, lncc.kernel_size // 2).split(1, dim=1)
        p_avg = p_sum / lncc.volume
        cross = r_sum - p_avg * lncc.t_sum
        p_var = q_sum - p_avg * p_sum
        free = p_var >= lncc.smooth_dr  # where the clamp passes the gradient (as torch.clamp's)
        p_var.clamp_(min=lncc.smooth_dr)
        inv = (lncc.t_var * p_var).reciprocal_()
        cc = (cross * cross).add_(lncc.smooth_nr).mul_(inv)
        value = cc.mean().neg()
        d_r = cross.mul_(inv).mul_(2.0)  # d cc / d r
        d_q = cc.div_(p_var).neg_().mul_(free)  # d cc / d q
        ctx.save_for_backward(pred, d_r, d_q, p_sum)
        ctx.lncc = lncc
        return value

    @staticmethod
    def backward(ctx, grad):
        pred, d_r, d_q, p_sum = ctx.saved_tensors
        lncc = ctx.lncc
        scale = -grad / pred.numel()
        stacked = torch.empty((pred.shape[0], 3) + tuple(pred.shape[2:]), dtype=pred.dtype, device=pred.device)
        # d cc / d p = d_r * (-t / V) + d_q * (-2 p / V), by the chain through cross and p_var
        p_part = torch.mul(d_r, lncc.t_sum, out=stacked[:, :1]).add_(d_q * p_sum, alpha=2.0)
        p_part.mul_(-scale / lncc.volume)
        torch.mul(d_q, scale, out=stacked[:, 1:2])
        torch.mul(d_r, scale, out=stacked[:, 2:])
        b_p, b_q, b_r = _box(stacked, lncc.kernel_size // 2).split(1, dim=1)
        return b_p.add_(b_q.mul_(pred).mul_(2.0)).add_(b_r.mul_(lncc.target)), None


class FixedLNCC:
    """MONAI's LNCC loss (-mean of the squared local NCC over ``kernel_size``^3 windows) against a fixed ``target``
    (1, 1, X, Y, Z), whose local sums are computed once. ``smooth_nr``, ``smooth_dr``: MONAI's defaults."""

    def __init__(self, target: torch.Tensor, kernel_size: int = 3, smooth_nr: float = 0.0, smooth_dr: float = 1e-5):
        self.kernel_size, self.smooth_nr, self.smooth_dr = kernel_size, float(smooth_nr), float(smooth_dr)
        self.volume = float(kernel_size**3)
        with torch.no_grad():
            sums = box_sum(torch.cat([target, target * target]), kernel_size)
            self.target = target
            self.t_sum = sums[:1]
            self.t_avg = self.t_sum / self.volume
            self.t_var = torch.clamp(sums[1:] - self.t_avg * self.t_sum, min=self.smooth_dr)

    def __call__(self, pred: torch.Tensor) -> torch.Tensor:
        """pred (1, 1, X, Y, Z) on the target's grid: the scalar loss, in [-1, 0] (the value of ``-local(pred).mean()``
        with a hand-written backward pass, :class:`_FixedLNCCLoss`)."""
        if pred.shape != self.target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} must have the fixed image's shape {tuple(self.target.shape)}")
        return _FixedLNCCLoss.apply(pred, self)

    def local(self, pred: torch.Tensor) -> torch.Tensor:
        """pred (1, 1, X, Y, Z) on the target's grid: the squared local NCC of each voxel's window, (1, 1, X, Y, Z)
        in [0, 1] (the loss is minus its mean)."""
        if pred.shape != self.target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} must have the fixed image's shape {tuple(self.target.shape)}")
        sums = box_sum(torch.cat([pred, pred * pred, self.target * pred], dim=1), self.kernel_size)
        p_sum, p2_sum, tp_sum = sums.split(1, dim=1)  # a split's backward is one cat (a slice's a zeroed copy)
        p_avg = p_sum / self.volume
        cross = tp_sum - p_avg * self.t_sum
        p_var = torch.clamp(p2_sum - p_avg * p_sum, min=self.smooth_dr)
        return (cross * cross + self.smooth_nr) / (self.t_var * p_var)


def _cells(ddf: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Each voxel's cell under ``x + u(x)`` (ddf (1, 3, *S) voxels): the flat index of its low corner (int32, (M,)),
    the fractions along each axis ((M,) each) and where the position lay on the grid (bool (*S) each axis)."""
    fracs, inside, index = [], [], None
    for k, n in enumerate(shape):
        ref = torch.arange(n, dtype=ddf.dtype, device=ddf.device).reshape([-1 if a == k else 1 for a in range(3)])
        pos = ddf[0, k] + ref
        clamped = pos.clamp(0, n - 1)
        inside.append(clamped == pos)
        cell = clamped.floor().clamp_(max=n - 2)  # the last cell holds the grid's far border (fraction 1)
        fracs.append((clamped - cell).reshape(-1))
        cell = cell.to(torch.int32)
        index = cell if index is None else index.mul_(n).add_(cell)
    return index.reshape(-1), fracs, inside


def _corners(flat: torch.Tensor, index: torch.Tensor, shape: tuple[int, ...], out: torch.Tensor) -> torch.Tensor:
    """The eight corners of each cell of one channel's flat image, into ``out`` (8, M): row 4 a + 2 b + e the corner
    (+a, +b, +e)."""
    for row, offset in enumerate(_offsets(shape)):
        torch.index_select(flat, 0, index + offset if offset else index, out=out[row])
    return out


def _offsets(shape: tuple[int, ...]) -> list[int]:
    """The flat offsets of a cell's eight corners from its low one, in the order 4 a + 2 b + e of (+a, +b, +e)."""
    _, y, z = shape
    return [a * y * z + b * z + e for a in (0, 1) for b in (0, 1) for e in (0, 1)]


def _interpolate(c: torch.Tensor, fracs: Sequence[torch.Tensor], slope: torch.Tensor | None = None) -> torch.Tensor:
    """The value (M,) from the corners ``c`` (8, M) by three ``lerp`` (or (M, C) from (8, M, C), the fractions (M, 1));
    with ``slope`` (3, M) (or (3, M, C)) the derivative along each axis written there (the corner planes' difference
    across it, interpolated in the other two; ``c`` overwritten)."""
    fx, fy, fz = fracs
    along_x = torch.lerp(c[:4], c[4:], fx)  # (4, M): the corners (b, e) of each y-z face, interpolated in x
    along_y = torch.lerp(along_x[:2], along_x[2:], fy)  # (2, M)
    out = torch.lerp(along_y[0], along_y[1], fz)
    if slope is not None:
        across_x = torch.sub(c[4:], c[:4], out=c[4:])  # x differences, interpolated in y then z
        across_x = torch.lerp(across_x[:2], across_x[2:], fy)
        torch.lerp(across_x[0], across_x[1], fz, out=slope[0])
        across_y = torch.sub(along_x[2:], along_x[:2], out=along_x[2:])  # y differences of the x-interpolated faces
        torch.lerp(across_y[0], across_y[1], fz, out=slope[1])
        torch.sub(along_y[1], along_y[0], out=slope[2])
    return out


def _channels_last(
    last: torch.Tensor,
    index: torch.Tensor,
    fracs: Sequence[torch.Tensor],
    shape: tuple[int, ...],
    slope: torch.Tensor | None = None,
) -> torch.Tensor:
    """Several channels at once: the image ``last`` (N, C) channels last, each corner gathered as a row of C values,
    :data:`CHUNK_VOXELS` voxels at a time (the corners of a chunk (8, chunk, C): 25 MB at C = 12). Returns the values
    (M, C); with ``slope`` (3, M, C) the derivatives along each axis written there."""
    count, channels = index.numel(), last.shape[1]
    offsets = _offsets(shape)
    result = last.new_empty((count, channels))
    c = last.new_empty((8, min(CHUNK_VOXELS, count), channels))
    for start in range(0, count, CHUNK_VOXELS):
        stop = min(start + CHUNK_VOXELS, count)
        cells, corners = index[start:stop], c[:, : stop - start]
        for row, offset in enumerate(offsets):
            torch.index_select(last, 0, cells + offset if offset else cells, out=corners[row])
        part = [f[start:stop, None] for f in fracs]  # (chunk, 1): the same fraction for every channel
        result[start:stop] = _interpolate(corners, part, None if slope is None else slope[:, start:stop])
    return result


class _Trilinear(torch.autograd.Function):
    """``image(x + u(x))`` of an image (1, C, *S) by trilinear interpolation, border padding (the position clamped
    to the grid, no gradient where it was clamped, as ``grid_sample``'s; a position exactly on the border, as the
    grid's outer faces at rest, gets the one-sided derivative there, where ``grid_sample`` gives none). The eight
    corners of each voxel's cell come by eight ``index_select`` of the flat image (the cell's flat index plus each
    corner's offset; cells end at n - 2, so every corner lies on the grid), interpolated by three ``lerp``. The
    derivative along an axis is the difference of the corner planes across it, interpolated in the other two:
    computed here with the value, since it needs the same corners, and kept for the backward pass, which only
    multiplies it by the incoming gradient (3 volumes per channel; several channels summed). Several channels (the
    MIND descriptor's 12) share their cells and are gathered channels last (:func:`_channels_last`)."""

    @staticmethod
    def forward(ctx, ddf, image):
        shape, channels = tuple(image.shape[2:]), image.shape[1]
        index, fracs, inside = _cells(ddf, shape)
        flat = image.reshape(channels, -1)
        if channels > 1:
            last = flat.t().contiguous()  # (N, C): a corner's channels side by side, gathered as one row
            slope = last.new_empty((3, index.numel(), channels)) if ctx.needs_input_grad[0] else None
            out = _channels_last(last, index, fracs, shape, slope)
            if slope is not None:
                for k in range(3):
                    slope[k].mul_(inside[k].reshape(-1, 1))
                ctx.save_for_backward(slope)
            return out.t().reshape((1, channels) + shape)
        slope = torch.empty((1, 3) + shape, dtype=ddf.dtype, device=ddf.device) if ctx.needs_input_grad[0] else None
        c = torch.empty((8, index.numel()), dtype=image.dtype, device=image.device)
        out = _interpolate(_corners(flat[0], index, shape, c), fracs, None if slope is None else slope[0].view(3, -1))
        if slope is not None:
            for k in range(3):
                slope[0, k].mul_(inside[k])
            ctx.save_for_backward(slope)
        return out.reshape((1, 1) + shape)

    @staticmethod
    def backward(ctx, grad):
        (slope,) = ctx.saved_tensors
        if slope.ndim == 5:  # one channel
            return slope * grad, None
        _, count, channels = slope.shape
        incoming, total = grad.reshape(channels, count).t().contiguous(), slope.new_empty((3, count))
        for start in range(0, count, CHUNK_VOXELS):  # per voxel and axis, the sum over the channels
            stop = min(start + CHUNK_VOXELS, count)
            torch.sum(slope[:, start:stop] * incoming[start:stop], dim=-1, out=total[:, start:stop])
        return total.reshape((1, 3) + tuple(grad.shape[2:])), None


class GridWarp:
    """``moving(x + u(x))`` by trilinear interpolation with border padding, as MONAI's ``Warp(mode="bilinear",
    padding_mode="border")``: by :class:`_Trilinear` (one pair, an image that needs no gradient of its own, every
    side at least 2 voxels), else by ``grid_sample`` (whose normalised voxel grid of the last shape is kept)."""

    def __init__(self):
        self._shape: tuple[int, ...] | None = None

    def _grid(self, shape: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._shape != shape:
            axes = [torch.linspace(-1.0, 1.0, n, dtype=like.dtype, device=like.device) for n in shape]
            # grid_sample reads the coordinates of the last array axis first
            self._ref = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)[None]
            scale = [2.0 / max(n - 1, 1) for n in reversed(shape)]
            self._scale = torch.tensor(scale, dtype=like.dtype, device=like.device).reshape(1, 3, 1, 1, 1)
            self._shape = shape
        return self._ref, self._scale

    def __call__(self, image: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
        """image (1, C, X, Y, Z), ddf (1, 3, X, Y, Z) in voxels: the warped image (1, C, X, Y, Z)."""
        shape = tuple(image.shape[2:])
        if ddf.ndim != 5 or tuple(ddf.shape) != (1, 3) + shape:
            raise ValueError(f"ddf must be (1, 3, *S) with S = {shape} (the image's grid), got {tuple(ddf.shape)}")
        if image.shape[0] == 1 and min(shape) >= 2 and not image.requires_grad:
            return _Trilinear.apply(ddf, image)
        ref, scale = self._grid(shape, ddf)
        grid = ref + (ddf.flip(1) * scale).permute(0, 2, 3, 4, 1)
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class Similarity:
    """One of :data:`SIMILARITIES`: ``"lncc"`` (:class:`FixedLNCC`, window ``lncc_kernel`` voxels), ``"mind"`` (MSE of
    MIND-SSC descriptors, :mod:`scripts.losses.mind`) or ``"mse"``."""

    def __init__(self, name: str, lncc_kernel: int = 3, mind_radius: int = 1, mind_dilation: int = 2):
        if name not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {name!r}")
        self.name, self.lncc_kernel = name, lncc_kernel
        self.mind = lambda x, sp: mind_ssc(x, radius=mind_radius, dilation=mind_dilation, spacing=sp)

    def prepare(self, fixed: torch.Tensor, moving: torch.Tensor, spacing: Sequence[float]):
        """What is warped (moving image or its MIND descriptor) and the target: the fixed image (``"mse"``), its
        descriptor (``"mind"``) or its :class:`FixedLNCC` (``"lncc"``)."""
        if self.name == "mind":
            with torch.no_grad():
                return self.mind(moving, spacing), self.mind(fixed, spacing)
        if self.name == "lncc":
            return moving, FixedLNCC(fixed, self.lncc_kernel)
        return moving, fixed

    def warped(self, warp, source: torch.Tensor, target, ddf: torch.Tensor) -> torch.Tensor:
        """The similarity of ``source`` warped by ``ddf`` (``warp(source, ddf)``: a :class:`GridWarp` or MONAI's
        ``Warp``) to the ``target`` of :meth:`prepare`."""
        moved = warp(source, ddf)
        if isinstance(target, FixedLNCC):
            return target(moved)
        return F.mse_loss(moved, target)
