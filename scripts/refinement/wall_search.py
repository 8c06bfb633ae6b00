"""The wall search: which shift of the labelled cavity wall the image prefers, tried by refining each candidate.

The sliding band comes from a segmentation (:func:`scripts.regions.cavity.cavity_regions`), and its wall may lie a
voxel or two off the true one (labels inside the parietal boundary, a segmenter's eroded or dilated organs). The
second pass's snap (:mod:`scripts.refinement.second_pass`) finds the shear of a first field that was fitted with the
labels' wall, so it finds that wall again wherever the true one lies two voxels away. The search lets the image judge
instead (:func:`search_wall_shift`): for every shift k of the whole labelled wall, -reach <= k <= reach voxels (the
cavity eroded or dilated, ``cavity_regions(..., wall_shift=k)``), some iterations of a one-level pass from the field
so far; each result's squared local NCC (the LNCC of the refinement, 3^3 window, whatever similarity the pass itself
optimises) is averaged over the voxels the candidate walls disagree on, and the best shift wins (a tie: the smallest
shift). WHY one shift for the whole wall: chosen voxel by voxel (each the shift whose local NCC is best nearby, as
the snap chooses) the wall came out ragged and the slip fell on every wall (real CT, seed 0: 77 % against 85 % on
the default wall); and a search from a step at each candidate's wall with fewer iterations chose the outermost shift
on every case (docs/README.md, *Walls nobody tuned on*).

**Before the first pass's finest level** (:func:`first_pass_with_search`, ``--refine_first_wall_search``, off by
default, on in ``configs/refine_wall_search.json``): the search runs on the coarser levels' field (fitted with the
labels' wall on a coarser grid: it has not yet drawn the slip to the voxel), then the finest level's iterations with
the chosen wall from that field, no snap; the second pass starts from that wall (its ``wall_shift``). WHY NOT go on
from the chosen candidates' fields for the finest level's remaining 30 iterations (a candidate's time less): the
real CT's rows were level, but the phantom lost 1-5 points of slip on six of its eight rows (docs/README.md, bundle
0.9.13). WHY the search here: after the whole first pass the slip is already drawn at the labels' wall, and the
second pass's search (``--refine_second_wall_search``), from that field, sees less difference between the shifts
(real CT, the true wall two voxels out of the labels: 73 % of the slip with the second pass's search, 75 % with this
one, for 4.5 s more at 192 x 160 x 256).

**Per region** (``region_mm`` > 0, ``--refine_first_wall_region_mm``): the same candidates, but a voxel's wall moves
by the candidate whose squared local NCC, averaged with a Gaussian of ``region_mm`` over the disagreeing voxels,
beats the whole wall's choice there by :data:`WALL_REGION_MARGIN` (``cavity_regions(..., wall_shift=map)``): for
labels off in different directions in different places. WHY the margin: where two shifts score alike the choice
followed noise and the wall came out ragged (the phantom lost up to 5 points of slip; docs/README.md).

**Closing radii** (``closings``, ``--refine_first_wall_closings_mm``, none by default): the labels' cavity closed
with another radius (at the labels' wall, shift 0) is a candidate too, per region as the shifts are
(``cavity_regions(..., closing_mm=map)``): where the true cavity is tighter than the closing draws it, fat between
the organs moves with the wall and a closing of 20 mm bridges it. The choice comes in two steps
(:func:`choose_candidate`): the shifts first, alone, on the voxels where the shifted walls disagree, exactly as
without closings; then a closing candidate wherever it beats that choice by :data:`WALL_CLOSING_MARGIN`, averaged
over the voxels where any candidate's wall disagrees. WHY two steps: chosen in one, the closing's voxels entered the
shifts' scores and moved the whole wall's shift (the phantom's default wall, seed 0: 0 -> -1, 78 -> 71 % of the
slip, with no voxel closed at 12 mm), and a segmenter's labels lost up to 13 points on a case (docs/README.md,
bundles 0.9.13 and 0.9.14).

**Run-off** (``runoff``, ``--refine_first_wall_runoff_iterations``, 0 by default): the shifts' scores are close
(0.001-0.003 apart on the hard cases) and longer passes can reverse them. A second judge comes free: the lowest total
loss each candidate's pass reached (the objective every pass minimises: the whole image's similarity and the
regulariser, which charges a wall that strains the field). Where the two judges differ on the whole wall's shift,
both shifts' passes go on ``runoff`` iterations from their fields and the shifts are chosen again between the two
(:func:`_run_off`; a closing keeps the voxels it won). WHY not the best two always, nor the objective alone: each
gained on ``out2`` with a segmenter's labels (54 -> 58 % of the slip) and lost 8 and 6 points on a phantom case
(``in1``, a segmenter's labels; docs/benchmark_results/walls_search_choice/).

All on the refinement's WORKING grid (``grid_mm`` of :func:`~scripts.refinement.optimiser.refine_pair`, about 2
mm; :func:`scripts.refinement.pyramid.working_grid`): the images, the label map and the field are brought there
first (the regions' distance transforms and filters cost about their voxel count), the field back at the end.
Conventions are those of :func:`~scripts.refinement.optimiser.refine_pair`: images (1, 1, X, Y, Z) normalised, the
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

from scripts.refinement.optimiser import DEFAULT_ITERATIONS, DEFAULT_LEVELS, refine_pair
from scripts.refinement.pyramid import region_tensors, resize_field, working_grid
from scripts.refinement.similarity import FixedLNCC, GridWarp
from scripts.regions.cavity import cavity_regions

__all__ = [
    "FIRST_PASS_WALL_REGION_MM",
    "FIRST_PASS_WALL_SEARCH",
    "SEARCH_ITERATIONS",
    "WALL_CLOSING_MARGIN",
    "WALL_REGION_MARGIN",
    "WALL_RUNOFF_ITERATIONS",
    "FIRST_PASS_WALL_CLOSINGS_MM",
    "WallSearch",
    "choose_candidate",
    "first_pass_with_search",
    "one_level_pass",
    "search_wall_shift",
    "uniform_run",
]

# the search before the first pass's finest level and its shift per region (region_mm, 0: one shift for the whole
# wall): off by default, measured in docs/README.md, *Walls nobody tuned on*
FIRST_PASS_WALL_SEARCH, FIRST_PASS_WALL_REGION_MM = 0, 0.0
# other closing radii of the cavity tried by that search (module docstring, *Closing radii*): none by default
FIRST_PASS_WALL_CLOSINGS_MM: tuple[float, ...] = ()
# each candidate's iterations before the first pass's finest level: the second pass's 30
SEARCH_ITERATIONS = 30
# per region, a voxel leaves the whole wall's shift only for a candidate whose averaged local NCC^2 beats it by this
# much there: on the real CT's default wall with clean labels (on the truth) the differences are noise, 0.007 at the
# 90th percentile of the zone, 0.015 at the 99th; without it the phantom lost 0.7-5.3 points on six of eight rows
WALL_REGION_MARGIN = 0.01
# a closing candidate replaces the shifts' choice only where it beats it by more (module docstring, *Closing radii*)
WALL_CLOSING_MARGIN = 0.01
# the run-off's iterations (module docstring, *Run-off*): 0, none, by default
WALL_RUNOFF_ITERATIONS = 0
logger = logging.getLogger(__name__)
DEFAULT_SCHEDULE = {"levels": DEFAULT_LEVELS, "iterations": DEFAULT_ITERATIONS}  # refine_pair's
DEFAULT_CLOSING_MM = inspect.signature(cavity_regions).parameters["closing_mm"].default


def first_pass_with_search(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    spacing: Sequence[float],
    seg: np.ndarray,
    image: np.ndarray | None = None,
    region_options: Mapping[str, Any] | None = None,
    refine_options: Mapping[str, Any] | None = None,
    wall_search: int = 1,
    search_iterations: int = SEARCH_ITERATIONS,
    region_mm: float = FIRST_PASS_WALL_REGION_MM,
    closings: Sequence[float] = FIRST_PASS_WALL_CLOSINGS_MM,
    runoff: int = WALL_RUNOFF_ITERATIONS,
) -> tuple[torch.Tensor, list[dict[str, float]], int | np.ndarray, float | np.ndarray | None]:
    """The first pass with the wall search before its finest level (module docstring, *Before the first pass's finest
    level*): :func:`refine_pair` with ``refine_options`` up to its finest level; every shift of the labelled wall
    within ``wall_search`` voxels (and the labels' wall closed with each radius of ``closings``) refined
    ``search_iterations`` iterations from that field and scored by :func:`search_wall_shift`; the finest level's
    iterations, step and band fold weight then run with the chosen wall (no snap) from the coarser levels' field.

    Args:
        fixed, moving, spacing: as :func:`refine_pair` takes them.
        seg: (X, Y, Z) the label map the regions in ``refine_options`` came from; ``image``: the CT (HU) or None.
        region_options: the other keywords of :func:`scripts.regions.cavity.cavity_regions` those regions used.
        refine_options: the keywords of :func:`refine_pair` (``reg_mask``, ``normals``, ``wall_side``,
            ``init_ddf``, ``levels``, ``iterations``, ``lr``, ...).
        wall_search: the shifts tried, -wall_search..wall_search voxels (> 0).
        search_iterations: Adam iterations of each candidate.
        region_mm: 0: one candidate for the whole wall; > 0: one per region (:func:`search_wall_shift`).
        closings: closing radii (mm) tried as candidates too (module docstring, *Closing radii*); () none.
        runoff: the run-off's iterations (module docstring, *Run-off*); 0 none.

    Returns:
        ``(ddf, curve, shift, closing_mm)``: ``ddf`` and ``curve`` as :func:`refine_pair` returns them (the finest
        level's rows those of the chosen wall's iterations, the candidates' not kept); the chosen shift, voxels (> 0
        outwards: :func:`scripts.refinement.second_pass.second_pass`'s ``wall_shift``; with ``region_mm`` a map on the
        working grid); the chosen closing radius, mm (None: the labels' own, ``region_options``'; with ``region_mm``
        a map on the working grid), the ``closing_mm`` of the second pass's regions.
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
        return coarse, curve, 0, None
    grid = working_grid(fixed, moving, spacing, coarse, seg, image, region_options, options, None, None)
    found = search_wall_shift(
        grid.images,
        grid.spacing,
        grid.ddf,
        grid.regions,
        grid.refine_options,
        int(wall_search),
        search_iterations,
        region_mm=region_mm,
        closings=closings,
        runoff=runoff,
    )
    reuse = uniform_run(found) if search_iterations == iterations[-1] else None
    if reuse is not None and len(reuse[0][1]) == search_iterations:  # the chosen pass is the finest level (no run-off)
        ddf, finest = reuse[0]
    else:
        seg_w, image_w, region_w = grid.regions
        chosen = dict(region_w, wall_shift=found.shift)
        if found.closing_mm is not None:
            chosen["closing_mm"] = found.closing_mm
        wall = region_tensors(*cavity_regions(seg_w, grid.spacing, image=image_w, return_side=True, **chosen))
        ddf, finest = one_level_pass(grid.images, grid.spacing, grid.ddf, wall, iterations[-1], grid.refine_options)
    seconds = time.perf_counter() - start - (finest[-1]["seconds"] if finest else 0.0)  # the candidates' time too
    rows = [dict(row, level=levels - 1, seconds=row["seconds"] + seconds) for row in finest]
    return resize_field(ddf, tuple(fixed.shape[2:])), curve + rows, found.shift, found.closing_mm


class WallSearch(NamedTuple):
    """What :func:`search_wall_shift` found. Its candidates are keyed ``(k, r)``: the labels' wall moved by
    ``centre + k`` voxels, the cavity closed with ``r`` mm (None: the labels' own closing, the region options').

    ``shift``: the chosen ``centre + k`` (voxels, > 0 outwards; an (*S) int map with a map ``centre`` or per region);
    ``closing_mm``: None where every chosen candidate keeps the labels' closing, else the chosen radius (mm; an (*S)
    map per region); ``scores``: each candidate's mean squared local NCC over the voxels where the candidates
    disagree, after its first ``iterations``; ``runs``: each candidate's pass, ``((field, curve), (mask, normals,
    side))`` (the field (1, 3, *S) voxels; the regions as :func:`refine_pair` takes them; a run-off's two passes with
    its iterations too); ``chosen``: the index into ``list(runs)`` of the chosen (an int or (*S) map)."""

    shift: int | np.ndarray
    closing_mm: float | np.ndarray | None
    scores: dict[tuple, float]
    runs: dict[tuple, tuple]
    chosen: int | np.ndarray


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
    closings: Sequence[float] = (),
    runoff: int = WALL_RUNOFF_ITERATIONS,
) -> WallSearch:
    """The shift of the whole labelled wall that the image prefers (module docstring), or with ``region_mm`` > 0
    the shift of each region of it (*Per region*); with ``closings``, the labels' wall closed with other radii too
    (*Closing radii*).

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
        region_mm: 0: one candidate for the whole wall; > 0: each voxel's, the best of the candidates' local NCC^2
            averaged with a Gaussian of this sigma (mm) over the voxels where the candidates disagree where it beats
            the whole wall's choice by :data:`WALL_REGION_MARGIN`, else the whole wall's choice.
        closings: other closing radii of the cavity (mm), each a candidate at the shift ``centre`` (a radius equal
            to the labels' own is skipped).
        runoff: > 0: where the local NCC and the objective prefer different shifts for the whole wall, both go on
            this many iterations and the shifts are chosen again between the two (module docstring, *Run-off*).

    Returns:
        :class:`WallSearch`. A tie goes to the labels' closing, then to the k nearest 0.
    """
    fixed, moving = images
    seg, image, options = regions
    own = options.get("closing_mm", DEFAULT_CLOSING_MM)
    extra = [float(r) for r in closings if np.ndim(own) or float(r) != float(own)]
    if extra and np.ndim(own):
        raise ValueError("closing radii are searched from one closing radius of the labels, not a map")
    keys = [(k, None) for k in range(-reach, reach + 1)] + [(0, r) for r in extra]

    def wall(k: int, r: float | None) -> tuple[np.ndarray, ...]:
        closing = {} if r is None else {"closing_mm": r}
        return cavity_regions(
            seg, spacing, image=image, return_side=True, wall_shift=centre + k, **{**options, **closing}
        )

    walls = {key: wall(*key) for key in keys}
    zone = (walls[(reach, None)][2] != 0) & (walls[(-reach, None)][2] == 0)  # where the shifted walls disagree
    zones = zone.copy()  # and where any candidate's does
    for r in extra:
        zones |= (walls[(0, r)][2] != 0) != (walls[(0, None)][2] != 0)
    target, warp = FixedLNCC(fixed, 3), GridWarp()

    def score(field: torch.Tensor) -> np.ndarray:  # the squared local NCC of moving warped by field, (*S)
        with torch.no_grad():
            return target.local(warp(moving, field))[0, 0].numpy()

    runs, local = {}, []
    for key, regions_k in walls.items():
        tensors = region_tensors(*regions_k)
        runs[key] = (one_level_pass(images, spacing, ddf, tensors, iterations, refine_options), tensors)
        local.append(score(runs[key][0][0]))
    if not zones.any():
        return WallSearch(centre, None, {key: float("nan") for key in keys}, runs, keys.index((0, None)))
    scores = {key: float(v[zones].mean()) for key, v in zip(keys, local)}
    sigma = float(region_mm) / np.asarray(spacing, dtype=float) if region_mm > 0 else None
    best = choose_candidate(local, reach, zone, zones, sigma)
    if runoff > 0:
        more = (images, spacing, refine_options, int(runoff), score)
        best = _run_off(keys, runs, local, best, (reach, zone, zones, sigma), more)
    judged = [float(v[zone if r is None else zones].mean()) for (_, r), v in zip(keys, local)]  # as chosen below
    means = "mean local NCC^2 " + ", ".join(f"{_name(key)}: {v:.4f}" for key, v in zip(keys, judged))
    if sigma is None:
        logger.info("the wall search chose %s (%s)", _name(keys[best], centre), means)
    else:
        shares = ", ".join(f"{_name(k)}: {100 * float((best[zones] == i).mean()):.0f} %" for i, k in enumerate(keys))
        logger.info("the wall search per region (%g mm) chose the shifts %s of the zone (%s)", region_mm, shares, means)
    return _found(keys, best, centre, own, scores, runs)


def choose_candidate(
    local: Sequence[np.ndarray],
    reach: int,
    zone: np.ndarray,
    zones: np.ndarray,
    sigma: Sequence[float] | None = None,
) -> int | np.ndarray:
    """The wall search's choice from its candidates' squared local NCC (module docstring): first among the shifts
    alone, on the voxels where the shifted walls disagree, then a closing candidate where it beats that choice by
    more than :data:`WALL_CLOSING_MARGIN` on the voxels where any candidate's wall disagrees (so a closing candidate
    never changes the choice between the shifts).

    Args:
        local, reach: each candidate's (*S) squared local NCC, in the search's order: the 2 reach + 1 shifts
            -reach..reach, then the closing radii.
        zone: (*S) bool, where the shifted walls disagree; ``zones``: where any candidate's does (``zone`` or more).
        sigma: None: one candidate for the whole wall (the best mean over the zone; a tie: the smallest shift);
            (3,) voxels: per region (module docstring, *Per region*), each voxel's candidate from the averages with a
            Gaussian of this sigma, a shift where it beats the whole wall's by :data:`WALL_REGION_MARGIN`.

    Returns:
        The index of the chosen candidate into ``local``: one int, or with ``sigma`` an (*S) int map.
    """
    shifts, closings = list(range(2 * reach + 1)), list(range(2 * reach + 1, len(local)))
    whole = _whole_shift(local, reach, zone)
    if sigma is None:
        best = max([whole] + closings, key=lambda i: float(local[i][zones].mean()))
        clearly = float(local[best][zones].mean()) - float(local[whole][zones].mean()) > WALL_CLOSING_MARGIN
        return best if clearly else whole
    best = _regional(local, whole, shifts, zone, sigma, WALL_REGION_MARGIN)
    return _regional(local, best, closings, zones, sigma, WALL_CLOSING_MARGIN) if closings else best


def _whole_shift(local: Sequence[np.ndarray], reach: int, zone: np.ndarray) -> int:
    """The shift for the whole wall (an index into ``local``): the best mean over ``zone``; a tie, the smallest."""
    shifts = sorted(range(2 * reach + 1), key=lambda i: abs(i - reach))  # max keeps the first: the smallest shift
    return max(shifts, key=lambda i: float(local[i][zone].mean()) if zone.any() else float(i == reach))


def _run_off(keys, runs, local, best, choice, more) -> int | np.ndarray:
    """The run-off (module docstring, *Run-off*): ``choice`` (reach, zone, zones, sigma) and ``best`` as
    :func:`choose_candidate` took and gave them; ``more`` (images, spacing, refine_options, iterations, score): the
    passes and the scoring of the search. Where the local NCC's shift for the whole wall and the objective's (the
    shift whose pass ended at the lowest total loss; a tie: the smallest) differ, both passes go on ``iterations``
    from their fields (``runs`` and ``local`` updated in place) and the shifts are chosen again between the two; the
    closing candidates keep the voxels they won. Returns the choice (``best`` where the two agree)."""
    reach, zone, zones, sigma = choice
    images, spacing, refine_options, iterations, score = more
    by_ncc = _whole_shift(local, reach, zone)
    totals = [min(row["total"] for row in runs[keys[i]][0][1]) for i in range(2 * reach + 1)]
    by_objective = min(range(2 * reach + 1), key=lambda i: (totals[i], abs(i - reach)))
    if by_ncc == by_objective:
        return best
    for i in (by_ncc, by_objective):
        (field, curve), tensors = runs[keys[i]]
        field, rows = one_level_pass(images, spacing, field, tensors, iterations, refine_options)
        runs[keys[i]], local[i] = ((field, curve + rows), tensors), score(field)
    logger.info(
        "the wall search's run-off: the local NCC chose %s, the objective %s; after %d iterations more, mean local "
        "NCC^2 %.4f and %.4f over the zone",
        *(_name(keys[i]) for i in (by_ncc, by_objective)),
        iterations,
        *(float(local[i][zone].mean()) for i in (by_ncc, by_objective)),
    )
    out = [v if i in (by_ncc, by_objective) else v - 2.0 for i, v in enumerate(local)]  # NCC^2 <= 1: never chosen
    again, closed = choose_candidate(out, reach, zone, zones, sigma), np.asarray(best) > 2 * reach
    return np.where(closed, best, again) if np.ndim(closed) else (best if closed else again)


def _regional(local, current, candidates, zone, sigma, margin) -> np.ndarray:
    """Per voxel, the one of ``candidates`` (indices into ``local``) whose ``local`` NCC^2, averaged with a Gaussian
    of ``sigma`` voxels over ``zone``, beats ``current``'s there (an index, or an (*S) map of indices: the choice so
    far) by more than ``margin``, else ``current``: an (*S) map of indices into ``local``."""
    weight = np.maximum(ndimage.gaussian_filter(zone.astype(np.float32), sigma), 1e-6)
    chosen = np.unique(current).tolist()  # only these and the candidates are compared here
    smoothed = {i: ndimage.gaussian_filter(local[i] * zone, sigma) / weight for i in set(candidates) | set(chosen)}
    base = sum(np.where(current == i, smoothed[i], 0.0) for i in chosen)  # each voxel its current choice's average
    stack = np.stack([smoothed[i] for i in candidates])
    gain = np.where(weight > 1e-3, stack.max(axis=0) - base, 0.0)
    return np.where(gain > margin, np.asarray(candidates)[np.argmax(stack, axis=0)], current)


def _name(key: tuple, centre: int | np.ndarray | None = None) -> str:
    """A candidate as the log names it: ``+1`` (k), ``closing 12 mm``; with ``centre`` the shift it makes."""
    k, r = key
    if r is not None:
        return f"the labels' wall closed with {r:g} mm" if centre is not None else f"closing {r:g} mm"
    if centre is None:
        return f"{k:+d}"
    return f"a shift of {centre + k:d} voxels" if np.ndim(centre) == 0 else f"{k:+d} voxels from its centre"


def _found(keys, chosen, centre, own, scores, runs) -> WallSearch:
    """The :class:`WallSearch` of the candidate index ``chosen`` (one int or an (*S) map)."""
    ks = np.asarray([k for k, _ in keys])
    radii = [r for _, r in keys]
    shift = centre + (int(ks[chosen]) if np.ndim(chosen) == 0 else ks[chosen])
    picked = np.unique(chosen)
    if all(radii[int(i)] is None for i in picked):
        return WallSearch(shift, None, scores, runs, chosen)
    table = np.asarray([float(own) if r is None else r for r in radii])
    return WallSearch(shift, float(table[chosen]) if np.ndim(chosen) == 0 else table[chosen], scores, runs, chosen)


def uniform_run(found: WallSearch) -> tuple | None:
    """The search's run of the candidate chosen everywhere, else None (a map of several)."""
    picked = np.unique(found.chosen)
    return found.runs[list(found.runs)[int(picked[0])]] if len(picked) == 1 else None


def one_level_pass(images, spacing, ddf, regions, iterations, refine_options) -> tuple[torch.Tensor, list[dict]]:
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
