"""The bundle's real commands: a tiny training through `python -m monai.bundle run training`, then evaluation."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_cli import bundle, epoch_metric

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--image_size",
    "[16,16,16]",
    "--channels",
    "[8,16,32]",
    "--strides",
    "[2,2]",
    "--num_train_pairs",
    "32",
    "--num_val_pairs",
    "4",
    "--num_test_pairs",
    "8",
    "--batch_size",
    "4",
    "--val_interval",
    "2",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained on the rigid set (16^3), from a folder that is not the bundle root."""
    root = tmp_path_factory.mktemp("bundle")
    log = bundle("training", ["train.json"], "--bundle_root", str(root), "--epochs", "6", *TINY, cwd=root)
    return root, log


@pytest.mark.slow
def test_training_runs_and_loss_goes_down(trained):
    root, log = trained
    totals = epoch_metric(log, "train_total")
    assert len(totals) == 6, log[-3000:]
    assert totals[-1] < 0.8 * totals[0]
    run_dir = root / "runs" / "synthetic_rigid_rigidity_jacobian"
    assert (run_dir / "model.pt").is_file()
    assert (run_dir / "last_checkpoint_epoch=6.pt").is_file()
    assert list(run_dir.glob("events.out.tfevents.*")), "TensorBoard logs missing"
    assert epoch_metric(log, "val_rigidity_error"), "validation metrics missing"


@pytest.mark.slow
def test_evaluation_writes_reports_and_trained_model_beats_identity(trained):
    root, _ = trained
    bundle("evaluating", ["train.json", "evaluate.json"], "--bundle_root", str(root), *TINY)
    eval_dir = root / "runs" / "synthetic_rigid_rigidity_jacobian" / "eval"
    summary = json.loads((eval_dir / "summary.json").read_text())
    assert summary["pairs"] == 8
    assert summary["mse"]["mean"] < 0.8 * summary["mse_before"]["mean"]
    assert summary["dice"]["mean"] > summary["dice_before"]["mean"]
    assert summary["folding_percent"]["mean"] < 0.5
    assert summary["rigidity_error"]["mean"] >= 0
    # the known motion (rigid bar) is reported: endpoint error inside the bar (the tiny model aligns the intensities,
    # not the inside of the uniform bar, so it is not asserted to improve here; tests/test_motion_metrics.py checks
    # the values on analytic fields)
    assert summary["epe_mean_before"]["mean"] > 0.5
    assert 0.0 < summary["epe_mean"]["mean"] <= summary["epe_p95"]["mean"]
    rows = (eval_dir / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("pair,mse_before,mse") and len(rows) == 9
    assert (eval_dir / "pair_000.png").stat().st_size > 10_000


def test_unknown_dataset_regulariser_and_field_weighting_are_one_error_line(tmp_path):
    cases = (
        ("--dataset", "unknown dataset"),
        ("--regulariser", "mode must be one of"),
        ("--field_weighting", "error: field_weighting must be one of ('voxel', 'region'), got 'nonsense'"),
    )
    for override, expected in cases:
        cmd = [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "training",
            "--config_file",
            str(BUNDLE_ROOT / "configs" / "train.json"),
            "--bundle_root",
            str(tmp_path),
            override,
            "nonsense",
            "--epochs",
            "1",
            *TINY,
        ]
        proc = subprocess.run(cmd, cwd=BUNDLE_ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0
        assert expected in proc.stdout + proc.stderr
        # one error line, no traceback, nothing written
        assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in proc.stderr
        assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_training_starts_from_init_ckpt_and_a_resume_keeps_its_own_weights(trained, tmp_path):
    """--init_ckpt loads a trained model's weights before the first step (with a zero learning rate the run ends with
    them unchanged); a resumed run continues from its own last checkpoint, not from --init_ckpt; a missing or foreign
    file is one error line before any work."""
    import torch

    root, _ = trained
    init = root / "runs" / "synthetic_rigid_rigidity_jacobian" / "model.pt"
    start = torch.load(init, weights_only=True)

    def weights(folder, epoch):
        return torch.load(folder / f"last_checkpoint_epoch={epoch}.pt", weights_only=False)["model"]

    def distance(a, b):  # over the learnt parameters (BatchNorm's running statistics move at any learning rate)
        return sum(float((a[k] - b[k]).abs().sum()) for k in b if b[k].dtype.is_floating_point and "running" not in k)

    frozen = tmp_path / "frozen"
    log = bundle("training", ["train.json"], "--bundle_root", str(root), "--output_dir", str(frozen), "--init_ckpt",
                 str(init), "--epochs", "1", "--learning_rate", "0.0", *TINY)  # fmt: skip
    assert f"Restored all variables from {init}" in log
    assert distance(weights(frozen, 1), start) == 0.0, "the run did not start from --init_ckpt"
    resumed = tmp_path / "resumed"
    bundle("training", ["train.json"], "--bundle_root", str(root), "--output_dir", str(resumed), "--epochs", "1", *TINY)
    own = weights(resumed, 1)
    bundle("training", ["train.json"], "--bundle_root", str(root), "--output_dir", str(resumed), "--init_ckpt",
           str(init), "--resume", "true", "--epochs", "2", *TINY)  # fmt: skip
    after = weights(resumed, 2)
    assert distance(after, own) < 0.5 * distance(after, start), (distance(after, own), distance(after, start))
    for bad, expected in (
        (tmp_path / "none.pt", "give --init_ckpt"),
        (BUNDLE_ROOT / "models" / "model_ct.pt", "channels"),
    ):
        cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
               str(BUNDLE_ROOT / "configs" / "train.json"), "--bundle_root", str(root), "--output_dir",
               str(tmp_path / "bad"), "--init_ckpt", str(bad), "--epochs", "1", *TINY]  # fmt: skip
        proc = subprocess.run(cmd, cwd=BUNDLE_ROOT, capture_output=True, text=True, timeout=300)
        log = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "error:" in log and expected in log and "Traceback" not in log, log[-2000:]
        assert not (tmp_path / "bad").exists()  # checked before any work: no folder, no TensorBoard file
