"""Multi-process (DDP, gloo on CPU) training, crash-safe resume and determinism (marked slow: real training runs).

Every run is the real command line (``python -m monai.bundle run ...``, ``torchrun ... -m monai.bundle run ...``) on a
tiny configuration (16³ images, 8 training and 4 validation pairs, channels [4, 8, 16]), with ``bundle_root`` in a
temporary folder and the configs of the repository. Runs that do not depend on each other start together (two cores).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # every test here runs real training commands

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # _helpers_resume
SCHEMA = REPO.parent / "shared" / "schema" / "meta_schema_20240725.json"
TINY = [
    "--epochs", "2", "--num_train_pairs", "8", "--num_val_pairs", "4", "--batch_size", "4", "--val_interval", "1",
    "--image_size", "[16,16,16]", "--channels", "[4,8,16]", "--strides", "[2,2]",
]  # fmt: skip
ITERATIONS_PER_EPOCH = 2  # 8 pairs / batch 4, one process
TIMEOUT = 170


def _env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # one thread per process: 2 cores, and ~10x faster than oversubscribed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), str(REPO), env.get("PYTHONPATH", "")]))
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _bundle_cmd(configs: list, root: Path, *args: str, nproc: int = 0) -> list[str]:
    launcher = [sys.executable]
    if nproc:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}"]
    files = repr([str(c) for c in configs])
    return [*launcher, "-m", "monai.bundle", "run", "training", "--config_file", files, "--bundle_root", str(root)] + [
        *TINY,
        *args,
    ]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    handle = open(log, "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=handle, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    handle.close()
    return proc


def _finish(proc: subprocess.Popen, expect_rc: int = 0) -> str:
    try:
        rc = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    text = proc.log.read_text()  # type: ignore[attr-defined]
    assert rc == expect_rc, f"exit status {rc} (expected {expect_rc}) of {proc.args}:\n{text[-6000:]}"
    return text


def _run_dir(root: Path) -> Path:
    """@output_dir = <bundle_root>/runs/<dataset>_<regulariser>: the one folder there."""
    folders = [p for p in (root / "runs").iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def _load_all(folder: Path) -> dict[str, dict]:
    """Every .pt file of the folder, loaded with weights_only=True (a truncated file raises)."""
    return {p.name: torch.load(p, weights_only=True) for p in sorted(folder.glob("*.pt"))}


def _assert_same(a, b, where: str = "") -> None:
    """Bit-for-bit equality of nested checkpoint contents."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"differs at {where}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"keys differ at {where}: {list(a)} vs {list(b)}"
        for key in a:
            _assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"lengths differ at {where}"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"differs at {where}: {a!r} vs {b!r}"


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard scalars of every event file of the folder: tag -> [(step, value), ...] in file order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Straight run A, identical run A2, and run B killed (SIGKILL) mid-epoch 2 and then resumed with --resume true."""
    base = tmp_path_factory.mktemp("resume")
    kill = base / "kill.json"
    kill.write_text(
        '{"+train#handlers": [{"_target_": "_helpers_resume.KillAtIteration", "iteration": %d}]}'
        % (ITERATIONS_PER_EPOCH + 1)
    )
    train = REPO / "configs" / "train.json"
    procs = {
        "a": _start(_bundle_cmd([train], base / "a"), base / "a.log"),
        "a2": _start(_bundle_cmd([train], base / "a2"), base / "a2.log"),
        "b": _start(_bundle_cmd([train, kill], base / "b"), base / "b.log"),
    }
    logs = {"b": _finish(procs.pop("b"), expect_rc=-signal.SIGKILL)}
    folder_b = _run_dir(base / "b")
    after_kill = {"files": sorted(p.name for p in folder_b.iterdir()), "checkpoints": _load_all(folder_b)}
    resumed = _start(_bundle_cmd([train], base / "b", "--resume", "true"), base / "b_resumed.log")
    logs.update({name: _finish(proc) for name, proc in procs.items()})
    logs["b_resumed"] = _finish(resumed)
    return {"base": base, "logs": logs, "after_kill": after_kill}


def test_determinism_same_seed_same_curve(runs):
    """Same seed and config on CPU: identical loss curve (every iteration and epoch) and bit-identical final weights."""
    a, a2 = (_run_dir(runs["base"] / name) for name in ("a", "a2"))
    scalars_a, scalars_a2 = _scalars(a), _scalars(a2)
    assert len(scalars_a["train_loss"]) == 2 * ITERATIONS_PER_EPOCH
    assert [s for s, _ in scalars_a["train_total"]] == [1, 2]
    for tag in ("train_loss", "train_total", "val_mse"):
        assert scalars_a[tag] == scalars_a2[tag], tag
    _assert_same(_load_all(a), _load_all(a2))


def test_kill_leaves_loadable_checkpoints_and_resume_matches_straight_run(runs):
    after_kill = runs["after_kill"]
    # killed after iteration 3 (mid-epoch 2): the epoch-1 checkpoint is there, complete; no temporary file left
    assert set(after_kill["checkpoints"]) == {"last_checkpoint_epoch=1.pt", "model.pt"}, after_kill["files"]
    assert after_kill["checkpoints"]["last_checkpoint_epoch=1.pt"]["trainer"]["iteration"] == ITERATIONS_PER_EPOCH
    assert not [f for f in after_kill["files"] if f.startswith("tmp")], after_kill["files"]

    log = runs["logs"]["b_resumed"]
    assert "Resumed from last_checkpoint_epoch=1.pt: epoch 1, iteration 2, continuing to epoch 2" in log
    straight, resumed = (_load_all(_run_dir(runs["base"] / name)) for name in ("a", "b"))
    # the resumed run ends at the same epoch/iteration, and (epoch-seeded shuffling) with the same weights, optimizer
    # and scheduler state, best metric and best model as the uninterrupted run; the checkpoint it resumed from is gone
    assert set(resumed) == set(straight) == {"last_checkpoint_epoch=2.pt", "model.pt"}
    assert dict(resumed["last_checkpoint_epoch=2.pt"]["trainer"])["iteration"] == 2 * ITERATIONS_PER_EPOCH
    _assert_same(straight, resumed)

    # the metric logs continue: epoch 1 from the killed run, epoch 2 from the resumed one, equal to the straight run
    scalars_a, scalars_b = (_scalars(_run_dir(runs["base"] / name)) for name in ("a", "b"))
    for tag in ("train_total", "val_mse"):
        assert scalars_b[tag] == scalars_a[tag], tag


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path):
    """SIGKILL half-way through writing a checkpoint: no truncated .pt, and the previous checkpoint is still there."""
    import multiprocessing

    from _helpers_resume import kill_during_save

    from scripts.io.checkpoints import latest_checkpoint

    # spawn, not fork: forking a process whose torch/OpenMP threads already ran (earlier tests) can deadlock the child
    child = multiprocessing.get_context("spawn").Process(target=kill_during_save, args=(str(tmp_path),))
    child.start()
    child.join(TIMEOUT)
    assert child.exitcode == -signal.SIGKILL
    checkpoints = _load_all(tmp_path)
    assert list(checkpoints) == ["last_checkpoint_epoch=1.pt"]
    assert torch.equal(checkpoints["last_checkpoint_epoch=1.pt"]["model"]["w"], torch.arange(200_000.0))
    assert latest_checkpoint(tmp_path).name == "last_checkpoint_epoch=1.pt"


def test_resume_without_checkpoint(tmp_path):
    """resume=True with an empty folder fails early, naming the folder; resume='auto' starts afresh."""
    from ignite.engine import Engine

    from scripts.io.checkpoints import ResumeCheckpointLoader
    from scripts.io.errors import InputError

    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    with pytest.raises(InputError, match=str(tmp_path)):  # when built, before anything else is built or written
        ResumeCheckpointLoader(tmp_path, {"model": net}, resume=True)
    auto = ResumeCheckpointLoader(tmp_path, {"model": net}, resume="auto")
    auto.attach(engine)
    engine.run([0, 1], max_epochs=1)
    assert engine.state.epoch == 1
    with pytest.raises(ValueError, match="resume"):
        ResumeCheckpointLoader(tmp_path, {"model": net}, resume="yes")


def test_multi_gpu_config_two_processes_gloo(runs, tmp_path):
    """torchrun, 2 processes on CPU (gloo), resuming the single-process run A (2 epochs) for a 3rd epoch.

    Both processes finish with identical weights; the resume works across world sizes (A had 2 iterations per
    epoch, each process here has 1); logging, validation output and checkpoints come from rank 0 only.
    """
    shutil.copytree(runs["base"] / "a", tmp_path / "root")
    extra = tmp_path / "save_rank_weights.json"
    extra.write_text(
        '{"+finalize": ["$torch.save(@network.module.state_dict(), '
        "os.path.join(@output_dir, 'final_rank' + os.environ['RANK'] + '.weights'))\"]}"
    )
    configs = [REPO / "configs" / "train.json", REPO / "configs" / "multi_gpu_train.json", extra]
    cmd = _bundle_cmd(configs, tmp_path / "root", "--epochs", "3", "--resume", "true", nproc=2)
    log = _finish(_start(cmd, tmp_path / "ddp.log"))
    assert log.count("Resumed from last_checkpoint_epoch=2.pt") == 1, log[-4000:]  # rank 0 logs at INFO level
    folder = _run_dir(tmp_path / "root")
    rank0, rank1 = (torch.load(folder / f"final_rank{r}.weights", weights_only=True) for r in (0, 1))
    params = [name for name, _ in _backbone_like(rank0).named_parameters()]
    assert params and all(torch.equal(rank0[name], rank1[name]) for name in params)
    # the checkpoint (rank 0 only, backbone unwrapped from DDP) holds the same weights, trained further than A's
    checkpoints = _load_all(folder)
    assert set(checkpoints) == {"last_checkpoint_epoch=3.pt", "model.pt"}
    saved = checkpoints["last_checkpoint_epoch=3.pt"]
    assert all(torch.equal(saved["model"][name], rank0[name]) for name in params)
    before = _load_all(_run_dir(runs["base"] / "a"))["last_checkpoint_epoch=2.pt"]
    assert not all(torch.equal(saved["model"][name], before["model"][name]) for name in params)
    # 8 pairs over 2 ranks, batch 4: one iteration per epoch and process (iterations renumbered as epoch * 1)
    assert dict(saved["trainer"])["iteration"] == 3
    # validation ran on both ranks (metrics all-gathered across them), logged once by rank 0
    assert log.count("Key metric: val_mse best value") == 1, log[-4000:]
    assert log.count("Saved checkpoint at epoch") == 1


def _backbone_like(state: dict) -> torch.nn.Module:
    """The tiny AttentionUnet of TINY, to tell parameters from buffers in a state_dict."""
    from monai.networks.nets import AttentionUnet

    net = AttentionUnet(spatial_dims=3, in_channels=2, out_channels=3, channels=[4, 8, 16], strides=[2, 2])
    net.load_state_dict(state)
    return net


def test_best_model_not_overwritten_after_resume(tmp_path):
    """The key-metric file follows the evaluator's best (restored on resume), not Ignite's (empty) saved scores."""
    from ignite.engine import Engine

    from scripts.io.checkpoints import AtomicCheckpointSaver, BestMetricState

    net = torch.nn.Linear(2, 2)
    evaluator = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True, key_metric_filename="model.pt",
        key_metric_negative_sign=True,
    )  # fmt: skip
    BestMetricState(evaluator).load_state_dict({"best_metric": 0.1, "best_metric_epoch": 1})  # as after a resume
    evaluator.state.key_metric_name = "val_mse"
    evaluator.state.metrics, evaluator.state.epoch = {"val_mse": 0.3}, 2
    saver.metrics_completed(evaluator)  # worse than the best before the interruption: keep the old best model
    assert not (tmp_path / "model.pt").exists()
    evaluator.state.best_metric, evaluator.state.best_metric_epoch = 0.05, 3  # the evaluator recorded a new best
    evaluator.state.metrics, evaluator.state.epoch = {"val_mse": 0.05}, 3
    saver.metrics_completed(evaluator)
    assert set(torch.load(tmp_path / "model.pt", weights_only=True)) == set(net.state_dict())
    assert BestMetricState(evaluator).state_dict() == {"best_metric": 0.05, "best_metric_epoch": 3}
