"""Test-time (per-pair) registration refinement with the biomechanical prior.

:func:`refine_pair` optimises a displacement field for one image pair, already resampled on the fixed grid:

    minimise  alpha * similarity(fixed, moving o (id + u))  +  gamma * BiomechanicalLoss(u)  +  smooth * D(u)

with Adam, coarse to fine. ``BiomechanicalLoss`` (:mod:`scripts.losses.biomechanical`, mechanics in mm) is rigidity on
bones, shearing on the sliding band (with its normals) and log-Jacobian elsewhere, or log-Jacobian everywhere
(``regulariser="jacobian"``). ``D`` is a small "sliding-aware" diffusion term (below).

Parameterisation: a dense displacement on a working grid of about ``grid_mm`` (2 mm) per voxel, WHY:

* the sliding prior only makes sense if the field can actually jump tangentially across the cavity wall. A cubic
  B-spline control grid (spacing >= 2 voxels) or a heavily smoothed stationary velocity is C1/C2 everywhere, so a
  tangential jump is smeared over the whole support (>= 4 control points, ~16-20 mm), exactly where the lung or
  liver slides along the ribs; the shearing term would then have nothing to allow. A dense field at 2 mm can
  jump within one voxel;
* every level is cheap: one warp (``grid_sample``), one similarity and the regulariser per iteration, no
  scaling-and-squaring (a velocity integration costs 7 warps per iteration);
* invertibility is enforced where it is wanted: the log-Jacobian term is a barrier against det J -> 0 on the
  Jacobian region (with ``fold_penalty`` pushing back any fold that Adam's step jumps into); inside the thin
  sliding band folding is allowed in principle (a slip is not a diffeomorphism of the whole domain), and the fold
  barrier charges it a tenth as much (:data:`BAND_FOLD_WEIGHT`): a band estimated from labels a voxel off the true
  wall lies partly off it, and folds there are folds off the true band.

A dense field has one weakness: the central differences of :mod:`scripts.losses.mechanics` do not see a checkerboard
(their null space at the Nyquist frequency), so the similarity could write voxel-scale noise into the field
unopposed. ``D`` closes that gap: the mean squared FORWARD difference of the field (mm / mm) on the Jacobian
and rigid regions; across the sliding wall that of the normal component u . n only, so the tangential jump stays
free (:mod:`scripts.refinement.terms`; given the wall's side, exactly on the pairs that cross it).

Coarse to fine: ``levels`` grids, each half the resolution of the next, the finest being the working grid; the
field is upsampled (trilinear) from level to level, or with ``sided_upsampling`` each side of the wall from its own
side (the slip arrives as a step, not as a ramp the homogeneous tissue next to the wall cannot sharpen; an option,
measured in docs/README.md). Images are Gaussian-smoothed before downsampling; each level's
images and regions are resampled from the next finer level (factor ~2: small kernels, even from a 1 mm input;
:mod:`scripts.refinement.pyramid`).

Memory: the terms of an iteration are back-propagated one at a time (:func:`backward_terms`), each term's
intermediates freed before the next term is built, with the gradient of one backward pass of their sum (to float
rounding): on the 192 x 192 x 150 grid of a 256 x 256 x 200 CT at 1.5 mm the whole pair's peak fell from 4.2 to 2.7 GiB
(2 iterations per level; 3.1 GiB with the default 310: ``python -m benchmarks.benchmark_memory --cases refine``).

Step control: Adam's step is ``lr`` voxels per iteration in every voxel at once, and the barrier terms are stiff, so
too large a step makes a level blow up (folds, then a loss in the tens). Each level keeps its best state; when the
total loss rises more than :data:`DIVERGENCE_MARGIN` above it (or is not finite), the field goes back to that state
and Adam restarts with half the step (the curve's ``lr`` column shows it). A level ends at its best state.

Conventions: tensors (1, C, X, Y, Z); displacement channel k along array axis k, in voxels of the grid it lives
on, ``warped(x) = moving(x + u(x))`` (as MONAI's ``Warp``, align_corners=True geometry: voxel centres 0..n-1 span the
same extent on every grid).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence

import torch

from scripts.losses.biomechanical import BiomechanicalLoss
from scripts.losses.fixed_regions import FixedRegionLoss
from scripts.refinement.pyramid import (
    WORKING_GRID_MM,
    grid_spacing,
    resize_field,
    resize_field_sided,
    resize_image,
    resize_regions,
    resize_side,
    working_shape,
)
from scripts.refinement.similarity import GridWarp, Similarity
from scripts.refinement.terms import diffusion_weights, fold_weights, forward_fold_barrier, weighted_diffusion
from scripts.regions.labels import SLIDING

__all__ = [
    "BAND_FOLD_WEIGHT",
    "DEFAULT_ALPHA",
    "DEFAULT_ITERATIONS",
    "DEFAULT_LEVELS",
    "DEFAULT_SMOOTH",
    "backward_terms",
    "level_terms",
    "refine_pair",
]

# a level whose total loss rises this far above its best so far is diverging (more than LNCC's whole range, [-1, 0]):
# its field goes back to that best state and Adam restarts with half the step
DIVERGENCE_MARGIN = 1.0
# default similarity weight ``alpha``: LNCC lies in [-1, 0], the MIND-SSC mean squared difference is ~10x smaller
# (tuned on the deformed real CT of benchmarks/sweep_refine.py; the MSE value is a guess of the same order)
DEFAULT_ALPHA = {"lncc": 1.0, "mind": 10.0, "mse": 10.0}
# default diffusion weight ``smooth`` per prior. With the sliding band, the diffusion is what carries the image's pull
# from textured tissue into the homogeneous contents next to the wall, whose tangential jump the band leaves free:
# 1.0 recovers more of the slip than 0.5 on every breathing case measured (held-out CT 83 against 80 %, deep breathing
# 62 against 50 %). Without a band it only over-smooths: 0.5 is the better value there (held-out CT 1.14 against
# 1.19 mm, the smooth field of benchmarks/benchmark_refine.py 2.89 against 3.45 mm). docs/README.md, issue 20.
DEFAULT_SMOOTH = {"rigidity_shearing_jacobian": 1.0, "rigidity_jacobian": 0.5, "jacobian": 0.5}
# weight of the fold barrier's cells on the sliding band, relative to those off it (1). 0 let the band fold freely: with
# a segmenter's labels the band lies partly off the true wall, and 0.003-0.022 % of the body folded off the true band;
# 0.1 cut that 3-7x (out2 0.012 -> 0.003 %, deep breathing 0.022 -> 0.008 %) for half a point of slip (deep breathing
# one point); 1.0 cost 2-3 points at deep breathing. docs/README.md, *Walls nobody tuned on*.
BAND_FOLD_WEIGHT = 0.1
DEFAULT_LEVELS, DEFAULT_ITERATIONS = 3, (150, 100, 60)


def level_terms(
    param,
    weights,
    losses,
    source,
    target,
    spacing,
    reg_mask,
    normals,
    sliding,
    smooth_normals,
    side=None,
    band_fold_weight=BAND_FOLD_WEIGHT,
):
    """The terms of a level's loss, ``{name: (weight, function computing the term)}`` in the order
    :func:`backward_terms` takes them: ``fold`` (barrier), ``smooth`` (the diffusion D), ``regulariser``,
    ``similarity``. ``weights``: (alpha, gamma, smooth, fold_barrier); ``losses``: (the ``Similarity``, the warp
    (:mod:`scripts.refinement.similarity`), the ``BiomechanicalLoss``); ``sliding``, ``smooth_normals``, ``side``: the
    band, normals and wall side of D (:mod:`scripts.refinement.terms`; None: plain diffusion, or the side guessed
    from the normals); ``band_fold_weight``: the fold barrier's weight on the band's cells (1 off it). What does not
    change within the level (the diffusion's and the barrier's weights, the regulariser's regions:
    :class:`~scripts.losses.fixed_regions.FixedRegionLoss`) is computed here, once."""
    alpha, gamma, smooth, fold_barrier = weights
    sim, warp, reg = losses
    spacing_t = torch.tensor(spacing).reshape(1, 3, 1, 1, 1)
    shape = tuple(param.shape[2:])
    cells = fold_weights(shape, None if sliding is None else torch.where(sliding, band_fold_weight, 1.0))
    pairs = diffusion_weights(spacing, shape, sliding, smooth_normals, side)
    return {
        "fold": (fold_barrier, functools.partial(forward_fold_barrier, param, None, weights=cells)),
        "smooth": (smooth, lambda: weighted_diffusion(param * spacing_t, pairs)),
        "regulariser": (gamma, functools.partial(FixedRegionLoss(reg, reg_mask, normals, spacing), param)),
        "similarity": (alpha, functools.partial(sim.warped, warp, source, target, param)),
    }


def backward_terms(terms: dict[str, tuple[float, Callable[[], torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """The value of each term (detached, by name), after the gradient of their weighted sum has been accumulated in
    the parameters' ``.grad`` one term at a time.

    Memory: each term's autograd graph is built, back-propagated with its weight and freed before the next term is
    built, so an iteration holds the largest term's intermediates (on a 192 x 192 x 150 grid the diffusion's,
    0.7 GiB) instead of all of them (1.9 GiB). Numerics: the gradient is that of one backward pass of the weighted
    sum to float rounding (the engine adds the terms' contributions in another order; tests/test_refine.py checks it
    for every regulariser and similarity: within 1e-6 of the largest component). A term whose weight is <= 0 is not
    computed (its value is 0), except the similarity, which the loss curve always reports.
    """
    values: dict[str, torch.Tensor] = {}
    for name, (weight, term) in terms.items():
        if weight <= 0 and name != "similarity":
            values[name] = torch.zeros(())
            continue
        value = term()
        (weight * value).backward()
        values[name] = value.detach()
        del value
    return values


def _check_inputs(fixed, moving, spacing, reg_mask, normals, init_ddf, wall_side=None):
    if fixed.ndim != 5 or fixed.shape[:2] != (1, 1):
        raise ValueError(f"fixed must be (1, 1, X, Y, Z), got shape {tuple(fixed.shape)}")
    if moving.shape != fixed.shape:
        raise ValueError(f"moving {tuple(moving.shape)} must be on the fixed grid {tuple(fixed.shape)}")
    spacing = [float(s) for s in torch.as_tensor(spacing, dtype=torch.float64).reshape(-1)]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing}")
    grid = tuple(fixed.shape[2:])
    if reg_mask is not None and (reg_mask.ndim != 5 or tuple(reg_mask.shape) != (1, 1) + grid):
        raise ValueError(f"reg_mask must be (1, 1, *S) = {(1, 1) + grid}, got {tuple(reg_mask.shape)}")
    if normals is not None and tuple(normals.shape) != (1, 3) + grid:
        raise ValueError(f"normals must be (1, 3, *S) = {(1, 3) + grid}, got {tuple(normals.shape)}")
    if init_ddf is not None and tuple(init_ddf.shape) != (1, 3) + grid:
        raise ValueError(f"init_ddf must be (1, 3, *S) = {(1, 3) + grid}, got {tuple(init_ddf.shape)}")
    if wall_side is not None:
        if tuple(wall_side.shape) != (1, 1) + grid:
            raise ValueError(f"wall_side must be (1, 1, *S) = {(1, 1) + grid}, got {tuple(wall_side.shape)}")
        values = torch.unique(wall_side).tolist()
        if any(v not in (-1, 0, 1) for v in values):
            raise ValueError(f"wall_side holds 1 (inside the wall), 0 (outside) or -1 (unknown), got values {values}")
    return spacing


def refine_pair(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    spacing: Sequence[float],
    reg_mask: torch.Tensor | None = None,
    normals: torch.Tensor | None = None,
    wall_side: torch.Tensor | None = None,
    init_ddf: torch.Tensor | None = None,
    similarity: str = "lncc",
    regulariser: str = "rigidity_shearing_jacobian",
    gamma: float = 0.5,
    smooth: float | None = None,
    levels: int = DEFAULT_LEVELS,
    iterations: int | Sequence[int] = DEFAULT_ITERATIONS,
    lr: float | Sequence[float] = 0.3,
    grid_mm: float | None = WORKING_GRID_MM,
    lncc_kernel: int = 3,
    mind_radius: int = 1,
    mind_dilation: int = 2,
    fold_penalty: float = 1.0,
    fold_barrier: float = 10.0,
    alpha: float | None = None,
    sided_upsampling: bool = False,
    band_fold_weight: float = BAND_FOLD_WEIGHT,
    progress: bool = False,
) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """Optimise the displacement of one pair (see the module docstring).

    Args:
        fixed, moving: (1, 1, X, Y, Z) float images on the same (fixed) grid, normalised (CT: HU window to [0, 1]).
        spacing: (3,) voxel size of that grid, mm.
        reg_mask: (1, 1, X, Y, Z) 0 Jacobian / 1 rigid / 2 sliding; needed unless ``regulariser="jacobian"``.
        normals: (1, 3, X, Y, Z) unit sliding normals (mm frame, channel k along axis k), needed with sliding voxels.
        wall_side: (1, 1, X, Y, Z) 1 inside the sliding wall (the cavity), 0 outside, -1 unknown (e.g.
            ``cavity_regions(..., return_side=True)``): the diffusion then frees the slip exactly on the pairs that
            cross the wall (:mod:`scripts.refinement.terms`); None: it guesses from the normals.
        init_ddf: (1, 3, X, Y, Z) initial displacement in voxels of the grid (e.g. a network's prediction).
        similarity: ``"lncc"`` (MONAI's LNCC, window ``lncc_kernel`` voxels of each level), ``"mind"`` (MSE of
            MIND-SSC descriptors, :mod:`scripts.losses.mind`) or ``"mse"``.
        alpha: weight of the similarity (``None``: :data:`DEFAULT_ALPHA` of the similarity, 1 for LNCC).
        regulariser: ``"rigidity_shearing_jacobian"`` or ``"jacobian"`` (or ``"rigidity_jacobian"``).
        gamma: weight of the biomechanical loss.
        smooth: weight of the sliding-aware forward-difference diffusion (``None``: :data:`DEFAULT_SMOOTH` of the
            regulariser, 1.0 with the sliding band, 0.5 without).
        levels: number of grids (the finest is the working grid, each coarser one half as fine).
        iterations: Adam iterations per level, coarsest first (one int: the same on every level).
        lr: Adam learning rate, voxels of the level's grid per step (one per level, coarsest first, or one).
        grid_mm: working voxel size in mm (the input grid when ``None`` or when it is already coarser).
        fold_penalty: pushes folded voxels (det J <= 0) back (see :class:`scripts.losses.biomechanical.JacobianLoss`).
        fold_barrier: weight of mean relu(0.2 - det J_f)^2 outside the sliding band, J_f by forward differences.
        band_fold_weight: the barrier's weight on the band's cells, relative to those off it (0: the band folds
            freely; :data:`BAND_FOLD_WEIGHT`).
        sided_upsampling: with ``wall_side`` and the sliding band, carry the field from level to level (and back to
            the input grid) with each side of the wall interpolated from its own side
            (:func:`scripts.refinement.pyramid.resize_field_sided`): the slip reaches the next level as a step at the
            wall instead of a ramp. It helps where the wall is right and the motion large (deep breathing: slip 73 ->
            79 %, band EPE 5.40 -> 4.49 mm), costs a little where the labels are a voxel off (the second pass then
            finds less shear off the label wall); off by default (plain trilinear), docs/README.md.
        progress: show a tqdm bar.

    Returns:
        ``(ddf, curve)``: ddf (1, 3, X, Y, Z) float32 in voxels of the input grid (detached), and one dict per
        iteration with ``level``, ``similarity``, ``regulariser``, ``smooth``, ``fold``, ``total``, ``lr`` (the
        step then, halved after a divergence) and ``seconds``.
    """
    spacing = _check_inputs(fixed, moving, spacing, reg_mask, normals, init_ddf, wall_side)
    if regulariser != "jacobian" and reg_mask is None:
        raise ValueError(f"regulariser {regulariser!r} needs reg_mask; use regulariser='jacobian' without regions")
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    iters = [int(iterations)] * levels if isinstance(iterations, int) else [int(i) for i in iterations]
    rates = [float(lr)] * levels if isinstance(lr, (int, float)) else [float(r) for r in lr]
    if len(iters) != levels or len(rates) != levels:
        raise ValueError(f"give one iteration count and one lr per level ({levels}), got {iters} and {rates}")
    in_shape = tuple(fixed.shape[2:])
    work = working_shape(in_shape, spacing, grid_mm)
    shapes = [tuple(max(4, (n - 1) // 2 ** (levels - 1 - i) + 1) for n in work) for i in range(levels)]
    fixed, moving = fixed.detach().float(), moving.detach().float()
    sim = Similarity(similarity, lncc_kernel, mind_radius, mind_dilation)
    alpha = DEFAULT_ALPHA[similarity] if alpha is None else float(alpha)
    reg = BiomechanicalLoss(mode=regulariser, fold_penalty=fold_penalty)  # checks the regulariser's name
    smooth = DEFAULT_SMOOTH[regulariser] if smooth is None else float(smooth)
    warp = GridWarp()
    masks = None if reg_mask is None else reg_mask.detach().float()
    nrm = None if normals is None else normals.detach().float()
    u = None if init_ddf is None else init_ddf.detach().float()
    sided = bool(sided_upsampling) and wall_side is not None and regulariser == "rigidity_shearing_jacobian"
    curve: list[dict[str, float]] = []
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=sum(iters), desc="refine", unit="it")
    start = time.perf_counter()
    # image / region pyramid, finest first, each level from the next finer one (small kernels, cheap at 1 mm)
    pyramid: list[tuple] = [None] * levels
    f_l, m_l, mask_l, n_l = fixed, moving, masks, nrm
    side_l = None if wall_side is None else wall_side.detach().float()
    for level in reversed(range(levels)):
        f_l, m_l = resize_image(f_l, shapes[level]), resize_image(m_l, shapes[level])
        if mask_l is not None:
            mask_l, n_l = resize_regions(mask_l, n_l, shapes[level])
        if side_l is not None:
            side_l = resize_side(side_l, shapes[level])
        pyramid[level] = (f_l, m_l, mask_l, n_l, side_l)
    for level, (shape, n_iter, rate) in enumerate(zip(shapes, iters, rates)):
        sp = grid_spacing(in_shape, spacing, shape)
        f_l, m_l, mask_l, n_l, side_l = pyramid[level]
        source, target = sim.prepare(f_l, m_l, sp)
        # the diffusion term frees the tangential jump only where the shearing term is used
        slides = regulariser == "rigidity_shearing_jacobian" and mask_l is not None
        sliding = (mask_l == SLIDING) if slides else None
        n_smooth = n_l if slides else None
        side = side_l if slides else None
        if u is None:
            param = torch.zeros((1, 3) + shape)
        elif level > 0 and sided and side is not None:  # the previous level's field, each side from its own
            param = resize_field_sided(u, shape, pyramid[level - 1][4], side).clone()
        else:
            param = resize_field(u, shape).clone()
        param.requires_grad_(True)
        opt = torch.optim.Adam([param], lr=rate)
        best_total, best = math.inf, param.detach().clone()
        weights, losses = (alpha, gamma, smooth, fold_barrier), (sim, warp, reg)
        terms = level_terms(
            param, weights, losses, source, target, sp, mask_l, n_l, sliding, n_smooth, side, band_fold_weight
        )
        for _ in range(n_iter):
            opt.zero_grad(set_to_none=True)
            val = backward_terms(terms)
            s_val, r_val, d_val, f_val = (val[key] for key in ("similarity", "regulariser", "smooth", "fold"))
            total = alpha * s_val + gamma * r_val + smooth * d_val + fold_barrier * f_val
            value = float(total)
            step = opt.param_groups[0]["lr"]
            curve.append(
                dict(
                    level=level,
                    similarity=float(s_val),
                    regulariser=float(r_val),
                    smooth=float(d_val),
                    fold=float(f_val),
                    total=value,
                    lr=step,
                    seconds=time.perf_counter() - start,
                )
            )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(level=level, loss=f"{value:.4f}")
            if not value <= best_total + DIVERGENCE_MARGIN:  # diverging (or NaN): back to the level's best state,
                with torch.no_grad():  # with half the step and fresh Adam moments
                    param.copy_(best)
                opt = torch.optim.Adam([param], lr=step / 2)
                continue
            if value < best_total:
                best_total = value
                best.copy_(param.detach())
            opt.step()
        u = best if math.isfinite(best_total) else param.detach()  # the level's best state (the last step unchecked)
    if bar is not None:
        bar.close()
    if u is None:  # no iterations at all
        u = torch.zeros((1, 3) + shapes[-1])
    if sided:
        return resize_field_sided(u, in_shape, pyramid[-1][4], wall_side.float()).contiguous(), curve
    return resize_field(u, in_shape).contiguous(), curve
