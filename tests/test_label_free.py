"""Regions with no segmentation (scripts/regions/label_free.py): the sliding band where a field shears, on fields
whose answer is known (a smeared slip, a compression, a rotation), and the refinement with it end to end on a pair
whose inner cylinder slides along its wall."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from scripts.inference.predict import run_inference_workflow
from scripts.refinement import inferer as inferer_module
from scripts.refinement.inferer import RefinementInferer
from scripts.regions.label_free import (
    MOTION_BONE_LABEL,
    MOTION_CONTENT_LABEL,
    SHEAR_BAND_THRESHOLD,
    motion_labels,
    normal_steps,
    shear_band,
    tangential_jump,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _slab_field(kind: str, shape=(20, 12, 12), amplitude=4.0) -> np.ndarray:
    """(3, *shape) mm: the two halves x < 10 and x >= 10 moving apart by 2 ``amplitude`` mm, smeared over about
    three voxels of 2 mm: along y (a slip: tangential to the plane x = 9.5) or along x (a compression)."""
    x = np.arange(shape[0], dtype=np.float64)[:, None, None] * np.ones(shape)
    jump = amplitude * np.tanh((9.5 - x) / 1.5)
    field = np.zeros((3, *shape))
    field[1 if kind == "slip" else 0] = jump
    return field


def test_the_band_lies_on_a_smeared_slip_with_its_normal_and_nowhere_else():
    band, normals = shear_band(_slab_field("slip"), (2.0, 2.0, 2.0), np.ones((20, 12, 12), bool))
    assert set(np.nonzero(band.any(axis=(1, 2)))[0]) == {8, 9, 10, 11}  # the ridge (9, 10) grown by a voxel
    assert band[8:12].all()
    assert np.abs(normals[0][band]).min() > 0.99  # across the plane x = 9.5
    allowed = np.ones((20, 12, 12), bool)
    allowed[:, :, :6] = False  # e.g. bones: never in the band
    band_half, _ = shear_band(_slab_field("slip"), (2.0, 2.0, 2.0), allowed)
    assert not band_half[:, :, :6].any() and band_half[8:12, :, 6:].all()


def test_a_compression_a_rotation_or_a_weak_slip_give_no_band():
    allowed = np.ones((20, 12, 12), bool)
    assert not shear_band(_slab_field("compression"), (2.0, 2.0, 2.0), allowed)[0].any()  # a . n = 1: no shear
    weak = _slab_field("slip", amplitude=1.0)  # s1 about 0.33 at most, below the threshold
    assert not shear_band(weak, (2.0, 2.0, 2.0), allowed)[0].any() and SHEAR_BAND_THRESHOLD == 0.35
    angle = np.deg2rad(10.0)  # a rotation about z by 10 degrees: a skew gradient, s1 = sin 10 = 0.17
    idx = np.indices((20, 12, 12)).astype(np.float64) * 2.0
    x, y = idx[0] - 19.0, idx[1] - 11.0
    rotation = np.stack([np.cos(angle) * x - np.sin(angle) * y - x, np.sin(angle) * x + np.cos(angle) * y - y, 0 * x])
    assert not shear_band(rotation, (2.0, 2.0, 2.0), allowed)[0].any()


def test_the_tangential_jump_is_the_slip_across_a_surface_without_its_normal_part():
    slip, compression = _slab_field("slip"), _slab_field("compression")  # 2 x 4 mm apart, smeared over ~3 voxels
    here, normals = np.array([[9, 6, 6], [10, 6, 6], [2, 6, 6]]), np.tile([[-1.0, 0.0, 0.0]], (3, 1))
    step = normal_steps(normals, (2.0, 2.0, 2.0))
    assert np.array_equal(step, normals)  # one voxel along the normal's main axis
    near, far = (tangential_jump(slip, here, step, normals, k) for k in (2.0, 5.0))
    both = 4.0 * (np.tanh(2.5 / 1.5) + np.tanh(1.5 / 1.5))  # x = 9 sees 7 and 11: 6.8 of the 8 mm within 2 voxels
    assert near[:2] == pytest.approx(both, abs=1e-9) and near[2] < 0.01  # at x = 2 (0 to 4), far from the slip: none
    assert far[:2] == pytest.approx(4.0 * (np.tanh(5.5 / 1.5) + np.tanh(4.5 / 1.5)), abs=1e-9)  # 4 and 14: 7.95
    assert tangential_jump(compression, here, step, normals, 2.0) == pytest.approx(0.0, abs=1e-12)  # along n: none
    oblique = normal_steps(np.array([[0.6, 0.8, 0.0]]), (1.0, 2.0, 2.0))
    assert oblique == pytest.approx(np.array([[1.0, 2.0 / 3.0, 0.0]]))  # x is its main axis in voxels (0.6 / 1)


def _sliding_pair(folder) -> dict:
    """A CT-like pair (2 mm voxels): a textured body in air, a textured cylinder along z inside it that the moving
    image shifts by 6 mm along z (it slides along its wall, the rest stays), a bright bone bar outside it."""
    rng = np.random.default_rng(0)
    shape = (44, 44, 24)
    texture = ndi.gaussian_filter(rng.normal(0.0, 1.0, shape), 1.5)
    texture = 60.0 * texture / texture.std()
    idx = np.indices(shape)
    radius = np.hypot(idx[0] - 21.5, idx[1] - 21.5)
    body, cylinder = radius < 20, radius < 11
    bone = (np.abs(idx[0] - 21.5) < 2) & (idx[1] >= 36) & (idx[1] < 39)
    fixed = np.where(body, 20.0 + texture, -1000.0)
    inner = ndi.gaussian_filter(rng.normal(0.0, 1.0, shape), 1.5)
    inner = 40.0 + 60.0 * inner / inner.std()
    fixed[cylinder] = inner[cylinder]
    fixed[bone] = 400.0
    moving = fixed.copy()  # moving(x) = fixed(x - 3 voxels along z) inside the cylinder
    shifted = np.roll(inner, 3, axis=2)
    moving[cylinder] = shifted[cylinder]
    true = np.zeros((*shape, 3))
    true[..., 2][cylinder] = 6.0  # warped(x) = moving(x + d(x)): d = +6 mm along z inside
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    paths = {}
    for name, array in (("fixed", fixed), ("moving", moving)):
        paths[name] = str(folder / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(array.astype(np.int16), affine), paths[name])
    wall = cylinder & ~ndi.binary_erosion(cylinder) | ndi.binary_dilation(cylinder) & ~cylinder
    return {**paths, "true": true, "wall": wall[:, :, 3:-3], "cylinder": cylinder}


def test_without_a_segmentation_the_band_lets_a_cylinder_slide(tmp_path, caplog):
    """No segmentation and the moved cavity off: with ``refine_shear_band`` the second pass finds the cylinder's wall
    where the first field shears, and the field there comes nearer the slip than without it."""
    caplog.set_level(logging.INFO, logger="scripts.refinement.inferer")
    pair = _sliding_pair(tmp_path)
    errors = {}
    for value in ("null", SHEAR_BAND_THRESHOLD):
        out = tmp_path / f"out_{value}"
        run_inference_workflow(None, ("inference.json", "refine.json"), fixed=pair["fixed"], moving=pair["moving"],
                               output_dir=str(out), refine_shear_band=value, refine_motion_cavity="null",
                               progress=False)  # fmt: skip
        entry = json.loads((out / "summary.json").read_text())["pairs"][0]
        ddf = nib.load(entry["outputs"]["ddf"]).get_fdata()[..., 0, :] * np.array([-1.0, -1.0, 1.0])  # LPS -> RAS
        error = np.linalg.norm(ddf - pair["true"], axis=-1)[:, :, 3:-3]
        errors[value] = float(error[pair["wall"]].mean()), entry["refinement"]["loss_curve"][-1]["level"]
    (plain, plain_levels), (banded, levels) = errors["null"], errors[SHEAR_BAND_THRESHOLD]
    assert levels == plain_levels + 1  # the second pass ran
    assert "slides along" in caplog.text and "diverged" not in caplog.text
    assert banded < 0.85 * plain, errors  # measured 1.84 against 2.40 mm


def test_motion_labels_take_what_moved_relative_to_the_bones_as_the_cavity():
    """The contents that a field moved (here a cylinder, 5 mm along z, the whole grid also shifted with the bones by
    2 mm) become one content label, the bones a vertebra's; a field that moves nothing labels no content."""
    shape = (30, 30, 16)
    idx = np.indices(shape)
    radius = np.hypot(idx[0] - 14.5, idx[1] - 14.5)
    body, cylinder = radius < 14, radius < 8
    bones = (np.abs(idx[0] - 14.5) < 2) & (idx[1] >= 24) & (idx[1] < 27)
    field = np.zeros((3, *shape))
    field[0] += 2.0  # the whole scan, bones included: not the contents' motion
    field[2][cylinder] += 5.0 * (1.0 - np.clip(radius[cylinder] - 6.0, 0.0, 2.0) / 4.0)  # smeared at the wall
    seg = motion_labels(field, bones, body, 0.6, grow=0)
    contents = seg == MOTION_CONTENT_LABEL
    dice = 2 * (contents & cylinder).sum() / (contents.sum() + cylinder.sum())
    assert dice > 0.9 and not (contents & ~body).any(), dice
    assert (seg[bones] == MOTION_BONE_LABEL).all() and not contents[bones].any()
    assert not (motion_labels(np.zeros_like(field), bones, body, 0.6) == MOTION_CONTENT_LABEL).any()
    # grown (the default, 2 voxels) within the body off the bones, never through them: from r < 8 to r < 8.5 at least
    grown = motion_labels(field, bones, body, 0.6) == MOTION_CONTENT_LABEL
    assert grown.sum() > 1.4 * contents.sum() and not (grown & ~body).any() and not grown[bones].any()
    assert (grown == ndi.binary_dilation(contents, iterations=2, mask=body & ~bones)).all()
    assert grown[radius < 8.5].all() and not grown[radius > 10.5].any() and not contents[radius > 8.0].any()
    # with the grid's spacing: at 3 mm the contents' edge lies 18 mm inside the skin and they grow; at 1 mm it lies
    # 6 mm inside, where only a region that took the body wall along would reach: they stay as they moved
    for spacing, near, grows in (((3.0, 3.0, 3.0), 0.0, True), ((1.0, 1.0, 1.0), 1.0, False)):
        report = {}
        seg = motion_labels(field, bones, body, 0.6, spacing=spacing, report=report)
        assert report["edge_near_skin"] == pytest.approx(near) and (report["grown"] > 0) == grows, report
        assert ((seg == MOTION_CONTENT_LABEL) == (grown if grows else contents)).all()
    # a scan with no body voxel at all (all air): no content, and the report still holds both entries
    report = {}
    seg = motion_labels(field, bones, np.zeros(shape, bool), 0.6, spacing=(3.0, 3.0, 3.0), report=report)
    assert report == {"edge_near_skin": None, "grown": 0} and not (seg == MOTION_CONTENT_LABEL).any()


def test_without_a_segmentation_the_moved_cavity_lets_a_cylinder_slide(tmp_path, caplog, monkeypatch):
    """``refine_motion_cavity`` (0.6, the default since bundle 0.9.28): the contents the first field moved become the
    cavity of the labelled refinement (with its second pass, from the first field, since bundle 0.9.30), which then
    lets the cylinder slide along it: its wall's error well below the first pass's alone (no band, no cavity). The
    pair is resampled onto the refinement grid once for both refinements."""
    caplog.set_level(logging.INFO, logger="scripts.refinement.inferer")
    pair = _sliding_pair(tmp_path)
    prepared, prepare = [], RefinementInferer.prepare
    monkeypatch.setattr(RefinementInferer, "prepare", lambda *args, **kw: prepared.append(1) or prepare(*args, **kw))
    starts, second = [], inferer_module.second_pass  # the second pass's start, as the inferer asks for it
    monkeypatch.setattr(
        inferer_module, "second_pass", lambda *a, **kw: starts.append(kw["step_start"]) or second(*a, **kw)
    )
    errors, entries = {}, {}
    for name, options in (("plain", dict(refine_shear_band="null", refine_motion_cavity="null")), ("cavity", {})):
        out = tmp_path / name
        run_inference_workflow(None, ("inference.json", "refine.json"), fixed=pair["fixed"], moving=pair["moving"],
                               output_dir=str(out), progress=False, **options)  # fmt: skip
        entries[name] = entry = json.loads((out / "summary.json").read_text())["pairs"][0]
        ddf = nib.load(entry["outputs"]["ddf"]).get_fdata()[..., 0, :] * np.array([-1.0, -1.0, 1.0])  # LPS -> RAS
        errors[name] = float(np.linalg.norm(ddf - pair["true"], axis=-1)[:, :, 3:-3][pair["wall"]].mean())
    report = entries["cavity"]["refinement"]
    assert report["regulariser"] == "rigidity_shearing_jacobian" and report["motion_cavity"]["fraction"] == 0.6
    assert entries["plain"]["refinement"]["regulariser"] == "rigidity_jacobian"
    levels = [entry["refinement"]["loss_curve"][-1]["level"] for entry in (entries["plain"], entries["cavity"])]
    assert levels == [2, 3]  # three levels each, then the labelled refinement's second pass (one level past them)
    assert starts == [False]  # from the first field (refine_motion_cavity_step_start), not from a step as with labels
    # measured 8990 of 9216 (6312, 2 voxels inside the wall, before the contents grew by 2 voxels: bundle 0.9.27)
    assert 0.85 < report["motion_cavity"]["content_voxels"] / pair["cylinder"].sum() < 1.15
    assert report["motion_cavity"]["edge_near_skin"] == 0.0 and report["motion_cavity"]["grown"] > 1000  # 18 mm deep
    assert (
        0 < report["first_pass_seconds"] < report["seconds"] and "motion_cavity" not in entries["plain"]["refinement"]
    )
    assert "refined again in the cavity that moved" in caplog.text and "of them grown" in caplog.text
    assert "diverged" not in caplog.text
    assert len(prepared) == 2  # one pair per run: the moved cavity's second refinement reuses its grid and images
    # measured 1.72 against 2.40 mm (the shear band's pass: 1.84; without the second pass, 0.9.28-0.9.29: 1.86; from a
    # step: 1.73; the true cylinder as labels: 0.13)
    assert errors["cavity"] < 0.85 * errors["plain"], errors


def test_where_the_first_field_moved_nothing_the_band_runs_instead(tmp_path, caplog, monkeypatch):
    """The moved cavity (the default) with no content to take (here ``motion_labels`` stood in by one that finds
    none): one log line says so, the band's second pass runs where the first field shears, as with
    ``--refine_motion_cavity null``, and ``summary.json`` still reports the moved cavity (0 content voxels)."""
    caplog.set_level(logging.INFO, logger="scripts.refinement.inferer")
    pair = _sliding_pair(tmp_path)

    def nothing_moved(field, bones, body, fraction, **kwargs):
        seg = motion_labels(field, bones, body, fraction, **kwargs)  # the real one, imported above
        seg[seg == MOTION_CONTENT_LABEL] = 0
        return seg

    monkeypatch.setattr("scripts.regions.label_free.motion_labels", nothing_moved)  # as the inferer calls it
    out = tmp_path / "out"
    run_inference_workflow(None, ("inference.json", "refine.json"), fixed=pair["fixed"], moving=pair["moving"],
                           output_dir=str(out), progress=False)  # fmt: skip
    report = json.loads((out / "summary.json").read_text())["pairs"][0]["refinement"]
    assert report["motion_cavity"]["content_voxels"] == 0 and report["regulariser"] == "rigidity_jacobian"
    assert report["loss_curve"][-1]["level"] == 3  # the band's pass, one level past the first pass's three
    assert "moved nothing off the bones" in caplog.text and "slides along" in caplog.text
