"""The gamma sweep's table and plot (benchmarks/sweep_gamma.py) from evaluation summaries, without training."""

import json

import pytest

from benchmarks.sweep_gamma import collect, run_dir, sweep


def _summary(slip: float, rigidity: float) -> dict:
    def entry(v):
        return {"mean": v, "std": 0.0, "median": v}

    return {
        "pairs": 50,
        "slip_ratio": entry(slip),
        "epe_mean": entry(0.3),
        "rigidity_error": entry(rigidity),
        "mse": entry(1e-4),
        "folding_percent": entry(0.0),
    }


def test_table_and_plot_from_summaries(tmp_path, capsys):
    model = "rigidity_shearing_jacobian"
    values = {
        ("jacobian", "region"): {0.1: (0.8, 0.2), 1.0: (0.9, 0.1)},
        (model, "region"): {0.1: (0.85, 0.02), 1.0: (0.01, 0.0005)},
        (model, "volume"): {0.1: (0.9, 0.05), 1.0: (0.8, 0.01)},
    }
    preset, sweep_dir = tmp_path / "preset", tmp_path / "sweep"
    for (reg, weighting), by_gamma in values.items():
        for g, (slip, rig) in by_gamma.items():
            folder = run_dir(sweep_dir, g, reg, weighting, "synthetic_shearing", {0.1: str(preset)})
            (folder / "eval").mkdir(parents=True)
            (folder / "eval" / "summary.json").write_text(json.dumps(_summary(slip, rig)))
    # the preset runs serve gamma 0.1 for the baseline and the region weighting, not for the volume weighting
    assert (
        run_dir(sweep_dir, 0.1, model, "region", "synthetic_shearing", {0.1: str(preset)})
        == preset / f"synthetic_shearing_{model}"
    )
    assert (
        run_dir(sweep_dir, 0.1, model, "volume", "synthetic_shearing", {0.1: str(preset)})
        == sweep_dir / "volume" / f"gamma_0.1_{model}"
    )
    figure = tmp_path / "sweep.png"
    results = sweep(
        gammas=(0.1, 1.0), runs_dir=str(sweep_dir), reuse={0.1: str(preset)}, table_only=True, figure=str(figure)
    )
    assert results[f"{model} (region)"][1.0]["slip_ratio"]["mean"] == 0.01
    assert results[f"{model} (volume)"][1.0]["slip_ratio"]["mean"] == 0.8
    assert figure.stat().st_size > 10_000
    out = capsys.readouterr().out
    assert f"gamma 1: rigidity error 200.0x lower with {model} (region)" in out
    assert f"gamma 1: rigidity error 10.0x lower with {model} (volume)" in out


def test_missing_run_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="gamma_0.5_jacobian"):
        collect("synthetic_shearing", [0.5], tmp_path, {})
    with pytest.raises(SystemExit, match="weightings"):
        sweep(weightings=("voxel",), table_only=True)
