"""Image files in and out: NIfTI headers and voxels with their checks, file-name stems, atomic image writes.

Reading (:func:`inspect_image`, :func:`read_volume`) checks what a user can get wrong and raises
:class:`scripts.io.errors.InputError` naming the file: missing, not NIfTI, not one 3D volume, a singular affine, NaN/Inf
voxels, a label map with non-integer values or off its image's grid.

Writing is atomic: every file goes to a temporary name in its folder and is renamed once complete
(:func:`write_niftis_atomically` for a set of image files that appear together; text files:
:func:`scripts.io.files.atomic_write_text`), so a
failed or killed run leaves no partial file. ``.nii.gz`` files are multi-member gzip streams compressed in parallel
(standard gzip: nibabel, ITK, Slicer, ANTs, FSL read them). With ``compression="fast"`` (default: zlib level 1),
the float maps listed in ``stored`` are kept without deflate, which saves only 7-12 % on them at many times the
cost; ``"small"``: level 6 everywhere.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Container, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from scripts.io.errors import InputError, write_error
from scripts.io.files import temp_prefix
from scripts.io.image_formats import grid_permutation, inspect_itk, to_image_grid, write_itk

__all__ = [
    "NIFTI_SUFFIXES",
    "COMPRESSION_CHOICES",
    "image_stem",
    "inspect_image",
    "check_label_grid",
    "read_label_on_grid",
    "read_volume",
    "non_integer_error",
    "output_dtype",
    "header_codes",
    "nifti_on_grid",
    "write_niftis_atomically",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
OUTPUT_SUFFIXES = NIFTI_SUFFIXES + (".nrrd", ".mha")


def image_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``; any
    case); other names (a DICOM folder) are returned whole. The one file-stem helper of the bundle."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def inspect_image(path: str | os.PathLike, role: str) -> nib.Nifti1Image:
    """Open a NIfTI header (no voxel data yet) and check that it is one 3D volume with an invertible affine.

    Trailing singleton dimensions (X, Y, Z, 1) are accepted as 3D.

    Raises:
        InputError: missing file, not a NIfTI-1/2 file, 2D, 4D (more than one volume), or a singular affine.
    """
    if path is None or str(path) == "":
        raise InputError(f"no {role} image given")
    path = Path(path)
    if path.is_dir() or path.name.lower().endswith(ITK_SUFFIXES):
        if not path.exists():
            raise InputError(f"{role} image {path}: file not found")
        img = inspect_itk(path, role)  # NRRD, MHA/MHD, a DICOM series folder
    else:
        if not path.is_file():
            raise InputError(f"{role} image {path}: file not found")
        try:
            img = nib.load(str(path))
        except Exception as err:  # nibabel raises several types for non-image files
            raise InputError(
                f"{role} image {path}: not a readable NIfTI file ({err}); NIfTI, NRRD, MHA/MHD and DICOM series "
                "folders are read"
            ) from None
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{role} image {path}: not a NIfTI file (nibabel reads it as {type(img).__name__})")
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3:
        raise InputError(f"{role} image {path}: a 3D volume is needed, got a {len(shape)}D image {shape}")
    if any(s != 1 for s in shape[3:]):
        raise InputError(
            f"{role} image {path}: a single 3D volume is needed, got a {len(shape)}D image {shape} "
            "(split a 4D series into 3D volumes first)"
        )
    if min(shape[:3]) < 2:
        raise InputError(f"{role} image {path}: a 3D volume is needed, got shape {shape} (an axis of size 1)")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{role} image {path}: its affine is not finite and invertible:\n{affine}")
    return img


def check_label_grid(label: Any, image: Any, label_path: Any, what: str):
    """InputError unless the label map ``what`` (e.g. "moving label map") samples its image's voxel centres (the same
    grid, possibly stored in another axis order or orientation, e.g. a LAS segmentation of an LPS DICOM series);
    returns the axis mapping for :func:`scripts.io.image_formats.to_image_grid`."""
    shape_l, shape_i = tuple(label.shape[:3]), tuple(image.shape[:3])
    diff = float(np.max(np.abs(np.asarray(label.affine) - np.asarray(image.affine))))
    mapping = grid_permutation(label.affine, shape_l, image.affine, shape_i)
    if mapping is None:
        raise InputError(
            f"{what} {label_path} is not on its image's grid (label shape {shape_l}, image shape {shape_i}, "
            f"largest affine difference {diff:.3g} mm); resample the label map onto its image first (nearest neighbour)"
        )
    return mapping


def read_label_on_grid(label: Any, image: Any, path: Any, what: str) -> np.ndarray:
    """A label map's voxels (:func:`read_volume`) on its image's array (reoriented when stored otherwise)."""
    mapping = check_label_grid(label, image, path, what)
    return to_image_grid(read_volume(label, path, what, label=True), mapping)


def non_integer_error(path: Any, role: str, count: int) -> InputError:
    """The error of a label map (``role``, e.g. "fixed label map") with ``count`` non-integer voxels."""
    return InputError(f"{role} {path}: not a label map ({count} voxels hold non-integer values); give the integer "
                      "label map (e.g. TotalSegmentator's segmentation), not an image")  # fmt: skip


def read_volume(img: nib.Nifti1Image, path: Any, role: str, label: bool = False) -> np.ndarray:
    """The voxel data as a (X, Y, Z) array: float32 for images, the stored integer type for label maps.

    Raises:
        InputError: unreadable data, NaN/Inf voxels, or a label map with non-integer values.
    """
    try:
        data = np.asanyarray(img.dataobj) if label else img.get_fdata(dtype=np.float32)
    except Exception as err:
        raise InputError(f"{role} {path}: cannot read the voxel data ({err})") from None
    data = data.reshape(img.shape[:3])
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            bad = int(data.size - np.count_nonzero(finite))
            raise InputError(f"{role} {path}: {bad} voxels are NaN or Inf; fix or mask them first")
    if label:
        if data.dtype.kind == "f":
            if not np.array_equal(data, np.round(data)):
                raise non_integer_error(path, role, int(np.count_nonzero(data != np.round(data))))
            data = data.astype(np.int32)
        elif data.dtype.kind not in "iub":
            raise InputError(f"{role} {path}: unsupported label data type {data.dtype}")
    return data


def output_dtype(img: nib.Nifti1Image) -> np.dtype:
    dtype = np.dtype(img.get_data_dtype())
    if not isinstance(img, nib.spatialimages.SpatialImage):  # another format (no NIfTI scaling)
        return dtype if dtype.kind in "iu" else np.dtype(np.float32)
    slope, inter = img.dataobj.slope, img.dataobj.inter
    plain = (slope is None or np.isnan(slope) or slope == 1) and (inter is None or np.isnan(inter) or inter == 0)
    return dtype if dtype.kind in "iu" and plain else np.dtype(np.float32)


def header_codes(img: nib.Nifti1Image) -> tuple[int, int]:
    q, s = int(img.header["qform_code"]), int(img.header["sform_code"])
    return (q if q > 0 else 1), (s if s > 0 else 1)


def nifti_on_grid(data: np.ndarray, affine: np.ndarray, codes: tuple[int, int] = (1, 1), intent: str | None = None):
    """A NIfTI-1 image of ``data`` with ``affine`` as qform and sform (with the given codes), units mm; ``intent``
    "vector" marks a displacement field (intent 1007, name ``disp_mm_LPS``)."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=codes[0])
    img.set_sform(affine, code=codes[1])
    img.header.set_xyzt_units(xyz="mm")
    if intent is not None:
        img.header.set_intent(intent, (), name="disp_mm_LPS")
    return img


GZIP_CHUNK = 4 * 2**20  # bytes of uncompressed NIfTI per gzip member
COMPRESSION_CHOICES = ("fast", "small")


def _gzip_settings(path: Path, compression: str, stored: Container[Path]) -> tuple[int, int]:
    """(zlib level, strategy) of one file: "small": level 6 (zlib's default) everywhere; "fast": level 1, except
    the files in ``stored`` (the float32 displacement and det J maps, on which deflate saves only 7-12 % at 6-15
    times the cost of storing), kept uncompressed inside the gzip container."""
    if compression == "small":
        return 6, zlib.Z_DEFAULT_STRATEGY
    return (0 if path in stored else 1), zlib.Z_DEFAULT_STRATEGY


def _gzip_members(data: memoryview, pool: ThreadPoolExecutor, level: int, strategy: int) -> list:
    """Futures of gzip members, one per ``GZIP_CHUNK`` bytes, compressed in parallel: concatenated, they are one
    valid .gz file (RFC 1952 multi-member), which zlib's gzread (ITK, Slicer, ANTs, FSL) and Python's gzip
    (nibabel) read whole."""

    def member(chunk: memoryview) -> bytes:
        comp = zlib.compressobj(level, zlib.DEFLATED, 31, 8, strategy)  # wbits 31: gzip header and trailer
        return comp.compress(chunk) + comp.flush()

    return [pool.submit(member, data[i : i + GZIP_CHUNK]) for i in range(0, max(len(data), 1), GZIP_CHUNK)]


def write_niftis_atomically(
    images: Mapping[Path, nib.Nifti1Image],
    threads: int = 2,
    compression: str = "fast",
    stored: Container[Path] = (),
) -> None:
    """Write several NIfTI files (``.nii`` or ``.nii.gz``), each to a temporary file in its folder, then rename them
    all; on any error the temporary files are removed and no target is touched. gzip compression (``compression``
    and ``stored``: see :func:`_gzip_settings`) runs in ``threads`` threads (zlib releases the GIL), in chunks, so
    that one large file uses every core."""
    if compression not in COMPRESSION_CHOICES:
        raise ValueError(f"compression must be one of {COMPRESSION_CHOICES}, got {compression!r}")
    temps: dict[Path, str] = {}
    umask = os.umask(0)
    os.umask(umask)
    try:
        for path in images:
            path.parent.mkdir(parents=True, exist_ok=True)
            itk_ext = next((ext for ext in (".nrrd", ".mha") if path.name.lower().endswith(ext)), "")
            # ITK picks single-file output from the name's suffix: ".tmp.mha" keeps header and voxels in one file
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp" + itk_ext)
            os.close(fd)
            temps[path] = tmp
        with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
            jobs = []
            for path, img in images.items():
                fmt = next((ext for ext in (".nrrd", ".mha") if path.name.lower().endswith(ext)), None)
                if fmt is not None:  # NRRD / MHA through SimpleITK, into the same temporary file
                    write_itk(np.asanyarray(img.dataobj), img.affine, temps[path], fmt, compress=path not in stored)
                    os.chmod(temps[path], 0o666 & ~umask)
                    continue
                raw = memoryview(img.to_bytes())
                if path.name.endswith(".gz"):
                    jobs.append((path, _gzip_members(raw, pool, *_gzip_settings(path, compression, stored))))
                else:
                    jobs.append((path, raw))
            for path, parts in jobs:
                with open(temps[path], "wb") as handle:
                    if isinstance(parts, memoryview):
                        handle.write(parts)
                    else:
                        for part in parts:
                            handle.write(part.result())
                os.chmod(temps[path], 0o666 & ~umask)
        for path, tmp in temps.items():
            os.replace(tmp, path)
    except BaseException as err:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):  # disk full, read-only: one line naming the file (none was left behind)
            failed = next((p for p, t in temps.items() if err.filename in (t, str(p))), next(iter(images), ""))
            user = write_error(failed, err)
            if user is not None:
                raise user from None
        raise
