"""Rigid bones in the written field (scripts/networks/bones.py; its threshold: scripts/regions/label_free.py): the
weight w against its closed form, the blend on a small pair, and end to end through ``run inference`` with the
shipped CT model on a real CT moved on the table."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from scripts.io.errors import InputError
from scripts.networks.bones import RigidBonesInferer, bone_weight
from scripts.regions.label_free import bone_threshold_hu

BUNDLE_ROOT = Path(__file__).resolve().parents[1]


def test_the_weight_is_one_near_the_bones_and_falls_linearly_in_mm():
    hu = np.zeros((30, 12, 12), np.float32)
    hu[10, :, :] = 400.0  # a plate of bone at x = 10
    w = bone_weight(hu, (2.0, 1.0, 1.0), hu=100.0, near_mm=3.0, fall_mm=6.0)  # 2 mm along x
    profile = w[:, 5, 5]
    assert profile[10] == 1.0 and profile[11] == 1.0  # on the plate, and 2 mm from it (within 3 mm)
    assert profile[12] == pytest.approx(5.0 / 6.0)  # 4 mm: (3 + 6 - 4) / 6
    assert profile[13] == pytest.approx(0.5) and profile[7] == pytest.approx(0.5)  # 6 mm, both sides
    assert profile[15] == 0.0 and profile[0] == 0.0  # 10 mm and more: the network's field
    assert not bone_weight(np.full((4, 4, 4), 99.0), (1, 1, 1)).any()  # nothing above 100 HU: no bone
    with pytest.raises(InputError, match="--rigid_bones_mm"):
        bone_weight(hu, (1, 1, 1), near_mm=3.0, fall_mm=0.0)


def test_the_automatic_threshold_follows_the_soft_tissue_of_a_contrast_enhanced_scan():
    """A portal-venous CT's organs reach 100-115 HU (the DICOM series of ../shared/data: liver median 93 HU, p90 112):
    a fixed 100 HU would make them rigid; ``auto`` sets the threshold 60 HU above the soft tissue's median."""
    rng = np.random.default_rng(0)
    plain = rng.normal(40.0, 10.0, (24, 24, 24)).astype(np.float32)  # unenhanced organs
    plain[2:6, 2:6, 2:6] = 400.0  # a bone
    enhanced = plain + 55.0  # the same organs enhanced (95 HU, 1 in 20 voxels above 112)
    enhanced[2:6, 2:6, 2:6] = 400.0
    assert bone_threshold_hu(plain) == 100.0  # median 40 + 60 = 100: the floor
    assert bone_threshold_hu(enhanced) == pytest.approx(95.0 + 60.0, abs=1.0)
    assert bone_threshold_hu(enhanced, 120) == 120.0 and bone_threshold_hu(np.full((4, 4, 4), -1000.0)) == 100.0
    organ = np.ones(plain.shape, bool)
    organ[:16, :16, :16] = False  # far (> 9 mm) from the bone
    assert (bone_weight(enhanced, (1.0, 1.0, 1.0), hu=100.0)[organ] > 0).mean() > 0.9  # a fixed 100 HU: rigid organs
    assert (bone_weight(enhanced, (1.0, 1.0, 1.0))[organ] > 0).mean() == 0.0  # auto: none of them
    with pytest.raises(InputError, match="--rigid_bones_hu"):
        bone_threshold_hu(plain, "bright")


def _pair(shape=(24, 20, 16), spacing=3.0):
    """A fixed CT (air around a body of soft tissue with a block of bone) on a grid of 3 mm; its network grid is half
    as fine."""
    fixed = torch.full(shape, -1000.0)
    fixed[1:-1, 1:-1, 1:-1] = 40.0
    fixed[4:8, 4:8, 4:8] = 300.0
    affine = np.diag([spacing] * 3 + [1.0])
    net_shape = tuple(n // 2 for n in shape)
    net_affine = affine.copy()
    net_affine[:3, :3] *= 2.0
    net_affine[:3, 3] = spacing / 2.0  # edge-aligned, as MONAI's Resized
    return SimpleNamespace(fixed=fixed, fixed_shape=shape, fixed_affine=affine, net_affine=net_affine,
                           net_shape=net_shape, report={})  # fmt: skip


def test_the_bones_take_the_rigid_map_and_the_rest_keeps_the_network_field():
    pair = _pair()
    net = pair.net_shape
    network = torch.zeros(1, 3, *net)
    network[:, 0] = torch.linspace(0.0, 2.0, net[0]).view(-1, 1, 1)  # a stretch along x (net voxels)
    rigid = torch.zeros(1, 3, *net)
    rigid[:, 1] = 0.75  # the bones' rigid map: 0.75 net voxel = 4.5 mm along y
    out = {"ddf": network, "rigid_ddf": rigid, "warped": torch.zeros(1, 1, *net)}
    blended = RigidBonesInferer(torch.nn.Identity(), grid_mm=None).blend(out, pair)
    ddf = blended["ddf"][0]
    assert tuple(ddf.shape) == (3, *pair.fixed_shape) and pair.net_shape == pair.fixed_shape  # on the fixed grid
    np.testing.assert_allclose(pair.net_affine, pair.fixed_affine)
    bone = ddf[:, 4:8, 4:8, 4:8]  # the rigid map: 4.5 mm = 1.5 fixed voxels along y, nothing along x, z
    torch.testing.assert_close(bone[1], torch.full_like(bone[1], 1.5), atol=1e-5, rtol=0)
    assert float(bone[0].abs().max()) < 1e-6 and float(bone[2].abs().max()) < 1e-6
    far = ddf[:, 18:, 14:, 12:]  # > 9 mm from the bone: the network's field (its stretch, nothing along y)
    assert float(far[1].abs().max()) < 1e-6 and float(far[0].min()) > 1.5
    assert blended["network_ddf"] is network and pair.report["rigid_bones"]["rigid_percent"] > 1.0
    # off, or a network without a rigid pre-alignment: the outputs as they are, the pair untouched
    for inferer, outputs in (
        (RigidBonesInferer(None, enabled=False), out),
        (RigidBonesInferer(None), {"ddf": network}),
    ):
        again = _pair()
        assert inferer.blend(outputs, again) is outputs and again.report == {}
    with pytest.raises(ValueError, match="keep_fixed"):
        RigidBonesInferer(None).blend(out, None)
    # a fixed image that is not in HU (here the CT scaled to [0, 1], as an MR image would be): no rigid bones
    scaled = _pair()
    scaled.fixed = (scaled.fixed + 1000.0) / 1400.0
    assert RigidBonesInferer(None).blend(out, scaled) is out and "skipped" in scaled.report["rigid_bones"]


@pytest.mark.skipif(not (BUNDLE_ROOT / "models" / "model_ct.pt").is_file(), reason="no shipped CT model")
def test_inference_keeps_the_bones_of_a_real_ct_rigid(ct_example_dir, tmp_path):
    """The held-out CT moved on the table by (6, -4.5, 4) mm: with rigid bones (the default) the written field is one
    rigid motion on the bones (an affine fit leaves nothing), without them it bends there."""
    from scripts.inference.predict import run_inference_workflow

    ct = nib.load(str(ct_example_dir / "example_ct_sm.nii.gz"))
    volume = np.asanyarray(ct.dataobj).astype(np.float32)
    moved = ndi.shift(volume, np.array([6.0, -4.5, 4.0]) / 3.0, order=1, mode="nearest")
    nib.save(nib.Nifti1Image(np.round(moved).astype(np.int16), ct.affine), str(tmp_path / "moved.nii.gz"))
    bones = volume > 100  # within w = 1
    points = np.stack(np.nonzero(bones), axis=1).astype(np.float64)
    design = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    residual = {}
    for option in ("true", "false"):
        out = tmp_path / option
        fixed, moving = str(ct_example_dir / "example_ct_sm.nii.gz"), str(tmp_path / "moved.nii.gz")
        run_inference_workflow(BUNDLE_ROOT, ["inference.json"], fixed=fixed, moving=moving, output_dir=str(out),
                               rigid_bones=option)  # fmt: skip
        ddf = nib.load(str(next(out.glob("*_ddf.nii.gz")))).get_fdata()[..., 0, :][bones]
        fit = np.linalg.lstsq(design, ddf, rcond=None)[0]
        residual[option] = float(np.linalg.norm(design @ fit - ddf, axis=1).mean())
        summary = (out / "summary.json").read_text()
        assert ('"rigid_bones"' in summary) == (option == "true")
    assert residual["true"] < 0.01, residual  # mm: one rigid (affine) motion (1.5e-5 measured, bundle 0.9.6)
    assert residual["false"] > 0.2, residual  # the network's field bends the bones (0.57 mm measured)


def test_a_contrast_enhanced_real_ct_keeps_its_liver_out_of_the_bones(ct_example_dir, tmp_path):
    """The DICOM series of ../shared/data (portal-venous: liver median 93 HU) through ``run inference``: the automatic
    threshold is about 133 HU, the liver does not move rigidly (its rim at the ribs aside), the bones do; a fixed
    100 HU would take half the liver."""
    import SimpleITK as sitk

    from scripts.inference.predict import run_inference_workflow
    from scripts.io.resampling import area_resize, coarse_grid

    dicom = str(ct_example_dir / "example_ct_dicom")
    run_inference_workflow(BUNDLE_ROOT, ["inference.json"], fixed=dicom, moving=dicom, output_dir=str(tmp_path))
    summary = (tmp_path / "summary.json").read_text()
    threshold = float(summary.split('"rigid_bones"')[1].split('"hu":')[1].split(",")[0])
    assert 125.0 < threshold < 145.0, threshold  # 133.4 measured
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(dicom))
    image = reader.Execute()
    hu = torch.from_numpy(sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32))  # LPS array
    seg = np.flip(np.asarray(nib.load(str(ct_example_dir / "example_seg_dicom.nii.gz")).dataobj), axis=1)  # LAS
    shape, affine = coarse_grid(hu.shape, np.diag([*image.GetSpacing(), 1.0]), 3.0)  # the inferer's bones' grid
    on_grid = area_resize(hu, shape).numpy()
    labels = seg[np.ix_(*[np.linspace(0, n - 1, m).round().astype(int) for n, m in zip(hu.shape, shape)])]
    liver, bone = labels == 5, ((labels >= 25) & (labels <= 50)) | ((labels >= 92) & (labels <= 117))
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
    auto, fixed100 = bone_weight(on_grid, spacing), bone_weight(on_grid, spacing, hu=100.0)
    # measured: 0.4 % of the liver (its rim within 3 mm of the ribs) and 90 % of the bones
    assert (auto[liver] >= 1).mean() < 0.02 and (auto[bone] >= 1).mean() > 0.8
    assert (fixed100[liver] >= 1).mean() > 0.3  # measured: 50 %
