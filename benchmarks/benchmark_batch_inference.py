"""Pairs per minute of batch registration against the number of processes (``configs/multi_gpu_inference.json``).

Writes ``--pairs`` CT-like pairs (those of :mod:`benchmarks.benchmark_inference`: int16, the fixed image oblique LPS,
the moving image RAS on another grid, ``--shape`` voxels, one seed per pair) into ``<out_dir>/pairs``, then registers
the folder with the bundle's command line, once per entry of ``--procs``: ``python -m monai.bundle run inference``
for 1 process, ``torchrun --standalone --nnodes=1 --nproc_per_node=N -m monai.bundle run inference`` with
``configs/multi_gpu_inference.json`` merged for N > 1 (gloo on CPU, nccl on GPUs), ``--threads`` torch threads per
process. Prints, per run: wall time of the command (start-up and imports included), the workflow's time (the
``seconds`` of ``summary.json``: the longest process's run, start-up excluded), and the pairs per minute of both::

    python -m benchmarks.benchmark_batch_inference --pairs 24 --shape "[128, 128, 96]" --procs 1,2 --threads 1
    python -m benchmarks.benchmark_batch_inference --procs 1 --threads 2   # one process using both cores

The shipped model (``models/model.pt``) is used when present, else the random initialisation (the same cost).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.benchmark_inference import make_pair

BUNDLE_ROOT = Path(__file__).resolve().parents[1]


def make_pairs(folder: Path, count: int, shape: tuple[int, int, int]) -> None:
    """``case###_fixed.nii.gz`` / ``case###_moving.nii.gz`` for ``count`` seeds (kept when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        target = folder / f"case{i:03d}_fixed.nii.gz"
        if target.is_file():
            continue
        scratch = folder / f".make{i:03d}"
        fixed, moving = make_pair(scratch, shape, seed=i)
        os.replace(moving, folder / f"case{i:03d}_moving.nii.gz")
        os.replace(fixed, target)
        shutil.rmtree(scratch)


def command(pairs: Path, out: Path, procs: int, threads: int) -> list[str]:
    """The documented command line for ``procs`` processes."""
    configs = [str(BUNDLE_ROOT / "configs" / "inference.json")]
    launcher = [sys.executable]
    if procs > 1:
        configs.append(str(BUNDLE_ROOT / "configs" / "multi_gpu_inference.json"))
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={procs}"]
    cmd = [*launcher, "-m", "monai.bundle", "run", "inference", "--config_file", repr(configs)]
    cmd += ["--bundle_root", str(BUNDLE_ROOT), "--dataset_dir", str(pairs), "--output_dir", str(out)]
    cmd += ["--torch_threads", str(threads)]
    if not (BUNDLE_ROOT / "models" / "model.pt").is_file():
        cmd += ["--handlers#0#_disabled_", "true"]
    return cmd


def run(pairs: Path, out: Path, procs: int, threads: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(command(pairs, out, procs, threads), cwd=BUNDLE_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: the run with {procs} process(es) failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    summary = json.loads((out / "summary.json").read_text())
    n = summary["num_pairs"]
    return {
        "processes": procs,
        "threads_per_process": threads,
        "pairs": n,
        "wall_s": wall,
        "workflow_s": summary["seconds"],
        "pairs_per_min_wall": 60.0 * n / wall,
        "pairs_per_min_workflow": 60.0 * n / summary["seconds"],
        "load_average_before": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default="/tmp/bench_batch_inference")
    parser.add_argument("--pairs", type=int, default=24, help="number of pairs")
    parser.add_argument("--shape", default="[128, 128, 96]", help="image shape, JSON list")
    parser.add_argument("--procs", default="1,2", help="process counts, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    make_pairs(out_dir / "pairs", args.pairs, tuple(json.loads(args.shape)))
    rows = [run(out_dir / "pairs", out_dir / f"out_{n}", n, args.threads) for n in map(int, args.procs.split(","))]
    print(f"{args.pairs} pairs of {args.shape} voxels, {os.cpu_count()} CPU cores")
    print("| processes | threads each | wall s | workflow s | pairs/min (wall) | pairs/min (workflow) | load before |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['processes']} | {r['threads_per_process']} | {r['wall_s']:.1f} | {r['workflow_s']:.1f} | "
            f"{r['pairs_per_min_wall']:.1f} | {r['pairs_per_min_workflow']:.1f} | {r['load_average_before']:.1f} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
