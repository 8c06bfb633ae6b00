"""The pairs of an inference run: which files to register, their header checks, and the names of the outputs.

A run registers the pairs given by ``--fixed``/``--moving`` (one pair), ``--pairs`` (a list or a JSON file, the
Learn2Reg dataset JSON included) or every ``<name>_fixed`` / ``<name>_moving`` pair of ``--dataset_dir``
(:func:`resolve_pairs`). Outputs of a pair are named ``<fixed stem>__<moving stem>_<kind><ext>``.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import nibabel as nib

from scripts.io.errors import InputError
from scripts.io.image_io import IMAGE_SUFFIXES, check_label_grid, image_stem, inspect_image

__all__ = [
    "OUTPUT_KINDS",
    "find_pairs",
    "resolve_pairs",
    "require_pairs",
    "check_pair_files",
    "pair_name",
    "output_paths",
]

OUTPUT_KINDS = ("warped", "ddf", "jacdet", "warped_label")


def find_pairs(dataset_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Pairs in a folder: ``<name>_fixed.nii[.gz]`` with ``<name>_moving.nii[.gz]`` (or ``.nrrd``, ``.mha``, ``.mhd``;
    and optional
    ``<name>_moving_label`` / ``<name>_fixed_label``), the layout ``python -m scripts.synthesis.synthetic write``
    produces."""
    pairs = []
    folder = Path(dataset_dir)
    for fixed in sorted(glob.glob(str(folder / "*_fixed*"))):
        if not fixed.lower().endswith(IMAGE_SUFFIXES) or not image_stem(fixed).endswith("_fixed"):
            continue
        prefix = image_stem(fixed)[: -len("_fixed")]
        entry = {"fixed": fixed}
        for key in ("moving", "moving_label", "fixed_label", "fixed_seg"):
            for suffix in IMAGE_SUFFIXES:
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
    fixed_seg: str | None = "",
) -> list[dict[str, str]]:
    """The list of pairs to register, from the first of these that is given:

    - ``fixed`` and ``moving`` (and optional ``moving_label``, ``fixed_label``, ``fixed_seg``: a TotalSegmentator
      label map of the fixed image, for the regions of the refinement): one pair, paths as given (relative to the
      current folder);
    - ``pairs``: a list of dicts with keys ``fixed``, ``moving`` and optional ``moving_label``, ``fixed_label``
      (relative paths: relative to ``dataset_dir``), or the path of a JSON file holding such a list, or a dict with
      that list under ``pairs_key`` (the Learn2Reg dataset JSON, e.g. ``"registration_val"``; relative paths:
      relative to the JSON file's folder, as Learn2Reg's ``"./imagesTr/..."``);
    - ``dataset_dir``: every ``<name>_fixed`` / ``<name>_moving`` pair in it (:func:`find_pairs`; none: empty list).
    """
    if fixed or moving:
        if not (fixed and moving):
            raise InputError(f"give both a fixed and a moving image (got fixed={fixed!r}, moving={moving!r})")
        entry = {"fixed": str(fixed), "moving": str(moving)}
        if moving_label:
            entry["moving_label"] = str(moving_label)
        if fixed_label:
            entry["fixed_label"] = str(fixed_label)
        if fixed_seg:
            entry["fixed_seg"] = str(fixed_seg)
        return [entry]
    base = Path(dataset_dir) if dataset_dir else Path(".")
    if isinstance(pairs, (str, os.PathLike)) and str(pairs):
        source = Path(pairs)
        base = source.parent
        if not source.is_file():
            raise InputError(f"pairs file {source}: file not found")
        try:
            pairs = json.loads(source.read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"pairs file {source}: not a readable JSON file ({err})") from None
        if isinstance(pairs, Mapping):
            if pairs_key not in pairs:
                raise InputError(f"pairs file {source}: no list under the key {pairs_key!r}")
            pairs = pairs[pairs_key]
    if pairs:
        if not isinstance(pairs, Sequence) or isinstance(pairs, str):
            raise InputError(f"pairs must be a list of dicts or a JSON file, got {type(pairs).__name__}")
        out = []
        for i, entry in enumerate(pairs):
            if not isinstance(entry, Mapping) or not entry.get("fixed") or not entry.get("moving"):
                raise InputError(f"pair {i}: needs 'fixed' and 'moving' paths, got {entry!r}")
            out.append(
                {
                    key: str(value) if os.path.isabs(str(value)) else str(base / str(value))
                    for key, value in entry.items()
                    if key in ("fixed", "moving", "moving_label", "fixed_label", "fixed_seg") and value
                }
            )
        return out
    return find_pairs(base)  # may be empty: :func:`require_pairs` says so when the run starts


def require_pairs(dataset: Sized, dataset_dir: Any = None) -> None:
    """Raise the "nothing to register" error (the run's first step; an empty dataset can still be built, so that
    the config's properties can be checked without data)."""
    if len(dataset) == 0:
        raise InputError(
            "no pairs to register: give --fixed and --moving, --pairs (a list or a JSON file), or a dataset_dir "
            f"holding <name>_fixed.nii.gz / <name>_moving.nii.gz files (looked in {dataset_dir})"
        )


def pair_name(fixed: Any, moving: Any) -> str:
    """Output prefix of a pair: ``<fixed stem>__<moving stem>``."""
    return f"{image_stem(fixed)}__{image_stem(moving)}"


def output_paths(output_dir: str | os.PathLike, name: str, ext: str = ".nii.gz") -> dict[str, Path]:
    """Paths of a pair's outputs: ``warped``, ``ddf``, ``jacdet``, ``warped_label``."""
    return {kind: Path(output_dir) / f"{name}_{kind}{ext}" for kind in OUTPUT_KINDS}


def check_pair_files(entry: Mapping[str, Any]) -> dict[str, nib.Nifti1Image]:
    """Header-level checks of one pair (files exist, NIfTI, 3D, label maps and the fixed segmentation on their
    image's grid)."""
    images = {
        "fixed": inspect_image(entry.get("fixed"), "fixed"),
        "moving": inspect_image(entry.get("moving"), "moving"),
    }
    for key, role, what in (
        ("moving_label", "moving", "moving label map"),
        ("fixed_label", "fixed", "fixed label map"),
        ("fixed_seg", "fixed", "fixed segmentation (--fixed_seg)"),
    ):
        if entry.get(key):
            images[key] = inspect_image(entry[key], what)
            check_label_grid(images[key], images[role], entry[key], what)
    return images
