"""Image formats beyond NIfTI: NRRD, MHA/MHD and DICOM series folders (headers, voxel checks, label grids, writing).

NIfTI files are read with nibabel (:mod:`scripts.io.image_io`); the network input of every format is read by MONAI's
``LoadImaged`` (``ITKReader`` for these formats: the ``itk`` package). This module answers the header questions for
the other formats with SimpleITK, in MONAI's conventions (array axes as ITK's index i, j, k; RAS world affine =
diag(-1, -1, 1) times ITK's LPS direction * spacing, origin):

- :class:`ItkHeader` (:func:`inspect_itk`): shape, RAS affine, voxel type, lazy voxel data, as a nibabel image offers;
- :func:`grid_permutation`, :func:`to_image_grid`: a label map stored in another axis order / orientation of the same
  grid (e.g. a LAS NIfTI segmentation of an LPS DICOM series) is brought onto its image's array;
- :func:`write_itk`: an output as ``.nrrd`` or ``.mha`` (vector images, e.g. the ddf, as ITK vector pixels), on the
  geometry of :func:`itk_geometry`;
- :func:`image_shape` (header only), :func:`read_finite_check` (NaN/Inf voxels).

DICOM folders (:func:`series_files`): a folder may hold several series (a scout, another reconstruction); ONE is
read, the series with the most slices (ties: the first of GDCM's list, by series UID), and a warning names the folder,
the series read and the others. Its slice positions are checked along the slice normal: ITK reads a series with a
missing slice onto a uniform grid stretched over the whole length (one 4 mm gap among 2 mm slices: 2.11 mm, every slice
up to ~1 mm off), with only a warning of its own on stderr; here that is an :class:`InputError` naming the folder, the
gap (between which slices and files, how wide) and the fix. The header checks here and MONAI's loading of the configs'
``preprocessing`` (:class:`scripts.data.transforms.LoadImageSeriesd`) both go through :func:`series_files`, so they
see the same series.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scripts.io.errors import InputError

__all__ = [
    "NIFTI_NAMES",
    "ITK_OUTPUT_SUFFIXES",
    "is_nifti",
    "ItkHeader",
    "inspect_itk",
    "grid_permutation",
    "to_image_grid",
    "itk_geometry",
    "write_itk",
    "image_shape",
    "read_finite_check",
    "series_files",
    "is_dicom_folder",
    "GAP_TOLERANCE",
]

logger = logging.getLogger(__name__)

NIFTI_NAMES = (".nii", ".nii.gz")
ITK_OUTPUT_SUFFIXES = {".nrrd": "NrrdImageIO", ".mha": "MetaImageIO"}
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_NAMES)


def _sitk_reader(path: Path, role: str):
    import SimpleITK as sitk

    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(series_files(path, role))
        return reader
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    return reader


def image_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """The array shape of an image (header only for files; a DICOM folder: rows x columns x slices)."""
    path = Path(path)
    if is_nifti(path):
        import nibabel as nib

        return tuple(int(s) for s in nib.load(str(path)).shape)
    if path.is_dir():
        import SimpleITK as sitk

        names = series_files(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(names[0])
        reader.ReadImageInformation()
        return (*reader.GetSize()[:2], len(names))
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return tuple(int(s) for s in reader.GetSize())


def read_finite_check(path: str | os.PathLike, role: str, label: bool = False) -> int:
    """Read a non-NIfTI image (SimpleITK) and raise when voxels are NaN/Inf (integer images are not read); with
    ``label``, return how many voxels hold non-integer values (0 for an integer image)."""
    import SimpleITK as sitk

    path = Path(path)
    try:
        reader = _sitk_reader(path, role)
        info = reader
        if isinstance(reader, sitk.ImageSeriesReader):  # the first slice tells the series' voxel type
            info = sitk.ImageFileReader()
            info.SetFileName(reader.GetFileNames()[0])
        info.ReadImageInformation()
        if info.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64, sitk.sitkVectorFloat32,
                                     sitk.sitkVectorFloat64):  # fmt: skip
            return 0  # integers cannot be NaN/Inf
        data = sitk.GetArrayViewFromImage(reader.Execute())
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"{role} image {path}: cannot read the voxel data ({str(err).strip().splitlines()[-1]})")
    if data.dtype.kind != "f":
        return 0
    finite = np.isfinite(data)
    bad = int(data.size - np.count_nonzero(finite))
    if bad:
        raise InputError(
            f"{role}{'' if label else ' image'} {path}: {bad} voxels are NaN or Inf; fix or mask them first"
        )
    return int(np.count_nonzero(data[finite] != np.round(data[finite]))) if label else 0


class ItkHeader:
    """A non-NIfTI image opened by SimpleITK, with the attributes of a nibabel image that the checks use: ``shape``
    (i, j, k), ``affine`` (4x4 RAS, as MONAI's ITKReader gives it), ``get_data_dtype()``, ``dataobj`` and
    ``get_fdata()`` (voxel data, read on first use), ``header`` (NIfTI qform/sform codes: 1, scanner)."""

    def __init__(self, path: Path, reader, size, spacing, origin, direction, dtype):
        self.path = path
        self._reader = reader
        self.shape = tuple(int(s) for s in size)
        d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
        lps = np.eye(4)
        lps[:3, :3] = d @ np.diag(np.asarray(spacing, dtype=np.float64))
        lps[:3, 3] = origin
        self.affine = LPS @ lps
        self._dtype = np.dtype(dtype)
        self._data = None
        self.header = {"qform_code": 1, "sform_code": 1}

    def get_data_dtype(self) -> np.dtype:
        return self._dtype

    @property
    def dataobj(self) -> np.ndarray:
        if self._data is None:
            import SimpleITK as sitk

            self._data = np.ascontiguousarray(sitk.GetArrayFromImage(self._reader.Execute()).transpose(2, 1, 0))
        return self._data

    def get_fdata(self, dtype=np.float32) -> np.ndarray:
        return np.asarray(self.dataobj, dtype=dtype)


def inspect_itk(path: str | os.PathLike, role: str) -> ItkHeader:
    """Open the header of an NRRD / MHA / MHD file or a DICOM series folder (no voxel data yet)."""
    import SimpleITK as sitk

    path = Path(path)
    try:
        reader = _sitk_reader(path, role)
        if isinstance(reader, sitk.ImageSeriesReader):
            names = reader.GetFileNames()
            first = sitk.ImageFileReader()
            first.SetFileName(names[0])
            first.ReadImageInformation()
            last = sitk.ImageFileReader()
            last.SetFileName(names[-1])
            last.ReadImageInformation()
            size = (*first.GetSize()[:2], len(names))
            dz = np.asarray(last.GetOrigin()) - np.asarray(first.GetOrigin())
            spacing = list(first.GetSpacing()[:2]) + [float(np.linalg.norm(dz)) / max(len(names) - 1, 1) or 1.0]
            d = np.asarray(first.GetDirection(), dtype=np.float64).reshape(3, 3)
            if len(names) > 1 and np.linalg.norm(dz) > 0:
                d[:, 2] = dz / np.linalg.norm(dz)
            return ItkHeader(path, reader, size, spacing, first.GetOrigin(), d.ravel(),
                             sitk.GetArrayViewFromImage(sitk.Image(1, 1, first.GetPixelID())).dtype)  # fmt: skip
        reader.ReadImageInformation()
        dtype = sitk.GetArrayViewFromImage(sitk.Image([1] * reader.GetDimension(), reader.GetPixelID())).dtype
        size = reader.GetSize()
        if reader.GetNumberOfComponents() > 1:
            raise InputError(f"{role} image {path}: a vector image ({reader.GetNumberOfComponents()} components per "
                             "voxel); a scalar 3D volume is needed")  # fmt: skip
        if len(size) != 3:
            raise InputError(f"{role} image {path}: a 3D volume is needed, got a {len(size)}D image {tuple(size)}")
        return ItkHeader(path, reader, size, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), dtype)
    except InputError:
        raise
    except Exception as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise InputError(f"{role} image {path}: not a readable image ({reason})") from None


def grid_permutation(label_affine, label_shape, image_affine, image_shape, atol: float = 1e-3):
    """How a label map's array maps onto its image's array when both sample the same voxel centres in another axis
    order or direction: ``(axes, flips)`` with ``image_array = flip(transpose(label_array, axes), flips)``; None when
    the grids differ. Identical grids give ``((0, 1, 2), ())``."""
    t = np.linalg.inv(np.asarray(image_affine, dtype=np.float64)) @ np.asarray(label_affine, dtype=np.float64)
    r = np.round(t[:3, :3])
    if not np.allclose(t[:3, :3], r, atol=atol) or sorted(np.abs(r).sum(axis=0)) != [1, 1, 1]:
        return None
    if sorted(np.abs(r).sum(axis=1)) != [1, 1, 1]:
        return None
    axes, flips = [], []
    for img_axis in range(3):
        lab_axis = int(np.argmax(np.abs(r[img_axis])))
        axes.append(lab_axis)
        if r[img_axis, lab_axis] < 0:
            flips.append(img_axis)
    if tuple(int(label_shape[a]) for a in axes) != tuple(int(s) for s in image_shape[:3]):
        return None
    # label index 0 along each axis must land on image index 0 (kept) or N - 1 (flipped)
    expect = np.array([(image_shape[a] - 1) if a in flips else 0 for a in range(3)], dtype=np.float64)
    if not np.allclose(t[:3, 3], expect, atol=max(atol, 1e-3)):
        return None
    return tuple(axes), tuple(flips)


def to_image_grid(data: np.ndarray, mapping) -> np.ndarray:
    """A label array brought onto its image's array (``mapping`` from :func:`grid_permutation`)."""
    axes, flips = mapping
    out = np.transpose(data, axes) if tuple(axes) != (0, 1, 2) else data
    if flips:
        out = np.flip(out, axis=flips)
    return np.ascontiguousarray(out)


def itk_geometry(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ITK's (LPS) spacing (3,), origin (3,) and direction (3, 3; column k along array axis k) of a RAS ``affine``, as
    the outputs are written (:func:`write_itk`, :class:`scripts.inference.file_streams.ItkStream`)."""
    lps = LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return spacing, lps[:3, 3], lps[:3, :3] / spacing


def write_itk(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike, fmt: str, compress: bool = True) -> None:
    """Write a (X, Y, Z) scalar or (X, Y, Z, 1, C) / (X, Y, Z, C) vector array on the grid ``affine`` (RAS) as
    ``fmt`` (".nrrd" or ".mha", whatever ``path`` is called: temporary names work). Spacing, origin and direction
    are ITK's (LPS); vectors are stored as given (the ddf is already in LPS mm)."""
    import SimpleITK as sitk

    data = np.asarray(data)
    vector = data.ndim > 3
    if vector:
        data = data.reshape(*data.shape[:3], data.shape[-1])
        image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0, 3)), isVector=True)
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    spacing, origin, direction = itk_geometry(affine)
    image.SetSpacing([float(v) for v in spacing])
    image.SetOrigin([float(v) for v in origin])
    image.SetDirection([float(v) for v in direction.ravel()])
    writer = sitk.ImageFileWriter()
    writer.SetImageIO(ITK_OUTPUT_SUFFIXES[fmt])
    writer.SetFileName(str(path))
    writer.SetUseCompression(bool(compress))
    writer.Execute(image)


GAP_TOLERANCE = 0.1  # a slice distance further than this fraction of the series' usual distance from it is a gap
_reported: set[tuple[str, str]] = set()  # folders whose choice of series was already logged


@functools.lru_cache(maxsize=32)
def _scan(folder: str, stamp: int) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(series id, file names in slice order) of every series in a folder (GDCM's ids with the series details, as
    MONAI's ITKReader uses them). ``stamp``: the folder's modification time, so a changed folder is scanned again."""
    import SimpleITK as sitk

    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder, True)
    return tuple((sid, tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, sid, True))) for sid in ids)


@functools.lru_cache(maxsize=32)
def _positions(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Each slice's position (ImagePositionPatient, mm) and the series' unit slice normal."""
    import SimpleITK as sitk

    origins = []
    normal = np.array([0.0, 0.0, 1.0])
    for i, name in enumerate(files):
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        reader.ReadImageInformation()
        origins.append(reader.GetOrigin()[:3])
        if i == 0 and reader.GetDimension() >= 3:
            normal = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(3, 3)[:, 2]
    return np.asarray(origins, dtype=np.float64), normal / max(float(np.linalg.norm(normal)), 1e-12)


def _check_spacing(folder: Path, files: Sequence[str], role: str = "") -> None:
    """An :class:`InputError` when the slices do not lie at one distance from each other (a missing slice, two
    acquisitions at the same positions)."""
    if len(files) < 3:
        return
    origins, normal = _positions(tuple(files))
    along = origins @ normal
    steps = np.diff(along)
    step = float(np.median(steps))
    off = np.abs(steps - step) > GAP_TOLERANCE * max(abs(step), 1e-6)
    if not off.any():
        return
    i = int(np.argmax(off))
    where = (f"between slices {i} and {i + 1} of {len(files)} ({Path(files[i]).name} at {along[i]:.2f} mm and "
             f"{Path(files[i + 1]).name} at {along[i + 1]:.2f} mm along the slice normal)")  # fmt: skip
    more = f"; {int(off.sum())} such places in all" if off.sum() > 1 else ""
    if abs(steps[i]) < GAP_TOLERANCE * abs(step):
        raise InputError(
            f"{_image(role)} {folder}: two slices of the DICOM series lie at the same position, {where}{more}: two "
            "acquisitions in one series; put each acquisition in its own folder"
        )
    stretched = abs(along[-1] - along[0]) / (len(files) - 1)
    uniform = along[0] + np.arange(len(files)) * (along[-1] - along[0]) / (len(files) - 1)
    missing = int(round(abs(steps[i] / step))) - 1
    raise InputError(
        f"{_image(role)} {folder}: the DICOM series has a gap of {abs(steps[i]):.3g} mm {where}, where its slices are "
        f"{abs(step):.3g} mm apart ({max(missing, 1)} slice(s) missing?{more}); read as is, its {len(files)} slices "
        f"would be spread evenly at {stretched:.3g} mm, up to {np.abs(along - uniform).max():.2g} mm from where "
        "they were taken; restore the missing file(s) of the series, or give it as one NIfTI / NRRD volume"
    )


def _image(role: str) -> str:
    return f"{role} image" if role else "image"


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a DICOM series (its files are not checked here: :func:`series_files`)."""
    path = Path(path)
    try:
        return path.is_dir() and any(files for _, files in _scan(str(path), path.stat().st_mtime_ns))
    except OSError:
        return False


def series_files(folder: str | os.PathLike, role: str = "") -> list[str]:
    """The files of the DICOM series read from ``folder`` (module docstring), in slice order, checked for gaps.

    Raises:
        InputError: no DICOM series in the folder, a gap or two slices at one position.
    """
    folder = Path(folder)
    try:
        series = _scan(str(folder), folder.stat().st_mtime_ns)
    except OSError as err:
        raise InputError(f"{_image(role)} {folder}: cannot read the folder ({err.strerror or err})") from None
    series = tuple((sid, files) for sid, files in series if files)
    if not series:
        raise InputError(f"{_image(role)} {folder}: a folder without a DICOM series; give an image file or a DICOM "
                         "series folder")  # fmt: skip
    sid, files = max(series, key=lambda item: len(item[1]))  # the first of the largest
    if len(series) > 1 and (str(folder), sid) not in _reported:
        _reported.add((str(folder), sid))
        others = ", ".join(f"{other!r} ({len(names)} files)" for other, names in series if other != sid)
        logger.warning(
            "%s %s: %d DICOM series in the folder; reading the largest, %r (%d slices, %s ...), not %s; put "
            "each series in its own folder to read another",
            _image(role),
            folder,
            len(series),
            sid,
            len(files),
            Path(files[0]).name,
            others,
        )
    _check_spacing(folder, files, role)
    return list(files)
