"""Checks before an inference run: everything it needs is usable before the first pair is loaded or written.

- :func:`check_voxels`: every image's voxels are finite (NaN/Inf) and every label map's and segmentation's are
  integers, all pairs before the first is registered;
- :func:`check_inference_run`: all of it for an inference run (``configs/inference.json``'s ``run``): the weights fit
  the network (:func:`scripts.io.weights.check_checkpoint_handlers`), the output folder is writable and has room
  (:mod:`scripts.io.files`), the voxels are finite.

Every failure is a :class:`scripts.io.errors.InputError` that names the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from scripts.inference.writer import RegistrationWriter
from scripts.io.errors import InputError
from scripts.io.files import check_free_space, check_output_dir
from scripts.io.image_formats import image_shape, read_finite_check
from scripts.io.image_io import non_integer_error
from scripts.io.weights import check_checkpoint_handlers

__all__ = ["LABEL_ROLES", "check_voxels", "check_inference_run"]

# the label inputs of a pair, as the header checks name them (scripts.inference.pairs.check_pair_files)
LABEL_ROLES = {
    "moving_label": "moving label map",
    "fixed_label": "fixed label map",
    "fixed_seg": "fixed segmentation (--fixed_seg)",
}


def _nifti_finite(path: Path, role: str, slab_bytes: int = 64 * 2**20, label: bool = False) -> None:
    """Stream a NIfTI file's voxels: NaN/Inf (and, for a ``label`` map, non-integer values) raise naming it."""
    img = nib.load(str(path))
    dtype = np.dtype(img.get_data_dtype())
    slope, inter = img.dataobj.slope, img.dataobj.inter
    scaled_finite = all(v is None or np.isfinite(v) for v in (slope, inter))
    if dtype.kind in "iub" and scaled_finite:
        return  # integers (CT's int16) cannot be NaN/Inf: nothing to read
    shape = img.shape
    nz = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    per_slice = max(1, int(np.prod(shape[:2])) * 4)
    step = max(1, slab_bytes // per_slice)
    proxy = img.dataobj
    flat = shape[:2] + (nz,)
    bad = fractional = 0
    for start in range(0, nz, step):  # slabs along the last (slowest) axis: a sequential read of the file
        stop = min(start + step, nz)
        if len(shape) > 3:
            block = np.asarray(proxy[..., 0] if shape[3:] == (1,) * (len(shape) - 3) else proxy, dtype=np.float32)
            block = block.reshape(flat)[:, :, start:stop]
        else:
            block = np.asarray(proxy[:, :, start:stop], dtype=np.float32)
        finite = np.isfinite(block)
        bad += int(block.size - np.count_nonzero(finite))
        if label:
            fractional += int(np.count_nonzero(block[finite] != np.round(block[finite])))
    if bad:
        raise InputError(
            f"{role}{'' if label else ' image'} {path}: {bad} voxels are NaN or Inf; fix or mask them first"
        )
    if fractional:
        raise non_integer_error(path, role, fractional)


def check_voxels(
    entries: Iterable[Mapping[str, Any]],
    roles: Sequence[str] = ("fixed", "moving"),
    labels: Sequence[str] = tuple(LABEL_ROLES),
) -> None:
    """Check every image of every pair for NaN/Inf voxels and every label map / segmentation (``labels``: keys of
    :data:`LABEL_ROLES`) for non-integer values (streamed, slab by slab; integer files are skipped), so that a bad
    second pair fails the run before the first pair's outputs are written."""
    seen = set()
    for entry in entries:
        for key in (*roles, *labels):
            path, label = entry.get(key), key in labels
            role = LABEL_ROLES.get(key, key) if label else key
            if not path or path in seen:
                continue
            seen.add(path)
            path = Path(path)
            if path.is_file() and path.name.lower().endswith((".nii", ".nii.gz")):
                try:
                    _nifti_finite(path, role, label=label)
                except InputError:
                    raise
                except Exception as err:
                    what = role if label else f"{role} image"
                    raise InputError(f"{what} {path}: cannot read the voxel data ({err})") from None
            else:
                fractional = read_finite_check(path, role, label=label)
                if fractional:
                    raise non_integer_error(path, role, fractional)


def _output_bytes(entries: Iterable[Mapping[str, Any]], save_jacobian: bool, ext: str) -> float:
    """A lower bound of the bytes a run writes: the float32 ddf (3 values per fixed voxel) and det J maps, which the
    writer stores uncompressed."""
    total = 0.0
    for entry in entries:
        voxels = float(np.prod(image_shape(entry["fixed"])))
        total += voxels * 4 * (3 + (1 if save_jacobian else 0))
    return total if ext != ".nii" else total * 1.5


def check_inference_run(dataset: Any, handlers: Sequence[Any]) -> None:
    """Everything an inference run needs, checked before the first pair is loaded: the checkpoint of an enabled
    ``CheckpointLoader`` fits the network, the writer's output folder is writable (and has room for the fields),
    every pair's voxels are finite."""
    check_checkpoint_handlers(handlers)
    for handler in handlers:
        if isinstance(handler, RegistrationWriter):
            check_output_dir(handler.output_dir)
            try:
                needed = _output_bytes(dataset.data, handler.save_jacobian, handler.output_ext)
            except Exception:  # the size is only a guard; the headers were already checked
                needed = 0.0
            check_free_space(handler.output_dir, needed)
    check_voxels(getattr(dataset, "data", []))
