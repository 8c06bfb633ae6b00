"""One entry point for every dataset the configs can name: ``registration_dataset(name, split, ...)``.

Names (the ``dataset`` override of ``configs/train.json``):

- ``synthetic_rigid``: the paper's rigid bar set (:mod:`scripts.synthetic`), in-plane rotations;
- ``synthetic_rigid3d``: the same with random 3D rotations;
- ``synthetic_shearing``: the paper's two sliding boxes.

Each item is a dict with ``fixed``, ``moving`` (1, *S), ``fixed_label``, ``moving_label``, ``reg_mask``
(1, *S) and ``normals`` (3, *S), channel first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch.utils.data import Dataset

from scripts.synthetic import SyntheticRegistrationDataset

__all__ = ["DATASETS", "SPLIT_SIZES", "registration_dataset", "label_classes"]

SYNTHETIC = {
    "synthetic_rigid": ("rigid", "inplane"),
    "synthetic_rigid3d": ("rigid", "3d"),
    "synthetic_shearing": ("shearing", "inplane"),
}
DATASETS = tuple(SYNTHETIC)
# the paper's split sizes of the synthetic sets
SPLIT_SIZES = {"train": 200, "val": 50, "test": 50}
# label classes including background, for one-hot labels (Dice loss and metric)
LABEL_CLASSES = {"synthetic_rigid": 2, "synthetic_rigid3d": 2, "synthetic_shearing": 3}


def label_classes(name: str) -> int:
    """Number of label classes (background included) of a dataset."""
    _check_name(name)
    return LABEL_CLASSES[name]


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")


def registration_dataset(
    name: str,
    split: str,
    num_pairs: int | None = None,
    seed: int = 0,
    shape: Sequence[int] = (64, 64, 64),
    transform: Callable | None = None,
) -> Dataset:
    """The dataset ``name``'s ``split`` ("train", "val", "test").

    Args:
        num_pairs: pairs in the split (synthetic sets; default: the paper's 200/50/50).
        seed: synthetic generator seed; the splits draw from distinct streams of it.
        shape: synthetic grid shape (voxels, 1 mm).
        transform: optional callable applied to each item dict.
    """
    _check_name(name)
    kind, rotation = SYNTHETIC[name]
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; choose one of {tuple(SPLIT_SIZES)}")
    num_pairs = SPLIT_SIZES[split] if num_pairs is None else int(num_pairs)
    return SyntheticRegistrationDataset(
        kind, split, num_pairs, seed=seed, shape=tuple(shape), rotation=rotation, transform=transform
    )
