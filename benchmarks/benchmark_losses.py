"""Benchmark: closed-form BiomechanicalLoss against an SVD-based formulation of the same loss.

The SVD formulation is what the reference research code does: per voxel, the singular values of
the strain tensors (rigid and sliding) and a batched determinant. Both run forward + backward on
the same smooth random field, regularisation map and normals. Each measurement runs in a fresh
subprocess so that the peak resident memory (``ru_maxrss``) above the inputs is its own.

Usage::

    python -m benchmarks.benchmark_losses                 # 64^3 and 96x80x128, 2 threads
    python -m benchmarks.benchmark_losses --shapes "[[32,32,32]]" --repeats 2
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import fire
import torch

from scripts.losses.biomechanical import BiomechanicalLoss
from tests.reference_losses import make_inputs, svd_biomechanical_loss

BUNDLE_ROOT = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def measure(method: str, shape: list[int], repeats: int = 3, threads: int = 2) -> dict:
    """Forward + backward of one method in this process: best time (s) and peak extra RSS (MiB)."""
    torch.set_num_threads(threads)
    ddf, reg_mask, normals = make_inputs(tuple(shape))
    closed_form = BiomechanicalLoss("rigidity_shearing_jacobian")

    def step() -> float:
        field = ddf.clone().requires_grad_(True)
        if method == "closed_form":
            loss = closed_form(field, reg_mask, normals)
        else:
            loss = svd_biomechanical_loss(field, reg_mask, normals)
        loss.backward()
        return float(loss)

    base = _rss_mib()
    times, value = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        value = step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "shape": shape, "seconds": min(times), "peak_extra_mib": peak - base, "loss": value}


def _measure_in_subprocess(method: str, shape: list[int], repeats: int, threads: int) -> dict:
    code = (
        "import json; from benchmarks.benchmark_losses import measure; "
        f"print(json.dumps(measure({method!r}, {list(shape)!r}, {repeats}, {threads})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=BUNDLE_ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(shapes=((64, 64, 64), (96, 80, 128)), repeats: int = 3, threads: int = 2) -> None:
    """Print forward+backward time and peak memory of both formulations, and their ratios."""
    print(f"BiomechanicalLoss forward+backward, batch 1, {threads} threads, best of {repeats}")
    print(f"{'shape':>14} {'method':>12} {'time (s)':>10} {'peak (MiB)':>11} {'loss':>12}")
    for shape in shapes:
        rows = {m: _measure_in_subprocess(m, list(shape), repeats, threads) for m in ("closed_form", "svd")}
        for row in rows.values():
            label = "x".join(map(str, shape))
            print(
                f"{label:>14} {row['method']:>12} {row['seconds']:>10.3f} "
                f"{row['peak_extra_mib']:>11.0f} {row['loss']:>12.6f}"
            )
        speedup = rows["svd"]["seconds"] / rows["closed_form"]["seconds"]
        memory = rows["closed_form"]["peak_extra_mib"] / max(rows["svd"]["peak_extra_mib"], 1e-9)
        print(f"{'':>14} speed-up {speedup:.1f}x, memory ratio (closed form / SVD) {memory:.2f}")


if __name__ == "__main__":
    fire.Fire(main)
