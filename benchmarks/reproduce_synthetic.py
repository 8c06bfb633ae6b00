"""Reproduce the paper's synthetic comparison (Tables 1-2): baseline vs biomechanical regulariser.

For each synthetic set, trains the Jacobian-only baseline and the biomechanical model with the same
settings through the real bundle commands, evaluates both on the test split and prints the table::

    python -m benchmarks.reproduce_synthetic                       # both sets, CPU preset
    python -m benchmarks.reproduce_synthetic --sets "['synthetic_rigid']" --overrides "['--epochs','5']"
    python -m benchmarks.reproduce_synthetic --table_only          # re-print from existing summaries

Runs land in ``<bundle_root>/runs/<dataset>_<regulariser>/`` (``eval/summary.json`` per run).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import fire

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
# the regulariser of the full model for each set (baseline: "jacobian")
MODELS = {"synthetic_rigid": "rigidity_jacobian", "synthetic_shearing": "rigidity_shearing_jacobian"}
# epe_* and slip_ratio: scripts/motion_metrics.known_motion_metrics (issue 12), "-" in summaries without them
COLUMNS = (
    "mse",
    "rigidity_error",
    "folding_percent",
    "std_log_jacobian",
    "dice",
    "ncc",
    "epe_mean",
    "epe_p95",
    "slip_ratio",
)


def _bundle(run_id: str, configs: list[str], args: list[str]) -> float:
    config_file = "[" + ",".join(f"'{BUNDLE_ROOT / 'configs' / c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config_file, *args]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=BUNDLE_ROOT, check=True)
    return time.perf_counter() - start


def _summary(bundle_root: Path, dataset: str, regulariser: str) -> dict:
    path = bundle_root / "runs" / f"{dataset}_{regulariser}" / "eval" / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run without --table_only first")
    return json.loads(path.read_text())


def _cell(summary: dict, key: str) -> str:
    value = summary.get(key)
    return f"{value['mean']:>11.5f} ({value['std']:.4f})" if value and value["mean"] is not None else f"{'-':>20}"


def print_table(bundle_root: Path, sets: list[str], minutes: dict | None = None) -> None:
    """Print mean (std) test metrics of baseline and model for each set, and the rigidity error ratio."""
    minutes = minutes or {}
    for dataset in sets:
        model = MODELS[dataset]
        runs = {reg: _summary(bundle_root, dataset, reg) for reg in ("jacobian", model)}
        before = {c: runs["jacobian"].get(f"{c}_before") for c in COLUMNS}
        print(f"\n{dataset}: {runs['jacobian']['pairs']} test pairs, mean (std)")
        print(f"{'regulariser':<28}" + "".join(f"{c:>20}" for c in COLUMNS) + f"{'train min':>11}")
        print(f"{'before registration':<28}" + "".join(_cell(before, c) for c in COLUMNS))
        for reg, summary in runs.items():
            took = minutes.get((dataset, reg))
            print(f"{reg:<28}" + "".join(_cell(summary, c) for c in COLUMNS) + (f"{took:>11.1f}" if took else ""))
        ratio = runs["jacobian"]["rigidity_error"]["mean"] / max(runs[model]["rigidity_error"]["mean"], 1e-12)
        mse_ratio = runs[model]["mse"]["mean"] / max(runs["jacobian"]["mse"]["mean"], 1e-12)
        print(f"rigidity error {ratio:.1f}x lower with {model}; MSE ratio (model / baseline) {mse_ratio:.2f}")


def main(
    sets: tuple[str, ...] = ("synthetic_rigid", "synthetic_shearing"),
    bundle_root: str = str(BUNDLE_ROOT),
    overrides: tuple[str, ...] = (),
    table_only: bool = False,
) -> None:
    """Train and evaluate baseline and model on each set, then print the comparison table."""
    root = Path(bundle_root).resolve()
    minutes = {}
    if not table_only:
        for dataset in sets:
            for reg in ("jacobian", MODELS[dataset]):
                args = ["--bundle_root", str(root), "--dataset", dataset, "--regulariser", reg, *overrides]
                minutes[(dataset, reg)] = _bundle("training", ["train.json"], args) / 60
                _bundle("evaluating", ["train.json", "evaluate.json"], args)
    print_table(root, list(sets), minutes)


if __name__ == "__main__":
    fire.Fire(main)
