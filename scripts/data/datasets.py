"""One entry point for every dataset the configs can name: ``registration_dataset(name, split, ...)``.

Names (the ``dataset`` override of ``configs/train.json``):

- ``synthetic_rigid``: the paper's rigid bar set (:mod:`scripts.synthesis.synthetic`), in-plane rotations;
- ``synthetic_rigid3d``: the same with random 3D rotations;
- ``synthetic_shearing``: the paper's two sliding boxes;
- ``abdomenctct``: Learn2Reg AbdomenCTCT (or any folder in the Learn2Reg layout), NIfTI files on disk;
- ``pairs``: a plain list of (fixed, moving) NIfTI pairs in a JSON or CSV file;
- ``ct_generated``: CT pairs generated on the fly with a known breathing motion (:mod:`scripts.data.generated`),
  through the CT model's preprocessing; options ``transform``, ``cache``, ``cache_dir``, ``ct_dir`` (real CTs to mix
  in), ``cranial_fraction`` (the share of pairs breathing the other way), ``texture_hu`` (the phantoms' organ
  texture), ``bone_hu`` (the phantoms' bone marrow HU range); the training split gets intensity augmentation.

The two file-based datasets need the per-image preprocessing transform and the other ``options`` of
``configs/ct.json`` (``dataset_options``): merge it after train.json.

Each item is a dict with ``fixed``, ``moving`` (1, *S), ``reg_mask`` (1, *S) and ``normals`` (3, *S) and, when the
dataset has labels, ``fixed_label``, ``moving_label`` (1, *S), channel first.

Learn2Reg layout (``dataset_dir``)::

    AbdomenCTCT_dataset.json      # "training": [{"image": "./imagesTr/X_0000.nii.gz", "label": "./labelsTr/..."}],
                                  # "registration_val": [{"fixed": "./imagesTr/...", "moving": "./imagesTr/..."}]
    imagesTr/AbdomenCTCT_0001_0000.nii.gz ...
    labelsTr/AbdomenCTCT_0001_0000.nii.gz ...   # 13 organ labels, used for Dice (not for the regions)
    totalsegmentator/AbdomenCTCT_0001_0000_seg.nii.gz ...   # `python -m scripts.regions.segment run` (seg_dir)

Splits: ``train`` = every ORDERED pair (both directions) of the ``training`` images that appear in no
``registration_val`` pair (AbdomenCTCT: 20 images, 380 pairs); ``val`` and ``test`` = the ``registration_val`` pairs
(AbdomenCTCT: 45; the challenge's test labels are not public, and the paper reports these pairs).

Plain pairs (``dataset_dir`` = the file, or a folder holding ``pairs.json`` / ``pairs.csv``); relative paths are
relative to the file's folder:

- JSON: a list of pairs (every split uses all of them), or ``{"train": [...], "val": [...], "test": [...]}``
  (aliases ``training``, ``validation``/``registration_val``, ``registration_test``); a pair is
  ``{"fixed": ..., "moving": ..., "fixed_label": ..., "moving_label": ..., "fixed_seg": ...}`` (labels and
  ``fixed_seg`` optional) or ``[fixed, moving]``;
- CSV: a header with ``fixed,moving`` and optional ``fixed_label,moving_label,fixed_seg,split`` columns (an empty or
  absent ``split`` puts the row in every split).

Regions (``reg_mask``, ``normals``) always come from the FIXED image's TotalSegmentator segmentation: the pair's
``fixed_seg``, else ``<seg_dir>/<image name>_seg.nii.gz`` (``seg_dir`` default: beside the image); or, with
``regions_dir``, from ``<regions_dir>/<image name>_reg_mask.nii.gz`` and ``_normals.nii.gz`` precomputed by
``python -m scripts.regions.precompute``. Missing files are reported before anything runs, with the command to make
them. Every image is preprocessed once (and cached: ``cache="disk"`` a MONAI ``PersistentDataset``, ``"memory"`` a
``CacheDataset``) and then paired; a pair never re-runs the loading nor the region building.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from scripts.data.cache import cached_dataset
from scripts.data.checks import check_dataset_files
from scripts.data.generated import GeneratedCTDataset
from scripts.data.lists import find_learn2reg_json, learn2reg_pairs, pairs_file, read_pairs, select_pairs
from scripts.io.errors import InputError
from scripts.io.image_io import image_stem
from scripts.io.resampling import resample_to_grid
from scripts.regions.precompute import output_names
from scripts.regions.segment import output_path
from scripts.synthesis.synthetic import SyntheticRegistrationDataset

__all__ = [
    "DATASETS",
    "FILE_DATASETS",
    "SPLIT_SIZES",
    "registration_dataset",
    "label_classes",
    "FilePairDataset",
]

logger = logging.getLogger(__name__)

SYNTHETIC = {
    "synthetic_rigid": ("rigid", "inplane"),
    "synthetic_rigid3d": ("rigid", "3d"),
    "synthetic_shearing": ("shearing", "inplane"),
}
FILE_DATASETS = ("abdomenctct", "pairs")
GENERATED = ("ct_generated",)
# the dataset_options of the generated set (GeneratedCTDataset's keyword arguments)
GENERATED_OPTIONS = {
    "transform",
    "cache",
    "cache_dir",
    "ct_dir",
    "cranial_fraction",
    "texture_hu",
    "min_slab_mm",
    "bone_hu",
    "offset_mm",
    "offset_deg",
}
DATASETS = tuple(SYNTHETIC) + FILE_DATASETS + GENERATED
# the paper's split sizes of the synthetic sets
SPLIT_SIZES = {"train": 200, "val": 50, "test": 50}
# label classes including background, for one-hot labels (Dice loss and metric); "pairs": unknown (override
# label_classes on the command line when the pairs have labels)
LABEL_CLASSES = {
    "synthetic_rigid": 2,
    "synthetic_rigid3d": 2,
    "synthetic_shearing": 3,
    "abdomenctct": 14,
    "pairs": 0,
    "ct_generated": 14,
}

CT_CONFIG_HINT = (
    "the file-based datasets need the preprocessing of configs/ct.json: run with "
    "--config_file \"['configs/train.json','configs/ct.json']\" (and configs/evaluate.json last to evaluate)"
)


def label_classes(name: str) -> int:
    """Number of label classes (background included) of a dataset (0: no labels known)."""
    _check_name(name)
    return LABEL_CLASSES[name]


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; choose one of {DATASETS} (--dataset)")


# ----------------------------------------------------------------------------------------------------------------------
# Images preprocessed once, then paired
def _fixed_region_files(image: Path, seg: Path | None, seg_dir: str | None, regions_dir: str | None) -> dict[str, Path]:
    """The files the regions of a fixed image come from: ``{"seg": ...}`` or ``{"reg_mask": ..., "normals": ...}``."""
    seg = Path(seg) if seg is not None else output_path(image, seg_dir)
    if regions_dir:
        mask, normals = output_names(seg.parent / f"{image_stem(image)}_seg.nii.gz", regions_dir)
        return {"reg_mask": mask, "normals": normals}
    return {"seg": seg}


def _missing_regions_error(missing: list[tuple[Path, Path]], seg_dir: str | None, regions_dir: str | None) -> Exception:
    """One clear error for every missing segmentation / precomputed region file, with the commands that make them."""
    image, expected = missing[0]
    more = f" (and {len(missing) - 1} more fixed image(s))" if len(missing) > 1 else ""
    if regions_dir:
        return InputError(
            f"precomputed regions of the fixed image {image} not found: {expected}{more}. Make them with "
            f"`python -m scripts.regions.precompute --labels <folder of the *_seg.nii.gz> --out_dir {regions_dir} "
            "--method gaussian`, or set regions_dir to null to compute them from the segmentations."
        )
    out_dir = seg_dir or str(image.parent)
    return InputError(
        f"TotalSegmentator segmentation of the fixed image {image} not found: {expected}{more}. The regularisation "
        f"regions (bones, sliding interfaces) come from it. Make it with `python -m scripts.regions.segment run "
        f"--input {image.parent} --output_dir {out_dir}` (needs the optional TotalSegmentator package and its weights),"
        " or "
        "point seg_dir (or the pair's fixed_seg) at existing <image name>_seg.nii.gz label maps."
    )


class FilePairDataset(Dataset):
    """Registration pairs of images that are each loaded and preprocessed ONCE (and cached), then paired.

    Every distinct image of ``pairs`` becomes one item for ``transform`` (MONAI dict transform): ``{"image": path}``
    plus ``"label"`` when the pairs have labels and, for images used as fixed, the region source (``"seg"``, or
    ``"reg_mask"`` and ``"normals"`` precomputed). ``transform`` must return ``image`` (1, *S), optional ``label``
    (1, *S) and, for fixed images, ``reg_mask`` (1, *S) and ``normals`` (3, *S), all on the same grid.

    Args:
        pairs: dicts with ``fixed``, ``moving`` and optional ``fixed_label``, ``moving_label``, ``fixed_seg`` paths.
        transform: the per-image preprocessing (``configs/ct.json``: ``preprocessing``).
        seg_dir: folder of ``<image name>_seg.nii.gz`` (None: beside each image).
        regions_dir: folder of precomputed ``<image name>_reg_mask.nii.gz`` / ``_normals.nii.gz`` (None: build the
            regions from the segmentations in ``transform``).
        cache: ``"disk"`` (MONAI ``PersistentDataset`` in ``cache_dir``), ``"memory"`` (``CacheDataset``, all images
            preprocessed when the dataset is built) or ``"none"``.
        cache_dir: folder of the disk cache. Entries are keyed by the image item (file paths and modification times)
            and a hash of the transforms, so a changed file, grid, HU window or region spec is recomputed.
        source: the dataset JSON / pair list the pairs come from (named in error messages).

    Every file is checked (present, readable to its last byte, 3D, label maps and segmentations on their image's
    grid: :func:`scripts.data.checks.check_dataset_files`) when the dataset is built, before any cache entry.
    """

    def __init__(
        self,
        pairs: Sequence[Mapping[str, Any]],
        transform: Callable,
        seg_dir: str | None = None,
        regions_dir: str | None = None,
        cache: str = "disk",
        cache_dir: str | os.PathLike | None = None,
        source: str | os.PathLike | None = None,
    ):
        self.source = str(source) if source else None
        if not pairs:
            raise ValueError("no pairs")
        with_labels = ["fixed_label" in p and "moving_label" in p for p in pairs]
        if any(with_labels) and not all(with_labels):
            first = next(p for p, has in zip(pairs, with_labels) if not has)
            absent = [str(first.get(k, "")) or f"the {k}" for k in ("fixed_label", "moving_label")
                      if not first.get(k) or not Path(first[k]).is_file()]  # fmt: skip
            raise InputError(
                f"{sum(with_labels)} of {len(pairs)} pairs have label maps, not the pair {first['fixed']} <- "
                f"{first['moving']} (no {', '.join(absent)}): give label maps for all pairs or none"
            )
        self.has_labels = all(with_labels)
        roles: dict[Path, dict[str, Any]] = {}  # image path -> its item
        missing: list[tuple[Path, Path]] = []
        for p in pairs:
            for role in ("fixed", "moving"):
                image = Path(p[role])
                item = roles.setdefault(image, {"image": str(image)})
                if self.has_labels:
                    item["label"] = str(p[f"{role}_label"])
                if role == "fixed" and "seg" not in item and "reg_mask" not in item:
                    files = _fixed_region_files(image, p.get("fixed_seg"), seg_dir, regions_dir)
                    absent = [f for f in files.values() if not f.is_file()]
                    if absent:
                        missing.append((image, absent[0]))
                    item.update({key: str(f) for key, f in files.items()})
        if missing:
            raise _missing_regions_error(missing, seg_dir, regions_dir)
        for item in roles.values():  # part of the cache key: a changed input file is preprocessed again
            item["mtimes"] = [
                os.stat(item[k]).st_mtime_ns for k in ("image", "label", "seg", "reg_mask", "normals") if k in item
            ]
        check_dataset_files(list(roles.values()), source)  # before any cache entry: one error naming the file
        self.image_paths = list(roles)
        index = {image: i for i, image in enumerate(self.image_paths)}
        self.pairs = [(index[Path(p["fixed"])], index[Path(p["moving"])]) for p in pairs]
        self.pair_names = [f"{image_stem(p['fixed'])}<-{image_stem(p['moving'])}" for p in pairs]
        self._cache_args = (list(roles.values()), transform, cache, cache_dir)
        self._images: Dataset | None = None
        if cache == "memory":  # preprocesses every image now (after the checks above)
            self._images = cached_dataset(*self._cache_args)

    @property
    def images(self) -> Dataset:
        """The preprocessed images (cached); the disk cache folder is only created when the first image is read."""
        if self._images is None:
            self._images = cached_dataset(*self._cache_args)
        return self._images

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        fi, mi = self.pairs[index]
        fixed, moving = self.images[fi], self.images[mi]
        out = {"fixed": fixed["image"], "moving": on_fixed_grid(moving["image"], fixed["image"])}
        if self.has_labels:
            out["fixed_label"] = fixed["label"]
            out["moving_label"] = on_fixed_grid(moving["label"], fixed["label"], mode="nearest", fill=0.0)
        for key in ("reg_mask", "normals"):
            if key in fixed:
                out[key] = fixed[key]
        return out


def on_fixed_grid(moving: Any, fixed: Any, mode: str = "bilinear", fill: float | None = None) -> Any:
    """A preprocessed moving image (or label map) on the preprocessed fixed image's grid: unchanged when both share
    a grid (Learn2Reg), else resampled through their affines (:func:`scripts.io.resampling.resample_to_grid`, the same
    pair step as inference), as a MetaTensor with the fixed image's metadata."""
    from monai.data import MetaTensor

    if not isinstance(moving, MetaTensor) or not isinstance(fixed, MetaTensor):
        return moving
    out, _ = resample_to_grid(moving, moving.affine, fixed.affine, fixed.shape[1:], fill=fill, mode=mode)
    if out is moving:
        return moving
    return MetaTensor(out.to(moving.dtype) if mode == "nearest" else out, meta=dict(fixed.meta))


def file_registration_dataset(
    name: str,
    split: str,
    num_pairs: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    transform: Callable | None = None,
    seg_dir: str | None = None,
    regions_dir: str | None = None,
    cache: str = "disk",
    cache_dir: str | os.PathLike | None = None,
) -> FilePairDataset:
    """A split of a file-based dataset (``abdomenctct``, ``pairs``); arguments: see :func:`registration_dataset`."""
    if transform is None:
        raise ValueError(f"dataset {name!r}: no preprocessing transform; {CT_CONFIG_HINT}")
    if data_dir is None:
        raise ValueError(f"dataset {name!r}: no data_dir (set --dataset_dir)")
    if name == "abdomenctct":
        pairs, source = learn2reg_pairs(data_dir, split), find_learn2reg_json(data_dir)
    else:
        pairs, source = read_pairs(data_dir, split), pairs_file(data_dir)
    pairs = select_pairs(pairs, num_pairs, seed, shuffle=split == "train")
    logger.info("dataset %s, split %s: %d pairs", name, split, len(pairs))
    return FilePairDataset(pairs, transform, seg_dir, regions_dir, cache, cache_dir, source=source)


def registration_dataset(
    name: str,
    split: str,
    num_pairs: int | None = None,
    seed: int = 0,
    shape: Sequence[int] = (64, 64, 64),
    transform: Callable | None = None,
    options: Mapping[str, Any] | None = None,
) -> Dataset:
    """The dataset ``name``'s ``split`` ("train", "val", "test").

    Args:
        num_pairs: pairs in the split (synthetic sets default: the paper's 200/50/50; file-based: None = all).
        seed: synthetic generator seed (the splits draw from distinct streams of it); file-based: the seed of the
            random subset of training pairs when ``num_pairs`` is smaller than the split.
        shape: synthetic grid shape (voxels, 1 mm); file-based datasets resample in their ``transform``.
        transform: synthetic: optional callable applied to each item dict; file-based: the per-image preprocessing.
        options: file-based datasets only (``dataset_options`` of ``configs/ct.json``): ``data_dir``,
            ``transform`` (per-image preprocessing), ``seg_dir``, ``regions_dir``, ``cache``, ``cache_dir``
            (see :class:`FilePairDataset`). Ignored (with a warning) by the synthetic sets.
    """
    _check_name(name)
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; choose one of {tuple(SPLIT_SIZES)}")
    options = dict(options or {})
    if name in GENERATED:
        if transform is not None:
            options.setdefault("transform", transform)
        unknown = set(options) - GENERATED_OPTIONS
        if unknown or "transform" not in options:
            raise ValueError(f"dataset {name!r}: unknown option(s) {sorted(unknown)} or no transform; {CT_CONFIG_HINT}")
        num_pairs = SPLIT_SIZES[split] if num_pairs is None else int(num_pairs)
        preprocessing = options.pop("transform")
        return GeneratedCTDataset(split, num_pairs, preprocessing, seed=seed, augment=split == "train", **options)
    if name in FILE_DATASETS:
        if transform is not None:
            options.setdefault("transform", transform)
        unknown = set(options) - {"data_dir", "transform", "seg_dir", "regions_dir", "cache", "cache_dir"}
        if unknown:
            raise ValueError(f"unknown dataset option(s) {sorted(unknown)}")
        return file_registration_dataset(name, split, num_pairs, seed, **options)
    if options:
        logger.warning("dataset_options %s are for the file-based datasets; ignored by %s", sorted(options), name)
    kind, rotation = SYNTHETIC[name]
    num_pairs = SPLIT_SIZES[split] if num_pairs is None else int(num_pairs)
    return SyntheticRegistrationDataset(
        kind, split, num_pairs, seed=seed, shape=tuple(shape), rotation=rotation, transform=transform
    )
