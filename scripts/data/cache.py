"""The image cache of the datasets: each preprocessed item computed once, then read from memory or disk.

:func:`cached_dataset` wraps a list of items and a MONAI transform: ``"disk"`` a MONAI ``PersistentDataset`` in
``cache_dir`` (entries keyed by the item and a hash of the transforms, so a changed input, grid, HU window or region
spec is recomputed; the transforms up to the first random one are cached, the random ones run on every read),
``"memory"`` a ``CacheDataset`` (every item computed when the dataset is built), ``"none"`` a plain ``Dataset``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from monai.data import CacheDataset
from monai.data import Dataset as MonaiDataset
from monai.data import PersistentDataset
from monai.data.utils import pickle_hashing
from torch.utils.data import Dataset

__all__ = ["CACHE_CHOICES", "cached_dataset"]

CACHE_CHOICES = ("disk", "memory", "none")


def cached_dataset(items: list[dict], transform: Callable, cache: str, cache_dir: str | os.PathLike | None) -> Dataset:
    """``items`` through ``transform``, cached as ``cache`` says (see the module docstring)."""
    if cache == "disk":
        if not cache_dir:
            raise ValueError("cache 'disk' needs a cache_dir")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        # track_meta keeps the MetaTensors (affines: voxel spacing for the losses); the cache holds pickled
        # MetaTensors written by this bundle, hence weights_only=False: only point cache_dir at a trusted folder
        return PersistentDataset(
            items,
            transform,
            cache_dir=cache_dir,
            hash_transform=pickle_hashing,
            track_meta=True,
            weights_only=False,
        )
    if cache == "memory":
        return CacheDataset(items, transform, cache_rate=1.0, num_workers=0, progress=False)
    if cache in ("none", None):
        return MonaiDataset(items, transform)
    raise ValueError(f"cache must be 'disk', 'memory' or 'none', got {cache!r}")
