"""The refinement workflow (configs/refine.json merged after configs/inference.json): a real CT and a copy deformed
by a known motion (smooth field, rigid vertebrae) are registered from identity with the regions of the fixed
segmentation; bad ``--fixed_seg`` inputs stop the run with one clear error before anything is written; started from
the CT model, ``--refine_network_start cavity`` keeps the model's field inside the cavity only."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from scripts.evaluation.metrics import fold_percents, rigidity_error
from scripts.inference.predict import run_inference_workflow
from scripts.io.errors import find_input_error
from scripts.refinement.start import network_start
from scripts.regions.cavity import cavity_regions
from scripts.regions.label_free import MOTION_CAVITY_FRACTION, SHEAR_BAND_THRESHOLD
from scripts.regions.labels import RIGID, SLIDING, TOTALSEG_V2_TOTAL, vertebrae_ids
from scripts.synthesis.phantom import deform_ct, inverse_ddf

CONFIGS = ("inference.json", "refine.json")
ROOT = Path(__file__).resolve().parents[1]
FAST = {"refine_iterations": [40, 30, 20], "refine_second_iterations": 20, "progress": False}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def known_motion(ct_example_dir, tmp_path_factory) -> dict:
    """A crop of the real CT (3 mm), a copy deformed by a known field, the segmentation, and the exact inverse field
    (what the registration must find: warped(x) = moving(x + d(x)) = fixed(x)) in mm, RAS."""
    folder = tmp_path_factory.mktemp("known_motion")
    img = nib.load(ct_example_dir / "example_ct_sm.nii.gz")
    seg = nib.load(ct_example_dir / "example_seg.nii.gz")
    crop = (slice(20, 100), slice(10, 90), slice(0, 30))
    data = np.asanyarray(img.dataobj)[crop].astype(np.int16)
    labels = np.asanyarray(seg.dataobj)[crop].astype(np.uint8)
    affine = img.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.array([20, 10, 0])
    moved = deform_ct(data, labels, (3.0, 3.0, 3.0), np.random.default_rng(1))
    d = inverse_ddf(moved["ddf"])  # moving(x) = fixed(x + u(x)); registered by d(x) = -u(x + d(x)), voxels
    paths = {}
    for name, array in (("fixed", data), ("moving", moved["moving"]), ("seg", labels)):
        paths[name] = str(folder / f"case_{name}.nii.gz")
        nib.save(nib.Nifti1Image(array, affine), paths[name])
    true_mm = np.einsum("ck,k...->...c", affine[:3, :3], d)  # (X, Y, Z, 3) RAS mm
    return {**paths, "true_mm": true_mm, "body": data > -500, "affine": affine, "labels": labels}


def written_field(summary_entry: dict) -> np.ndarray:
    """The pair's written displacement field, (X, Y, Z, 3) RAS mm (the file is LPS)."""
    return nib.load(summary_entry["outputs"]["ddf"]).get_fdata()[..., 0, :] * np.array([-1.0, -1.0, 1.0])


def endpoint_error(summary_entry: dict, case: dict, ddf: np.ndarray | None = None) -> np.ndarray:
    ddf = written_field(summary_entry) if ddf is None else ddf
    return np.linalg.norm(ddf - case["true_mm"], axis=-1)


def test_refinement_recovers_a_known_motion(known_motion, tmp_path, caplog):
    case = known_motion
    out = tmp_path / "out"
    run_inference_workflow(None, CONFIGS, fixed=case["fixed"], moving=case["moving"], fixed_seg=case["seg"],
                           output_dir=str(out), **FAST)  # fmt: skip
    entry = json.loads((out / "summary.json").read_text())["pairs"][0]
    refinement = entry["refinement"]
    assert refinement["start"] == "identity" and refinement["regulariser"] == "rigidity_shearing_jacobian"
    curve = refinement["loss_curve"]
    # three levels, then the second pass (one level past them: the wall moved to where the field shears)
    assert len(curve) == 110 and {row["level"] for row in curve} == {0, 1, 2, 3}
    assert sum(row["level"] == 3 for row in curve) == 20
    for level in range(3):  # the loss goes down on every level of the coarse-to-fine schedule
        totals = [row["total"] for row in curve if row["level"] == level]
        assert totals[-1] < totals[0]
    body = case["body"]
    before = float(np.linalg.norm(case["true_mm"], axis=-1)[body].mean())
    after = float(endpoint_error(entry, case)[body].mean())
    print(f"endpoint error over the body: {before:.2f} mm before, {after:.2f} mm after refinement")
    assert before > 2.0 and after < 0.6 * before
    assert entry["folding_percent"] < 0.5
    assert refinement["fold_percent_off_band"] == 0.0 and "diverged" not in caplog.text


@pytest.mark.parametrize("region_mm, closings", [(0.0, []), (20.0, []), (20.0, [12.0])])
def test_the_search_before_the_finest_level_runs_through_the_workflow(known_motion, tmp_path, caplog, region_mm,
                                                                      closings):  # fmt: skip
    """``--refine_first_wall_search 1``: the inferer runs the first pass's finest level after the wall search (the
    log names the chosen shift, or with ``--refine_first_wall_region_mm`` each shift's share of the wall, and with
    ``--refine_first_wall_closings_mm`` the closing candidate's); the loss curve keeps the schedule's shape (the
    other candidates' rows not kept) and the field still recovers the known motion."""
    case = known_motion
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="scripts.refinement.wall_search"):
        run_inference_workflow(None, CONFIGS, fixed=case["fixed"], moving=case["moving"], fixed_seg=case["seg"],
                               output_dir=str(out), refine_first_wall_search=1,
                               refine_first_wall_region_mm=region_mm, refine_first_wall_closings_mm=closings,
                               **FAST)  # fmt: skip
    entry = json.loads((out / "summary.json").read_text())["pairs"][0]
    curve = entry["refinement"]["loss_curve"]
    assert [sum(row["level"] == level for row in curve) for level in range(4)] == [40, 30, 20, 20]
    assert "first pass: the wall search" in caplog.text
    logged = {0.0: "the wall search chose a shift", 20.0: "the wall search per region (20 mm) chose the shifts"}
    assert caplog.text.count(logged[region_mm]) == 1, caplog.text
    assert ("closing 12 mm: " in caplog.text) is bool(closings)
    body = case["body"]
    before = float(np.linalg.norm(case["true_mm"], axis=-1)[body].mean())
    assert float(endpoint_error(entry, case)[body].mean()) < 0.6 * before
    assert entry["refinement"]["fold_percent_off_band"] == 0.0


def test_too_large_a_step_is_halved_not_diverged(known_motion, tmp_path, caplog):
    out = tmp_path / "out"
    run_inference_workflow(None, CONFIGS, fixed=known_motion["fixed"], moving=known_motion["moving"],
                           fixed_seg=known_motion["seg"], output_dir=str(out), refine_iterations=[30, 30, 30],
                           refine_lr=5.0, progress=False)  # fmt: skip
    entry = json.loads((out / "summary.json").read_text())["pairs"][0]
    curve = entry["refinement"]["loss_curve"]
    assert curve[0]["lr"] == 5.0 and min(row["lr"] for row in curve) <= 1.25  # halved at least twice
    assert entry["refinement"]["fold_percent_off_band"] < 0.1 and "diverged" not in caplog.text
    body = known_motion["body"]
    before = float(np.linalg.norm(known_motion["true_mm"], axis=-1)[body].mean())
    assert float(endpoint_error(entry, known_motion)[body].mean()) < before


def test_a_diverging_refinement_is_reported(known_motion, tmp_path, caplog, monkeypatch):
    # the step control keeps the optimiser from diverging; the check after it still catches a folded result
    import scripts.refinement.inferer
    import scripts.refinement.optimiser

    def folding_refinement(*args, **kwargs):
        ddf, curve = scripts.refinement.optimiser.refine_pair(*args, **kwargs)
        ddf[:, 0, ::2] += 3.0  # a checkerboard of +-1.5 voxels along axis 0: det J < 0 on every other slice
        return ddf, curve

    monkeypatch.setattr(scripts.refinement.inferer, "refine_pair", folding_refinement)
    out = tmp_path / "out"
    run_inference_workflow(None, CONFIGS, fixed=known_motion["fixed"], moving=known_motion["moving"],
                           fixed_seg=known_motion["seg"], output_dir=str(out), refine_iterations=[5, 5, 5],
                           refine_second_iterations=0, refine_lr=20.0, progress=False)  # fmt: skip
    entry = json.loads((out / "summary.json").read_text())["pairs"][0]
    assert entry["refinement"]["fold_percent_off_band"] > 0.1 and entry["refinement"]["fold_percent_in_band"] > 0.1
    assert "the refinement diverged" in caplog.text and "lower --refine_lr (now 20.0)" in caplog.text


def test_the_report_counts_the_folds_off_the_band_and_in_it_apart():
    # u_x = -2 (x - 10) on x 10..20, constant beyond: det J = 1 + du_x/dx (central differences) is -1 on x 11..19 and 0
    # on x 10 and 20: 11 folded slices, all inside the band x 8..22 (15 slices); none off it, and none on the grid's
    # other axes; without regions every voxel counts as off the band
    x = torch.arange(32, dtype=torch.float32)
    ddf = torch.zeros(1, 3, 32, 6, 7)
    ddf[0, 0] = (-2.0 * (x - 10).clamp(0, 10))[:, None, None]
    mask = torch.zeros(1, 1, 32, 6, 7)
    mask[:, :, 8:23] = SLIDING
    mask[:, :, :4] = RIGID
    off, inside = fold_percents(ddf, mask)
    assert off == 0.0 and inside == pytest.approx(100.0 * 11 / 15)
    assert fold_percents(ddf, None) == (pytest.approx(100.0 * 11 / 32), 0.0)


def test_without_a_segmentation_the_bones_of_a_ct_stay_rigid_by_their_hu(known_motion, tmp_path, caplog):
    """No ``--fixed_seg`` and no TotalSegmentator (bundle 0.9.24): the fixed CT's voxels above the bones' threshold
    (``auto``: 100 HU on this unenhanced CT) are rigid, the log-Jacobian prior elsewhere (the moved cavity off, to
    see the rule alone); ``null`` leaves the log-Jacobian prior alone, as before. The known motion moves the vertebrae
    rigidly: with the rule their rigidity error (on their voxels that the rule holds, above 100 HU) falls several
    times, and the body's endpoint error stays. The default then refines again with the cavity that the field moved
    (bundle 0.9.28): on this motion, which slides nowhere, its error stays too and the bones stay rigid."""
    fixed = np.asanyarray(nib.load(known_motion["fixed"]).dataobj)
    vertebrae = np.isin(known_motion["labels"], vertebrae_ids()) & (fixed > 100)  # the rule's share of them
    vertebrae = torch.from_numpy(vertebrae.astype(np.float32))[None, None]
    body = known_motion["body"]
    measured = {}
    runs = {"auto": dict(refine_motion_cavity="null"), "null": dict(refine_image_bones_hu="null"), "default": {}}
    for value, options in runs.items():
        out = tmp_path / value
        run_inference_workflow(None, CONFIGS, fixed=known_motion["fixed"], moving=known_motion["moving"],
                               output_dir=str(out), **options, **FAST)  # fmt: skip
        entry = json.loads((out / "summary.json").read_text())["pairs"][0]
        ddf = written_field(entry)  # read once: the rigidity and the endpoint error both
        field = torch.from_numpy(np.moveaxis(ddf, -1, 0).astype(np.float32))[None]  # (1, 3, X, Y, Z), mm
        rigidity = float(rigidity_error(field, vertebrae, (3.0, 3.0, 3.0), units="mm")[0])
        epe = float(endpoint_error(entry, known_motion, ddf)[body].mean())
        measured[value] = entry, rigidity, epe
    (image, rigidity, epe), (plain, rigidity_plain, epe_plain) = measured["auto"], measured["null"]
    assert image["refinement"]["regulariser"] == "rigidity_jacobian" and image["image_bones"]["hu"] == 100.0
    assert 0.5 < image["image_bones"]["rigid_percent"] < 10.0  # the bones, not the body
    assert plain["refinement"]["regulariser"] == "jacobian" and "image_bones" not in plain
    assert "the voxels above 100 HU rigid (bones)" in caplog.text and "log-Jacobian prior only" in caplog.text
    assert "diverged" not in caplog.text  # the second pass's similarity is not the divergence check's
    assert rigidity < rigidity_plain / 2.5, (rigidity, rigidity_plain)  # measured 0.004 against 0.066
    assert epe < epe_plain + 0.1, (epe, epe_plain)  # 1.87 against 1.93 mm (no slip here)
    moved, rigidity_moved, epe_moved = measured["default"]
    assert moved["refinement"]["regulariser"] == "rigidity_shearing_jacobian" and "motion_cavity" in moved["refinement"]
    assert rigidity_moved < rigidity_plain / 2.5 and epe_moved < epe_plain + 0.1, (rigidity_moved, epe_moved)


def test_an_image_not_in_hounsfield_units_gets_no_bones_without_a_segmentation():
    """An MR-like or rescaled image has no bones by HU: without a segmentation it gets the log-Jacobian prior alone."""
    root = Path(__file__).resolve().parents[1] / "configs"
    parser = ConfigParser()
    parser.read_config([str(root / name) for name in CONFIGS])
    parser.update({"bundle_root": str(root.parent), "segment_fixed": "never"})
    inferer = parser.get_parsed_content("inferer")
    image = np.full((20, 20, 20), -1000.0, dtype=np.float32)
    image[2:18, 2:18, 2:18], image[8:12, 8:12, 2:18] = 40.0, 700.0  # a body with a bone in it
    report = {}
    for values, expected in ((image, "rigidity_jacobian"), ((image + 1024.0) / 4.0, "jacobian")):  # HU / rescaled
        pair = type("Pair", (), {"fixed_seg": None, "name": "pair", "report": report})()
        regulariser, mask, *_ = inferer.regions(pair, image.shape, np.ones(3), torch.from_numpy(values))
        assert regulariser == expected
        if expected == "jacobian":
            assert mask is None
        else:
            assert int((mask == RIGID).sum()) == 4 * 4 * 16 and bool((mask[0, 0, 8:12, 8:12, 2:18] == RIGID).all())


@pytest.mark.parametrize("kind", ["other_grid", "not_a_label_map"])
def test_bad_fixed_segmentation_is_one_clear_error(known_motion, tmp_path, kind):
    labels = known_motion["labels"]
    path = tmp_path / "bad_seg.nii.gz"
    if kind == "other_grid":
        nib.save(nib.Nifti1Image(labels[:-1], known_motion["affine"]), str(path))
        expected = "not on its image's grid"
    else:
        image = nib.load(known_motion["fixed"]).get_fdata().astype(np.float32) / 7.0  # an image, not labels
        nib.save(nib.Nifti1Image(image, known_motion["affine"]), str(path))
        expected = "integer"
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:
        run_inference_workflow(None, CONFIGS, fixed=known_motion["fixed"], moving=known_motion["moving"],
                               fixed_seg=str(path), output_dir=str(out), **FAST)  # fmt: skip
    err = find_input_error(info.value)
    assert err is not None and expected in str(err) and "bad_seg.nii.gz" in str(err), info.value
    assert not out.exists() or not any(out.iterdir())


def test_segmentation_on_the_fly(known_motion, tmp_path, monkeypatch):
    """Without --fixed_seg, TotalSegmentator runs on the fly when it can (here a stand-in writes the known label
    map, as scripts.regions.segment.run would), and segment_fixed="always" stops with one clear error when it cannot."""
    import scripts.regions.segment as segment

    def fake_run(ct, output_dir=None, **kwargs):
        out = segment.output_path(Path(ct), output_dir)
        nib.save(nib.Nifti1Image(known_motion["labels"], known_motion["affine"]), str(out))
        return [str(out)]

    common = dict(fixed=known_motion["fixed"], moving=known_motion["moving"], refine_iterations=[3, 3, 3],
                  refine_second_iterations=3, progress=False)  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setattr(segment, "run", fake_run)
        run_inference_workflow(None, CONFIGS, output_dir=str(tmp_path / "auto"), **common)
    entry = json.loads((tmp_path / "auto" / "summary.json").read_text())["pairs"][0]
    assert entry["refinement"]["regulariser"] == "rigidity_shearing_jacobian"

    with pytest.raises(Exception) as info:  # the real scripts.regions.segment: TotalSegmentator is not installed here
        run_inference_workflow(None, CONFIGS, output_dir=str(tmp_path / "always"), segment_fixed="always", **common)
    err = find_input_error(info.value)
    assert err is not None and "TotalSegmentator" in str(err) and "case_fixed.nii.gz" in str(err)


def test_the_deep_breathing_config_turns_on_what_large_motions_need():
    """configs/refine_deep.json merged after refine.json: sided upsampling, the step start and 120 second-pass
    iterations reach the inferer; everything else as refine.json has it."""
    root = Path(__file__).resolve().parents[1] / "configs"
    parser = ConfigParser()
    parser.read_config([str(root / name) for name in (*CONFIGS, "refine_deep.json")])
    parser.update({"bundle_root": str(root.parent)})
    inferer = parser.get_parsed_content("inferer")
    assert inferer.options["sided_upsampling"] is True and inferer.second_step_start is True
    assert (inferer.second_iterations, inferer.second_snap_mm, inferer.second_lr) == (120, 3.0, 0.1)
    assert inferer.options["iterations"] == [150, 100, 60] and inferer.options.get("smooth") is None


def test_the_wall_search_config_turns_on_the_search_and_the_step_start():
    """configs/refine_wall_search.json merged after refine.json: the wall search of one voxel before the first pass's
    finest level (not the second pass's since 0.9.10), per region of 20 mm (since 0.9.11), with a 12 mm closing among
    its candidates (since 0.9.14) and a run-off of 40 iterations (since 0.9.16), and the second pass's step start
    reach the inferer; the schedule and the rest as refine.json has them (the bones' labels untrimmed)."""
    root = Path(__file__).resolve().parents[1] / "configs"
    parser = ConfigParser()
    parser.read_config([str(root / name) for name in (*CONFIGS, "refine_wall_search.json")])
    parser.update({"bundle_root": str(root.parent)})
    inferer = parser.get_parsed_content("inferer")
    assert (inferer.first_wall_search, inferer.second_wall_search, inferer.second_step_start) == (1, 0, True)
    assert inferer.first_wall_region_mm == 20.0 and inferer.region_options["bone_trim_hu"] is None  # not in it
    assert inferer.first_wall_closings_mm == (12.0,) and inferer.first_wall_search_iterations == 20  # since 0.9.14
    assert inferer.first_wall_runoff_iterations == 40  # since 0.9.16
    assert (inferer.second_iterations, inferer.second_snap_mm, inferer.second_lr) == (30, 3.0, 0.1)
    assert inferer.options["sided_upsampling"] is False and inferer.options["iterations"] == [150, 100, 60]


def test_the_config_leaves_the_diffusion_weight_to_the_prior_and_names_a_bad_option():
    """configs/refine.json's ``refine_smooth`` null reaches refine_pair as its default (DEFAULT_SMOOTH: 1.0 with the
    sliding band, 0.5 on the log-Jacobian path without a segmentation); a number on the command line fixes it."""
    root = Path(__file__).resolve().parents[1] / "configs"
    asked = {
        "refine_smooth": 0.7,
        "refine_sided_upsampling": "true",
        "refine_second_step_start": "true",
        "refine_second_wall_search": 2,
        "refine_first_wall_search": 1,
        "refine_first_wall_region_mm": 20,
        "refine_first_wall_closings_mm": [12, 8.5],
        "refine_first_wall_search_iterations": 20,
        "bone_trim_hu": 0,
    }
    for override, expected in (({}, None), (asked, 0.7)):
        parser = ConfigParser()
        parser.read_config([str(root / name) for name in CONFIGS])
        parser.update({"bundle_root": str(root.parent), **override})
        inferer = parser.get_parsed_content("inferer")
        assert inferer.options.get("smooth") == expected
        assert inferer.options["sided_upsampling"] is bool(override)  # off unless asked for
        assert (inferer.second_iterations, inferer.second_snap_mm, inferer.second_lr) == (120, 3.0, 0.1)  # 0.9.29
        assert inferer.second_band_fold_weight == 1.0
        assert inferer.second_step_start is True  # from a step at its wall: the default since 0.9.29
        assert inferer.second_wall_search == (2 if override else 0)  # its wall search: off unless asked for
        assert inferer.first_wall_search == (1 if override else 0)  # the first pass's: off unless asked for
        assert inferer.first_wall_region_mm == (20.0 if override else 0.0)  # one shift for the whole wall
        assert inferer.first_wall_closings_mm == ((12.0, 8.5) if override else ())  # no closing candidates
        assert inferer.first_wall_search_iterations == (20 if override else 30)  # null: the second pass's, at most 30
        assert inferer.network_start == "field"  # the network's field everywhere, as before bundle 0.9.5
        assert inferer.region_options["bone_trim_hu"] == (0.0 if override else None)  # no trim unless asked for
        assert inferer.image_bones_hu == "auto" and inferer.shear_band == SHEAR_BAND_THRESHOLD  # no segmentation
        assert inferer.motion_cavity == MOTION_CAVITY_FRACTION  # the moved cavity without a segmentation (0.9.28)
        assert inferer.motion_cavity_step_start is False  # its second pass (0.9.30) from the first field
    parser.update({"refine_first_wall_closings_mm": 12})  # one radius as a number
    assert parser.get_parsed_content("inferer", lazy=False).first_wall_closings_mm == (12.0,)
    for typed in ("null", "None"):  # the command line's spellings of null (fire leaves "null" a string)
        parser = ConfigParser()
        parser.read_config([str(root / name) for name in CONFIGS])
        nulls = {key: typed for key in ("bone_trim_hu", "refine_smooth", "refine_gamma", "refine_iterations")}
        nulls["refine_grid_mm"] = typed  # null: the fixed image's own grid
        parser.update({"bundle_root": str(root.parent), **nulls})
        inferer = parser.get_parsed_content("inferer")
        assert inferer.grid_mm is None and inferer.region_options["bone_trim_hu"] is None
        assert not {"smooth", "gamma", "iterations"} & set(inferer.options)  # each the default of refine_pair
    bad_values = [  # one error line naming the option
        ("refine_grid_mm", "abc", "--refine_grid_mm must be a number > 0"),
        ("refine_grid_mm", 0, "--refine_grid_mm must be a number > 0"),
        ("refine_smooth", "abc", "--refine_smooth must be a number >= 0"),
        ("refine_smooth", -1.0, "--refine_smooth must be a number >= 0"),
        ("refine_gamma", "0.5x", "--refine_gamma must be a number >= 0"),
        ("refine_similarity", "ssim", "--refine_similarity must be one of"),
        ("refine_intensity", "hu", "--refine_intensity must be one of"),
        ("segment_fixed", "maybe", "--segment_fixed must be one of"),
        ("refine_second_iterations", -1, "--refine_second_iterations must be a whole number >= 0"),
        ("refine_second_iterations", 2.5, "--refine_second_iterations must be a whole number >= 0"),
        ("refine_second_snap_mm", "one voxel", "--refine_second_snap_mm must be a number >= 0"),
        ("refine_second_lr", 0, "--refine_second_lr must be a number > 0"),
        ("refine_second_band_fold_weight", -0.5, "--refine_second_band_fold_weight must be a number >= 0"),
        ("refine_sided_upsampling", "yes", "option --refine_sided_upsampling: 'yes' is not one of"),
        ("refine_second_step_start", "1", "option --refine_second_step_start: '1' is not one of"),
        ("refine_second_wall_search", -1, "--refine_second_wall_search must be a whole number of voxels >= 0"),
        ("refine_second_wall_search", 1.5, "--refine_second_wall_search must be a whole number of voxels >= 0"),
        ("refine_first_wall_search", -2, "--refine_first_wall_search must be a whole number of voxels >= 0"),
        ("refine_first_wall_search", "one", "--refine_first_wall_search must be a whole number of voxels >= 0"),
        ("refine_first_wall_region_mm", -5, "--refine_first_wall_region_mm must be a number >= 0"),
        ("refine_first_wall_region_mm", "wide", "--refine_first_wall_region_mm must be a number >= 0"),
        ("refine_first_wall_closings_mm", [12, -1], "--refine_first_wall_closings_mm must be a list of radii > 0"),
        ("refine_first_wall_closings_mm", "12 mm", "--refine_first_wall_closings_mm must be a list of radii > 0"),
        (
            "refine_first_wall_closings_mm",
            [12],
            "--refine_first_wall_closings_mm needs --refine_first_wall_search >= 1",
        ),
        ("refine_first_wall_search_iterations", 0, "--refine_first_wall_search_iterations must be a whole number >= 1"),
        ("refine_first_wall_search_iterations", 2.5, "--refine_first_wall_search_iterations must be a whole number"),
        (
            "refine_first_wall_runoff_iterations",
            -1,
            "--refine_first_wall_runoff_iterations must be a whole number >= 0",
        ),
        (
            "refine_first_wall_runoff_iterations",
            40,
            "--refine_first_wall_runoff_iterations needs --refine_first_wall_search >= 1",
        ),
        ("refine_network_start", "organs", "--refine_network_start must be one of ('field', 'cavity')"),
        ("bone_trim_hu", "dim", "--bone_trim_hu must be a number or null (HU; null turns that rule off)"),
        ("bone_trim_hu", [50], "--bone_trim_hu must be a number or null"),
        ("bone_hu", "bright", "--bone_hu must be a number or null"),
        ("unlabelled_bone_hu", True, "--unlabelled_bone_hu must be a number or null"),
        ("unlabelled_air_hu", "-400 HU", "--unlabelled_air_hu must be a number or null"),
        ("refine_image_bones_hu", "bright", "--refine_image_bones_hu 'bright': give a number of HU or auto"),
        ("refine_image_bones_hu", True, "--refine_image_bones_hu 'true': give a number of HU or auto"),
        ("refine_shear_band", 0, "--refine_shear_band must be a number > 0 (the least shear, mm / mm; or null"),
        ("refine_shear_band", "wide", "--refine_shear_band must be a number > 0"),
        ("refine_motion_cavity", 0, "--refine_motion_cavity must be a number > 0 (and < 1: of the first field's 95th"),
        ("refine_motion_cavity", 1.5, "--refine_motion_cavity must be a number > 0 (and < 1"),
        ("refine_motion_cavity", "half", "--refine_motion_cavity must be a number > 0"),
        ("refine_motion_cavity_step_start", "maybe", "option --refine_motion_cavity_step_start: 'maybe' is not one"),
    ]
    for key, bad, message in bad_values:
        parser = ConfigParser()
        parser.read_config([str(root / name) for name in CONFIGS])
        parser.update({"bundle_root": str(root.parent), key: bad})
        with pytest.raises(Exception) as info:
            parser.get_parsed_content("inferer")
        err = find_input_error(info.value)
        assert err is not None and message in str(err), (key, repr(info.value))


def test_the_image_rules_of_the_regions_are_options_and_null_turns_one_off():
    """configs/refine.json's ``bone_hu``, ``unlabelled_bone_hu`` and ``unlabelled_air_hu`` (bundle 0.9.23) reach
    ``cavity_regions`` through the inferer's regions: by default the rules as ``cavity_regions`` has them (a lung lobe
    the segmenter left out is content from its darkness, a rib it missed is bone from its brightness, a labelled
    rib's dim rim is bone), another number moves a rule's threshold, ``null`` as typed on the command line turns one
    off (the wall through the lung as the labels alone put it; the missed rib soft)."""
    ids = {n: TOTALSEG_V2_TOTAL[n] for n in ("liver", "lung_lower_lobe_left", "rib_left_5")}
    seg = np.zeros((40, 40, 40), dtype=np.uint8)
    seg[10:30, 10:30, 8:20] = ids["liver"]
    seg[10:30, 10:30, 20:26] = ids["lung_lower_lobe_left"]  # its upper part (z 26-31) left out
    seg[6, 12:28, 12:28] = ids["rib_left_5"]
    image = np.full(seg.shape, -1000.0, dtype=np.float32)
    image[2:38, 9:38, 2:38] = 40.0
    image[10:30, 10:30, 20:32] = -850.0  # the lung, labelled and not
    image[6, 12:28, 12:28], image[5, 12:28, 12:28] = 400.0, 150.0  # the labelled rib and its dim unlabelled rim
    image[33, 12:28, 12:28] = 400.0  # a rib three voxels outside the cavity that no label holds
    root = Path(__file__).resolve().parents[1] / "configs"
    off = {"unlabelled_air_hu": "null", "unlabelled_bone_hu": "None"}
    defaults = inspect.signature(cavity_regions).parameters  # the config's defaults are the function's
    defaults = {k: defaults[k].default for k in ("bone_hu", "unlabelled_bone_hu", "unlabelled_air_hu")}
    regions = {}
    for case, override in (("default", {}), ("off", off), ("bone_hu 300", {"bone_hu": 300})):
        parser = ConfigParser()
        parser.read_config([str(root / name) for name in CONFIGS])
        parser.update({"bundle_root": str(root.parent), **override})
        inferer = parser.get_parsed_content("inferer")
        expected = defaults | override
        expected = {k: None if v in ("null", "None") else float(v) for k, v in expected.items()}
        assert {k: inferer.region_options[k] for k in expected} == expected
        pair = type("Pair", (), {"fixed_seg": seg, "name": "pair"})()
        _, mask, _, side, _ = inferer.regions(pair, seg.shape, np.array([2.0, 2.0, 2.0]), torch.from_numpy(image))
        regions[case] = mask[0, 0].numpy(), side[0, 0].numpy()
    (mask, side), (mask_off, side_off), (mask_300, _) = regions["default"], regions["off"], regions["bone_hu 300"]
    assert side[20, 20, 29] == 1 and side_off[20, 20, 29] == 0  # the lobe left out: content by default only
    assert (mask[33, 14:26, 14:26] == RIGID).all() and not (mask_off[33, 14:26, 14:26] == RIGID).any()  # missed rib
    assert (mask[5, 14:26, 14:26] == RIGID).all() and (mask_off[5, 14:26, 14:26] == RIGID).all()  # the rim: bone_hu
    assert not (mask_300[5, 14:26, 14:26] == RIGID).any() and (mask_300[6, 14:26, 14:26] == RIGID).all()


@pytest.mark.parametrize(
    "override, message",
    [
        ({"refine_levels": 0}, "--refine_levels must be a whole number >= 1"),
        ({"refine_levels": "two"}, "--refine_levels must be a whole number >= 1"),
        ({"refine_iterations": [150, 100]}, "--refine_iterations must be a whole number >= 0, or a list of 3"),
        (
            {"refine_levels": 2, "refine_iterations": [1, 2, 3]},
            "--refine_iterations must be a whole number >= 0, or a list of 2",
        ),
        ({"refine_iterations": -5}, "--refine_iterations must be a whole number >= 0"),
        ({"refine_lr": 0}, "--refine_lr must be a number > 0"),
        ({"refine_lr": [0.3, "x", 0.1]}, "--refine_lr must be a number > 0"),
    ],
)
def test_a_bad_schedule_stops_with_one_error_line_naming_the_option(override, message):
    root = Path(__file__).resolve().parents[1] / "configs"
    parser = ConfigParser()
    parser.read_config([str(root / name) for name in CONFIGS])
    parser.update({"bundle_root": str(root.parent), **override})
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("inferer")
    err = find_input_error(info.value)
    assert err is not None and message in str(err), repr(info.value)
    good = ConfigParser()
    good.read_config([str(root / name) for name in CONFIGS])
    good.update({"bundle_root": str(root.parent), "refine_levels": 2, "refine_iterations": [3, 4], "refine_lr": 0.2})
    options = good.get_parsed_content("inferer").options
    assert (options["levels"], options["iterations"], options["lr"]) == (2, [3, 4], 0.2)


def test_the_cavity_start_keeps_the_network_inside_the_cavity_and_its_rigid_map_outside(known_motion, tmp_path):
    """``--refine_network_start cavity`` (scripts/refinement/start.py): with no iteration on one level the written
    field is the start itself: the shipped CT model's field inside the cavity (as the ``field`` start writes it) and,
    outside it, the model's rigid pre-alignment: one rotation and translation (an affine function of the position)."""
    case = known_motion
    fields = {}
    for start in ("field", "cavity"):
        out = tmp_path / start
        run_inference_workflow(None, CONFIGS, fixed=case["fixed"], moving=case["moving"], fixed_seg=case["seg"],
                               output_dir=str(out), ckpt_path=str(ROOT / "models" / "model_ct.pt"), refine_levels=1,
                               refine_iterations=0, refine_second_iterations=0, refine_network_start=start,
                               progress=False)  # fmt: skip
        entry = json.loads((out / "summary.json").read_text())["pairs"][0]
        assert entry["refinement"]["start"] == {"field": "network", "cavity": "network_cavity"}[start]
        fields[start] = nib.load(entry["outputs"]["ddf"]).get_fdata()[..., 0, :]  # (X, Y, Z, 3) mm
    fixed = np.asanyarray(nib.load(case["fixed"]).dataobj).astype(np.float32)
    _, _, side = cavity_regions(case["labels"], (3.0, 3.0, 3.0), image=fixed, pairs=False, return_side=True)
    inside = side != 0
    assert 0.05 < inside.mean() < 0.9
    np.testing.assert_allclose(fields["cavity"][inside], fields["field"][inside], atol=1e-4)
    outside = ~inside & case["body"]
    points = np.stack(np.nonzero(outside), axis=1).astype(np.float64)
    design = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    for start, limit in (("cavity", 0.02), ("field", None)):
        values = fields[start][outside]
        fit, *_ = np.linalg.lstsq(design, values, rcond=None)
        residual = float(np.abs(design @ fit - values).max())
        print(f"{start} start: largest departure from an affine map outside the cavity {residual:.4f} mm")
        if limit is not None:
            assert residual < limit
        else:  # the network's own field there is no rigid map: the test tells the two starts apart
            assert residual > 0.1


def test_the_network_start_of_the_refinement():
    """scripts/refinement/start.py: ``cavity`` keeps the network's field where the cavity is (side 1 or -1) and the
    rigid map (or nothing) elsewhere; ``field``, or no segmentation, keeps the field; a bad mode names the choices."""
    ddf = torch.full((1, 3, 4, 4, 4), 2.0)
    rigid = torch.full((1, 3, 4, 4, 4), 0.5)
    side = torch.zeros(1, 1, 4, 4, 4)
    side[..., 1, :, :] = 1.0
    side[..., 2, :, :] = -1.0  # an organ-organ pair band: inside the cavity too
    start = network_start(ddf, rigid, side, "cavity")
    assert torch.equal(start[:, :, 1:3], ddf[:, :, 1:3]) and torch.equal(start[:, :, [0, 3]], rigid[:, :, [0, 3]])
    assert torch.equal(network_start(ddf, None, side, "cavity")[:, :, [0, 3]], torch.zeros(1, 3, 2, 4, 4))
    assert network_start(ddf, rigid, side, "field") is ddf and network_start(ddf, rigid, None, "cavity") is ddf
    with pytest.raises(ValueError, match=r"one of \('field', 'cavity'\)"):
        network_start(ddf, rigid, side, "organs")
    with pytest.raises(ValueError, match="not on the field's grid"):
        network_start(ddf, rigid, side[..., :2], "cavity")
