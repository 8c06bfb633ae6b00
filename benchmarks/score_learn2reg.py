"""Score a folder of Learn2Reg submissions as the challenge does (no challenge environment needed).

    python -m benchmarks.score_learn2reg SUBMISSIONS --dataset AbdomenCTCT [--split val] [--output scores.json]
    python -m benchmarks.score_learn2reg SUBMISSIONS --labels_dir AbdomenCTCT/labelsTr

With ``--dataset`` (a Learn2Reg folder or its ``<Task>_dataset.json``) the pairs are its ``registration_val`` (or
``registration_test``) list and the label maps the challenge's ``images`` -> ``labels`` paths. With ``--labels_dir``
the pairs are read from the submission file names and the label maps ``*_<case>_<modality>.nii.gz`` of that folder.
Either submission naming is accepted (``disp_FFFF_ffff_MMMM_mmmm`` or ``disp_FFFF_MMMM``, ``.nii.gz`` or ``.npz``).
Metrics: :func:`scripts.evaluation.learn2reg.score_submission` (DSC, HD95 in voxels, SDlogJ on the fixed grid). Prints
a table and writes the challenge's JSON layout (``aggregates`` with mean, std and "30" quantile, ``cases``). A missing
or malformed file: one ``error: ...`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from scripts.evaluation.learn2reg import accepted_names, grid_mismatch, parse_learn2reg_name, score_submission

METRICS = (("DSC", "dice"), ("HD95", "hd95"), ("LogJacDetStd", "sdlogj"))


class ScoreError(Exception):
    """A user-facing problem (missing file, bad dataset): printed as one line."""


def _dataset_pairs(dataset: str, split: str) -> tuple[list[tuple[Path, Path]], list[int] | None]:
    path = Path(dataset)
    if path.is_dir():
        found = sorted(path.glob("*_dataset.json")) or sorted(path.glob("dataset.json"))
        if len(found) != 1:
            raise ScoreError(f"{path}: expected one Learn2Reg '*_dataset.json', found {len(found)}")
        path = found[0]
    if not path.is_file():
        raise ScoreError(f"dataset {dataset} not found")
    meta = json.loads(path.read_text())
    key = f"registration_{split}"
    if not meta.get(key):
        raise ScoreError(f"{path} has no {key!r} pairs")
    root = path.parent

    def label(image: str) -> Path:
        return (root / image.replace("images", "labels")).resolve()

    pairs = [(label(p["fixed"]), label(p["moving"])) for p in meta[key]]
    labels = sorted(int(k) for k in meta.get("labels", {}) if str(k).isdigit() and int(k) != 0) or None
    return pairs, labels


def _labels_dir_pairs(submissions: Path, labels_dir: str) -> list[tuple[Path, Path]]:
    folder = Path(labels_dir)
    if not folder.is_dir():
        raise ScoreError(f"labels_dir {folder} not found")
    pairs = []
    for disp in sorted(submissions.iterdir()):
        m = re.fullmatch(r"disp_(\d{4})(?:_(\d{4}))?_(\d{4})(?:_(\d{4}))?\.(nii\.gz|npz)", disp.name)
        if not m:
            continue
        fc, fm, mc, mm = m.group(1), m.group(2) or "0000", m.group(3), m.group(4)

        def find(case: str, modalities: tuple[str, ...]) -> Path:
            for mod in modalities:
                hits = sorted(folder.glob(f"*_{case}_{mod}.nii.gz"))
                if hits:
                    return hits[0]
            raise ScoreError(f"no label map *_{case}_{modalities[0]}.nii.gz in {folder} (for {disp.name})")

        pairs.append((find(fc, (fm,)), find(mc, (mm,) if mm else ("0000", "0001"))))
    if not pairs:
        raise ScoreError(f"no disp_*.nii.gz / disp_*.npz submission in {submissions}")
    return pairs


def _find_submission(submissions: Path, fixed: Path, moving: Path) -> Path:
    stems = accepted_names(fixed, moving)
    for stem in stems:
        for ext in (".npz", ".nii.gz"):
            if (submissions / (stem + ext)).is_file():
                return submissions / (stem + ext)
    expected = " or ".join(s + ".nii.gz" for s in stems)
    raise ScoreError(f"missing submission for {fixed.name} <- {moving.name}: expected {expected} in {submissions}")


def _labels_of(fixed: Path, moving: Path) -> list[int]:
    import nibabel as nib

    values = set(np.unique(nib.load(str(fixed)).get_fdata()).tolist()) | set(
        np.unique(nib.load(str(moving)).get_fdata()).tolist()
    )
    return sorted(int(v) for v in values if v != 0)


def score_folder(
    submissions: str,
    dataset: str | None = None,
    labels_dir: str | None = None,
    split: str = "val",
    labels: list[int] | None = None,
    before: bool = False,
) -> dict[str, Any]:
    """The challenge's JSON (``name``, ``aggregates``, ``cases``) for a folder of submissions."""
    folder = Path(submissions)
    if not folder.is_dir():
        raise ScoreError(f"submission folder {folder} not found")
    if (dataset is None) == (labels_dir is None):
        raise ScoreError("give exactly one of --dataset and --labels_dir")
    if dataset is not None:
        pairs, dataset_labels = _dataset_pairs(dataset, split)
        labels = labels or dataset_labels
    else:
        pairs = _labels_dir_pairs(folder, labels_dir)
    for fixed, moving in pairs:
        for path in (fixed, moving):
            if not path.is_file():
                raise ScoreError(f"label map {path} not found")
    files = [_find_submission(folder, fixed, moving) for fixed, moving in pairs]  # all missing files before scoring
    cases, warnings = {}, []
    for (fixed, moving), disp in zip(pairs, files):
        warning = grid_mismatch(fixed, moving)
        if warning:
            warnings.append(warning)
        (fc, fm), (mc, mm) = parse_learn2reg_name(fixed), parse_learn2reg_name(moving)
        score = score_submission(disp, fixed, moving, labels or _labels_of(fixed, moving), before=before)
        case = {
            name: {"mean": score[key], "detailed": score.get(f"{key}_per_label", score[key])} for name, key in METRICS
        }
        if before:
            case["DSC_before"] = {"mean": score["dice_before"], "detailed": score["dice_before_per_label"]}
            case["HD95_before"] = {"mean": score["hd95_before"], "detailed": score["hd95_before_per_label"]}
        case["file"] = disp.name
        cases[f"{fc}_{fm}<--{mc}_{mm}"] = case
    aggregates = {}
    for name in [n for n, _ in METRICS] + (["DSC_before", "HD95_before"] if before else []):
        values = np.array([c[name]["mean"] for c in cases.values()], dtype=np.float64)
        q = 0.7 if name == "LogJacDetStd" else 0.3  # the challenge's "30" column
        aggregates[name] = {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "30": float(np.quantile(values, q)),
        }
    return {"name": folder.name, "aggregates": aggregates, "cases": cases, "warnings": warnings}


def format_table(result: dict[str, Any]) -> str:
    names = list(result["aggregates"])
    fmt = "{:<24}" + " {:>12}" * len(names)
    lines = [fmt.format("pair", *names)]
    for pair, case in result["cases"].items():
        lines.append(fmt.format(pair, *[f"{case[n]['mean']:.5f}" for n in names]))
    for stat in ("mean", "std", "30"):
        lines.append(fmt.format(stat, *[f"{result['aggregates'][n][stat]:.5f}" for n in names]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", help="folder of disp_*.nii.gz / disp_*.npz files")
    parser.add_argument("--dataset", help="Learn2Reg folder or <Task>_dataset.json (pairs and labels)")
    parser.add_argument("--labels_dir", help="folder of label maps (pairs from the submission names)")
    parser.add_argument("--split", default="val", choices=("val", "test"), help="registration_<split> pairs")
    parser.add_argument("--labels", help="label ids, comma separated (default: the dataset's, else those present)")
    parser.add_argument("--before", action="store_true", help="also score the zero field (unregistered pair)")
    parser.add_argument("--output", default=None, help="JSON file (default: <submissions>/scores.json)")
    args = parser.parse_args(argv)
    try:
        labels = [int(v) for v in args.labels.split(",")] if args.labels else None
        result = score_folder(args.submissions, args.dataset, args.labels_dir, args.split, labels, args.before)
    except (ScoreError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(format_table(result))
    output = Path(args.output) if args.output else Path(args.submissions) / "scores.json"
    output.write_text(json.dumps(result, indent=2))
    print(f"scores written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
