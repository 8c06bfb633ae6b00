"""Sweep of the regulariser weight gamma on a synthetic set: slip ratio, endpoint error and rigidity error of the
Jacobian-only baseline and of the full model (with the paper's region-mean weighting of the regulariser terms and
with the volume weighting, ``--regulariser_weighting``) at each gamma, as a table and a plot.

For each gamma it trains through the real bundle command (CPU preset of ``configs/train.json`` unless ``--overrides``
says otherwise) and evaluates (``configs/evaluate.json``: ``eval/summary.json`` with the known-motion columns):

- the baseline (``jacobian``; both weightings are the same for it) into ``<runs_dir>/gamma_<g>_jacobian``;
- the full model into ``<runs_dir>/gamma_<g>_<model>`` (region weighting) and ``<runs_dir>/volume/gamma_<g>_<model>``;

then prints the table and draws slip ratio, endpoint error and rigidity error against gamma::

    python -m benchmarks.sweep_gamma --gammas "[0.02, 0.1, 0.5, 2.0]"               # train, evaluate, plot
    python -m benchmarks.sweep_gamma --gammas "[0.02, 0.1, 0.5, 2.0]" --table_only  # from existing summaries
    python -m benchmarks.sweep_gamma --reuse "{0.02: 'runs'}" ...   # gamma 0.02, region: runs/<dataset>_<reg>

A run whose ``eval/summary.json`` exists is not trained again (delete it to redo it).
"""

from __future__ import annotations

import json
from pathlib import Path

import fire

from benchmarks.reproduce_synthetic import BUNDLE_ROOT, MODELS, _bundle

COLUMNS = ("slip_ratio", "epe_mean", "rigidity_error", "mse", "folding_percent")
WEIGHTINGS = ("region", "volume")


def variants(dataset: str, weightings: tuple[str, ...] = WEIGHTINGS) -> list[tuple[str, str]]:
    """(regulariser, weighting) of the curves: the baseline, then the full model per weighting."""
    return [("jacobian", "region")] + [(MODELS[dataset], w) for w in weightings]


def label(regulariser: str, weighting: str) -> str:
    return regulariser if regulariser == "jacobian" else f"{regulariser} ({weighting})"


def run_dir(runs_dir: Path, gamma: float, regulariser: str, weighting: str, dataset: str, reuse: dict) -> Path:
    """Where the run lives (module docstring); for a gamma in ``reuse`` (region weighting and the baseline only):
    ``<reuse[gamma]>/<dataset>_<regulariser>``, the preset runs of :mod:`benchmarks.reproduce_synthetic`."""
    if weighting == "region" or regulariser == "jacobian":
        for key, folder in reuse.items():
            if abs(float(key) - gamma) < 1e-12:
                return Path(folder) / f"{dataset}_{regulariser}"
        return runs_dir / f"gamma_{gamma:g}_{regulariser}"
    return runs_dir / weighting / f"gamma_{gamma:g}_{regulariser}"


def collect(dataset: str, gammas: list[float], runs_dir: Path, reuse: dict, weightings=WEIGHTINGS) -> dict:
    """{curve label: {gamma: summary}} from the runs' ``eval/summary.json``."""
    out: dict = {}
    for reg, weighting in variants(dataset, tuple(weightings)):
        curve = out.setdefault(label(reg, weighting), {})
        for g in gammas:
            path = run_dir(runs_dir, g, reg, weighting, dataset, reuse) / "eval" / "summary.json"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run without --table_only first")
            curve[g] = json.loads(path.read_text())
    return out


def _value(summary: dict, key: str, stat: str = "mean") -> float:
    value = (summary.get(key) or {}).get(stat)
    return float("nan") if value is None else float(value)


def print_table(results: dict, dataset: str) -> None:
    print(f"\n{dataset}: mean (median) over the test pairs")
    print(f"{'regulariser':<38}{'gamma':>8}" + "".join(f"{c:>22}" for c in COLUMNS))
    for name, by_gamma in results.items():
        for g, s in by_gamma.items():
            cells = "".join(f"{_value(s, c):>12.4f} ({_value(s, c, 'median'):.4f})" for c in COLUMNS)
            print(f"{name:<38}{g:>8g}{cells}")
    base, *models = results
    for model in models:
        for g in results[base]:
            ratio = _value(results[base][g], "rigidity_error") / max(_value(results[model][g], "rigidity_error"), 1e-12)
            print(f"gamma {g:g}: rigidity error {ratio:.1f}x lower with {model}")


def plot(results: dict, path: Path) -> Path:
    """Slip ratio (median, mean dashed), endpoint error and rigidity error (means) against gamma (log scales)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, by_gamma in results.items():
        gammas = sorted(by_gamma)
        (line,) = axes[0].plot(gammas, [_value(by_gamma[g], "slip_ratio", "median") for g in gammas], "o-", label=name)
        axes[0].plot(gammas, [_value(by_gamma[g], "slip_ratio") for g in gammas], "--", color=line.get_color())
        axes[1].plot(gammas, [_value(by_gamma[g], "epe_mean") for g in gammas], "o-", label=name)
        axes[2].plot(gammas, [_value(by_gamma[g], "rigidity_error") for g in gammas], "o-", label=name)
    axes[0].axhline(0.7, color="gray", linewidth=0.6)
    axes[0].axhline(0.5, color="gray", linewidth=0.6, linestyle=":")
    axes[0].set_ylabel("slip ratio (median; mean dashed)")
    axes[1].set_ylabel("endpoint error in the boxes, mm (mean)")
    axes[2].set_ylabel("rigidity error (mean)")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("gamma")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def sweep(
    gammas: tuple[float, ...] = (0.02, 0.1, 0.5, 2.0),
    dataset: str = "synthetic_shearing",
    runs_dir: str = str(BUNDLE_ROOT / "runs" / "sweep"),
    weightings: tuple[str, ...] = WEIGHTINGS,
    reuse: dict | None = None,
    overrides: tuple[str, ...] = (),
    table_only: bool = False,
    figure: str = str(BUNDLE_ROOT / "docs" / "figures" / "gamma_sweep.png"),
) -> dict:
    """Train/evaluate (unless ``table_only``) every curve at each gamma, print the table, draw the plot."""
    if dataset not in MODELS:
        raise SystemExit(f"error: dataset must be one of {sorted(MODELS)}, got {dataset!r}")
    if not set(weightings) <= set(WEIGHTINGS):
        raise SystemExit(f"error: weightings must be among {WEIGHTINGS}, got {list(weightings)}")
    gammas = [float(g) for g in gammas]
    root, reuse = Path(runs_dir).resolve(), reuse or {}
    if not table_only:
        for g in gammas:
            for reg, weighting in variants(dataset, tuple(weightings)):
                out = run_dir(root, g, reg, weighting, dataset, reuse)
                if (out / "eval" / "summary.json").is_file():
                    continue
                args = ["--dataset", dataset, "--regulariser", reg, "--gamma", str(g), "--output_dir", str(out)]
                args += ["--regulariser_weighting", weighting, *overrides]
                _bundle("training", ["train.json"], args)
                _bundle("evaluating", ["train.json", "evaluate.json"], args)
    results = collect(dataset, gammas, root, reuse, weightings)
    print_table(results, dataset)
    print(f"plot: {plot(results, Path(figure))}")
    return results


def main(**kwargs) -> None:
    """Command line: the arguments of :func:`sweep`."""
    sweep(**kwargs)


if __name__ == "__main__":
    fire.Fire(main)
