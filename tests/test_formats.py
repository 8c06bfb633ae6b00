"""Inputs in the formats users bring (scripts/io/image_formats.py, scripts/io/image_io.py): a real DICOM series, NRRD,
MHA, NIfTI, for fixed, moving and label inputs; outputs as NIfTI, NRRD or MHA. The geometry is checked exactly: a
known translation injected through the writer comes back in the ddf and warps the moving image (and its LAS label
map) onto the DICOM fixed image; the same pair as NRRD and MHA gives the same field; constant images.
"""

from __future__ import annotations

import locale
import logging
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.inference import writer
from scripts.inference.predict import load_pair

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
SHIFT = np.array([7.8125, -5.859375, 6.0])  # RAS mm: 8 and 6 voxels in-plane (0.9765625 mm), 3 slices (2 mm)


def preprocessing(image_size):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE_ROOT / "configs" / "inference.json"))
    parser["bundle_root"] = str(BUNDLE_ROOT)
    parser["image_size"] = list(image_size)
    return parser.get_parsed_content("preprocessing")


def sitk_ras(image) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) array and RAS affine of a SimpleITK image, computed here independently of the bundle."""
    import SimpleITK as sitk

    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return data, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def inject_translation(pair, shift_ras: np.ndarray) -> torch.Tensor:
    """The network-grid displacement (net voxels) of a world translation."""
    vox = np.linalg.solve(pair.net_affine[:3, :3], shift_ras)
    return torch.tensor(vox, dtype=torch.float32).reshape(1, 3, 1, 1, 1).expand(1, 3, *pair.net_shape).contiguous()


@pytest.fixture(scope="module")
def dicom_case(ct_example_dir, tmp_path_factory):
    """The DICOM series (fixed), a NIfTI copy moved by SHIFT (moving), the LAS segmentation as the fixed label and,
    moved, as the moving label; and the fixed series as NRRD and MHA."""
    import SimpleITK as sitk

    pytest.importorskip("itk", reason="reading DICOM / NRRD / MHA inputs needs the itk package (MONAI's ITKReader)")
    folder = tmp_path_factory.mktemp("formats")
    dicom = ct_example_dir / "example_ct_dicom"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(dicom)))
    image = reader.Execute()
    data, affine = sitk_ras(image)
    moved = affine.copy()
    moved[:3, 3] += SHIFT  # the same voxels, SHIFT mm further: moving point p + SHIFT is fixed point p
    nib.save(nib.Nifti1Image(data, moved), str(folder / "moving_ct.nii.gz"))
    seg = nib.load(str(ct_example_dir / "example_seg_dicom.nii.gz"))
    seg_moved = seg.affine.copy()
    seg_moved[:3, 3] += SHIFT
    nib.save(nib.Nifti1Image(np.asarray(seg.dataobj), seg_moved), str(folder / "moving_seg.nii.gz"))
    for ext in (".nrrd", ".mha"):
        sitk.WriteImage(image, str(folder / f"fixed_ct{ext}"))
        moving_image = sitk.GetImageFromArray(data.transpose(2, 1, 0))
        moving_image.CopyInformation(image)
        moving_image.SetOrigin(tuple(np.diag([-1.0, -1.0, 1.0]) @ moved[:3, 3]))
        sitk.WriteImage(moving_image, str(folder / f"moving_ct{ext}"))
    return {
        "folder": folder,
        "dicom": str(dicom),
        "fixed_data": data,
        "fixed_affine": affine,
        "seg": str(ct_example_dir / "example_seg_dicom.nii.gz"),
        "seg_on_fixed": np.flip(np.asarray(seg.dataobj), axis=1),  # LAS file -> the series' LPS array
    }


def test_dicom_fixed_nifti_moving_known_translation(dicom_case, tmp_path):
    case = dicom_case
    entry = {"fixed": case["dicom"], "moving": str(case["folder"] / "moving_ct.nii.gz"),
             "fixed_label": case["seg"], "moving_label": str(case["folder"] / "moving_seg.nii.gz")}  # fmt: skip
    pair = load_pair(entry, preprocessing((32, 32, 8)))
    assert pair.fixed_shape == (512, 512, 20)
    np.testing.assert_allclose(pair.fixed_affine, case["fixed_affine"], atol=1e-4)  # 0.98 x 0.98 x 2 mm, LPS array
    np.testing.assert_allclose(np.abs(np.diag(pair.fixed_affine)[:3]), [0.9765625, 0.9765625, 2.0], atol=1e-6)
    out = writer.finish_pair(pair, inject_translation(pair, SHIFT), tmp_path / "out")

    ddf = nib.load(out["outputs"]["ddf"])
    np.testing.assert_allclose(ddf.affine, case["fixed_affine"], atol=1e-4)
    np.testing.assert_allclose(ddf.get_fdata()[..., 0, :], np.broadcast_to(SHIFT * [-1, -1, 1], (512, 512, 20, 3)),
                               atol=1e-3)  # fmt: skip
    warped = np.asarray(nib.load(out["outputs"]["warped"]).dataobj)
    assert warped.dtype == np.int16
    np.testing.assert_array_equal(warped, case["fixed_data"])  # the exact field: the moving copy lands on the fixed
    label = np.asarray(nib.load(out["outputs"]["warped_label"]).dataobj)
    np.testing.assert_array_equal(label, case["seg_on_fixed"])
    assert out["dice"]["mean_after"] == pytest.approx(1.0) and out["dice"]["mean_before"] < 0.9


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_nrrd_and_mha_pairs_give_the_same_field_and_itk_outputs(dicom_case, tmp_path, ext):
    import SimpleITK as sitk

    case = dicom_case
    entry = {"fixed": str(case["folder"] / f"fixed_ct{ext}"), "moving": str(case["folder"] / f"moving_ct{ext}"),
             "fixed_label": case["seg"]}  # fmt: skip
    pair = load_pair(entry, preprocessing((32, 32, 8)))
    np.testing.assert_allclose(pair.fixed_affine, case["fixed_affine"], atol=1e-4)
    out = writer.finish_pair(pair, inject_translation(pair, SHIFT), tmp_path / "out", output_ext=ext)
    ddf = sitk.ReadImage(out["outputs"]["ddf"])
    assert ddf.GetNumberOfComponentsPerPixel() == 3 and ddf.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(ddf.GetSpacing(), (0.9765625, 0.9765625, 2.0), atol=1e-6)
    np.testing.assert_allclose(sitk.GetArrayFromImage(ddf), np.broadcast_to(SHIFT * [-1, -1, 1], (20, 512, 512, 3)),
                               atol=1e-3)  # fmt: skip
    # ITK applies it as a displacement field: the moving image resampled through it is the fixed image
    transform = sitk.DisplacementFieldTransform(sitk.Cast(ddf, sitk.sitkVectorFloat64))
    moving = sitk.ReadImage(entry["moving"])
    fixed = sitk.ReadImage(entry["fixed"])
    resampled = sitk.Resample(moving, fixed, transform, sitk.sitkNearestNeighbor, -1024)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(resampled), sitk.GetArrayFromImage(fixed))
    warped = sitk.ReadImage(out["outputs"]["warped"])
    np.testing.assert_allclose(warped.GetOrigin(), fixed.GetOrigin(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(warped), sitk.GetArrayFromImage(fixed))


# ------------------------------------------------------------------------------------ DICOM folders: series, gaps
@pytest.fixture
def dicom_copy(ct_example_dir, tmp_path) -> Path:
    """A writable copy of the real DICOM series (512 x 512 x 20, 2 mm slices) and its files in slice order."""
    import SimpleITK as sitk

    pytest.importorskip("itk", reason="reading DICOM series needs the itk package (MONAI's ITKReader)")
    folder = tmp_path / "series"
    shutil.copytree(ct_example_dir / "example_ct_dicom", folder)
    folder.chmod(0o755)
    return folder, list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))


def _load(folder: Path):
    """The bundle's loading of an image (the configs' preprocessing, first step), as inference reads it."""
    return preprocessing((16, 16, 8))({"image": str(folder)}, end=1)["image"]


def test_a_dicom_series_with_a_missing_slice_is_one_error_naming_the_gap(dicom_copy, ct_example_dir, tmp_path):
    from scripts.inference.predict import run_inference_workflow
    from scripts.io.errors import InputError, find_input_error
    from scripts.io.image_io import inspect_image

    folder, names = dicom_copy
    Path(names[10]).unlink()  # ITK would read the 19 slices on a uniform 2.11 mm grid, warning on stderr only
    with pytest.raises(InputError) as info:
        inspect_image(folder, "fixed")
    msg = str(info.value)
    assert msg.startswith(f"fixed image {folder}: the DICOM series has a gap of 4 mm between slices 9 and 10 of 19")
    assert Path(names[9]).name in msg and Path(names[11]).name in msg and "2 mm apart" in msg, msg
    assert "spread evenly at 2.11 mm" in msg and "restore the missing file" in msg, msg
    with pytest.raises(Exception) as info:  # the bundle's own loading stops on it too
        _load(folder)
    assert "gap of 4 mm" in str(find_input_error(info.value))
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:  # an inference run: the one error line, nothing written
        run_inference_workflow(None, ["inference.json"], fixed=str(folder),
                               moving=str(ct_example_dir / "example_ct_sm.nii.gz"), output_dir=str(out))  # fmt: skip
    err = find_input_error(info.value)
    assert err is not None and str(err).startswith(f"fixed image {folder}: the DICOM series has a gap"), info.value
    assert not out.exists()


def _rewrite_series(names, folder: Path, uid: str, prefix: str) -> None:
    """Copies of the slices ``names`` as a series of their own (SeriesInstanceUID ``uid``)."""
    import SimpleITK as sitk

    saved = locale.setlocale(locale.LC_ALL)
    for i, name in enumerate(names):
        image = sitk.ReadImage(name)
        for key in image.GetMetaDataKeys():
            if key.startswith("0002|"):  # the file meta group is written anew
                image.EraseMetaData(key)
        image.SetMetaData("0008|0016", "1.2.840.10008.5.1.4.1.1.2")  # CT image storage
        image.SetMetaData("0020|000e", uid)
        image.SetMetaData("0008|0018", f"{uid}.{i + 1}")
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"{prefix}_{i:03d}.dcm"))
        writer.Execute(image)
    # GDCM's writer sets the C locale: Python's default text encoding would then be ASCII for the rest of the run
    # (every later test that reads a subprocess's UTF-8 log failed)
    locale.setlocale(locale.LC_ALL, saved)


def test_a_folder_with_two_series_reads_the_largest_in_the_checks_and_the_loading(dicom_copy, caplog):
    from scripts.io.image_io import inspect_image

    folder, names = dicom_copy
    _rewrite_series(names, folder, "1.2.826.0.1.3680043.2.1125.9", "ct")  # the CT, listed second by GDCM
    _rewrite_series(names[:3], folder, "1.2.826.0.1.3680043.2.1125.1", "scout")  # 3 slices, listed first
    for name in names:
        Path(name).unlink()
    with caplog.at_level(logging.WARNING):
        header = inspect_image(folder, "fixed")
        loaded = _load(folder)
    assert header.shape == (512, 512, 20) and tuple(loaded.shape) == (512, 512, 20)
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(header.dataobj, dtype=np.float32))
    np.testing.assert_allclose(np.asarray(loaded.affine), header.affine, atol=1e-4)
    text = caplog.text
    assert f"fixed image {folder}: 2 DICOM series in the folder; reading the largest" in text, text
    assert "1.2.826.0.1.3680043.2.1125.9" in text and "(20 slices" in text and "(3 files)" in text, text
    # reading the series leaves the locale as it was (GDCM's writer above does not)
    assert locale.getpreferredencoding(False).lower().replace("-", "") == "utf8", locale.getpreferredencoding(False)


# ------------------------------------------------------------- TotalSegmentator on the fly for a DICOM fixed image
def _dicom_pair(ct_example_dir):
    """What the refinement's inferer reads of a pair whose fixed image is the DICOM series."""
    from types import SimpleNamespace

    return SimpleNamespace(name="dicom_pair", fixed_path=str(ct_example_dir / "example_ct_dicom"),
                           fixed_shape=(512, 512, 20))  # fmt: skip


def test_segmentation_on_the_fly_without_totalsegmentator_names_the_package(ct_example_dir, monkeypatch, caplog):
    from scripts.io.errors import InputError
    from scripts.refinement.inferer import RefinementInferer

    monkeypatch.setitem(sys.modules, "totalsegmentator", None)  # not installed (an import of it fails)
    monkeypatch.setitem(sys.modules, "totalsegmentator.python_api", None)
    pair = _dicom_pair(ct_example_dir)
    with caplog.at_level(logging.WARNING):
        assert RefinementInferer(progress=False).segment_on_the_fly(pair) is None
    text = caplog.text
    assert "TotalSegmentator is not installed" in text and "pip install totalsegmentator" in text, text
    assert "no *.nii.gz" not in text, text  # the input (a DICOM series) is not to blame
    with pytest.raises(InputError) as info:
        RefinementInferer(progress=False, segment="always").segment_on_the_fly(pair)
    assert pair.fixed_path in str(info.value) and "pip install totalsegmentator" in str(info.value)


def test_a_dicom_fixed_image_is_segmented_on_the_fly(ct_example_dir, monkeypatch):
    """A stand-in for TotalSegmentator (which cannot be installed here) gets a NIfTI file, as TotalSegmentator reads
    it, and answers in another orientation (RAS); the label map comes back on the DICOM series' array."""
    import scripts.regions.segment as segment
    from scripts.io.image_io import inspect_image
    from scripts.refinement.inferer import RefinementInferer

    seen = []

    def fake_totalsegmentator(source, output, task, fast, device, ml, quiet):
        seen.append(source)
        image = nib.load(source)
        labels = nib.Nifti1Image((np.asarray(image.dataobj) > -200).astype(np.uint8) * 5, image.affine)
        labels = nib.as_closest_canonical(labels)
        nib.save(labels, output)
        return labels

    monkeypatch.setattr(segment, "_import_totalsegmentator", lambda: fake_totalsegmentator)
    monkeypatch.setattr(segment, "check_weights", lambda fast=True: None)
    monkeypatch.setattr(segment, "_warn_usage_stats", lambda: None)
    pair = _dicom_pair(ct_example_dir)
    seg = RefinementInferer(progress=False).segment_on_the_fly(pair)
    assert len(seen) == 1 and seen[0].endswith("example_ct_dicom.nii.gz")
    expected = np.asarray(inspect_image(pair.fixed_path, "fixed").dataobj) > -200
    assert seg.shape == (512, 512, 20) and expected.any() and not expected.all()
    np.testing.assert_array_equal(seg, expected.astype(np.uint8) * 5)


def test_constant_images_warn_and_give_the_identity(tmp_path, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((24, 20, 16), np.float32), affine), str(folder / "empty_fixed.nii.gz"))
    nib.save(nib.Nifti1Image(np.full((24, 20, 16), 7, np.int16), affine), str(folder / "flat_moving.nii.gz"))
    entry = {"fixed": str(folder / "empty_fixed.nii.gz"), "moving": str(folder / "flat_moving.nii.gz")}
    with caplog.at_level(logging.WARNING):
        pair = load_pair(entry, preprocessing((16, 16, 16)))
        out = writer.finish_pair(pair, torch.randn(1, 3, 16, 16, 16), tmp_path / "out")
    text = caplog.text
    assert "empty_fixed.nii.gz is constant" in text and "flat_moving.nii.gz is constant" in text
    assert np.abs(nib.load(out["outputs"]["ddf"]).get_fdata()).max() == 0.0
    assert out["jacobian_det"]["min"] == out["jacobian_det"]["max"] == 1.0


# ------------------------------------------------------------------------------------------ clinical sizes: slabs
def _slab_case(tmp_path):
    """A pair on an oblique fixed grid and another moving grid, int16 images, label maps, a non-linear field."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "in"
    folder.mkdir()
    c, s = np.cos(0.2), np.sin(0.2)
    fixed_affine = np.eye(4)
    fixed_affine[:3, :3] = np.array([[-c, s, 0], [-s, -c, 0], [0, 0, 1.0]]) @ np.diag([1.5, 1.2, 2.0])
    fixed_affine[:3, 3] = [20, 10, -30]
    moving_affine = np.diag([1.3, 1.4, 1.8, 1.0])
    moving_affine[:3, 3] = [-25, -20, -35]
    fixed = (rng.random((30, 26, 21)) * 1000 - 500).astype(np.int16)
    moving = (rng.random((34, 30, 24)) * 1000 - 500).astype(np.int16)
    label = (rng.random((34, 30, 24)) * 4).astype(np.uint8)
    fixed_label = (rng.random((30, 26, 21)) * 4).astype(np.uint8)
    for name, data, affine in (("f", fixed, fixed_affine), ("m", moving, moving_affine), ("ml", label, moving_affine),
                               ("fl", fixed_label, fixed_affine)):  # fmt: skip
        nib.save(nib.Nifti1Image(data, affine), str(folder / f"{name}.nii.gz"))
    entry = {"fixed": str(folder / "f.nii.gz"), "moving": str(folder / "m.nii.gz"),
             "moving_label": str(folder / "ml.nii.gz"), "fixed_label": str(folder / "fl.nii.gz")}  # fmt: skip
    pair = load_pair(entry, preprocessing((16, 16, 8)))
    torch.manual_seed(0)
    return pair, torch.randn(1, 3, 16, 16, 8) * 0.6


def _same_statistics(slabs: dict, whole: dict) -> None:
    for key in ("folding_percent", "std_log_jacobian", "warped_inside_moving_percent"):
        assert slabs[key] == pytest.approx(whole[key], abs=1e-4), key
    for key in ("min", "max", "mean", "p1", "p99"):
        assert slabs["jacobian_det"][key] == pytest.approx(whole["jacobian_det"][key], abs=1e-4), key
    assert slabs["displacement_mm"]["mean"] == pytest.approx(whole["displacement_mm"]["mean"], rel=1e-5)
    assert slabs["dice"] == whole["dice"]


def test_outputs_in_slabs_equal_the_whole_grid(tmp_path):
    """:mod:`scripts.inference.streaming` (bounded memory) writes the same files and statistics as the whole-grid
    path, on an oblique fixed grid, another moving grid, a non-linear field, int16 images and a label map."""
    pair, ddf = _slab_case(tmp_path)
    whole = writer.finish_pair(pair, ddf, tmp_path / "whole")
    slabs = writer.finish_pair(pair, ddf, tmp_path / "slabs", slab=4)
    assert set(whole["outputs"]) == set(slabs["outputs"]) == {"ddf", "jacdet", "warped", "warped_label"}
    for kind in whole["outputs"]:
        a, b = nib.load(whole["outputs"][kind]), nib.load(slabs["outputs"][kind])
        assert a.shape == b.shape and a.get_data_dtype() == b.get_data_dtype(), kind
        np.testing.assert_allclose(a.affine, b.affine)
        assert a.header.get_intent() == b.header.get_intent()
        np.testing.assert_allclose(np.asarray(b.dataobj), np.asarray(a.dataobj), atol=2e-4 if kind != "warped" else 1,
                                   err_msg=kind)  # fmt: skip
    _same_statistics(slabs, whole)
    assert not [p for p in (tmp_path / "slabs").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("ext, compression", [(".nrrd", "fast"), (".mha", "fast"), (".nrrd", "small"),
                                              (".mha", "small")])  # fmt: skip
def test_nrrd_and_mha_outputs_in_slabs_equal_simpleitks_whole_grid_files(tmp_path, ext, compression):
    """NRRD / MHA outputs streamed slab by slab (:class:`scripts.inference.file_streams.ItkStream`, no full-size
    copy) read back, with SimpleITK, as the whole-grid path's files written by SimpleITK: the same voxel types and
    components, exactly the same spacing, origin and direction, the same voxels (to the slab path's float rounding)."""
    import SimpleITK as sitk

    pair, ddf = _slab_case(tmp_path)
    whole = writer.finish_pair(pair, ddf, tmp_path / "whole", output_ext=ext, compression=compression)
    slabs = writer.finish_pair(pair, ddf, tmp_path / "slabs", output_ext=ext, compression=compression, slab=4)
    assert set(whole["outputs"]) == set(slabs["outputs"]) == {"ddf", "jacdet", "warped", "warped_label"}
    for kind in whole["outputs"]:
        assert slabs["outputs"][kind].endswith(ext)
        a, b = sitk.ReadImage(whole["outputs"][kind]), sitk.ReadImage(slabs["outputs"][kind])
        assert (a.GetPixelID(), a.GetNumberOfComponentsPerPixel(), a.GetSize()) == (
            b.GetPixelID(), b.GetNumberOfComponentsPerPixel(), b.GetSize()), kind  # fmt: skip
        assert (a.GetSpacing(), a.GetOrigin(), a.GetDirection()) == (b.GetSpacing(), b.GetOrigin(), b.GetDirection())
        np.testing.assert_allclose(sitk.GetArrayFromImage(b), sitk.GetArrayFromImage(a),
                                   atol=2e-4 if kind != "warped" else 1, err_msg=kind)  # fmt: skip
    _same_statistics(slabs, whole)
    assert not [p for p in (tmp_path / "slabs").iterdir() if p.name.endswith(".tmp")]


def _grids():
    c, s = np.cos(0.3), np.sin(0.3)
    oblique = np.eye(4)
    oblique[:3, :3] = np.array([[-c, s, 0], [-s, -c, 0], [0, 0, 1.0]]) @ np.diag([1.5, 1.2, 2.0])
    oblique[:3, 3] = [140.1, -12.3, -150.7]
    permuted = np.eye(4)
    permuted[:3, :3] = np.array([[0, 0, -1], [-1, 0, 0], [0, 1, 0.0]]) @ np.diag([0.8, 1.1, 2.5])
    permuted[:3, 3] = [1.0, 2.0, 3.0]
    return [np.diag([-0.7, 0.9, -3.0, 1.0]), oblique, permuted]


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_itk_streams_write_the_files_simpleitk_writes(tmp_path, ext):
    """:class:`ItkStream` (header, then the slabs) writes uncompressed exactly the bytes SimpleITK writes, header and
    voxels; compressed (one gzip / zlib stream of chunks compressed apart), files that SimpleITK reads back to the
    same image. Every voxel type of the outputs, a 3-vector image (the ddf), flipped, oblique and permuted grids."""
    import gzip
    import os
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    import SimpleITK as sitk

    from scripts.inference.file_streams import ItkStream
    from scripts.io.image_formats import write_itk

    rng = np.random.default_rng(0)
    shape = (7, 6, 9)
    types = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.float32, np.float64]
    cases = [(dtype, 1) for dtype in types] + [(np.float32, 3)]
    with ThreadPoolExecutor(2) as pool:
        for affine in _grids():
            for dtype, components in cases:
                data = (rng.random((components, *shape)) * 100 - 20 * (np.dtype(dtype).kind != "u")).astype(dtype)
                reference = tmp_path / f"sitk{ext}"
                vectors = np.moveaxis(data, 0, -1)[:, :, :, None, :]  # (X, Y, Z, 1, 3): the whole-grid ddf
                write_itk(data[0] if components == 1 else vectors, affine, reference, ext, compress=False)
                expected = sitk.ReadImage(str(reference))
                for level in (None, 1, 6):
                    out = tmp_path / f"stream{ext}"
                    stream = ItkStream(out, shape, dtype, affine, level, components, pool)
                    for z in range(0, shape[2], 4):  # slabs of 4 slices, the last one shorter
                        slab = data[..., z : z + 4]
                        stream.write_vectors(slab) if components > 1 else stream.write(slab[0])
                    os.replace(stream.close(), out)
                    what = (ext, np.dtype(dtype).name, components, level)
                    if level is None:
                        assert out.read_bytes() == reference.read_bytes(), what
                    got = sitk.ReadImage(str(out))
                    assert (got.GetPixelID(), got.GetSize(), got.GetNumberOfComponentsPerPixel()) == (
                        expected.GetPixelID(),
                        expected.GetSize(),
                        expected.GetNumberOfComponentsPerPixel(),
                    ), what
                    assert (got.GetSpacing(), got.GetOrigin(), got.GetDirection()) == (
                        expected.GetSpacing(), expected.GetOrigin(), expected.GetDirection()), what  # fmt: skip
                    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(expected))
                    if level is not None:  # one stream: readers that stop after a first gzip member read it whole
                        raw = out.read_bytes()
                        if ext == ".nrrd":
                            body = raw[raw.index(b"\n\n") + 2 :]
                            inflate = zlib.decompressobj(31)
                            assert inflate.decompress(body) == gzip.decompress(body) and not inflate.unused_data
                        else:
                            size = int(raw.split(b"CompressedDataSize = ")[1].split(b"\n")[0])
                            assert len(raw) - raw.index(b"ElementDataFile = LOCAL\n") - 24 == size
                            assert len(zlib.decompress(raw[-size:])) == data.nbytes
                    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
