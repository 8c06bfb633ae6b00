"""Checks of a training / evaluation dataset before the first epoch: every file present and readable to its last
byte, images 3D, label maps and segmentations on their image's grid. Runs when a file-based dataset is built (before
any cache entry, event file or checkpoint is written), with a progress bar when there are many files.

Every failure is a :class:`scripts.io.errors.InputError` naming the file (and the dataset JSON it is listed in).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scripts.io.errors import InputError
from scripts.io.image_io import check_label_grid, inspect_image, non_integer_error

__all__ = ["read_json", "check_image_file", "check_dataset_files", "check_training_run"]

logger = logging.getLogger(__name__)

PROGRESS_MIN_FILES = 8  # a progress bar from this many files on


def read_json(path: str | os.PathLike, what: str = "dataset JSON") -> Any:
    """A JSON file's content; a malformed file is an :class:`InputError` with the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise InputError(f"{what} {path}: cannot read it ({err.strerror or err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f"{what} {path}: not valid JSON at line {err.lineno} column {err.colno} ({err.msg}); fix the file"
        ) from None


def check_image_file(path: str | os.PathLike, role: str, read: bool = True):
    """Header checks (:func:`scripts.io.image_io.inspect_image`) and, with ``read``, every voxel read (a truncated or
    corrupt file fails here, naming the file; NaN/Inf voxels of an image and non-integer values of a label map or
    segmentation too). Returns the nibabel image."""
    img = inspect_image(path, role)
    if not read:
        return img
    proxy = img.dataobj
    shape = img.shape
    nz = int(np.prod(shape[2:]))
    step = max(1, (64 * 2**20) // max(1, int(np.prod(shape[:2])) * 4))
    label = "label" in role or "segmentation" in role
    bad = fractional = 0
    try:
        for start in range(0, nz, step):  # slabs along the slowest axis: one sequential pass through the file
            block = np.asarray(proxy[:, :, start : min(start + step, nz)] if len(shape) == 3 else proxy)
            if block.dtype.kind == "f":
                finite = np.isfinite(block)
                bad += int(block.size - np.count_nonzero(finite))
                if label:
                    fractional += int(np.count_nonzero(block[finite] != np.round(block[finite])))
            if len(shape) != 3:
                break
    except Exception as err:  # EOFError, zlib.error, OSError ... of a truncated or damaged file
        reason = str(err).strip() or type(err).__name__
        raise InputError(
            f"{role} {path}: cannot read the voxel data ({reason}); the file is truncated or damaged: copy it again"
        ) from None
    if bad and not label:
        raise InputError(f"{role} {path}: {bad} voxels are NaN or Inf; fix or mask them first")
    if fractional or (bad and label):
        raise non_integer_error(path, role, fractional + bad)
    return img


def check_dataset_files(items: Sequence[Mapping[str, Any]], source: Any = None, read: bool = True) -> None:
    """Check the files of a dataset's image items (``image`` and optional ``label``, ``seg``, ``reg_mask``,
    ``normals`` paths, as :class:`scripts.data.datasets.FilePairDataset` builds them): readable, 3D, every other file on
    its image's grid. ``source``: the dataset JSON / folder, named in the messages."""
    where = f" (listed in {source})" if source else ""
    roles = {"label": "label map", "seg": "TotalSegmentator segmentation", "reg_mask": "region mask",
             "normals": "normals"}  # fmt: skip
    todo = [(item, key) for item in items for key in ("image", *roles) if item.get(key)]
    progress = None
    if len(todo) >= PROGRESS_MIN_FILES:
        try:
            from tqdm import tqdm

            progress = tqdm(total=len(todo), desc="checking dataset files", unit="file", leave=False)
        except ImportError:
            pass
    try:
        for item in items:
            try:
                image = check_image_file(item["image"], "image", read)
            except InputError as err:
                raise InputError(f"{err}{where}") from None
            if progress is not None:
                progress.update(1)
            for key, role in roles.items():
                if not item.get(key):
                    continue
                path = item[key]
                try:
                    if key == "normals":  # (X, Y, Z, 3) vectors: its grid is checked on the first 3 axes
                        import nibabel as nib

                        if not Path(path).is_file():
                            raise InputError(f"{role} {path}: file not found")
                        other = nib.load(str(path))
                    else:
                        other = check_image_file(path, role, read)
                    check_label_grid(other, image, path, "the")
                except InputError as err:
                    raise InputError(f"{err}{where}") from None
                if progress is not None:
                    progress.update(1)
    finally:
        if progress is not None:
            progress.close()


def check_training_run(dataset: Any, prepare_batch: Any = None, what: str = "training") -> None:
    """Checks of a workflow's dataset against its batch preparation, before the first step: a Dice loss / metric
    (``num_label_classes > 0``) needs label maps for every pair."""
    need = int(getattr(prepare_batch, "num_label_classes", 0) or 0)
    has_labels = getattr(dataset, "has_labels", None)
    if need > 0 and has_labels is False:
        source = getattr(dataset, "source", None) or "the dataset"
        raise InputError(
            f"{what} dataset {source}: no label maps, but the Dice term (beta > 0) and the label metrics need them "
            "for every image; add the label files (e.g. labelsTr/ beside imagesTr/) or set --beta 0"
        )
