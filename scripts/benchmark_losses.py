"""Benchmark: closed-form BiomechanicalLoss against an SVD-based formulation of the same loss.

The SVD formulation is what the reference research code does: per voxel, the singular values of
the strain tensors (rigid and sliding) and a batched determinant. Both run forward + backward on
the same smooth random field, regularisation map and normals. Each measurement runs in a fresh
subprocess so that the peak resident memory (``ru_maxrss``) above the inputs is its own.

Usage::

    python -m scripts.benchmark_losses                 # 64^3 and 96x80x128, 2 threads
    python -m scripts.benchmark_losses --shapes "[[32,32,32]]" --repeats 2
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
from torch.nn import functional as F

from scripts.losses import JACOBIAN, RIGID, SLIDING, BiomechanicalLoss, region_mean
from scripts.mechanics import SpacingLike, linear_strain, spatial_gradient

BUNDLE_ROOT = Path(__file__).resolve().parents[1]


def svd_biomechanical_loss(
    ddf: torch.Tensor,
    reg_mask: torch.Tensor,
    normals: torch.Tensor,
    spacing: SpacingLike = None,
    eps: float = 1e-9,
) -> torch.Tensor:
    """The full regulariser (rigidity + shearing + log-Jacobian) computed with SVDs, as the reference code does.

    Same definitions as :class:`scripts.losses.BiomechanicalLoss` (``rigidity_shearing_jacobian``),
    but the squared eigenvalues come from ``torch.linalg.svdvals`` of explicit per-voxel 3x3 strain
    tensors and the determinant from ``torch.linalg.det``. For tests and this benchmark only.
    """
    grad = spatial_gradient(ddf, spacing)  # (B, 3, 3, *S)
    mats = grad.movedim((1, 2), (-2, -1))  # (B, *S, 3, 3)
    strain = linear_strain(grad).movedim((1, 2), (-2, -1))
    n = normals.movedim(1, -1)  # (B, *S, 3)
    g = torch.einsum("...ml,...m->...l", mats, n)
    strain_n = 0.5 * (n[..., :, None] * g[..., None, :] + g[..., :, None] * n[..., None, :])
    labels = reg_mask[:, 0].round()
    eye = torch.eye(3, dtype=ddf.dtype, device=ddf.device)
    det = torch.linalg.det(mats + eye)
    rigid = torch.linalg.svdvals(strain).square().sum(-1)
    shear = torch.linalg.svdvals(strain_n).square().sum(-1)
    jac = torch.log(torch.clamp(det, min=eps)).square()
    return (
        region_mean(jac, (labels == JACOBIAN).to(ddf.dtype))
        + region_mean(rigid, (labels == RIGID).to(ddf.dtype))
        + region_mean(shear, (labels == SLIDING).to(ddf.dtype))
    )


def make_inputs(shape: tuple[int, int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A smooth random ddf (1, 3, *shape) in voxels, a reg_mask with a rigid block, a sliding slab and
    the rest Jacobian (1, 1, *shape), and unit normals on the slab (1, 3, *shape)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 3, *[max(2, s // 8) for s in shape], generator=gen)
    ddf = 2.0 * F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)
    reg_mask = torch.zeros(1, 1, *shape)
    x, y, z = shape
    reg_mask[:, :, x // 4 : x // 2, y // 4 : 3 * y // 4, z // 4 : 3 * z // 4] = RIGID
    reg_mask[:, :, 5 * x // 8 : 5 * x // 8 + 2, :, :] = SLIDING
    normals = torch.zeros(1, 3, *shape)
    tilted = torch.tensor([1.0, 0.3, -0.2])
    normals[:, :, 5 * x // 8 : 5 * x // 8 + 2] = (tilted / tilted.norm()).reshape(1, 3, 1, 1, 1)
    return ddf, reg_mask, normals


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
        "import json; from scripts.benchmark_losses import measure; "
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
