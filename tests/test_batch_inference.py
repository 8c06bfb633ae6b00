"""Batch registration (scripts/inference/batch.py, configs/multi_gpu_inference.json): the pairs sharded across
processes (torchrun, gloo on CPU), one summary gathered on rank 0, and ``--resume true`` after a kill.

Eight small pairs (20 x 20 x 16 voxels) and the shipped model. The reference is one in-process run; the killed runs
and the 2-process runs are the real command lines (``python -m monai.bundle run inference``, ``torchrun ... -m
monai.bundle run inference``). A kill is :class:`_helpers_batch.KillDuringRename`: SIGKILL right after an output image
is renamed into place, so the pair being written is left partial (some outputs in place, the others in temporary
files, no record). The torchrun tests are marked slow: each run starts two processes that import torch and MONAI
(10-15 s a run on two shared cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.inference.batch import complete_entry, expected_outputs, record_path, write_record

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
N_PAIRS = 8
SHAPE = (20, 20, 16)
PER_PAIR = 3  # output images per pair without label maps: ddf, det J, warped image
NAMES = [f"p{i}_fixed__p{i}_moving" for i in range(N_PAIRS)]
TIMING = ("seconds", "seconds_postprocess", "outputs")  # entry keys that differ between runs or folders
TIMEOUT = 300


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), str(REPO), env.get("PYTHONPATH", "")]))
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "BIOMECH_DEBUG"):
        env.pop(key, None)
    return env


def _run(pairs: Path, out: Path, *extra: str, nproc: int = 0, configs: tuple = (), expect_rc: int = 0) -> str:
    """The bundle's inference command (torchrun with ``nproc`` processes) on the folder ``pairs``; returns the log."""
    launcher = [sys.executable]
    if nproc:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}"]
    files = [str(REPO / "configs" / "inference.json")]
    files += [str(REPO / "configs" / "multi_gpu_inference.json")] if nproc else []
    files += [str(c) for c in configs]
    cmd = [*launcher, "-m", "monai.bundle", "run", "inference", "--config_file", repr(files)]
    cmd += ["--bundle_root", str(REPO), "--dataset_dir", str(pairs), "--output_dir", str(out), "--torch_threads", "1"]
    cmd += list(extra)
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == expect_rc, f"exit status {proc.returncode}, expected {expect_rc}:\n{log[-6000:]}"
    return log


def _kill_override(folder: Path, renames: int, rank: int) -> Path:
    path = folder / f"kill_rank{rank}_after_{renames}.json"
    handler = {"_target_": "_helpers_batch.KillDuringRename", "renames": renames, "rank": rank}
    path.write_text(json.dumps({"+handlers": [handler]}))
    return path


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """Eight pairs of Gaussian blobs, the moving one shifted by ~1.5 voxels."""
    folder = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1).astype(np.float32)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    for i in range(N_PAIRS):
        centre = np.array(SHAPE) / 2 + rng.normal(0, 2, 3)
        for role, shift in (("fixed", 0.0), ("moving", rng.normal(0, 1.5, 3))):
            image = np.exp(-(((grid - centre - shift) / (np.array(SHAPE) / 5)) ** 2).sum(-1) / 2)
            nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(folder / f"p{i}_{role}.nii.gz"))
    return folder


def _infer(pairs: Path, out: Path, **overrides) -> None:
    """The inference workflow in this process, one torch thread (as the command lines here run)."""
    from scripts.inference.predict import run_inference_workflow

    threads = torch.get_num_threads()
    try:
        run_inference_workflow(REPO, dataset_dir=str(pairs), output_dir=str(out), torch_threads=1, **overrides)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(pairs, tmp_path_factory) -> dict:
    """One uninterrupted single-process run: its fields and summary."""
    out = tmp_path_factory.mktemp("reference")
    _infer(pairs, out)
    return {"fields": _fields(out), "summary": json.loads((out / "summary.json").read_text())}


def _fields(out: Path) -> dict[str, np.ndarray]:
    return {name: np.asarray(nib.load(str(out / f"{name}_ddf.nii.gz")).dataobj) for name in NAMES}


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def _recorded(out: Path) -> set[str]:
    """The pairs with a record (written last, after all their outputs)."""
    return {name for name in NAMES if record_path(out, name).is_file()}


def _comparable(entry: dict) -> dict:
    return {key: value for key, value in entry.items() if key not in TIMING}


def _assert_final(out: Path, reference: dict) -> None:
    """Every pair's outputs and record, one summary of 8 entries in the pairs' order, no temporary or partial file,
    fields identical to the uninterrupted single-process run."""
    expected = {"summary.json"} | {f"{name}{suffix}" for name in NAMES for suffix in
                                   ("_ddf.nii.gz", "_jacdet.nii.gz", "_warped.nii.gz", "_summary.json")}  # fmt: skip
    assert set(os.listdir(out)) == expected  # nothing else: no temporary, no orphan
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_pairs"] == N_PAIRS and [e["name"] for e in summary["pairs"]] == NAMES
    assert [_comparable(e) for e in summary["pairs"]] == [_comparable(e) for e in reference["summary"]["pairs"]]
    for key in ("mean_folding_percent", "mean_std_log_jacobian", "conventions"):
        assert summary[key] == reference["summary"][key]
    fields = _fields(out)
    for name in NAMES:
        assert np.array_equal(fields[name], reference["fields"][name]), name


def test_a_record_marks_a_pair_complete(tmp_path):
    """Complete: the record names the same inputs, lists every expected output, all present, inputs not newer."""
    entry = {"fixed": str(tmp_path / "a1_fixed.nii.gz"), "moving": str(tmp_path / "a2_moving.nii.gz")}
    for path in entry.values():
        Path(path).write_bytes(b"x")
    os.utime(entry["fixed"], (1, 1))
    os.utime(entry["moving"], (1, 1))
    out = tmp_path / "out"
    out.mkdir()
    outputs = expected_outputs(entry, out)
    assert set(outputs) == {"ddf", "jacdet", "warped"}
    row = {"name": "a1_fixed__a2_moving", "fixed": entry["fixed"], "moving": entry["moving"], "outputs": outputs}
    for path in outputs.values():
        Path(path).write_bytes(b"x")
    assert complete_entry(entry, outputs, out) is None  # no record yet (killed before it)
    write_record(out, row, entry)
    assert complete_entry(entry, outputs, out) == row
    assert complete_entry(entry, expected_outputs(entry, out, learn2reg=True), out) is None  # an output not written
    assert complete_entry({**entry, "moving_label": entry["moving"]}, outputs, out) is None  # other inputs
    Path(outputs["warped"]).unlink()
    assert complete_entry(entry, outputs, out) is None  # an output missing
    Path(outputs["warped"]).write_bytes(b"x")
    os.utime(entry["moving"], None)
    os.utime(record_path(out, row["name"]), (2, 2))
    assert complete_entry(entry, outputs, out) is None  # an input newer than the record


def test_single_process_kill_and_resume(pairs, reference, tmp_path):
    """A single-process run killed while renaming the 4th pair's outputs; ``--resume true`` (no torchrun) registers
    only the 5 pairs without a record, removes the dead writer's temporaries and writes one summary of all 8."""
    out = tmp_path / "out"
    kill = _kill_override(tmp_path, renames=3 * PER_PAIR + 2, rank=0)
    _run(pairs, out, configs=(kill,), expect_rc=-signal.SIGKILL)
    assert _recorded(out) == set(NAMES[:3])
    left = set(os.listdir(out))
    assert {f"{NAMES[3]}_ddf.nii.gz", f"{NAMES[3]}_jacdet.nii.gz"} <= left  # the 4th pair: partial
    assert f"{NAMES[3]}_warped.nii.gz" not in left and "summary.json" not in left
    assert [n for n in left if n.startswith(".") and n.endswith(".tmp")]  # its warped image, still a temporary
    before = _mtimes(out)

    _infer(pairs, out, resume=True)
    after = _mtimes(out)
    done_before = [n for n in before if n.startswith(tuple(NAMES[:3]))]
    assert len(done_before) == 3 * (PER_PAIR + 1) and all(after[n] == before[n] for n in done_before)  # not redone
    assert all(after[f"{name}_summary.json"] > max(before.values()) for name in NAMES[3:])  # redone
    _assert_final(out, reference)

    again = _mtimes(out)  # everything complete: nothing is registered again, the summary is rewritten
    _infer(pairs, out, resume="true")
    assert {n: t for n, t in _mtimes(out).items() if n != "summary.json"} == {
        n: t for n, t in again.items() if n != "summary.json"
    }
    _assert_final(out, reference)


@pytest.mark.slow
def test_two_processes_give_the_fields_of_one(pairs, reference, tmp_path):
    """torchrun, 2 CPU processes (gloo): each registers 4 of the 8 pairs, rank 0 writes one summary of all 8; fields
    identical to one process."""
    out = tmp_path / "out"
    log = _run(pairs, out, nproc=2)
    assert "rank 0 of 2: 4 pair(s) to register" in log and "rank 1 of 2: 4 pair(s) to register" in log
    assert log.count("8 pair(s) (0 skipped as complete)") == 1  # the summary: rank 0 only
    _assert_final(out, reference)


@pytest.mark.slow
def test_killed_rank_and_resume(pairs, reference, tmp_path):
    """torchrun, 2 processes; rank 1 is SIGKILLed while renaming the outputs of its 2nd pair (torchrun then stops
    rank 0 wherever it is). ``--resume true`` registers exactly the pairs without a complete record, leaves the
    others' files untouched, and ends with no temporary or partial file and one summary of all 8."""
    out = tmp_path / "out"
    kill = _kill_override(tmp_path, renames=PER_PAIR + 1, rank=1)
    _run(pairs, out, nproc=2, configs=(kill,), expect_rc=1)
    complete = _recorded(out)
    # rank 1 had p1, p3, p5, p7: p1 complete, p3 partial (its ddf in place, the rest temporary), p5 and p7 not begun
    assert NAMES[1] in complete and not {NAMES[3], NAMES[5], NAMES[7]} & complete
    left = set(os.listdir(out))
    assert f"{NAMES[3]}_ddf.nii.gz" in left and "summary.json" not in left
    assert [n for n in left if n.startswith(".") and n.endswith(".tmp")]
    before = _mtimes(out)

    log = _run(pairs, out, "--resume", "true", nproc=2)
    assert f"resume: {len(complete)} of {N_PAIRS} pair(s) complete" in log
    redone = {name for name in NAMES if f"{name}: folding" in log}
    assert redone == set(NAMES) - complete
    after = _mtimes(out)
    kept = [n for n in before if n.startswith(tuple(complete)) and not n.startswith(".")]
    assert len(kept) == len(complete) * (PER_PAIR + 1) and all(after[n] == before[n] for n in kept)
    _assert_final(out, reference)
