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


def _entry_value(entry: Any, key: str, where: str, expected: Mapping[str, str], optional: bool = False) -> Any:
    """``entry[key]`` of one entry of a list file; an :class:`InputError` naming the file and the entry (``where``),
    the keys found and the key expected (``expected``: every key of such an entry and an example value) when it is not
    an object or lacks ``key``."""
    example = "{" + ", ".join(f'"{k}": "{v}"' for k, v in expected.items()) + "}"
    if not isinstance(entry, Mapping):
        raise InputError(f"{where} is {entry!r}, not an object like {example}; fix the file")
    if entry.get(key) or optional:
        return entry.get(key)
    unknown = [k for k in entry if k not in expected]
    fix = f"rename {unknown[0]!r} to {key!r}" if len(unknown) == 1 and key not in entry else f"add the {key!r} path"
    found = f"the key(s) {sorted(map(str, entry))}" if entry else "no key"
    raise InputError(f"{where} has {found} but no {key!r} (expected {example}); {fix}")


def _entry_list(meta: Mapping, key: str, json_path: Path) -> list:
    value = meta.get(key, [])
    if not isinstance(value, list):
        raise InputError(f"dataset JSON {json_path}: {key!r} is a {type(value).__name__}, not a list; fix the file")
    return value


TRAINING_ENTRY = {"image": "./imagesTr/<name>_0000.nii.gz", "label": "./labelsTr/<name>_0000.nii.gz"}
PAIR_ENTRY = {"fixed": "./imagesTr/<fixed>.nii.gz", "moving": "./imagesTr/<moving>.nii.gz"}


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
    for i, entry in enumerate(_entry_list(meta, "training", json_path)):
        where = f"dataset JSON {json_path}: entry {i} of 'training'"
        image = _resolve(root, str(_entry_value(entry, "image", where, TRAINING_ENTRY)))
        label = _entry_value(entry, "label", where, TRAINING_ENTRY, optional=True)
        labels[image] = _resolve(root, str(label)) if label else None
    val = []
    for i, entry in enumerate(_entry_list(meta, "registration_val", json_path)):
        where = f"dataset JSON {json_path}: entry {i} of 'registration_val'"
        val.append(tuple(_resolve(root, str(_entry_value(entry, k, where, PAIR_ENTRY))) for k in ("fixed", "moving")))

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
            raise InputError(f"dataset JSON {json_path}: fewer than 2 'training' images outside 'registration_val'; "
                             "list more training images")  # fmt: skip
    elif split in ("val", "test"):
        pairs = val
        if not pairs:
            raise InputError(f"dataset JSON {json_path}: no 'registration_val' pairs for the {split!r} split; add "
                             'them as {"fixed": ..., "moving": ...}')  # fmt: skip
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


def _pair_entry(entry: Any, root: Path, source: Path, index: int) -> dict[str, Any]:
    if isinstance(entry, (list, tuple)) and len(entry) == 2:
        entry = {"fixed": entry[0], "moving": entry[1]}
    where = f"pairs file {source}: pair {index}"
    keys = ("fixed", "moving", "fixed_label", "moving_label", "fixed_seg")
    for key in ("fixed", "moving"):
        _entry_value(entry, key, where, {"fixed": "fixed.nii.gz", "moving": "moving.nii.gz"})
    unknown = set(entry) - set(keys) - {"split"}
    if unknown:
        raise InputError(f"{where} has the unknown key(s) {sorted(unknown)}; the keys are {', '.join(keys)} and split")
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
            raise InputError(f"pairs file {path}: the CSV header needs 'fixed' and 'moving' columns, got "
                             f"{list(rows[0])}; fix the header")  # fmt: skip
        entries = [r for r in rows if (r.get("split") or "").strip() in ("", *SPLIT_KEYS[split])]
        entries = [{k: v.strip() for k, v in r.items() if k and v and v.strip()} for r in entries]
    else:
        data = read_json(path, "pairs file")
        if isinstance(data, Mapping):
            unknown = set(data) - {k for keys in SPLIT_KEYS.values() for k in keys}
            if unknown:
                raise InputError(f"pairs file {path}: unknown key(s) {sorted(unknown)}; expected train/val/test lists "
                                 "of pairs")  # fmt: skip
            entries = [e for key in SPLIT_KEYS[split] for e in data.get(key, [])]
        elif isinstance(data, list):
            entries = data
        else:
            raise InputError(f"pairs file {path}: expected a list of pairs or a {{'train': [...], 'val': [...]}} "
                             "object; fix the file")  # fmt: skip
    pairs = [_pair_entry(e, root, path, i) for i, e in enumerate(entries)]
    if not pairs:
        raise InputError(f"pairs file {path}: no pair for the {split!r} split; add pairs to it")
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
