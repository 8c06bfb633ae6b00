"""The second pass of the sliding refinement: the wall moved to where the first field shears, then more iterations.

The sliding band comes from a segmentation (:func:`scripts.regions.cavity.cavity_regions`), and a segmenter's wall
is a voxel off the true one here and there. The refinement frees the slip on the voxel pairs that cross the band's
wall and on the pairs beside it (:mod:`scripts.refinement.terms`), so a first pass from a wall a voxel off still
draws most of the slip, as a shear spread over the pairs next to the true wall. That shear is evidence of where the
wall is that the labels do not have and that the image shows only where the wall is an edge. The second pass:

1. the field of the first pass, in mm;
2. the regions again, from the same segmentation, with the wall moved by up to ``snap_mm`` to where that field
   shears most (``cavity_regions(..., snap_mm=..., shear_field=...)``, :func:`scripts.regions.cavity.snap_to_edge`:
   candidates a voxel in or out, scored by the tangential shear |(grad u) n|_t on their two voxel layers, averaged
   along the wall);
3. with ``step_start``, the first field made a step at the new wall (:func:`scripts.refinement.start.step_at_wall`:
   each band voxel takes its own side's nearest value off the band);
4. ``iterations`` more Adam iterations on the working grid only (one level), from that field, with the new
   band, normals and side, the fold barrier charging the new band as fully as the rest (``band_fold_weight`` 1: the
   first pass charges its band a tenth, :data:`~scripts.refinement.optimiser.BAND_FOLD_WEIGHT`, so that the slip can
   form; the snapped band lies nearer the true wall, and what still folds there is mostly off it).

**The wall search** (``wall_search`` > 0, off by default; :func:`search_wall_shift`): the snap of step 2 finds the
shear of a first field that was fitted with the labels' wall, so it finds that wall again wherever the true one lies
two voxels away (the labels inside the parietal boundary: the slip stays at the labels' wall). The search lets the
image judge instead: for every shift k of the whole labelled wall, -``wall_search`` <= k <= ``wall_search`` voxels
(the cavity eroded or dilated, ``cavity_regions(..., wall_shift=k)``), ``search_iterations`` iterations of this pass
from the first field; each result's squared local NCC (the LNCC of the refinement, 3^3 window, whatever similarity
the pass itself optimises) is averaged over the voxels the candidate walls disagree on, and the best shift wins (a tie:
the smallest shift). A shift other than 0 then replaces the snap (the pass runs with that wall); 0 keeps the snap.
WHY one shift for the whole wall: chosen voxel by voxel (each the shift whose local NCC is best nearby, as the snap
chooses) the wall came out ragged and the slip fell on every wall (real CT, seed 0: 77 % against 85 % on the
default wall); and a search from a step at each candidate's wall with fewer iterations chose the outermost shift on
every case (docs/README.md, *Walls nobody tuned on*).

**The search before the finest level** (:func:`first_pass_with_search`, ``--refine_first_wall_search``, off by
default, on in ``configs/refine_wall_search.json``): the same search, run on the coarser levels' field (fitted with
the labels' wall on a coarser grid: it has not yet drawn the slip to the voxel), then the finest level's iterations
with the chosen wall, no snap. The second pass then starts from the chosen wall (``wall_shift``: its snap moves that
wall, its search tries the shifts around it). WHY: after the whole first pass the slip is already drawn at the
labels' wall, and the second pass's search, from that field, sees less difference between the shifts (real CT, the
true wall two voxels out of the labels: 73 % of the slip with the second pass's search, 75 % with this one, for
4.5 s more at 192 x 160 x 256; docs/README.md, *Walls nobody tuned on*).

**The search per region** (``region_mm`` > 0, ``--refine_first_wall_region_mm``, off by default): the same candidates,
but each voxel of the wall moves by the candidate whose squared local NCC, averaged with a Gaussian of ``region_mm``
over the disagreeing voxels, is best there (``cavity_regions(..., wall_shift=map)``): for labels off in different
directions in different places. Measured mixed (docs/README.md, *Walls nobody tuned on*): where two shifts score
alike the choice follows noise and the wall comes out ragged.

All on the refinement's WORKING grid (``grid_mm`` of :func:`~scripts.refinement.optimiser.refine_pair`, about 2
mm): the images, the label map and the first field are brought there first (the regions' distance transforms and
filters cost about their voxel count: eight times less at 2 mm than at 1 mm), and the field goes back to the input
grid at the end.

Measured (docs/README.md, *Walls nobody tuned on*): the snap gains most where the labels are a voxel off (organs
eroded, a segmenter's labels), the extra iterations alone (``snap_mm=0``) do not.

Conventions are those of :func:`scripts.refinement.optimiser.refine_pair`: images (1, 1, X, Y, Z) normalised, the
field (1, 3, X, Y, Z) in voxels of that grid, ``spacing`` (3,) mm.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import ndimage

from scripts.refinement.optimiser import refine_pair
from scripts.refinement.pyramid import grid_spacing, resize_field, resize_image, resize_labels, working_shape
from scripts.refinement.similarity import FixedLNCC, GridWarp
from scripts.refinement.start import step_at_wall
from scripts.regions.cavity import cavity_regions
from scripts.regions.labels import SLIDING

__all__ = [
    "FIRST_PASS_WALL_REGION_MM",
    "FIRST_PASS_WALL_SEARCH",
    "SECOND_PASS_BAND_FOLD_WEIGHT",
    "SECOND_PASS_ITERATIONS",
    "SECOND_PASS_LR",
    "SECOND_PASS_SNAP_MM",
    "SECOND_PASS_STEP_START",
    "SECOND_PASS_WALL_SEARCH",
    "first_pass_with_search",
    "search_wall_shift",
    "second_pass",
]

# the second pass as measured (docs/README.md, *Walls nobody tuned on*): 30 iterations after refine_pair's schedule
# (150, 100, 60) at a smaller step (the bones stay rigid while the band moves); on in configs/refine.json since 0.7.0:
# half the finest level's time (26.7 -> 39.3 s at 192 x 160 x 256, 2 cores); the 60 finest iterations split 30 + 30
# instead cost slip where the labels are right
SECOND_PASS_ITERATIONS = 30
SECOND_PASS_LR = 0.1
SECOND_PASS_SNAP_MM = 3.0
# bundle 0.8.1: folds off the true band 0.0026 -> 0.0010 % of the body (CT out2, a segmenter's labels), down on 15 of
# the 16 CT rows that had any, for 0.1-0.7 points of slip (docs/README.md, *Walls nobody tuned on*)
SECOND_PASS_BAND_FOLD_WEIGHT = 1.0
# the start with a step at the moved wall (start.step_at_wall): measured in docs/README.md, *Walls nobody tuned on*
SECOND_PASS_STEP_START = False
# the wall search (module docstring): off by default; it costs 2 * wall_search + 1 more passes of search_iterations
SECOND_PASS_WALL_SEARCH = 0
# the search before the first pass's finest level (first_pass_with_search) and its shift per region (region_mm, 0: one
# shift for the whole wall): off by default, measured in docs/README.md
FIRST_PASS_WALL_SEARCH, FIRST_PASS_WALL_REGION_MM = 0, 0.0
logger = logging.getLogger(__name__)
DEFAULT_GRID_MM = inspect.signature(refine_pair).parameters["grid_mm"].default
DEFAULT_SCHEDULE = {k: inspect.signature(refine_pair).parameters[k].default for k in ("levels", "iterations")}


def second_pass(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    spacing: Sequence[float],
    ddf: torch.Tensor,
    seg: np.ndarray,
    image: np.ndarray | None = None,
    region_options: Mapping[str, Any] | None = None,
    refine_options: Mapping[str, Any] | None = None,
    snap_mm: float = SECOND_PASS_SNAP_MM,
    iterations: int = SECOND_PASS_ITERATIONS,
    lr: float | None = SECOND_PASS_LR,
    band_fold_weight: float | None = SECOND_PASS_BAND_FOLD_WEIGHT,
    step_start: bool = SECOND_PASS_STEP_START,
    wall_search: int = SECOND_PASS_WALL_SEARCH,
    search_iterations: int | None = None,
    wall_shift: int | np.ndarray = 0,
) -> tuple[torch.Tensor, list[dict[str, float]], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Move the wall to where ``ddf`` shears and refine on (module docstring).

    Args:
        fixed, moving: (1, 1, X, Y, Z) the normalised images the first pass registered.
        spacing: (3,) voxel size of that grid, mm.
        ddf: (1, 3, X, Y, Z) the first pass's field, voxels of the grid.
        seg: (X, Y, Z) the label map the first pass's regions came from; ``image``: the CT (HU) on the grid, or None.
        region_options: the other keywords of :func:`scripts.regions.cavity.cavity_regions` the first pass used
            (``band_mm``, ``closing_mm``, ``pairs``, ...), except ``snap_mm`` and ``shear_field``.
        refine_options: the keywords of :func:`scripts.refinement.optimiser.refine_pair` the first pass used; its
            ``levels`` and ``iterations`` are replaced (one level, ``iterations``), a per-level ``lr`` becomes the
            finest level's.
        snap_mm: how far the wall may move, mm (whole voxels of the finest axis).
        iterations: Adam iterations of the second pass.
        lr: their step (None: the first pass's finest level's).
        band_fold_weight: the fold barrier's weight on the new band's cells, relative to the others (None: the first
            pass's, ``refine_options``'s or :func:`refine_pair`'s default).
        step_start: start the iterations from the first field made a step at the new wall (each band voxel its own
            side's nearest value off the band), not from the first field itself.
        wall_search: with ``iterations`` > 0, search the shift of the whole labelled wall within this many voxels
            of ``wall_shift`` by the image's similarity (module docstring, :func:`search_wall_shift`); 0: no search.
        search_iterations: the iterations of each candidate of the search (None: ``iterations``).
        wall_shift: the wall the first pass used, the labels' moved by this many voxels (> 0 outwards; that of
            :func:`first_pass_with_search`; a map of the working grid from its search per region): the snap and the
            search start from it.

    Returns:
        ``(ddf, curve, (mask, normals, side))``: the field (1, 3, X, Y, Z) voxels, the second pass's loss curve
        (:func:`refine_pair`'s rows), and the regions it used (those of ``cavity_regions(..., return_side=True)``),
        nearest-sampled back to the input grid when the working grid is coarser.
    """
    if snap_mm < 0 or iterations < 0 or wall_search < 0:
        raise ValueError(
            f"need snap_mm >= 0, iterations >= 0 and wall_search >= 0, got {snap_mm}, {iterations} and {wall_search}"
        )
    grid = _working_grid(
        fixed, moving, spacing, ddf, seg, image, region_options, refine_options, lr, band_fold_weight, iterations > 0
    )
    in_shape, sp, ddf_w = tuple(fixed.shape[2:]), grid.spacing, grid.ddf
    shift, reuse = wall_shift, None
    if wall_search > 0 and iterations > 0:
        n_search = int(iterations if search_iterations is None else search_iterations)
        shift, _, runs = search_wall_shift(
            grid.images, sp, ddf_w, grid.regions, grid.refine_options, int(wall_search), n_search, centre=shift
        )
        if not step_start and n_search == iterations:  # the candidates' passes are this pass: same start, iterations
            reuse = _uniform_run(runs, shift, wall_shift)
    moved = not np.array_equal(shift, wall_shift)
    if moved and reuse is not None:
        (out, curve), regions = reuse
        out = resize_field(out, in_shape)
    else:
        seg_w, image_w, options = grid.regions
        mask, normals, side = cavity_regions(
            seg_w,
            sp,
            image=image_w,
            snap_mm=0.0 if moved else snap_mm,
            shear_field=ddf_w[0].numpy() * np.asarray(sp, dtype=np.float32).reshape(3, 1, 1, 1),
            return_side=True,
            wall_shift=shift,
            **options,
        )
        regions = _as_tensors(mask, normals, side)
        if iterations == 0:
            out, curve = ddf, []
        else:
            start = step_at_wall(ddf_w, regions[0] == SLIDING, regions[2], sp) if step_start else ddf_w
            out, curve = _one_level(grid.images, sp, start, regions, iterations, grid.refine_options)
            out = resize_field(out, in_shape)
    back = [resize_labels(r, in_shape)[0] for r in regions]  # nearest: the band's normals stay unit vectors
    return out, curve, (back[0][0].numpy().astype(np.uint8), back[1].numpy(), back[2][0].numpy().astype(np.int8))


def first_pass_with_search(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    spacing: Sequence[float],
    seg: np.ndarray,
    image: np.ndarray | None = None,
    region_options: Mapping[str, Any] | None = None,
    refine_options: Mapping[str, Any] | None = None,
    wall_search: int = 1,
    search_iterations: int = SECOND_PASS_ITERATIONS,
    region_mm: float = FIRST_PASS_WALL_REGION_MM,
) -> tuple[torch.Tensor, list[dict[str, float]], int | np.ndarray]:
    """The first pass with the wall search before its finest level (module docstring, *The search before the finest
    level*): :func:`refine_pair` with ``refine_options`` up to its finest level; every shift of the labelled wall
    within ``wall_search`` voxels refined ``search_iterations`` iterations from that field and scored as the second
    pass's search scores them; the finest level's iterations, step and band fold weight then run with the chosen
    wall (no snap).

    Args:
        fixed, moving, spacing: as :func:`refine_pair` takes them.
        seg: (X, Y, Z) the label map the regions in ``refine_options`` came from; ``image``: the CT (HU) or None.
        region_options: the other keywords of :func:`scripts.regions.cavity.cavity_regions` those regions used.
        refine_options: the keywords of :func:`refine_pair` (``reg_mask``, ``normals``, ``wall_side``,
            ``init_ddf``, ``levels``, ``iterations``, ``lr``, ...).
        wall_search: the shifts tried, -wall_search..wall_search voxels (> 0).
        search_iterations: Adam iterations of each candidate.
        region_mm: 0: one shift for the whole wall; > 0: a shift per region (:func:`search_wall_shift`).

    Returns:
        ``(ddf, curve, shift)``: ``ddf`` and ``curve`` as :func:`refine_pair` returns them (the finest level's rows
        those of the chosen wall's iterations, the candidates' not kept), and the chosen shift, voxels (> 0
        outwards: :func:`second_pass`'s ``wall_shift``; with ``region_mm`` a map on the working grid).
    """
    if wall_search < 1 or search_iterations < 1:
        raise ValueError(f"need wall_search >= 1 and search_iterations >= 1, got {wall_search} and {search_iterations}")
    options = {**DEFAULT_SCHEDULE, **dict(refine_options or {})}
    levels, iterations = int(options["levels"]), options["iterations"]
    iterations = [int(iterations)] * levels if isinstance(iterations, int) else [int(i) for i in iterations]
    start = time.perf_counter()
    logger.info("first pass: the wall search (%d voxels in or out) before its finest level", wall_search)
    coarse, curve = refine_pair(fixed, moving, spacing, **dict(options, iterations=iterations[:-1] + [0]))
    if iterations[-1] == 0:
        return coarse, curve, 0
    grid = _working_grid(fixed, moving, spacing, coarse, seg, image, region_options, options, None, None)
    shift, _, runs = search_wall_shift(
        grid.images,
        grid.spacing,
        grid.ddf,
        grid.regions,
        grid.refine_options,
        int(wall_search),
        search_iterations,
        region_mm=region_mm,
    )
    reuse = _uniform_run(runs, shift, 0) if search_iterations == iterations[-1] else None
    if reuse is not None:  # the chosen candidate's pass is the finest level
        ddf, finest = reuse[0]
    else:
        seg_w, image_w, region_w = grid.regions
        wall = cavity_regions(seg_w, grid.spacing, image=image_w, return_side=True, wall_shift=shift, **region_w)
        ddf, finest = _one_level(
            grid.images, grid.spacing, grid.ddf, _as_tensors(*wall), iterations[-1], grid.refine_options
        )
    seconds = time.perf_counter() - start - (finest[-1]["seconds"] if finest else 0.0)  # the candidates' time too
    rows = [dict(row, level=levels - 1, seconds=row["seconds"] + seconds) for row in finest]
    return resize_field(ddf, tuple(fixed.shape[2:])), curve + rows, shift


class _Grid(NamedTuple):
    """A pass's inputs on the working grid: ``images`` (fixed, moving) (1, 1, *S) or None, ``spacing`` (3,) mm,
    ``ddf`` (1, 3, *S) voxels, ``regions`` (label map, CT or None, ``cavity_regions`` keywords) and the
    ``refine_options`` of each one-level pass there."""

    images: tuple[torch.Tensor, torch.Tensor] | None
    spacing: list[float]
    ddf: torch.Tensor
    regions: tuple[np.ndarray, np.ndarray | None, dict[str, Any]]
    refine_options: dict[str, Any]


def _working_grid(
    fixed, moving, spacing, ddf, seg, image, region_options, refine_options, lr, band_fold_weight, with_images=True
):
    """The images, field, label map and CT on the refinement's working grid (module docstring), and the keywords of
    the one-level passes there: ``refine_options`` without the regions, start and schedule, with the pass's ``lr``
    (None: the finest level's) and ``band_fold_weight`` (None: the first pass's); the images only ``with_images``
    (a pass without iterations needs none)."""
    region_options = {
        k: v for k, v in (region_options or {}).items() if k not in ("snap_mm", "shear_field", "return_side")
    }
    drop = ("reg_mask", "normals", "wall_side", "init_ddf", "levels", "iterations")
    refine_options = {k: v for k, v in (refine_options or {}).items() if k not in drop}
    if band_fold_weight is not None:
        refine_options["band_fold_weight"] = float(band_fold_weight)
    if lr is not None:
        refine_options["lr"] = float(lr)
    elif isinstance(refine_options.get("lr"), (list, tuple)):
        refine_options["lr"] = float(refine_options["lr"][-1])
    in_shape = tuple(fixed.shape[2:])
    work = working_shape(in_shape, spacing, refine_options.pop("grid_mm", DEFAULT_GRID_MM))
    sp = grid_spacing(in_shape, spacing, work) if work != in_shape else [float(s) for s in spacing]
    seg_w = resize_labels(torch.from_numpy(np.asarray(seg).astype(np.int32))[None, None], work)[0, 0].numpy()
    image_w = None if image is None else resize_image(_volume(image), work)[0, 0].numpy()
    images = (resize_image(fixed.float(), work), resize_image(moving.float(), work)) if with_images else None
    return _Grid(images, sp, resize_field(ddf.detach().float(), work), (seg_w, image_w, region_options), refine_options)


def search_wall_shift(
    images: tuple[torch.Tensor, torch.Tensor],
    spacing: Sequence[float],
    ddf: torch.Tensor,
    regions: tuple[np.ndarray, np.ndarray | None, Mapping[str, Any]],
    refine_options: Mapping[str, Any],
    reach: int,
    iterations: int,
    centre: int | np.ndarray = 0,
    region_mm: float = 0.0,
) -> tuple[int | np.ndarray, dict[int, float], dict[int, tuple]]:
    """The shift of the whole labelled wall that the image prefers (module docstring, *The wall search*), or with
    ``region_mm`` > 0 the shift of each region of it (*The search per region*).

    Args:
        images: (fixed, moving), each (1, 1, *S) normalised, on the working grid.
        spacing: (3,) voxel size of that grid, mm.
        ddf: (1, 3, *S) the first pass's field there, voxels.
        regions: (label map (*S), the CT (HU, *S) or None, the other keywords of ``cavity_regions``).
        refine_options: keywords of :func:`refine_pair` for each candidate's pass (one level, no grid change).
        reach: the candidates, the wall moved by centre + k voxels, -reach <= k <= reach.
        iterations: Adam iterations of each candidate from ``ddf``.
        centre: the shift the search starts from (that of the wall ``ddf`` was fitted with), voxels: one number or
            an (*S) map.
        region_mm: 0: one k for the whole wall; > 0: each voxel's k, the best of the candidates' local NCC^2
            averaged with a Gaussian of this sigma (mm) over the voxels where the candidates disagree.

    Returns:
        ``(shift, scores, runs)``: the chosen shift of the labels' wall, ``centre + k`` (voxels, > 0 outwards; an
        (*S) int map with a map ``centre`` or ``region_mm``), each k's mean squared local NCC over the voxels that
        the candidate walls disagree on, and each k's pass, ``((field, curve), (mask, normals, side))`` (the field
        (1, 3, *S) voxels; the regions as :func:`refine_pair` takes them).
    """
    fixed, moving = images
    seg, image, options = regions
    walls = {
        k: cavity_regions(seg, spacing, image=image, return_side=True, wall_shift=centre + k, **options)
        for k in range(-reach, reach + 1)
    }
    zone = (walls[reach][2] != 0) & (walls[-reach][2] == 0)  # where the candidates disagree
    target, warp = FixedLNCC(fixed, 3), GridWarp()
    runs, local = {}, {}
    for k, wall in walls.items():
        tensors = _as_tensors(*wall)
        runs[k] = (_one_level(images, spacing, ddf, tensors, iterations, refine_options), tensors)
        with torch.no_grad():
            local[k] = target.local(warp(moving, runs[k][0][0]))[0, 0].numpy() * zone
    if not zone.any():
        return centre, {k: float("nan") for k in runs}, runs
    scores = {k: float(v[zone].mean()) for k, v in local.items()}
    order = sorted(runs, key=abs)  # max and argmax keep the first of a tie: the k nearest 0
    if region_mm <= 0:
        best = max(order, key=lambda k: scores[k])
        chose = f"a shift of {centre + best:d} voxels" if np.ndim(centre) == 0 else f"{best:+d} voxels from its centre"
        logger.info("the wall search chose %s (mean local NCC^2 %s)", chose,
                    ", ".join(f"{k:+d}: {v:.4f}" for k, v in scores.items()))  # fmt: skip
        return centre + best, scores, runs
    sigma = float(region_mm) / np.asarray(spacing, dtype=float)
    weight = ndimage.gaussian_filter(zone.astype(np.float32), sigma)
    smoothed = np.stack([ndimage.gaussian_filter(local[k], sigma) for k in order]) / np.maximum(weight, 1e-6)
    best = np.asarray(order)[np.argmax(smoothed, axis=0)]
    best[weight < 1e-3] = 0
    shares = ", ".join(f"{k:+d}: {100 * float((best[zone] == k).mean()):.0f} %" for k in sorted(runs))
    logger.info("the wall search per region (%g mm) chose the shifts %s of the wall zone", region_mm, shares)
    return centre + best, scores, runs


def _uniform_run(runs: dict[int, tuple], shift: int | np.ndarray, centre: int | np.ndarray) -> tuple | None:
    """The search's run of candidate k when ``shift`` is ``centre + k`` everywhere, else None (a map of several)."""
    offsets = np.unique(np.asarray(shift) - np.asarray(centre))
    return runs[int(offsets[0])] if len(offsets) == 1 else None


def _as_tensors(mask: np.ndarray, normals: np.ndarray, side: np.ndarray) -> tuple[torch.Tensor, ...]:
    """``cavity_regions``' (mask, normals, side) arrays as :func:`refine_pair` takes them: (1, 1, *S) float mask,
    (1, 3, *S) normals, (1, 1, *S) float side."""
    return (
        torch.from_numpy(mask.astype(np.float32))[None, None],
        torch.from_numpy(normals)[None],
        torch.from_numpy(side.astype(np.float32))[None, None],
    )


def _one_level(images, spacing, ddf, regions, iterations, refine_options) -> tuple[torch.Tensor, list[dict]]:
    """:func:`refine_pair` on the working grid, one level of ``iterations`` from ``ddf`` with ``regions`` (mask,
    normals, side tensors): (field (1, 3, *S) voxels, curve)."""
    mask, normals, side = regions
    return refine_pair(
        images[0],
        images[1],
        spacing,
        reg_mask=mask,
        normals=normals,
        wall_side=side,
        init_ddf=ddf,
        levels=1,
        iterations=int(iterations),
        grid_mm=None,
        **refine_options,
    )


def _volume(image: Any) -> torch.Tensor:
    """(X, Y, Z) array or tensor -> (1, 1, X, Y, Z) float32 tensor."""
    volume = image.detach().float() if isinstance(image, torch.Tensor) else torch.from_numpy(np.asarray(image))
    return volume.float().reshape((1, 1) + tuple(volume.shape[-3:]))
