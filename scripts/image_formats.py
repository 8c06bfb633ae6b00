"""Image formats beyond NIfTI: NRRD, MHA/MHD and DICOM series folders, through SimpleITK (headers, voxel checks).

NIfTI files are read with nibabel elsewhere (:mod:`scripts.image_io`); this module answers the same questions for
the other formats users bring: :func:`image_shape` (header only), :func:`read_finite_check` (NaN/Inf voxels).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from scripts.errors import InputError

__all__ = ["NIFTI_NAMES", "is_nifti", "image_shape", "read_finite_check"]

NIFTI_NAMES = (".nii", ".nii.gz")


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_NAMES)


def _sitk_reader(path: Path, role: str):
    import SimpleITK as sitk

    if path.is_dir():
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        if not names:
            raise InputError(f"{role} image {path}: a folder without a DICOM series; give an image file or a DICOM "
                             "series folder")  # fmt: skip
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(names)
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

        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        reader = sitk.ImageFileReader()
        reader.SetFileName(names[0])
        reader.ReadImageInformation()
        return (*reader.GetSize()[:2], len(names))
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return tuple(int(s) for s in reader.GetSize())


def read_finite_check(path: str | os.PathLike, role: str) -> None:
    """Read a non-NIfTI image (SimpleITK) and raise when voxels are NaN/Inf (integer images are not read)."""
    import SimpleITK as sitk

    path = Path(path)
    try:
        reader = _sitk_reader(path, role)
        if isinstance(reader, sitk.ImageFileReader):
            reader.ReadImageInformation()
            if reader.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64, sitk.sitkVectorFloat32,
                                           sitk.sitkVectorFloat64):  # fmt: skip
                return
        data = sitk.GetArrayViewFromImage(reader.Execute())
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"{role} image {path}: cannot read the voxel data ({str(err).strip().splitlines()[-1]})")
    if data.dtype.kind == "f":
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            raise InputError(f"{role} image {path}: {bad} voxels are NaN or Inf; fix or mask them first")
