"""The pair lists of the file-based datasets: the Learn2Reg layout (``<TASK>_dataset.json``) and plain JSON / CSV
lists of pairs (see :mod:`scripts.data.datasets` for the formats and splits). Errors name the file (and the line of a
malformed JSON)."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scripts.data.checks import read_json
from scripts.io.errors import InputError

__all__ = ["SPLIT_KEYS", "find_learn2reg_json", "learn2reg_pairs", "pairs_file", "read_pairs", "select_pairs"]

SPLIT_KEYS = {
    "train": ("train", "training"),
    "val": ("val", "validation", "registration_val"),
    "test": ("test", "registration_test"),
}


def find_learn2reg_json(data_dir: str | os.PathLike) -> Path:
    """The Learn2Reg ``<TASK>_dataset.json`` of a dataset folder (or the file itself)."""
    path = Path(data_dir)
    if path.is_file():
        return path
    if not path.is_dir():
        raise InputError(
            f"dataset_dir {path}: folder not found; give --dataset_dir (the Learn2Reg AbdomenCTCT folder, holding "
            "AbdomenCTCT_dataset.json)"
        )
    found = sorted(path.glob("*_dataset.json")) or sorted(path.glob("dataset.json"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise InputError(
            f"dataset_dir {path}: {what} Learn2Reg '*_dataset.json' in it (expected exactly one, e.g. "
            "AbdomenCTCT_dataset.json); give the right --dataset_dir"
        )
    return found[0]


def _resolve(root: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else (root / p).resolve()


def _require_files(paths: Sequence[Path], source: Path | str) -> None:
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise InputError(
            f"dataset {source}: {len(missing)} listed file(s) not found: {', '.join(missing[:3])}{more}; fix the list "
            "or restore the files"
        )


def learn2reg_pairs(data_dir: str | os.PathLike, split: str) -> list[dict[str, Any]]:
    """Pairs of a Learn2Reg dataset folder for ``split`` ("train", "val", "test"): dicts with absolute ``fixed``,
    ``moving`` and, when the label files exist, ``fixed_label`` and ``moving_label`` paths.

    Labels: the ``label`` of the image's ``training`` entry, else the challenge's convention (``images`` replaced by
    ``labels`` in the path).
    """
    json_path = find_learn2reg_json(data_dir)
    root = json_path.parent
    meta = read_json(json_path)
    if not isinstance(meta, Mapping):
        raise InputError(f"dataset JSON {json_path}: expected an object with 'training' and 'registration_val' lists")
    labels: dict[Path, Path | None] = {}
    for entry in meta.get("training", []):
        image = _resolve(root, entry["image"])
        labels[image] = _resolve(root, entry["label"]) if entry.get("label") else None
    val = [(_resolve(root, p["fixed"]), _resolve(root, p["moving"])) for p in meta.get("registration_val", [])]

    def label_of(image: Path) -> Path | None:
        label = labels.get(image)
        if label is not None and not label.is_file():
            raise InputError(f"dataset JSON {json_path}: the label map {label} of {image} is listed but not found; "
                             "restore it or remove the 'label' entry")  # fmt: skip
        if label is None:
            label = _resolve(root, str(Path(os.path.relpath(image, root))).replace("images", "labels"))
        return label if label.is_file() else None

    if split == "train":
        in_val = {p for pair in val for p in pair}
        images = [image for image in labels if image not in in_val]
        pairs = [(a, b) for a in images for b in images if a != b]  # ordered: both directions
        if not pairs:
            raise ValueError(f"{json_path}: fewer than 2 'training' images outside 'registration_val'")
    elif split in ("val", "test"):
        pairs = val
        if not pairs:
            raise ValueError(f"{json_path} has no 'registration_val' pairs for the {split!r} split")
    else:
        raise ValueError(f"unknown split {split!r}; choose one of {tuple(SPLIT_KEYS)}")
    _require_files(sorted({p for pair in pairs for p in pair}), json_path)
    out = []
    for fixed, moving in pairs:
        item: dict[str, Any] = {"fixed": fixed, "moving": moving}
        fl, ml = label_of(fixed), label_of(moving)
        if fl is not None and ml is not None:
            item.update(fixed_label=fl, moving_label=ml)
        out.append(item)
    return out


def pairs_file(source: str | os.PathLike) -> Path:
    path = Path(source)
    if path.is_dir():
        found = [path / n for n in ("pairs.json", "pairs.csv") if (path / n).is_file()]
        if not found:
            raise InputError(f"dataset_dir {path}: no pairs.json or pairs.csv in it (dataset 'pairs': give the file "
                             "or its folder)")  # fmt: skip
        return found[0]
    if not path.is_file():
        raise InputError(f"dataset_dir {path}: not found (dataset 'pairs': a JSON or CSV list of pairs, or its folder)")
    return path


def _pair_entry(entry: Any, root: Path, source: Path) -> dict[str, Any]:
    if isinstance(entry, (list, tuple)) and len(entry) == 2:
        entry = {"fixed": entry[0], "moving": entry[1]}
    if not isinstance(entry, Mapping) or not entry.get("fixed") or not entry.get("moving"):
        raise ValueError(f"{source}: a pair must be {{'fixed': ..., 'moving': ...}} or [fixed, moving], got {entry!r}")
    keys = ("fixed", "moving", "fixed_label", "moving_label", "fixed_seg")
    unknown = set(entry) - set(keys) - {"split"}
    if unknown:
        raise ValueError(f"{source}: unknown pair key(s) {sorted(unknown)}; expected {keys}")
    return {k: _resolve(root, str(entry[k])) for k in keys if entry.get(k)}


def read_pairs(source: str | os.PathLike, split: str) -> list[dict[str, Any]]:
    """Pairs of a plain JSON/CSV pair list for ``split`` (see the module docstring): dicts of absolute paths."""
    if split not in SPLIT_KEYS:
        raise ValueError(f"unknown split {split!r}; choose one of {tuple(SPLIT_KEYS)}")
    path = pairs_file(source)
    root = path.parent
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and not {"fixed", "moving"} <= set(rows[0]):
            raise ValueError(f"{path}: the CSV header needs 'fixed' and 'moving' columns, got {list(rows[0])}")
        entries = [r for r in rows if (r.get("split") or "").strip() in ("", *SPLIT_KEYS[split])]
        entries = [{k: v.strip() for k, v in r.items() if k and v and v.strip()} for r in entries]
    else:
        data = read_json(path, "pairs file")
        if isinstance(data, Mapping):
            unknown = set(data) - {k for keys in SPLIT_KEYS.values() for k in keys}
            if unknown:
                raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; expected train/val/test lists of pairs")
            entries = [e for key in SPLIT_KEYS[split] for e in data.get(key, [])]
        elif isinstance(data, list):
            entries = data
        else:
            raise ValueError(f"{path}: expected a list of pairs or a {{'train': [...], 'val': [...]}} object")
    pairs = [_pair_entry(e, root, path) for e in entries]
    if not pairs:
        raise ValueError(f"{path} lists no pair for the {split!r} split")
    _require_files(sorted({p for pair in pairs for p in pair.values()}), path)
    return pairs


def select_pairs(pairs: list, num_pairs: int | None, seed: int, shuffle: bool) -> list:
    """All pairs, or ``num_pairs`` of them: a seeded random subset (training) or the first ones."""
    if num_pairs is None or int(num_pairs) >= len(pairs):
        return pairs
    if int(num_pairs) < 1:
        raise ValueError(f"num_pairs must be >= 1 or null (all), got {num_pairs}")
    if not shuffle:
        return pairs[: int(num_pairs)]
    keep = np.sort(np.random.default_rng(seed).permutation(len(pairs))[: int(num_pairs)])
    return [pairs[i] for i in keep]
