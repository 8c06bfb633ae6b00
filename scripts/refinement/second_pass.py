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

**The wall search** (``wall_search`` > 0, off by default): before step 2, every shift of the whole labelled wall
within ``wall_search`` voxels of the first pass's wall is refined ``search_iterations`` iterations from the first
field and the image's similarity chooses (:func:`scripts.refinement.wall_search.search_wall_shift`, whose module
says why); a shift other than the first pass's then replaces the snap (the pass runs with that wall). The search
before the first pass's finest level (:func:`scripts.refinement.wall_search.first_pass_with_search`) hands its
chosen wall over as ``wall_shift``: the snap and this search start from it.

All on the refinement's WORKING grid (``grid_mm`` of :func:`~scripts.refinement.optimiser.refine_pair`, about 2
mm): the images, the label map and the first field are brought there first (the regions' distance transforms and
filters cost about their voxel count: eight times less at 2 mm than at 1 mm), and the field goes back to the input
grid at the end.

Measured (docs/README.md, *Walls nobody tuned on*): the snap gains most where the labels are a voxel off (organs
eroded, a segmenter's labels), the extra iterations alone (``snap_mm=0``) do not.

**With no segmentation at all** (:func:`shear_band_pass`) there is no wall to move: the band is drawn where the first
field (bones rigid by their HU, the log-Jacobian prior elsewhere) shears
(:func:`scripts.regions.label_free.shear_band`), and the same iterations follow with it (docs/README.md, *No
segmentation at all*).

Conventions are those of :func:`scripts.refinement.optimiser.refine_pair`: images (1, 1, X, Y, Z) normalised, the
field (1, 3, X, Y, Z) in voxels of that grid, ``spacing`` (3,) mm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from scripts.io.options import check_number
from scripts.refinement.optimiser import refine_pair
from scripts.refinement.pyramid import region_tensors, resize_field, resize_labels, working_grid
from scripts.refinement.start import step_at_wall
from scripts.refinement.wall_search import (
    SEARCH_ITERATIONS,
    one_level_pass,
    search_wall_shift,
    uniform_run,
)
from scripts.regions.cavity import cavity_regions
from scripts.regions.label_free import shear_band
from scripts.regions.labels import RIGID, SLIDING

__all__ = [
    "PASS_RULES",
    "SECOND_PASS_BAND_FOLD_WEIGHT",
    "SECOND_PASS_ITERATIONS",
    "SECOND_PASS_LR",
    "SECOND_PASS_SNAP_MM",
    "SECOND_PASS_STEP_START",
    "SECOND_PASS_WALL_SEARCH",
    "check_pass_options",
    "first_search_iterations",
    "second_pass",
    "shear_band_pass",
]

# the second pass as measured (docs/README.md, *Walls nobody tuned on*): after refine_pair's schedule (150, 100, 60)
# at a smaller step (the bones stay rigid while the band moves); on in configs/refine.json since 0.7.0 with 30
# iterations (half the finest level's time: 26.7 -> 39.3 s at 192 x 160 x 256, 2 cores; the 60 finest iterations
# split 30 + 30 instead cost slip where the labels are right), 120 from a step since 0.9.29 (below)
SECOND_PASS_ITERATIONS = 120
SECOND_PASS_LR = 0.1
SECOND_PASS_SNAP_MM = 3.0
# bundle 0.8.1: folds off the true band 0.0026 -> 0.0010 % of the body (CT out2, a segmenter's labels), down on 15 of
# the 16 CT rows that had any, for 0.1-0.7 points of slip (docs/README.md, *Walls nobody tuned on*)
SECOND_PASS_BAND_FOLD_WEIGHT = 1.0
# the start with a step at the moved wall (start.step_at_wall), on by default since 0.9.29 with 120 iterations: each
# alone gained (the phantom's 14 wall rows: 953 -> 976 / 985 points of slip), together more on every row of the
# phantom and the real CT (1000; 60 iterations: 991), and 13 points at deep breathing with a segmenter's labels
# (docs/README.md, *Walls nobody tuned on*, bundle 0.9.29)
SECOND_PASS_STEP_START = True
# the wall search (module docstring): off by default; it costs 2 * wall_search + 1 more passes of search_iterations
SECOND_PASS_WALL_SEARCH = 0

# the rules of the passes' numeric options, by their names after --refine_ (the keywords of
# scripts.io.options.check_number): the bundle's inferer (scripts/refinement/inferer.py) and the benchmarks'
# --refine-option (benchmarks/options.py) check them alike, by check_pass_options
PASS_RULES: dict[str, dict[str, Any]] = {
    "second_iterations": dict(integer=True, note="0: no second pass"),
    "second_snap_mm": dict(note="mm"),
    "second_lr": dict(strict=True),
    "second_band_fold_weight": dict(note="0: the band folds freely"),
    "second_wall_search": dict(integer=True, unit=" of voxels", note="0: no search"),
    "first_wall_search": dict(integer=True, unit=" of voxels", note="0: no search"),
    "first_wall_region_mm": dict(note="mm; 0: one shift"),
    "first_wall_search_iterations": dict(integer=True, minimum=1, note="or null: the second pass's, at most 30"),
    "first_wall_runoff_iterations": dict(integer=True, note="0: none"),
}

# the one of them that may be null (None): the second pass's iterations, first_search_iterations
_NULLABLE = "first_wall_search_iterations"


def check_pass_options(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Those of ``values`` that :data:`PASS_RULES` names, checked by their rules before any work (``_NULLABLE`` may
    be None), each as an int or float; a bad one raises :class:`~scripts.io.errors.InputError` naming the option as
    ``prefix + name`` (the bundle's ``--refine_``, the benchmarks' ``--refine-option ``)."""
    return {
        key: value if key == _NULLABLE and value is None else check_number(value, prefix + key, **PASS_RULES[key])
        for key, value in values.items()
        if key in PASS_RULES
    }


def first_search_iterations(requested: int | None, second_iterations: int) -> int:
    """The iterations of each candidate of the search before the first pass's finest level
    (:func:`scripts.refinement.wall_search.first_pass_with_search`): ``requested``, else (None) the second pass's
    ``second_iterations`` up to :data:`~scripts.refinement.wall_search.SEARCH_ITERATIONS` (30: the search was measured
    with the second pass's 30 before 0.9.29 made those 120, four times the search's time), that many without a second
    pass. The bundle's option and the benchmarks' flag both take this rule."""
    return (
        int(requested) if requested is not None else min(int(second_iterations), SEARCH_ITERATIONS) or SEARCH_ITERATIONS
    )


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
    wall_closing_mm: float | np.ndarray | None = None,
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
            :func:`scripts.refinement.wall_search.first_pass_with_search`; a map of the working grid from its search
            per region): the snap and the search start from it.
        wall_closing_mm: the closing radius of that wall's cavity, mm (None: ``region_options``' own; a map of the
            working grid where the first pass's search chose a closing candidate per region).

    Returns:
        ``(ddf, curve, (mask, normals, side))``: the field (1, 3, X, Y, Z) voxels, the second pass's loss curve
        (:func:`refine_pair`'s rows), and the regions it used (those of ``cavity_regions(..., return_side=True)``),
        nearest-sampled back to the input grid when the working grid is coarser.
    """
    if snap_mm < 0 or iterations < 0 or wall_search < 0:
        raise ValueError(
            f"need snap_mm >= 0, iterations >= 0 and wall_search >= 0, got {snap_mm}, {iterations} and {wall_search}"
        )
    if wall_closing_mm is not None:
        region_options = {**dict(region_options or {}), "closing_mm": wall_closing_mm}
    grid = working_grid(
        fixed, moving, spacing, ddf, seg, image, region_options, refine_options, lr, band_fold_weight, iterations > 0
    )
    in_shape, sp, ddf_w = tuple(fixed.shape[2:]), grid.spacing, grid.ddf
    shift, reuse = wall_shift, None
    if wall_search > 0 and iterations > 0:
        n_search = int(iterations if search_iterations is None else search_iterations)
        found = search_wall_shift(
            grid.images, sp, ddf_w, grid.regions, grid.refine_options, int(wall_search), n_search, centre=shift
        )
        shift = found.shift
        if not step_start and n_search == iterations:  # the candidates' passes are this pass: same start, iterations
            reuse = uniform_run(found)
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
        regions = region_tensors(mask, normals, side)
        if iterations == 0:
            out, curve = ddf, []
        else:
            start = step_at_wall(ddf_w, regions[0] == SLIDING, regions[2], sp) if step_start else ddf_w
            out, curve = one_level_pass(grid.images, sp, start, regions, iterations, grid.refine_options)
            out = resize_field(out, in_shape)
    back = [resize_labels(r, in_shape)[0] for r in regions]  # nearest: the band's normals stay unit vectors
    return out, curve, (back[0][0].numpy().astype(np.uint8), back[1].numpy(), back[2][0].numpy().astype(np.int8))


def shear_band_pass(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    spacing: Sequence[float],
    ddf: torch.Tensor,
    reg_mask: torch.Tensor,
    body: np.ndarray,
    threshold: float,
    refine_options: Mapping[str, Any],
    iterations: int = SECOND_PASS_ITERATIONS,
    lr: float = SECOND_PASS_LR,
    band_fold_weight: float = SECOND_PASS_BAND_FOLD_WEIGHT,
) -> tuple[torch.Tensor, list[dict[str, float]], torch.Tensor]:
    """The second pass with no segmentation (module docstring): the sliding band where ``ddf`` shears, then
    ``iterations`` more on the same grid (one level, at ``lr``) with it.

    Args:
        fixed, moving: (1, 1, X, Y, Z) the normalised images the first pass registered, on its working grid.
        spacing: (3,) voxel size of that grid, mm.
        ddf: (1, 3, X, Y, Z) the first pass's field, voxels of the grid.
        reg_mask: (1, 1, X, Y, Z) the first pass's regions (the bones rigid, 0 elsewhere).
        body: bool (X, Y, Z), the body; the band keeps to it and off the bones.
        threshold: the least shear of the band's ridge (:func:`scripts.regions.label_free.shear_band`).
        refine_options: the other keywords of :func:`refine_pair` the first pass used (``similarity``, ``gamma``, ...).

    Returns:
        ``(ddf, curve, reg_mask)``: the field, the pass's loss curve (none and ``ddf`` itself when no voxel shears that
        much) and the regions it used (the band as SLIDING).
    """
    sp = np.asarray(spacing, dtype=np.float64)
    rigid = reg_mask[0, 0].numpy() == RIGID
    band, normals = shear_band(ddf[0].numpy() * sp.reshape(3, 1, 1, 1), sp, body & ~rigid, threshold)
    if not band.any():
        return ddf, [], reg_mask
    mask = reg_mask.clone()
    mask[0, 0][torch.from_numpy(band)] = SLIDING
    options = dict(refine_options, regulariser="rigidity_shearing_jacobian", lr=lr, band_fold_weight=band_fold_weight)
    options.update(levels=1, iterations=int(iterations), grid_mm=None, init_ddf=ddf)
    out, curve = refine_pair(
        fixed, moving, sp.tolist(), reg_mask=mask, normals=torch.from_numpy(normals)[None], **options
    )
    return out, curve, mask
