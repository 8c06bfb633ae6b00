"""Inference on new scan pairs: load, resample, predict, bring the field back to the fixed grid, warp, write.

Run it through the bundle (``configs/inference.json``)::

    python -m monai.bundle run --config_file configs/inference.json \\
        --fixed fixed.nii.gz --moving moving.nii.gz --output_dir out

or call the pieces from Python (:func:`load_pair`, :func:`predict`, :func:`finish_pair`).

Geometry (every step below is exact up to interpolation):

1. The *work frame* is the fixed image's voxel grid (affine ``A_f``, RAS mm as nibabel reads it), optionally
   reoriented to ``orientation`` axis codes (flips/permutations of the array axes only) when the model was trained
   on reoriented arrays.
2. The moving image is resampled onto the work grid through both affines (index map ``A_m^-1 A_work``), so that
   fixed and moving share one grid as in training; voxels outside the moving image's field of view get the
   normalised minimum (0).
3. Both are resized to the network grid ``image_size`` covering the *same physical box* (voxel edges aligned):
   net voxel j along an axis of N native and n net voxels sits at native index ``(j + 0.5) s - 0.5``, s = N / n.
   Downsampling uses area averaging (MONAI ``Resize``, mode "area"), upsampling trilinear.
4. The network predicts a velocity in net voxels, integrated by scaling and squaring (``DVF2DDF``) into a
   displacement d_net (channel k along net axis k). It is upsampled trilinearly to the work grid (the same
   edge-aligned map) and **each component k is multiplied by s_k**: a displacement of one net voxel is s_k native
   voxels. Then ``u = A_work[:3, :3] d`` is the physical displacement (mm, RAS) at each fixed voxel, and
   ``d_fixed = A_f[:3, :3]^-1 u`` the displacement in voxels of the fixed grid.
5. The warped moving image at fixed voxel i is the moving image at index ``A_m^-1 A_f (i + d_fixed(i))``:
   one interpolation of the original moving data (trilinear; nearest for label maps), in the moving image's
   intensity units. Points outside the moving image's field of view get the moving image's minimum (labels: 0),
   with ITK's extent convention (a voxel covers index +-0.5).

Outputs per pair, all on the fixed image's grid with its affine (``<fixed>`` and ``<moving>`` are the file names
without ``.nii``/``.nii.gz``): ``<fixed>__<moving>_warped.nii.gz``, ``_ddf.nii.gz``, ``_jacdet.nii.gz``,
``_warped_label.nii.gz`` (when a moving label map is given), ``disp_FFFF_MMMM.nii.gz`` (Learn2Reg, optional),
and ``summary.json`` for the run.

The displacement field ``_ddf.nii.gz`` follows the ITK convention, so ITK/SimpleITK, ANTs and 3D Slicer read it as
a transform: a 5D NIfTI (X, Y, Z, 1, 3), float32, intent 1007 (NIFTI_INTENT_VECTOR), vectors in **millimetres in
LPS** physical space (ITK's world: x = -R, y = -A, z = S; nibabel's RAS vector (r, a, s) is stored as
(-r, -a, s)). It maps each fixed-space point p to the corresponding moving-space point p + u(p), i.e. it is the
*resampling* transform that ``sitk.Resample(moving, fixed, sitk.DisplacementFieldTransform(ddf))`` and
``antsApplyTransforms -i moving -r fixed -t ddf`` apply to the moving image.

The Learn2Reg file ``disp_FFFF_MMMM.nii.gz`` is (X, Y, Z, 3) float32 in *voxels of the fixed grid*, channel k
along array axis k (the challenge's convention: moving is sampled at ``x + disp(x)``).

Every file is written to a temporary name in the output folder and renamed once all the pair's files are written:
a failed run leaves no partial file. ``.nii.gz`` files are multi-member gzip streams compressed in parallel
(standard gzip: nibabel, ITK, Slicer, ANTs, FSL read them). With ``compression="fast"`` (default: zlib level 1),
the float maps (displacement, det J) are stored without deflate, which saves only 7-12 % on them at many times the
cost; ``"small"``: level 6 everywhere.

Inputs are checked before anything is written (missing file, not NIfTI, not 3D, non-finite voxels, label map off its
image's grid): :class:`InferenceInputError` says which file and why; on the command line it prints as one line.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import sys
import tempfile
import time
import zlib
from collections.abc import Container, Mapping, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.engines.utils import PrepareBatch
from monai.inferers import Inferer
from monai.transforms import Resize, ScaleIntensity, ScaleIntensityRange
from monai.utils import CommonKeys as Keys
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from torch.utils.data import DataLoader, Dataset

from scripts.handlers import atomic_write_text
from scripts.mechanics import jacobian_determinant, log_jacobian

__all__ = [
    "InferenceInputError",
    "find_input_error",
    "install_error_hook",
    "PairData",
    "PairDataset",
    "PreparePair",
    "RegistrationInferer",
    "RegistrationWriter",
    "finish_pair",
    "find_pairs",
    "learn2reg_name",
    "load_pair",
    "output_paths",
    "pair_loader",
    "predict",
    "require_checkpoint",
    "require_pairs",
    "resolve_pairs",
    "sample_volume",
    "write_niftis_atomically",
]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
INTENSITY_CHOICES = ("minmax", "ct", "none")
RAS_TO_LPS = (-1.0, -1.0, 1.0)
OUTPUT_KINDS = ("warped", "ddf", "jacdet", "warped_label")


class InferenceInputError(ValueError):
    """An input that cannot be registered; the message names the file and the reason."""


def find_input_error(exc: BaseException | None) -> InferenceInputError | None:
    """The :class:`InferenceInputError` in an exception's cause/context chain (MONAI's config parser wraps every
    error of a component in RuntimeErrors), or None."""
    seen = 0
    while exc is not None and seen < 32:
        if isinstance(exc, InferenceInputError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def install_error_hook() -> None:
    """Make an uncaught input error print one line, ``error: <message>``, instead of MONAI's chain of wrapped
    tracebacks (the process still exits with status 1). Other exceptions keep the usual traceback. Called by
    ``configs/inference.json``'s ``initialize``; it only changes how an *uncaught* exception is printed."""
    previous = sys.excepthook
    if getattr(previous, "_inference_input_errors", False):
        return

    def hook(exc_type, exc, tb):
        err = find_input_error(exc)
        if err is None:
            return previous(exc_type, exc, tb)
        sys.stderr.write(f"error: {err}\n")

    hook._inference_input_errors = True
    sys.excepthook = hook


# ----------------------------------------------------------------------------------------------------------------
# input checks and pair lists
# ----------------------------------------------------------------------------------------------------------------


def image_stem(path: str | os.PathLike) -> str:
    """File name without ``.nii.gz`` / ``.nii``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def inspect_image(path: str | os.PathLike, role: str) -> nib.Nifti1Image:
    """Open a NIfTI header (no voxel data yet) and check that it is one 3D volume with an invertible affine.

    Trailing singleton dimensions (X, Y, Z, 1) are accepted as 3D.

    Raises:
        InferenceInputError: missing file, not a NIfTI-1/2 file, 2D, 4D (more than one volume), or a singular affine.
    """
    if path is None or str(path) == "":
        raise InferenceInputError(f"no {role} image given")
    path = Path(path)
    if not path.is_file():
        raise InferenceInputError(f"{role} image {path}: file not found")
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises several types for non-image files
        raise InferenceInputError(f"{role} image {path}: not a readable NIfTI file ({err})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InferenceInputError(f"{role} image {path}: not a NIfTI file (nibabel reads it as {type(img).__name__})")
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3:
        raise InferenceInputError(f"{role} image {path}: a 3D volume is needed, got a {len(shape)}D image {shape}")
    if any(s != 1 for s in shape[3:]):
        raise InferenceInputError(
            f"{role} image {path}: a single 3D volume is needed, got a {len(shape)}D image {shape} "
            "(split a 4D series into 3D volumes first)"
        )
    if min(shape[:3]) < 2:
        raise InferenceInputError(f"{role} image {path}: a 3D volume is needed, got shape {shape} (an axis of size 1)")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InferenceInputError(f"{role} image {path}: its affine is not finite and invertible:\n{affine}")
    return img


def _check_label_grid(label: nib.Nifti1Image, image: nib.Nifti1Image, label_path: Any, role: str) -> None:
    shape_l, shape_i = tuple(label.shape[:3]), tuple(image.shape[:3])
    diff = float(np.max(np.abs(np.asarray(label.affine) - np.asarray(image.affine))))
    if shape_l != shape_i or diff > 1e-3:
        raise InferenceInputError(
            f"{role} label map {label_path} is not on its image's grid (label shape {shape_l}, image shape {shape_i}, "
            f"largest affine difference {diff:.3g} mm); resample the label map onto its image first (nearest neighbour)"
        )


def read_volume(img: nib.Nifti1Image, path: Any, role: str, label: bool = False) -> np.ndarray:
    """The voxel data as a (X, Y, Z) array: float32 for images, the stored integer type for label maps.

    Raises:
        InferenceInputError: unreadable data, NaN/Inf voxels, or a label map with non-integer values.
    """
    try:
        data = np.asanyarray(img.dataobj) if label else img.get_fdata(dtype=np.float32)
    except Exception as err:
        raise InferenceInputError(f"{role} {path}: cannot read the voxel data ({err})") from None
    data = data.reshape(img.shape[:3])
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            bad = int(data.size - np.count_nonzero(finite))
            raise InferenceInputError(f"{role} {path}: {bad} voxels are NaN or Inf; fix or mask them first")
    if label:
        if data.dtype.kind == "f":
            if not np.array_equal(data, np.round(data)):
                raise InferenceInputError(f"{role} {path}: a label map must hold integer values")
            data = data.astype(np.int32)
        elif data.dtype.kind not in "iub":
            raise InferenceInputError(f"{role} {path}: unsupported label data type {data.dtype}")
    return data


def find_pairs(dataset_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Pairs in a folder: ``<name>_fixed.nii[.gz]`` with ``<name>_moving.nii[.gz]`` (and optional
    ``<name>_moving_label`` / ``<name>_fixed_label``), the layout ``python -m scripts.synthetic write`` produces."""
    pairs = []
    folder = Path(dataset_dir)
    for fixed in sorted(glob.glob(str(folder / "*_fixed.nii*"))):
        if not fixed.endswith(NIFTI_SUFFIXES):
            continue
        prefix = image_stem(fixed)[: -len("_fixed")]
        entry = {"fixed": fixed}
        for key in ("moving", "moving_label", "fixed_label"):
            for suffix in NIFTI_SUFFIXES:
                candidate = folder / f"{prefix}_{key}{suffix}"
                if candidate.is_file():
                    entry[key] = str(candidate)
                    break
        if "moving" in entry:
            pairs.append(entry)
    return pairs


def resolve_pairs(
    pairs: Sequence[Mapping[str, str]] | str | None = None,
    fixed: str | None = "",
    moving: str | None = "",
    moving_label: str | None = "",
    fixed_label: str | None = "",
    dataset_dir: str | os.PathLike | None = None,
    pairs_key: str = "registration_val",
) -> list[dict[str, str]]:
    """The list of pairs to register, from the first of these that is given:

    - ``fixed`` and ``moving`` (and optional ``moving_label``, ``fixed_label``): one pair, paths as given
      (relative to the current folder);
    - ``pairs``: a list of dicts with keys ``fixed``, ``moving`` and optional ``moving_label``, ``fixed_label``
      (relative paths: relative to ``dataset_dir``), or the path of a JSON file holding such a list, or a dict with
      that list under ``pairs_key`` (the Learn2Reg dataset JSON, e.g. ``"registration_val"``; relative paths:
      relative to the JSON file's folder, as Learn2Reg's ``"./imagesTr/..."``);
    - ``dataset_dir``: every ``<name>_fixed`` / ``<name>_moving`` pair in it (:func:`find_pairs`; none: empty list).
    """
    if fixed or moving:
        if not (fixed and moving):
            raise InferenceInputError(f"give both a fixed and a moving image (got fixed={fixed!r}, moving={moving!r})")
        entry = {"fixed": str(fixed), "moving": str(moving)}
        if moving_label:
            entry["moving_label"] = str(moving_label)
        if fixed_label:
            entry["fixed_label"] = str(fixed_label)
        return [entry]
    base = Path(dataset_dir) if dataset_dir else Path(".")
    if isinstance(pairs, (str, os.PathLike)) and str(pairs):
        source = Path(pairs)
        base = source.parent
        if not source.is_file():
            raise InferenceInputError(f"pairs file {source}: file not found")
        try:
            pairs = json.loads(source.read_text())
        except (OSError, ValueError) as err:
            raise InferenceInputError(f"pairs file {source}: not a readable JSON file ({err})") from None
        if isinstance(pairs, Mapping):
            if pairs_key not in pairs:
                raise InferenceInputError(f"pairs file {source}: no list under the key {pairs_key!r}")
            pairs = pairs[pairs_key]
    if pairs:
        if not isinstance(pairs, Sequence) or isinstance(pairs, str):
            raise InferenceInputError(f"pairs must be a list of dicts or a JSON file, got {type(pairs).__name__}")
        out = []
        for i, entry in enumerate(pairs):
            if not isinstance(entry, Mapping) or not entry.get("fixed") or not entry.get("moving"):
                raise InferenceInputError(f"pair {i}: needs 'fixed' and 'moving' paths, got {entry!r}")
            out.append(
                {
                    key: str(value) if os.path.isabs(str(value)) else str(base / str(value))
                    for key, value in entry.items()
                    if key in ("fixed", "moving", "moving_label", "fixed_label") and value
                }
            )
        return out
    return find_pairs(base)  # may be empty: :func:`require_pairs` says so when the run starts


def require_pairs(dataset: Sized, dataset_dir: Any = None) -> None:
    """Raise the "nothing to register" error (the run's first step; an empty dataset can still be built, so that
    the config's properties can be checked without data)."""
    if len(dataset) == 0:
        raise InferenceInputError(
            "no pairs to register: give --fixed and --moving, --pairs (a list or a JSON file), or a dataset_dir "
            f"holding <name>_fixed.nii.gz / <name>_moving.nii.gz files (looked in {dataset_dir})"
        )


def require_checkpoint(handlers: Sequence[Any]) -> None:
    """Raise a clear error when an enabled ``CheckpointLoader`` among ``handlers`` points at a missing file
    (a disabled handler, ``--handlers#0#_disabled_ true``, is not in the list)."""
    from monai.handlers import CheckpointLoader

    for handler in handlers:
        if isinstance(handler, CheckpointLoader) and not Path(handler.load_path).is_file():
            raise InferenceInputError(
                f"model weights {handler.load_path}: file not found (give --ckpt_path, or --bundle_root when running "
                "from another folder; models/model.pt ships with the bundle, see large_files.yml)"
            )


def pair_name(fixed: Any, moving: Any) -> str:
    """Output prefix of a pair: ``<fixed stem>__<moving stem>``."""
    return f"{image_stem(fixed)}__{image_stem(moving)}"


def output_paths(output_dir: str | os.PathLike, name: str, ext: str = ".nii.gz") -> dict[str, Path]:
    """Paths of a pair's outputs: ``warped``, ``ddf``, ``jacdet``, ``warped_label``."""
    return {kind: Path(output_dir) / f"{name}_{kind}{ext}" for kind in OUTPUT_KINDS}


def learn2reg_name(fixed: Any, moving: Any, ext: str = ".nii.gz") -> str:
    """``disp_FFFF_MMMM.nii.gz`` from Learn2Reg file names ``<Task>_<case 4 digits>_<modality 4 digits>.nii.gz``
    (or any name whose last number is the case id)."""

    def case_id(path: Any) -> str:
        stem = image_stem(path)
        match = re.search(r"_(\d{4})_\d{4}$", stem) or re.search(r"(\d+)(?!.*\d)", stem)
        if match is None:
            raise InferenceInputError(f"{path}: no case number in the file name for the Learn2Reg disp_FFFF_MMMM name")
        return f"{int(match.group(1)):04d}"

    return f"disp_{case_id(fixed)}_{case_id(moving)}{ext}"


# ----------------------------------------------------------------------------------------------------------------
# loading and preprocessing
# ----------------------------------------------------------------------------------------------------------------


def normalise_intensity(data: np.ndarray, intensity: str, hu_window: Sequence[float]) -> torch.Tensor:
    """(X, Y, Z) array -> (1, X, Y, Z) float32 tensor in [0, 1]: "minmax" (per image), "ct" (HU window, clipped),
    or "none" (unchanged)."""
    image = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None]
    if intensity == "minmax":
        out = ScaleIntensity(minv=0.0, maxv=1.0)(image)
    elif intensity == "ct":
        lo, hi = float(hu_window[0]), float(hu_window[1])
        out = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(image)
    elif intensity == "none":
        out = image
    else:
        raise ValueError(f"intensity must be one of {INTENSITY_CHOICES}, got {intensity!r}")
    out = out.as_tensor() if hasattr(out, "as_tensor") else out
    return out.float()


def _index_map(transform: np.ndarray, shape: Sequence[int], ddf: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Index coordinates ``transform[:3] @ (i + ddf(i), 1)`` of every voxel i of a grid of ``shape``: 3 tensors
    broadcastable to ``shape`` (float32, on ``ddf``'s device when given)."""
    device = ddf.device if ddf is not None else None
    base = []
    for axis, n in enumerate(shape):
        view = [1, 1, 1]
        view[axis] = n
        ar = torch.arange(n, dtype=torch.float32, device=device).reshape(view)
        base.append(ar if ddf is None else ddf[axis] + ar)
    coords = []
    for k in range(3):
        acc = None
        for axis in range(3):
            coef = float(transform[k, axis])
            if abs(coef) < 1e-12:
                continue
            term = base[axis] if coef == 1.0 else base[axis] * coef
            acc = term if acc is None else acc + term
        offset = float(transform[k, 3])
        acc = acc + offset if offset != 0.0 else acc
        coords.append(acc)
    return coords


def sample_volume(
    volume: torch.Tensor,
    coords: Sequence[torch.Tensor],
    out_shape: Sequence[int],
    mode: str = "bilinear",
    fill: float | None = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a (C, X, Y, Z) volume at voxel-index coordinates (3 tensors broadcastable to ``out_shape``).

    ``mode``: "bilinear" (trilinear) or "nearest". Points outside the volume's extent (index < -0.5 or
    > N - 0.5 on an axis, as ITK) get ``fill``; points between the last voxel centre and the extent take the
    border value. Returns the (C, *out_shape) samples and the boolean inside mask (*out_shape).
    """
    shape = volume.shape[1:]
    grid = torch.empty((1, *out_shape, 3), dtype=torch.float32, device=volume.device)
    inside = torch.ones(tuple(out_shape), dtype=torch.bool, device=volume.device)
    for k in range(3):
        n = shape[k]
        grid[0, ..., 2 - k] = coords[k] * (2.0 / (n - 1)) - 1.0  # grid_sample's last dim is (z, y, x) = axes 2, 1, 0
        inside &= (coords[k] >= -0.5) & (coords[k] <= n - 0.5)
    out = F.grid_sample(volume[None].float(), grid, mode=mode, padding_mode="border", align_corners=True)[0]
    del grid
    if fill is not None:
        out = torch.where(inside, out, torch.as_tensor(fill, dtype=out.dtype, device=out.device))
    return out, inside


@dataclass
class PairData:
    """One pair loaded for inference (see :func:`load_pair`); its fields are what :func:`finish_pair` needs."""

    name: str
    fixed_path: str
    moving_path: str
    moving_label_path: str | None
    fixed_label_path: str | None
    fixed_affine: np.ndarray  # (4, 4) RAS mm of the fixed image as stored
    fixed_shape: tuple[int, int, int]
    fixed_codes: tuple[int, int]  # qform, sform codes of the fixed header (for the outputs)
    work_affine: np.ndarray  # (4, 4) affine of the work frame (fixed grid, optionally reoriented)
    work_shape: tuple[int, int, int]
    to_work: np.ndarray | None  # nibabel orientation transform fixed -> work (None: identity)
    net_shape: tuple[int, int, int]
    image: torch.Tensor  # (2, *net_shape) network input: normalised fixed, moving on the fixed grid
    moving: np.ndarray  # (X, Y, Z) moving image as stored (float32, scaled)
    moving_affine: np.ndarray
    moving_dtype: np.dtype  # dtype for the warped image (the moving's integer type, else float32)
    moving_label: np.ndarray | None
    fixed_label: np.ndarray | None
    moving_coverage: float  # fraction of the fixed field of view that the moving image covers
    seconds_load: float = 0.0  # time of load_pair


def _output_dtype(img: nib.Nifti1Image) -> np.dtype:
    dtype = np.dtype(img.get_data_dtype())
    slope, inter = img.dataobj.slope, img.dataobj.inter
    plain = (slope is None or np.isnan(slope) or slope == 1) and (inter is None or np.isnan(inter) or inter == 0)
    return dtype if dtype.kind in "iu" and plain else np.dtype(np.float32)


def _header_codes(img: nib.Nifti1Image) -> tuple[int, int]:
    q, s = int(img.header["qform_code"]), int(img.header["sform_code"])
    return (q if q > 0 else 1), (s if s > 0 else 1)


def _resize(image: torch.Tensor, shape: Sequence[int], mode: str, anti_aliasing: bool = False) -> torch.Tensor:
    """(C, *S) -> (C, *shape) over the same box (edge-aligned): MONAI ``Resize``; "auto": area when every axis
    shrinks or stays, trilinear otherwise; ``anti_aliasing``: Gaussian smoothing before downsampling (MONAI)."""
    if tuple(image.shape[1:]) == tuple(shape):
        return image
    if mode == "auto":
        mode = "area" if all(s >= n for s, n in zip(image.shape[1:], shape)) else "trilinear"
    out = Resize(spatial_size=tuple(shape), mode=mode, anti_aliasing=anti_aliasing)(image)
    return out.as_tensor() if hasattr(out, "as_tensor") else out


def check_pair_files(entry: Mapping[str, Any]) -> dict[str, nib.Nifti1Image]:
    """Header-level checks of one pair (files exist, NIfTI, 3D, label maps on their image's grid)."""
    images = {
        "fixed": inspect_image(entry.get("fixed"), "fixed"),
        "moving": inspect_image(entry.get("moving"), "moving"),
    }
    for role in ("moving", "fixed"):
        key = f"{role}_label"
        if entry.get(key):
            images[key] = inspect_image(entry[key], f"{role} label")
            _check_label_grid(images[key], images[role], entry[key], role)
    return images


def load_pair(
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    moving_label: str | os.PathLike | None = None,
    fixed_label: str | os.PathLike | None = None,
    image_size: Sequence[int] | None = (32, 32, 32),
    intensity: str = "minmax",
    hu_window: Sequence[float] = (-1200.0, 400.0),
    resize_mode: str = "auto",
    orientation: str | None = None,
    anti_aliasing: bool = False,
) -> PairData:
    """Load and check a pair and build the network input (steps 1-3 of the module docstring).

    Args:
        fixed, moving: NIfTI paths; moving_label, fixed_label: optional integer label maps on their image's grid.
        image_size: network grid (None: the fixed image's own grid).
        intensity: "minmax" (per-image min-max to [0, 1]), "ct" (``hu_window`` HU mapped to [0, 1], clipped) or
            "none"; applied identically to fixed and moving.
        resize_mode: "auto", "area", "trilinear" or "nearest" (MONAI ``Resize`` modes).
        orientation: axis codes of the work frame (e.g. "RAS") or None to keep the fixed image's array order.
        anti_aliasing: MONAI ``Resize``'s Gaussian anti-aliasing when downsampling.

    Match the model's training preprocessing: the synthetic models saw images generated on the network grid
    (defaults: "minmax", area downsampling, array order kept); the real-CT configuration
    (``configs/abdomenctct.json``) uses ``orientation="RAS"``, ``intensity="ct"``, ``resize_mode="trilinear"`` and
    ``anti_aliasing=True``.
    """
    if intensity not in INTENSITY_CHOICES:
        raise ValueError(f"intensity must be one of {INTENSITY_CHOICES}, got {intensity!r}")
    if len(hu_window) != 2 or not float(hu_window[0]) < float(hu_window[1]):
        raise ValueError(f"hu_window must be [low, high] with low < high, got {hu_window!r}")
    start = time.perf_counter()
    entry = {"fixed": fixed, "moving": moving, "moving_label": moving_label, "fixed_label": fixed_label}
    images = check_pair_files(entry)
    fimg, mimg = images["fixed"], images["moving"]
    fixed_data = read_volume(fimg, fixed, "fixed image")
    moving_data = read_volume(mimg, moving, "moving image")
    labels = {
        key: read_volume(images[key], entry[key], key.replace("_", " "), label=True) if key in images else None
        for key in ("moving_label", "fixed_label")
    }
    fixed_affine = np.asarray(fimg.affine, dtype=np.float64)
    moving_affine = np.asarray(mimg.affine, dtype=np.float64)
    fixed_shape = tuple(int(s) for s in fimg.shape[:3])

    # 1. work frame
    to_work, work_affine, work_data = None, fixed_affine, fixed_data
    if orientation:
        to_work = ornt_transform(io_orientation(fixed_affine), axcodes2ornt(tuple(orientation)))
        if not np.array_equal(to_work, [[0, 1], [1, 1], [2, 1]]):
            work_affine = fixed_affine @ inv_ornt_aff(to_work, fixed_shape)
            work_data = np.ascontiguousarray(apply_orientation(fixed_data, to_work))
        else:
            to_work = None
    work_shape = tuple(int(s) for s in work_data.shape)
    net_shape = work_shape if image_size is None else tuple(int(s) for s in image_size)
    if len(net_shape) != 3 or min(net_shape) < 2:
        raise ValueError(f"image_size must be 3 sizes >= 2 (or None), got {image_size!r}")

    # 2. intensities, moving onto the work grid
    fixed_n = normalise_intensity(work_data, intensity, hu_window)
    del work_data, fixed_data
    moving_n = normalise_intensity(moving_data, intensity, hu_window)
    to_moving = np.linalg.inv(moving_affine) @ work_affine
    coverage = 1.0
    if tuple(moving_data.shape) != work_shape or not np.allclose(to_moving, np.eye(4), atol=1e-5):
        fill = float(moving_n.min())
        moving_n, inside = sample_volume(moving_n, _index_map(to_moving, work_shape), work_shape, fill=fill)
        coverage = float(inside.float().mean())
        if coverage < 0.5:
            logger.warning(
                "the moving image %s covers only %.0f%% of the fixed image's field of view: check that both are in "
                "the same physical space (their affines)",
                moving,
                100 * coverage,
            )

    # 3. network grid
    image = torch.cat([_resize(img, net_shape, resize_mode, bool(anti_aliasing)) for img in (fixed_n, moving_n)], dim=0)
    return PairData(
        name=pair_name(fixed, moving),
        fixed_path=str(fixed),
        moving_path=str(moving),
        moving_label_path=str(moving_label) if moving_label else None,
        fixed_label_path=str(fixed_label) if fixed_label else None,
        fixed_affine=fixed_affine,
        fixed_shape=fixed_shape,
        fixed_codes=_header_codes(fimg),
        work_affine=work_affine,
        work_shape=work_shape,
        to_work=to_work,
        net_shape=net_shape,
        image=image.contiguous(),
        moving=moving_data,
        moving_affine=moving_affine,
        moving_dtype=_output_dtype(mimg),
        moving_label=labels["moving_label"],
        fixed_label=labels["fixed_label"],
        moving_coverage=coverage,
        seconds_load=time.perf_counter() - start,
    )


class PairDataset(Dataset):
    """The pairs of one inference run; item i is ``{"image": (2, *net) tensor, "pair": PairData}``.

    Every pair's files are checked (header level) when the dataset is built, so that a bad input fails the run
    before anything is written; voxel data are checked (NaN/Inf) when a pair is loaded.

    Args:
        data: list of dicts with ``fixed``, ``moving`` and optional ``moving_label``, ``fixed_label`` paths
            (:func:`resolve_pairs`).
        other arguments: as :func:`load_pair`.
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, str]],
        image_size: Sequence[int] | None = (32, 32, 32),
        intensity: str = "minmax",
        hu_window: Sequence[float] = (-1200.0, 400.0),
        resize_mode: str = "auto",
        orientation: str | None = None,
        anti_aliasing: bool = False,
    ):
        if intensity not in INTENSITY_CHOICES:
            raise ValueError(f"intensity must be one of {INTENSITY_CHOICES}, got {intensity!r}")
        self.data = [dict(entry) for entry in data]
        names = {}
        for i, entry in enumerate(self.data):
            check_pair_files(entry)
            name = pair_name(entry["fixed"], entry["moving"])
            if name in names:
                raise InferenceInputError(
                    f"pairs {names[name]} and {i} would write the same outputs ({name}_*): rename the files"
                )
            names[name] = i
        self.options = {
            "image_size": None if image_size is None else tuple(int(s) for s in image_size),
            "intensity": intensity,
            "hu_window": tuple(float(h) for h in hu_window),
            "resize_mode": resize_mode,
            "orientation": orientation or None,
            "anti_aliasing": bool(anti_aliasing),
        }

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.data[index]
        pair = load_pair(
            entry["fixed"], entry["moving"], entry.get("moving_label"), entry.get("fixed_label"), **self.options
        )
        return {"image": pair.image, "pair": pair}


def _collate_one(batch: list[dict[str, Any]]) -> dict[str, Any]:
    item = batch[0]
    return {"image": item["image"][None], "pair": item["pair"]}


def pair_loader(dataset: PairDataset, num_workers: int = 0) -> DataLoader:
    """One pair per iteration (pairs differ in size): ``{"image": (1, 2, *net), "pair": PairData}``."""
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers, collate_fn=_collate_one)


class PreparePair(PrepareBatch):
    """Batch -> (inputs (1, 2, *net) on the device, targets: the :class:`PairData`, (), {})."""

    def __call__(self, batchdata: Mapping[str, Any], device=None, non_blocking: bool = False, **kwargs: Any):
        return batchdata["image"].to(device=device, non_blocking=non_blocking), batchdata["pair"], (), {}


# ----------------------------------------------------------------------------------------------------------------
# prediction
# ----------------------------------------------------------------------------------------------------------------


class RegistrationInferer(Inferer):
    """Runs :class:`scripts.registration.RegistrationNet` on a (B, 2, *net) pair, padding each spatial size up to a
    multiple of ``divisor`` (the product of the backbone's strides; replicate padding, centred) and cropping the
    outputs (``velocity``, ``ddf``, ``warped``) back, so that any network grid is accepted."""

    def __init__(self, divisor: int = 8):
        super().__init__()
        if int(divisor) < 1:
            raise ValueError(f"divisor must be >= 1, got {divisor}")
        self.divisor = int(divisor)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> dict:
        shape = inputs.shape[2:]
        total = [(-s) % self.divisor for s in shape]
        if not any(total):
            return network(inputs, *args, **kwargs)
        before = [t // 2 for t in total]
        pad = []
        for t, b in zip(reversed(total), reversed(before)):
            pad += [b, t - b]
        out = network(F.pad(inputs, pad, mode="replicate"), *args, **kwargs)
        crop = (Ellipsis, *(slice(b, b + s) for b, s in zip(before, shape)))
        return {key: value[crop] if torch.is_tensor(value) else value for key, value in out.items()}


@torch.no_grad()
def predict(pair: PairData, registration_net: torch.nn.Module, divisor: int = 8) -> torch.Tensor:
    """The network's displacement on the network grid, (1, 3, *net) in net voxels."""
    registration_net.eval()
    device = next(registration_net.parameters()).device
    return RegistrationInferer(divisor)(pair.image[None].to(device), registration_net)["ddf"]


# ----------------------------------------------------------------------------------------------------------------
# back to the fixed grid, warping, statistics, writing
# ----------------------------------------------------------------------------------------------------------------


def native_displacement(pair: PairData, ddf_net: torch.Tensor) -> torch.Tensor:
    """(1, 3, *net) or (3, *net) displacement in net voxels -> (3, *fixed_shape) in voxels of the fixed grid
    (step 4 of the module docstring)."""
    ddf = ddf_net if ddf_net.ndim == 5 else ddf_net[None]
    ddf = ddf.float()
    if tuple(ddf.shape[2:]) != tuple(pair.net_shape):
        raise ValueError(f"displacement grid {tuple(ddf.shape[2:])} is not the network grid {pair.net_shape}")
    scale = [w / n for w, n in zip(pair.work_shape, pair.net_shape)]
    if tuple(pair.work_shape) != tuple(pair.net_shape):
        ddf = F.interpolate(ddf, size=pair.work_shape, mode="trilinear", align_corners=False)
    else:
        ddf = ddf.clone()
    ddf = ddf[0]
    for k in range(3):
        if scale[k] != 1.0:
            ddf[k] *= scale[k]
    if pair.to_work is None:
        return ddf
    # work-frame voxels -> physical mm -> back to the stored array order -> fixed voxels
    to_mm = pair.work_affine[:3, :3]
    mm = [sum(ddf[k] * float(to_mm[c, k]) for k in range(3) if abs(to_mm[c, k]) > 1e-12) for c in range(3)]
    back = ornt_transform(io_orientation(pair.work_affine), io_orientation(pair.fixed_affine))
    mm = [_reorient_tensor(c, back) for c in mm]
    from_mm = np.linalg.inv(pair.fixed_affine[:3, :3])
    return torch.stack(
        [sum(mm[c] * float(from_mm[k, c]) for c in range(3) if abs(from_mm[k, c]) > 1e-12) for k in range(3)]
    )


def _reorient_tensor(volume: torch.Tensor, ornt: np.ndarray) -> torch.Tensor:
    """nibabel ``apply_orientation`` for a 3D tensor (flips then axis permutation)."""
    out = volume
    flips = [axis for axis in range(3) if ornt[axis, 1] == -1]
    if flips:
        out = torch.flip(out, flips)
    order = np.argsort(ornt[:, 0]).tolist()
    return out.permute(*order).contiguous()


def physical_displacement(pair: PairData, ddf_vox: torch.Tensor) -> torch.Tensor:
    """(3, *S) fixed-voxel displacement -> (3, *S) millimetres in nibabel's RAS world."""
    a = pair.fixed_affine[:3, :3]
    return torch.stack([sum(ddf_vox[k] * float(a[c, k]) for k in range(3) if abs(a[c, k]) > 1e-12) for c in range(3)])


def warp_to_fixed(
    pair: PairData, volume: np.ndarray, ddf_vox: torch.Tensor | None, mode: str = "bilinear", fill: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A (X, Y, Z) volume on the moving grid sampled at ``A_m^-1 A_f (i + ddf_vox(i))`` for every fixed voxel i
    (``ddf_vox`` None: no displacement): (X_f, Y_f, Z_f) samples and the inside mask."""
    device = ddf_vox.device if ddf_vox is not None else torch.device("cpu")
    data = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None].to(device)
    to_moving = np.linalg.inv(pair.moving_affine) @ pair.fixed_affine
    coords = _index_map(to_moving, pair.fixed_shape, ddf_vox)
    out, inside = sample_volume(data, coords, pair.fixed_shape, mode=mode, fill=fill)
    return out[0], inside


def jacobian_map(ddf_vox: torch.Tensor, slab: int = 32) -> torch.Tensor:
    """det(I + grad u) of a (3, X, Y, Z) voxel-unit field, (X, Y, Z): :func:`scripts.mechanics.jacobian_determinant`
    evaluated in slabs of ``slab`` slices along axis 0 with a one-slice halo (central differences inside, one-sided at
    the volume's border, exactly as on the whole volume), which keeps the temporaries in cache: faster and leaner."""
    size = ddf_vox.shape[1]
    out = torch.empty(ddf_vox.shape[1:], dtype=ddf_vox.dtype, device=ddf_vox.device)
    for start in range(0, size, slab):
        stop = min(start + slab, size)
        lo, hi = max(start - 1, 0), min(stop + 1, size)
        det = jacobian_determinant(ddf_vox[None, :, lo:hi])[0]
        out[start:stop] = det[start - lo : stop - lo]
    return out


def _stats(det: torch.Tensor, disp_mm: torch.Tensor, eps: float = 1e-9) -> dict[str, Any]:
    flat = det.reshape(-1).double()
    logj = log_jacobian(flat, eps)
    p1, p99 = np.percentile(det.reshape(-1).cpu().numpy(), [1, 99])
    mag = disp_mm.square().sum(dim=0).sqrt().reshape(-1)
    return {
        "folding_percent": float(100.0 * (flat <= 0).double().mean()),
        "jacobian_det": {
            "min": float(flat.min()),
            "max": float(flat.max()),
            "mean": float(flat.mean()),
            "std": float(flat.std()),
            "p1": float(p1),
            "p99": float(p99),
        },
        "std_log_jacobian": float(logj.std()),
        "displacement_mm": {"mean": float(mag.mean()), "max": float(mag.max())},
    }


def _dice(warped: np.ndarray, fixed: np.ndarray) -> dict[str, float]:
    """Dice per label present in the fixed label map (background 0 skipped)."""
    fixed, warped = fixed.reshape(-1).astype(np.int64), warped.reshape(-1).astype(np.int64)
    if fixed.min() < 0 or warped.min() < 0:
        raise InferenceInputError("label maps must hold non-negative integer labels for Dice")
    size = int(max(fixed.max(), warped.max())) + 1
    inter = np.bincount(fixed[fixed == warped], minlength=size)
    nf, nw = np.bincount(fixed, minlength=size), np.bincount(warped, minlength=size)
    return {str(lab): float(2 * inter[lab] / (nf[lab] + nw[lab])) for lab in range(1, size) if nf[lab] > 0}


def _nifti(data: np.ndarray, pair: PairData, intent: str | None = None) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, pair.fixed_affine)
    img.set_qform(pair.fixed_affine, code=pair.fixed_codes[0])
    img.set_sform(pair.fixed_affine, code=pair.fixed_codes[1])
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
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            temps[path] = tmp
        with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
            jobs = []
            for path, img in images.items():
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
    except BaseException:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)
        raise


@torch.no_grad()
def finish_pair(
    pair: PairData,
    ddf_net: torch.Tensor,
    output_dir: str | os.PathLike,
    learn2reg: bool = False,
    save_jacobian: bool = True,
    output_ext: str = ".nii.gz",
    write_threads: int = 2,
    compression: str = "fast",
) -> dict[str, Any]:
    """Steps 4-5 of the module docstring and the writing: returns the pair's summary entry.

    Args:
        pair: from :func:`load_pair`.
        ddf_net: (1, 3, *net) displacement in net voxels (network output, or any field to apply).
        output_dir: folder of the outputs (created when the files are written).
        learn2reg: also write ``disp_FFFF_MMMM`` (fixed-grid voxels, (X, Y, Z, 3)).
        save_jacobian: write the det J map.
        output_ext: ".nii.gz" or ".nii".
        write_threads, compression: see :func:`write_niftis_atomically`.
    """
    clock = {"start": time.perf_counter()}

    def lap(name: str) -> None:
        now = time.perf_counter()
        clock[name] = now - clock.pop("last", clock["start"])
        clock["last"] = now

    output_dir = Path(output_dir)
    paths = output_paths(output_dir, pair.name, output_ext)
    entry: dict[str, Any] = {"name": pair.name, "fixed": pair.fixed_path, "moving": pair.moving_path}
    images: dict[Path, nib.Nifti1Image] = {}
    written: dict[str, str] = {}

    ddf_vox = native_displacement(pair, ddf_net)
    disp_mm = physical_displacement(pair, ddf_vox)
    lap("field_to_fixed_grid")
    lps = torch.tensor(RAS_TO_LPS, dtype=disp_mm.dtype, device=disp_mm.device).reshape(3, 1, 1, 1)
    ddf_file = (disp_mm * lps).permute(1, 2, 3, 0)[:, :, :, None, :].contiguous().cpu().numpy()
    images[paths["ddf"]] = _nifti(ddf_file, pair, intent="vector")
    written["ddf"] = str(paths["ddf"])
    det = jacobian_map(ddf_vox)
    lap("jacobian")
    stats = _stats(det, disp_mm)
    del disp_mm
    lap("statistics")
    if save_jacobian:
        images[paths["jacdet"]] = _nifti(det.cpu().numpy().astype(np.float32), pair)
        written["jacdet"] = str(paths["jacdet"])
    del det

    warped, inside = warp_to_fixed(pair, pair.moving, ddf_vox, fill=float(pair.moving.min()))
    warped = warped.cpu().numpy()
    if pair.moving_dtype.kind in "iu":
        info = np.iinfo(pair.moving_dtype)
        warped = np.clip(np.rint(warped), info.min, info.max).astype(pair.moving_dtype)
    images[paths["warped"]] = _nifti(warped, pair)
    written["warped"] = str(paths["warped"])
    entry["warped_inside_moving_percent"] = float(100.0 * inside.float().mean())
    del warped, inside
    if pair.moving_label is not None:
        label, _ = warp_to_fixed(pair, pair.moving_label, ddf_vox, mode="nearest", fill=0.0)
        label = label.cpu().numpy().astype(pair.moving_label.dtype)
        images[paths["warped_label"]] = _nifti(label, pair)
        written["warped_label"] = str(paths["warped_label"])
        entry["moving_label"] = pair.moving_label_path
        if pair.fixed_label is not None:
            before, _ = warp_to_fixed(pair, pair.moving_label, None, mode="nearest", fill=0.0)
            dice_before = _dice(before.cpu().numpy(), pair.fixed_label)
            dice_after = _dice(label, pair.fixed_label)
            entry["fixed_label"] = pair.fixed_label_path
            entry["dice"] = {
                "mean_before": float(np.mean(list(dice_before.values()))) if dice_before else None,
                "mean_after": float(np.mean(list(dice_after.values()))) if dice_after else None,
                "before": dice_before,
                "after": dice_after,
            }
    if learn2reg:
        l2r = output_dir / learn2reg_name(pair.fixed_path, pair.moving_path, output_ext)
        images[l2r] = _nifti(ddf_vox.permute(1, 2, 3, 0).contiguous().cpu().numpy(), pair)
        written["learn2reg"] = str(l2r)
    del ddf_vox
    lap("warping")
    stored = {path for key, path in paths.items() if key in ("ddf", "jacdet")}
    if learn2reg:
        stored.add(Path(written["learn2reg"]))
    write_niftis_atomically(images, threads=write_threads, compression=compression, stored=stored)
    lap("writing")
    entry.update(stats)
    entry["moving_coverage"] = pair.moving_coverage
    entry["outputs"] = written
    entry["seconds"] = {"load": pair.seconds_load, **{k: v for k, v in clock.items() if k not in ("start", "last")}}
    entry["seconds_postprocess"] = time.perf_counter() - clock["start"]
    logger.info(
        "%s: folding %.4f%%, det J [%.3f, %.3f], |u| mean %.2f mm max %.2f mm -> %s",
        pair.name,
        stats["folding_percent"],
        stats["jacobian_det"]["min"],
        stats["jacobian_det"]["max"],
        stats["displacement_mm"]["mean"],
        stats["displacement_mm"]["max"],
        output_dir,
    )
    return entry


class RegistrationWriter:
    """Evaluator handler: after each iteration, brings the predicted field to the fixed grid, warps and writes the
    pair's files (:func:`finish_pair`); at the end, writes ``summary.json`` (one entry per pair: folding %, det J
    statistics, displacement size, Dice when both label maps are given, output paths).

    Args:
        output_dir: output folder (created on the first write).
        learn2reg: also write the Learn2Reg ``disp_FFFF_MMMM`` files.
        save_jacobian: write the det J maps.
        output_ext: ".nii.gz" (default) or ".nii".
        summary_name: file name of the run summary.
        write_threads: threads compressing the output files.
        compression: "fast" (displacement and det J maps stored uncompressed inside the .gz, images and labels at
            zlib level 1) or "small" (zlib level 6 everywhere, slower); see :func:`write_niftis_atomically`.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        learn2reg: bool = False,
        save_jacobian: bool = True,
        output_ext: str = ".nii.gz",
        summary_name: str = "summary.json",
        write_threads: int = 2,
        compression: str = "fast",
    ):
        if output_ext not in NIFTI_SUFFIXES:
            raise ValueError(f"output_ext must be one of {NIFTI_SUFFIXES}, got {output_ext!r}")
        if compression not in COMPRESSION_CHOICES:
            raise ValueError(f"compression must be one of {COMPRESSION_CHOICES}, got {compression!r}")
        self.compression = compression
        self.output_dir = Path(output_dir)
        self.learn2reg = bool(learn2reg)
        self.save_jacobian = bool(save_jacobian)
        self.output_ext = output_ext
        self.summary_name = summary_name
        self.write_threads = write_threads
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._mark, "batch")
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._mark, "loaded")
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_pair)
        engine.add_event_handler(Events.COMPLETED, self._write_summary)

    def _start(self, engine: Engine) -> None:
        self.rows = []
        self._marks: dict[str, float] = {}
        self._started = time.perf_counter()
        dataset = getattr(getattr(engine, "data_loader", None), "dataset", None)
        if self.learn2reg and isinstance(dataset, PairDataset):  # name check before anything is written
            names = [learn2reg_name(entry["fixed"], entry["moving"]) for entry in dataset.data]
            if len(set(names)) != len(names):
                raise InferenceInputError(f"Learn2Reg file names are not unique: {names}")

    def _mark(self, engine: Engine, name: str) -> None:
        self._marks[name] = time.perf_counter()

    def _write_pair(self, engine: Engine) -> None:
        pair, ddf = engine.state.output[Keys.LABEL], engine.state.output[Keys.PRED]["ddf"]
        predicted = time.perf_counter()
        row = finish_pair(
            pair,
            ddf,
            self.output_dir,
            learn2reg=self.learn2reg,
            save_jacobian=self.save_jacobian,
            output_ext=self.output_ext,
            write_threads=self.write_threads,
            compression=self.compression,
        )
        now = time.perf_counter()
        if "loaded" in self._marks:
            row["seconds"]["predict"] = predicted - self._marks["loaded"]
        if "batch" in self._marks:
            row["seconds"]["total"] = now - self._marks["batch"]
        self.rows.append(row)

    def _write_summary(self, engine: Engine) -> None:
        summary = {
            "pairs": self.rows,
            "num_pairs": len(self.rows),
            "seconds": time.perf_counter() - self._started,
            "conventions": {
                "ddf": "mm, LPS (ITK), X x Y x Z x 1 x 3 NIfTI intent 1007, fixed grid; moving point = p + u(p)",
                "learn2reg": "voxels of the fixed grid, X x Y x Z x 3, channel k along array axis k",
                "jacdet": "det(I + grad u) on the fixed grid",
            },
        }
        folds = [row["folding_percent"] for row in self.rows]
        if folds:
            summary["mean_folding_percent"] = float(np.mean(folds))
            summary["mean_std_log_jacobian"] = float(np.mean([row["std_log_jacobian"] for row in self.rows]))
        atomic_write_text(self.output_dir / self.summary_name, json.dumps(summary, indent=2, allow_nan=True) + "\n")
        logger.info("registered %d pair(s), outputs in %s", len(self.rows), self.output_dir)


def run_inference_workflow(bundle_root: str | os.PathLike | None = None, **overrides: Any):
    """Run ``configs/inference.json`` in this process (as the Model Zoo tests do) and return the finished workflow.

    Args:
        bundle_root: the bundle folder (default: the one holding this module).
        overrides: config overrides, e.g. ``fixed``, ``moving``, ``output_dir``, ``ckpt_path``.
    """
    from monai.bundle import ConfigWorkflow

    root = Path(bundle_root) if bundle_root is not None else Path(__file__).resolve().parents[1]
    workflow = ConfigWorkflow(
        config_file=str(root / "configs" / "inference.json"),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        bundle_root=str(root),
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow
