"""The refinement's second pass (scripts/refinement/second_pass.py) and its wall searches (wall_search.py): labels
one or two voxels inside the true sliding wall, the wall moved to where the first field shears or where the search
chooses, and the jump then lies on the true wall."""

import logging

import numpy as np
import pytest
import torch
from monai.networks.blocks import Warp
from scipy import ndimage

from benchmarks import benchmark_refine
from scripts.refinement import wall_search
from scripts.refinement.optimiser import refine_pair
from scripts.refinement.second_pass import (
    SECOND_PASS_BAND_FOLD_WEIGHT,
    SECOND_PASS_ITERATIONS,
    SECOND_PASS_STEP_START,
    SECOND_PASS_WALL_SEARCH,
    first_search_iterations,
    second_pass,
)
from scripts.refinement.start import step_at_wall
from scripts.refinement.wall_search import (
    SEARCH_ITERATIONS,
    WallSearch,
    choose_candidate,
    first_pass_with_search,
    search_wall_shift,
    uniform_run,
)
from scripts.regions.cavity import cavity_regions
from scripts.regions.labels import SLIDING, TOTALSEG_V2_TOTAL

SP = (2.0, 2.0, 2.0)
SHAPE = (28, 28, 16)
SLIP = 1.5  # voxels along z, each side of the wall the opposite way: a 3-voxel jump


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a).astype(np.float32))


def _sliding(truth: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fixed, moving) (1, 1, *S): a textured moving image and the fixed image it gives when ``truth`` (the true
    cavity) moves SLIP voxels along z and everything else SLIP the other way."""
    v = np.zeros((3,) + truth.shape, np.float32)
    v[2] = np.where(truth, SLIP, -SLIP)
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=truth.shape), 1.2)
    moving = _t((noise - noise.min()) / np.ptp(noise))[None, None]
    return Warp(mode="bilinear", padding_mode="border")(moving, _t(v)[None]), moving


@pytest.fixture(scope="module")
def case():
    """The true cavity = a box through the whole z range (walls at x and y, tangential slip along z); a textured
    moving image and the fixed image it gives under the true field."""
    truth = np.zeros(SHAPE, bool)
    truth[6:22, 6:22, :] = True
    return (truth, *_sliding(truth, 0))


def _jump(ddf: torch.Tensor) -> float:
    """Mean z displacement of the true cavity's outer voxel layer minus that of the voxels just outside it, over
    the middle of the four walls (voxels)."""
    u = ddf[0, 2].numpy()
    faces = [
        u[6, 8:20] - u[5, 8:20],
        u[21, 8:20] - u[22, 8:20],
        u[8:20, 6] - u[8:20, 5],
        u[8:20, 21] - u[8:20, 22],
    ]
    return float(np.mean([f.mean() for f in faces]))


def _liver_box_first_pass(fixed, moving, start: int, iterations) -> tuple[np.ndarray, torch.Tensor]:
    """(label map, first pass's field): a liver box from voxel ``start`` to ``SHAPE - start`` in x and y (6: the true
    cavity), and a two-level first pass of ``iterations`` from the regions it gives."""
    seg = np.zeros(SHAPE, np.uint8)
    seg[start : SHAPE[0] - start, start : SHAPE[1] - start, :] = TOTALSEG_V2_TOTAL["liver"]
    mask, normals, side = cavity_regions(seg, SP, return_side=True)
    regions = dict(reg_mask=_t(mask)[None, None], normals=_t(normals)[None], wall_side=_t(side)[None, None])
    return seg, refine_pair(fixed, moving, SP, levels=2, iterations=iterations, **regions)[0]


@pytest.mark.parametrize("offset", [1, 2])
def test_labels_inside_the_true_wall_the_second_pass_moves_the_wall_to_the_shear(case, offset):
    truth, fixed, moving = case
    seg = np.zeros(SHAPE, np.uint8)
    seg[6 + offset : 22 - offset, 6 + offset : 22 - offset, :] = TOTALSEG_V2_TOTAL["liver"]
    mask, normals, side = cavity_regions(seg, SP, return_side=True)
    first, _ = refine_pair(
        fixed,
        moving,
        SP,
        reg_mask=_t(mask)[None, None],
        normals=_t(normals)[None],
        wall_side=_t(side)[None, None],
        levels=2,
        iterations=(40, 60),
    )
    # the snap alone, from the first field (the step start, the default since 0.9.29, would put a step on a wall still
    # a voxel off the truth here: 1.74 of 3 voxels instead of 2.64)
    plain = dict(iterations=40, step_start=False)
    moved, curve, (mask2, _, side2) = second_pass(fixed, moving, SP, first, seg, snap_mm=2.0, **plain)
    kept, _, (mask0, _, side0) = second_pass(fixed, moving, SP, first, seg, snap_mm=0.0, **plain)
    assert len(curve) == 40 and {row["level"] for row in curve} == {0}

    def on_the_truth(m, s):  # share of the band's voxels whose side is the true one
        return float(((s == 1) == truth)[m == SLIDING].mean())

    if offset == 1:
        # a voxel off, the one-end pairs beside the band already carry the jump (3.00 of 3 voxels); the second pass
        # puts the band's wall onto the true one: 0.97 of its voxels on their true side, against 0.48
        assert _jump(first) > 0.9 * 2 * SLIP
        assert on_the_truth(mask2, side2) > 0.9 and on_the_truth(mask0, side0) < 0.6
    else:
        # two voxels off the jump cannot lie on the true wall (0.22 of 3 voxels): that pair is charged in full. The
        # wall moved one voxel out towards the shear, the one-end pairs beside it take most of the jump (2.64 in the
        # 40 iterations at the second pass's step 0.1; 3.04 at 0.3); the same iterations without the move leave it
        # (0.19)
        assert _jump(first) < 0.2 * 2 * SLIP
        assert _jump(moved) > 0.8 * 2 * SLIP, (_jump(first), _jump(moved), _jump(kept))
        assert _jump(kept) < 0.2 * 2 * SLIP
    assert (side2[mask2 == SLIDING] >= 0).all()


def test_without_iterations_only_the_regions_move_and_bad_values_are_refused(case):
    truth, fixed, moving = case
    seg = np.zeros(SHAPE, np.uint8)
    seg[7:21, 7:21, :] = TOTALSEG_V2_TOTAL["liver"]
    ddf = torch.zeros((1, 3) + SHAPE)
    out, curve, regions = second_pass(fixed, moving, SP, ddf, seg, iterations=0)
    assert out is ddf and curve == [] and len(regions) == 3
    with pytest.raises(ValueError, match="snap_mm >= 0, iterations >= 0 and wall_search >= 0"):
        second_pass(fixed, moving, SP, ddf, seg, iterations=-1)
    with pytest.raises(ValueError, match="wall_search >= 0"):
        second_pass(fixed, moving, SP, ddf, seg, wall_search=-1)


def test_the_second_pass_charges_its_band_as_set(case):
    """``band_fold_weight`` reaches the second pass's iterations (default 1.0, SECOND_PASS_BAND_FOLD_WEIGHT); None
    keeps the first pass's (``refine_options``)."""
    truth, fixed, moving = case
    seg, first = _liver_box_first_pass(fixed, moving, 8, (20, 20))

    def run(**kwargs):
        return second_pass(fixed, moving, SP, first, seg, iterations=20, **kwargs)[0]

    default, charged, free = run(), run(band_fold_weight=1.0), run(band_fold_weight=0.0)
    assert SECOND_PASS_BAND_FOLD_WEIGHT == 1.0 and torch.equal(default, charged) and not torch.equal(charged, free)
    first_pass_weight = run(band_fold_weight=None, refine_options={"band_fold_weight": 0.0})
    assert torch.equal(first_pass_weight, free)


def test_step_at_wall_gives_each_band_voxel_its_own_sides_nearest_value():
    """A field smeared across the wall (a ramp along x) becomes a step: the band's inner layer takes the value of the
    voxel inside it, the outer layer that of the voxel outside; off the band and where the side is unknown (-1)
    nothing changes."""
    shape = (10, 4, 4)
    side = np.where(np.arange(10)[:, None, None] < 5, 1, 0) * np.ones(shape)
    band = np.zeros(shape, bool)
    band[4:6] = True
    side[4, 0, 0] = -1  # an organ-organ pair band voxel
    ramp = np.zeros((3,) + shape, np.float32)
    ramp[2] = np.arange(10, dtype=np.float32)[:, None, None]  # z displacement = x index: one voxel a step
    out = step_at_wall(_t(ramp)[None], _t(band)[None, None], _t(side)[None, None], (2.0, 2.0, 2.0))[0].numpy()
    expected = ramp.copy()
    expected[2, 4], expected[2, 5] = 3.0, 6.0
    expected[2, 4, 0, 0] = 4.0
    np.testing.assert_array_equal(out, expected)
    assert float(out[2, 5, 1, 1] - out[2, 4, 1, 1]) == 3.0  # the jump of the ramp's three pairs, at the wall
    with pytest.raises(ValueError, match="must lie on the field's grid"):
        step_at_wall(_t(ramp)[None], _t(band[:9])[None, None], _t(side)[None, None], (2.0, 2.0, 2.0))


def test_the_second_pass_can_start_from_a_step_at_its_wall(case):
    """With ``step_start`` the second pass's iterations start from the step (the labels on the true wall): after a
    few iterations more of the jump lies at the wall than from the smeared first field; on by default since 0.9.29."""
    truth, fixed, moving = case
    seg, first = _liver_box_first_pass(fixed, moving, 6, (10, 5))

    def run(**kwargs):
        return second_pass(fixed, moving, SP, first, seg, snap_mm=0.0, iterations=5, **kwargs)[0]

    plain, step = run(step_start=False), run(step_start=True)
    assert SECOND_PASS_STEP_START is True and torch.equal(run(), step)
    # measured: the first field's jump 0.62 of 3 voxels, 5 iterations from it 1.05, from the step 1.59
    assert _jump(step) > _jump(plain) + 0.3, (_jump(first), _jump(plain), _jump(step))


@pytest.mark.parametrize("start, shifts", [(8, {2}), (6, {0}), (4, {-1, -2})])
def test_the_wall_search_finds_the_true_wall_from_labels_two_voxels_in_on_it_or_two_out(case, start, shifts):
    """Labels two voxels inside the true wall (liver box from voxel 8), on it (6) or two voxels outside (4): the
    search picks a shift (outwards positive) that puts the wall on the truth (+2, 0) or the truth inside its band
    (-1 or -2, measured -1: the scores of -1 and -2 0.983 and 0.982) by the local NCC of each candidate's 20
    iterations. With labels two voxels in, the second pass after it puts its wall on the truth where the snap alone
    (moving towards the first field's shear, one voxel at most) does not, and carries at least its jump. Off by
    default."""
    truth, fixed, moving = case
    seg, first = _liver_box_first_pass(fixed, moving, start, (40, 60))
    as_the_pass = {"lr": 0.1, "band_fold_weight": SECOND_PASS_BAND_FOLD_WEIGHT}  # second_pass's defaults
    found = search_wall_shift((fixed, moving), SP, first, (seg, None, {}), as_the_pass, 2, 20)
    shift, scores, runs = found.shift, found.scores, found.runs
    assert shift in shifts and found.closing_mm is None, scores
    assert SECOND_PASS_WALL_SEARCH == 0
    if start == 8:  # from the first field, as the candidates start (with the step start, 0.9.29's default, the
        # second pass starts from a step at the chosen wall instead and runs again)
        plain = dict(snap_mm=2.0, iterations=40, step_start=False)
        searched, _, (mask, _, side) = second_pass(fixed, moving, SP, first, seg, wall_search=2, **plain)
        snapped, _, (mask0, _, side0) = second_pass(fixed, moving, SP, first, seg, **plain)
        # the chosen candidate's pass is the second pass itself: not run again
        again, curve, _ = second_pass(fixed, moving, SP, first, seg, iterations=20, wall_search=2, step_start=False)
        assert len(curve) == 20 and torch.equal(again, runs[(shift, None)][0][0])
        # from the step (the default): the chosen wall's pass runs again, from a step there, as with that wall given
        stepped, curve, _ = second_pass(fixed, moving, SP, first, seg, iterations=20, wall_search=2)
        given, _, _ = second_pass(fixed, moving, SP, first, seg, snap_mm=0.0, iterations=20, wall_shift=shift)
        assert len(curve) == 20 and not torch.equal(stepped, again) and torch.equal(stepped, given)

        def on_the_truth(m, s):  # share of the band's voxels whose side is the true one
            return float(((s == 1) == truth)[m == SLIDING].mean())

        assert on_the_truth(mask, side) > 0.9 and on_the_truth(mask0, side0) < 0.7, (
            on_the_truth(mask, side),
            on_the_truth(mask0, side0),
        )
        # measured: the first field's jump 0.22 of 3 voxels, the snap's 2.64, the search's 2.66
        assert _jump(searched) > 0.8 * 2 * SLIP and _jump(searched) >= _jump(snapped) - 0.05


def test_the_run_off_goes_on_only_where_the_local_ncc_and_the_objective_disagree(case, monkeypatch, caplog):
    """Labels two voxels inside the true wall: the local NCC chooses +2 and so does the objective (each candidate's
    lowest total loss), so the run-off adds nothing (the same choice and passes as without it). With the objective
    steered to the labels' own wall (its pass's totals lowered by 1), the two shifts +2 and 0 go on 10 iterations
    each from their fields, the others do not, and the local NCC then chooses between the two: +2 again."""
    truth, fixed, moving = case
    seg, first = _liver_box_first_pass(fixed, moving, 8, (40, 60))
    args = ((fixed, moving), SP, first, (seg, None, {}), {"lr": 0.1}, 2, 20)
    plain = search_wall_shift(*args)
    agreed = search_wall_shift(*args, runoff=10)
    assert plain.shift == agreed.shift == 2 and all(len(run[0][1]) == 20 for run in agreed.runs.values())
    assert all(torch.equal(agreed.runs[key][0][0], plain.runs[key][0][0]) for key in plain.runs)
    passes = wall_search.one_level_pass

    def steered(images, spacing, ddf, regions, iterations, options):  # the candidates' passes in the keys' order
        field, curve = passes(images, spacing, ddf, regions, iterations, options)
        calls.append(iterations)
        if len(calls) == 3:  # the shift 0: -2, -1, 0, +1, +2
            curve = [dict(row, total=row["total"] - 1.0) for row in curve]
        return field, curve

    calls: list[int] = []
    monkeypatch.setattr(wall_search, "one_level_pass", steered)
    with caplog.at_level(logging.INFO, logger="scripts.refinement.wall_search"):
        found = search_wall_shift(*args, runoff=10)
    assert calls == [20] * 5 + [10, 10] and found.shift == 2, (calls, found.scores)
    assert {key: len(run[0][1]) for key, run in found.runs.items()} == {
        (-2, None): 20,
        (-1, None): 20,
        (0, None): 30,
        (1, None): 20,
        (2, None): 30,
    }
    assert "run-off: the local NCC chose +2, the objective +0; after 10 iterations more" in caplog.text


def test_the_search_before_the_finest_level_puts_the_first_pass_on_the_true_wall(case):
    """Labels two voxels inside the true wall: the first pass with the search before its finest level (40 coarse
    iterations, then 3 x 20 candidate iterations and the finest level's 60 with the chosen wall) carries far more of
    the 3-voxel jump across the true wall than the same first pass with the labels' wall; its loss curve is the
    plain schedule's (the candidates' rows not kept); the second pass given its shift starts from the true wall; a
    search of no voxels is refused."""
    truth, fixed, moving = case
    seg, plain = _liver_box_first_pass(fixed, moving, 8, (40, 60))
    mask, normals, side = cavity_regions(seg, SP, return_side=True)
    options = dict(reg_mask=_t(mask)[None, None], normals=_t(normals)[None], wall_side=_t(side)[None, None])
    options.update(levels=2, iterations=(40, 60))
    searched, curve, shift, closing = first_pass_with_search(
        fixed, moving, SP, seg, refine_options=options, wall_search=2, search_iterations=20
    )
    assert (
        shift == 2 and closing is None and [sum(row["level"] == level for row in curve) for level in (0, 1)] == [40, 60]
    )
    assert all(b["seconds"] >= a["seconds"] for a, b in zip(curve, curve[1:]))
    # measured: the plain first pass's jump 0.22 of 3 voxels, the searched one's 2.99
    assert _jump(searched) > 0.8 * 2 * SLIP and _jump(searched) > _jump(plain) + 1.0, (_jump(plain), _jump(searched))
    # the second pass starts from that wall: its regions lie on the truth (the labels' wall does not)
    _, _, (mask, _, side) = second_pass(fixed, moving, SP, searched, seg, iterations=0, wall_shift=shift)
    assert float(((side == 1) == truth)[mask == SLIDING].mean()) > 0.9
    with pytest.raises(ValueError, match="wall_search >= 1"):
        first_pass_with_search(fixed, moving, SP, seg, refine_options=options, wall_search=0)


def test_the_search_per_region_moves_each_cavity_to_its_own_true_wall():
    """Two cavities 20 voxels apart, each with its contents sliding 3 voxels along z against the tissue around: the
    labels of one lie a voxel outside its true wall, those of the other two voxels inside. One shift for the whole
    wall cannot put both on the truth (the search keeps 0, and the far cavity's jump is lost); the search per region
    (sigma 8 mm, 4 voxels) moves the far cavity's wall out (by two, mostly) where the near one keeps the whole
    wall's 0 or moves in, and the first pass with it carries the far cavity's jump; the second pass takes the map as
    its wall."""
    shape, near, far = (56, 24, 12), (slice(4, 18), slice(5, 19)), (slice(38, 52), slice(5, 19))
    truth = np.zeros(shape, bool)
    truth[near] = truth[far] = True
    fixed, moving = _sliding(truth, 1)
    seg = np.zeros(shape, np.uint8)
    seg[3:19, 4:20] = seg[40:50, 7:17] = TOTALSEG_V2_TOTAL["liver"]
    region_options = dict(closing_mm=4.0)  # the two cavities stay apart
    mask, normals, side = cavity_regions(seg, SP, return_side=True, **region_options)
    options = dict(reg_mask=_t(mask)[None, None], normals=_t(normals)[None], wall_side=_t(side)[None, None])
    options.update(levels=2, iterations=(40, 60))
    runs = {
        region: first_pass_with_search(
            fixed, moving, SP, seg, None, region_options, options, wall_search=2, search_iterations=20, region_mm=region
        )
        for region in (0.0, 8.0)
    }
    whole, per_region = runs[0.0][2], runs[8.0][2]
    assert whole == 0 and per_region.shape == shape
    far_faces = np.concatenate([per_region[38:42, 8:16], per_region[48:52, 8:16]])
    assert (far_faces >= 1).all() and (far_faces == 2).mean() > 0.8 and (per_region[:24] <= 0).all()

    def jumps(ddf):  # the z jump across the middle of the near and the far cavity's two x faces, voxels
        u = ddf[0, 2].numpy()
        return [float((u[a, 8:16] - u[b, 8:16]).mean()) for a, b in ((4, 3), (17, 18), (38, 37), (51, 52))]

    # measured: one shift leaves 0.11-0.15 of the far cavity's 3 voxels and 3.02-3.04 of the near one's; per region
    # 2.97-3.00 of the far one's, 3.02 and 2.04 of the near one's (where the choice flips between 0 and -2 along a
    # face, the wall steps and the jump suffers: the cost that the margin of WALL_REGION_MARGIN keeps rare)
    per, one = jumps(runs[8.0][0]), jumps(runs[0.0][0])
    assert min(per[2:]) > 0.8 * 2 * SLIP and max(one[2:]) < 0.2 * 2 * SLIP, (one, per)
    assert min(per[:2]) > 0.5 * 2 * SLIP and sum(per) > sum(one) + 4.0, (one, per)
    _, _, (mask, _, side) = second_pass(
        fixed, moving, SP, runs[8.0][0], seg, None, region_options, iterations=0, wall_shift=per_region
    )
    assert float(((side == 1) == truth)[mask == SLIDING].mean()) > 0.85


def test_the_chosen_candidates_run_is_reused_only_where_one_was_chosen_everywhere():
    """uniform_run: the run of the candidate chosen everywhere (an index into the runs, one or a map of one value),
    None where a map chose several (the finest level then runs with the map's wall)."""
    keys = [(-1, None), (0, None), (1, None), (0, 12.0)]
    runs = {key: ((torch.full((1, 3, 4, 4, 4), float(i)), []), None) for i, key in enumerate(keys)}
    assert uniform_run(WallSearch(0, 12.0, {}, runs, 3)) is runs[(0, 12.0)]
    assert uniform_run(WallSearch(1, None, {}, runs, np.full((4, 4, 4), 2))) is runs[(1, None)]
    several = np.full((4, 4, 4), 1)
    several[0] = 3
    assert uniform_run(WallSearch(0, np.where(several == 3, 12.0, 20.0), {}, runs, several)) is None


def test_the_bundle_and_the_benchmark_give_the_search_the_same_iterations():
    """The candidates' iterations: as asked, else the second pass's up to SEARCH_ITERATIONS (since 0.9.29 its 120
    would make the search four times as long), else (no second pass) SEARCH_ITERATIONS; the
    benchmark's flag takes the same rule and refuses 0 in one line before it builds its case (it used to default to
    30 whatever --second_iterations said, and to end in a ValueError traceback on 0); an unknown similarity too."""
    assert first_search_iterations(None, 20) == 20 and first_search_iterations(20, 45) == 20
    assert first_search_iterations(None, 45) == first_search_iterations(None, SECOND_PASS_ITERATIONS) == 30
    assert first_search_iterations(None, 0) == SEARCH_ITERATIONS == 30
    with pytest.raises(SystemExit, match=r"^error: --first_wall_search_iterations must be a whole number >= 1"):
        benchmark_refine.main(first_wall_search=1, first_wall_search_iterations=0)
    with pytest.raises(SystemExit, match=r"^error: --similarity must be one of lncc, mind, mse, got 'ncc'$"):
        benchmark_refine.main(similarity="ncc")  # also before the case
    seeds = {benchmark_refine.case_path(seed) for seed in (0, 1, 2)}  # each motion its own cached pair
    assert len(seeds) == 3 and benchmark_refine.case_path(0) == benchmark_refine.CACHE


def test_the_search_tries_other_closing_radii_and_opens_a_gap_the_labels_closing_bridges():
    """Two organs 8 mm apart slide along z (a 3-voxel jump) against the tissue around AND between them: the labels'
    closing (20 mm) bridges the gap, so its faces carry no wall; with a 2 mm closing among the candidates the search
    takes it for the whole wall, the first pass carries the jump across the gap's faces, and the second pass's
    regions given that radius keep the gap outside the cavity."""
    truth = np.zeros(SHAPE, bool)
    truth[4:12, 6:22] = truth[16:24, 6:22] = True
    fixed, moving = _sliding(truth, 2)
    seg = np.zeros(SHAPE, np.uint8)
    seg[4:12, 6:22], seg[16:24, 6:22] = TOTALSEG_V2_TOTAL["liver"], TOTALSEG_V2_TOTAL["spleen"]
    mask, normals, side = cavity_regions(seg, SP, return_side=True)
    assert (side[12:16, 8:20] == 1).all()  # the labels' closing bridges the gap
    options = dict(reg_mask=_t(mask)[None, None], normals=_t(normals)[None], wall_side=_t(side)[None, None])
    options.update(levels=2, iterations=(40, 60))
    runs = {
        closings: first_pass_with_search(
            fixed, moving, SP, seg, None, None, options, wall_search=1, search_iterations=20, closings=closings
        )
        for closings in ((), (2.0,))
    }
    assert runs[()][3] is None and (runs[(2.0,)][2], runs[(2.0,)][3]) == (0, 2.0)

    def gap_jump(ddf):  # the z jump across the gap's two faces, voxels
        u = ddf[0, 2].numpy()
        return float(np.mean([(u[11, 8:20] - u[12, 8:20]).mean(), (u[16, 8:20] - u[15, 8:20]).mean()]))

    without, with_closing = gap_jump(runs[()][0]), gap_jump(runs[(2.0,)][0])
    # measured: 0.44 of the 3 voxels with the labels' closing, 3.07 with the 2 mm candidate chosen
    assert with_closing > 0.8 * 2 * SLIP and without < 0.5 * 2 * SLIP, (without, with_closing)
    _, _, (_, _, side) = second_pass(
        fixed, moving, SP, runs[(2.0,)][0], seg, None, iterations=0, wall_closing_mm=runs[(2.0,)][3]
    )
    assert (side[12:16, 8:20] == 0).all()


def test_a_closing_candidate_leaves_the_choice_between_the_shifts_as_it_was():
    """The closing candidates enter after the shifts are chosen (wall_search's docstring, *Closing radii*). The
    shifted walls disagree on x < 10 (``zone``), the closing's on all of x: there the shift 0 scores best (0.6
    against 0.5), but -1 scores 0.9 where only the closing's wall differs, so over the union -1 would win. With the
    closing candidate (0.55 everywhere) the shifts' choice stays 0 (for the whole wall and per region); the closing
    wins only where it beats that choice by the margin (x >= 10, per region), not for the whole wall (0.55 = 0.55)."""
    shape = (20, 4, 4)
    x = np.arange(20)[:, None, None] * np.ones(shape)
    zone, zones = x < 10, np.ones(shape, bool)
    local = [np.where(zone, 0.5, 0.9), np.where(zone, 0.6, 0.5), np.full(shape, 0.4), np.full(shape, 0.55)]
    assert choose_candidate(local[:3], 1, zone, zone) == 1  # the shift 0 (index 1 of -1, 0, +1)
    assert choose_candidate(local, 1, zone, zones) == 1  # the closing changes nothing for the whole wall
    sigma = (1.0, 1.0, 1.0)
    plain, closed = choose_candidate(local[:3], 1, zone, zone, sigma), choose_candidate(local, 1, zone, zones, sigma)
    assert (plain == 1).all()
    assert (closed[x < 8] == 1).all() and (closed[x >= 12] == 3).all()  # the closing only beyond the shifts' zone
    local[3] = np.full(shape, 0.605)  # beats the shift 0 by less than the margin on x < 10: not chosen there
    assert (choose_candidate(local, 1, zone, zones, sigma)[x < 8] == 1).all()
