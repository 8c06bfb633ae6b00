"""Benchmark of the per-pair refinement (scripts/refinement/optimiser.py, and with the sliding prior its second pass,
scripts/refinement/second_pass.py, as ``configs/refine.json`` runs them): time, peak memory, accuracy on a known
motion.

The case: a 192 x 160 x 256 mm crop of the real abdomen CT ``../shared/data/totalsegmentator_example/example_ct``
(3 mm) resampled to 1 mm (the 192 x 160 x 256 grid of the performance goal; the 2 mm working grid is then
97 x 81 x 129), deformed by :func:`scripts.synthesis.phantom.deform_ct` (smooth random field + a rigid motion of the
"vertebrae"). That CT has no segmentation of its own, so its regions come from
:func:`scripts.regions.cavity.cavity_regions` on a threshold stand-in label map: air inside the body (< -400 HU) as
lung, bone (> 200 HU) as a vertebra. Each configuration runs in a fresh subprocess, so that its peak resident memory
(``ru_maxrss``) is its own; the load average of the machine is recorded before and after, and the process CPU time
beside the wall time (on a shared machine the wall time is the CPU time divided by the share of the cores the run got).

Usage::

    python benchmarks/benchmark_refine.py                         # both regularisers, 2 threads
    python benchmarks/benchmark_refine.py --threads 1 --configs '["jacobian"]'
    python benchmarks/benchmark_refine.py --second_iterations 0    # without the second pass (on by default)
    python benchmarks/benchmark_refine.py --second_wall_search 2  # with the second pass's wall search (off by default)
    python benchmarks/benchmark_refine.py --second_wall_search 1 --second_step_start true  # refine_wall_search.json
    python benchmarks/benchmark_refine.py --first_wall_search 1   # the search before the first pass's finest level
    python benchmarks/benchmark_refine.py --first_wall_search 2 --first_wall_region_mm 20   # its shift per region
    python benchmarks/benchmark_refine.py --first_wall_search 1 --first_wall_closings_mm '[12]'  # a closing candidate
    python benchmarks/benchmark_refine.py --first_wall_search 1 --first_wall_search_iterations 20  # per candidate
    python benchmarks/benchmark_refine.py --first_wall_search 1 --first_wall_runoff_iterations 40  # its run-off
    python benchmarks/benchmark_refine.py --configs '["rigidity_shearing_jacobian"]' --similarity mind  # MIND-SSC
    python benchmarks/benchmark_refine.py --case_seed 1   # another motion of the same CT (its own cached pair)

Left out, ``--first_wall_search_iterations`` takes the bundle's rule (``--refine_first_wall_search_iterations null``:
the second pass's iterations, :func:`scripts.refinement.second_pass.first_search_iterations`).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scripts.evaluation.metrics import folding_percentage
from scripts.io.errors import InputError
from scripts.io.options import parse_null
from scripts.losses.biomechanical import RIGID, SLIDING
from scripts.losses.mechanics import jacobian_determinant
from scripts.refinement.optimiser import refine_pair
from scripts.refinement.second_pass import (
    SECOND_PASS_ITERATIONS,
    SECOND_PASS_STEP_START,
    SECOND_PASS_WALL_SEARCH,
    check_pass_options,
    first_search_iterations,
    second_pass,
)
from scripts.refinement.similarity import SIMILARITIES
from scripts.refinement.wall_search import (
    FIRST_PASS_WALL_REGION_MM,
    FIRST_PASS_WALL_SEARCH,
    WALL_RUNOFF_ITERATIONS,
    first_pass_with_search,
)
from scripts.regions.cavity import body_mask, cavity_regions
from scripts.regions.labels import TOTALSEG_V2_TOTAL
from scripts.synthesis.phantom import deform_ct, inverse_ddf

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
DATA = BUNDLE_ROOT.parent / "shared" / "data" / "totalsegmentator_example" / "example_ct.nii.gz"
CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "biomech_refine_case_seg.npz"  # with the labels (0.6.0)
SHAPE_MM = (192, 160, 256)


def case_path(seed: int = 0) -> Path:
    """Where the pair of ``seed`` (of :func:`build_case`'s motion) is kept: seed 0, the benchmark's own, at CACHE."""
    return CACHE if seed == 0 else CACHE.with_name(f"{CACHE.stem}_seed{int(seed)}.npz")


def ct_crop_pair(seed: int = 0, shape_mm: Sequence[int] = SHAPE_MM) -> dict[str, np.ndarray]:
    """The known-motion pair of the benchmark on the 1 mm grid of ``shape_mm`` (the centre of the abdomen CT, 3 mm,
    resampled): ``fixed_hu``, ``moving_hu`` (the fixed CT deformed by :func:`scripts.synthesis.phantom.deform_ct`, its
    motion drawn from ``seed``), ``seg`` (the threshold stand-in label map of the module docstring), ``body`` and ``v``
    (3, X, Y, Z), the true field in voxels = mm with ``moving(x + v(x)) = fixed(x)`` (the bundle's convention).
    Also written as NIfTI files by ``benchmarks/benchmark_inference.py --pair ct``."""
    import nibabel as nib
    from scipy.ndimage import zoom

    if not DATA.is_file():
        raise SystemExit(f"error: benchmark data not found: {DATA}")
    ct = np.asarray(nib.load(str(DATA)).dataobj).astype(np.float32)
    n3 = [s // 3 for s in shape_mm]
    start = [(n - m) // 2 for n, m in zip(ct.shape, n3)]
    crop = ct[tuple(slice(a, a + m) for a, m in zip(start, n3))]
    fixed_hu = zoom(crop, [t / c for t, c in zip(shape_mm, crop.shape)], order=1)
    seg = np.zeros(fixed_hu.shape, dtype=np.uint8)
    inside = body_mask(fixed_hu)
    seg[inside & (fixed_hu < -400)] = TOTALSEG_V2_TOTAL["lung_lower_lobe_left"]
    seg[fixed_hu > 200] = TOTALSEG_V2_TOTAL["vertebrae_L1"]
    out = deform_ct(fixed_hu, seg, (1.0, 1.0, 1.0), np.random.default_rng(seed), smooth_mm=6.0)
    # deform_ct gives moving = fixed o (id + u); the bundle's field v has moving o (id + v) = fixed: v = inverse of u
    v = inverse_ddf(out["ddf"], iterations=15)
    return dict(fixed_hu=fixed_hu, moving_hu=out["moving"], seg=seg, body=inside, v=v)


def build_case(path: Path = CACHE, seed: int = 0) -> Path:
    """Write (once) the benchmark pair: fixed, moving (HU window [-200, 250] -> [0, 1]), true field, regions;
    written again when the code that builds it (scripts/regions/cavity.py, scripts/synthesis/phantom.py) is newer."""
    sources = [BUNDLE_ROOT / "scripts" / name for name in ("regions/cavity.py", "synthesis/phantom.py")]
    if path.is_file() and path.stat().st_mtime > max(src.stat().st_mtime for src in sources):
        return path
    pair = ct_crop_pair(seed)
    fixed_hu, seg = pair["fixed_hu"], pair["seg"]
    mask, normals, side = cavity_regions(seg, (1.0, 1.0, 1.0), image=fixed_hu, return_side=True)

    def norm(a):
        return np.clip((a + 200.0) / 450.0, 0.0, 1.0).astype(np.float32)

    np.savez_compressed(
        path,
        fixed=norm(fixed_hu),
        moving=norm(pair["moving_hu"]),
        v=pair["v"],
        mask=mask,
        normals=normals,
        side=side,
        body=pair["body"],
        seg=seg,
        fixed_hu=fixed_hu.astype(np.float32),
    )
    return path


def run_one(
    config: str,
    threads: int,
    second_iterations: int = SECOND_PASS_ITERATIONS,
    iterations: Sequence[int] | None = None,
    second_wall_search: int = SECOND_PASS_WALL_SEARCH,
    second_step_start: bool = SECOND_PASS_STEP_START,
    first_wall_search: int = FIRST_PASS_WALL_SEARCH,
    first_wall_region_mm: float = FIRST_PASS_WALL_REGION_MM,
    first_wall_closings_mm: Sequence[float] = (),
    first_wall_search_iterations: int | None = None,
    first_wall_runoff_iterations: int = WALL_RUNOFF_ITERATIONS,
    similarity: str = "lncc",
    case_seed: int = 0,
) -> dict:
    """One refinement in this process (with the sliding prior and ``second_iterations`` > 0, then its second pass):
    seconds, peak RSS and accuracy figures. ``iterations``: the first pass's schedule (None: refine_pair's default,
    as configs/refine.json runs it); ``similarity``: both passes' (``refine_pair``'s); ``case_seed``: the pair's
    motion (:func:`build_case`; 0 the benchmark's)."""
    import torch

    torch.set_num_threads(threads)
    case = np.load(case_path(case_seed))
    fixed, moving = (torch.from_numpy(case[k])[None, None] for k in ("fixed", "moving"))
    mask = torch.from_numpy(case["mask"])[None, None].float()
    normals = torch.from_numpy(case["normals"])[None]
    side = torch.from_numpy(case["side"])[None, None].float()
    v = torch.from_numpy(case["v"])[None]
    body = torch.from_numpy(case["body"])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start, cpu0 = time.perf_counter(), time.process_time()
    two_passes = config == "rigidity_shearing_jacobian" and second_iterations > 0
    schedule = {} if iterations is None else {"iterations": [int(i) for i in iterations], "levels": len(iterations)}
    first = dict(reg_mask=mask, normals=normals, wall_side=side, regulariser=config, similarity=similarity, **schedule)
    if config == "rigidity_shearing_jacobian" and first_wall_search > 0:
        ddf, curve, shift, closing = first_pass_with_search(
            fixed,
            moving,
            (1.0, 1.0, 1.0),
            case["seg"],
            case["fixed_hu"],
            None,
            first,
            first_wall_search,
            first_search_iterations(first_wall_search_iterations, second_iterations),
            region_mm=first_wall_region_mm,
            closings=[float(r) for r in first_wall_closings_mm],
            runoff=int(first_wall_runoff_iterations),
        )
    else:
        (ddf, curve), shift, closing = refine_pair(fixed, moving, (1.0, 1.0, 1.0), **first), 0, None
    if two_passes:
        ddf, more, regions = second_pass(
            fixed,
            moving,
            (1.0, 1.0, 1.0),
            ddf,
            case["seg"],
            case["fixed_hu"],
            refine_options={"similarity": similarity},
            iterations=second_iterations,
            wall_search=second_wall_search,
            step_start=second_step_start,
            wall_shift=shift,
            wall_closing_mm=closing,
        )
        curve, mask = curve + more, torch.from_numpy(regions[0])[None, None].float()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu0

    def epe(u):
        return float((u - v).norm(dim=1)[0][body].mean())

    det_fold = {}
    det = jacobian_determinant(ddf)[0]
    regions = (("jacobian", mask[0, 0] == 0), ("rigid", mask[0, 0] == RIGID), ("sliding", mask[0, 0] == SLIDING))
    for name, region in regions:
        det_fold[name] = float((det[region] <= 0).float().mean() * 100) if region.any() else 0.0
    return dict(
        config=config,
        threads=threads,
        similarity=similarity,
        grid=list(fixed.shape[2:]),
        seconds=round(seconds, 1),
        cpu_seconds=round(cpu_seconds, 1),
        iterations=len(curve),
        schedule=schedule.get("iterations", "default"),
        second_iterations=second_iterations if two_passes else 0,
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        rss_before_mib=round(rss0),
        epe_identity_mm=round(epe(torch.zeros_like(v)), 3),
        epe_mm=round(epe(ddf), 3),
        folding_percent=round(float(folding_percentage(ddf)), 4),
        folding_percent_by_region={k: round(x, 4) for k, x in det_fold.items()},
        sliding_fraction=round(float((mask == SLIDING).float().mean()), 4),
    )


def main(
    configs=("rigidity_shearing_jacobian", "jacobian"),
    threads: int = 2,
    run: str | None = None,
    second_iterations: int = SECOND_PASS_ITERATIONS,
    iterations: Sequence[int] | None = None,
    second_wall_search: int = SECOND_PASS_WALL_SEARCH,
    second_step_start: bool = SECOND_PASS_STEP_START,
    first_wall_search: int = FIRST_PASS_WALL_SEARCH,
    first_wall_region_mm: float = FIRST_PASS_WALL_REGION_MM,
    first_wall_closings_mm: Sequence[float] = (),
    first_wall_search_iterations: int | None = None,
    first_wall_runoff_iterations: int = WALL_RUNOFF_ITERATIONS,
    similarity: str = "lncc",
    case_seed: int = 0,
) -> None:
    passes = dict(second_iterations=second_iterations, second_wall_search=second_wall_search)
    passes.update(first_wall_search=first_wall_search, first_wall_region_mm=first_wall_region_mm)
    passes.update(first_wall_search_iterations=parse_null(first_wall_search_iterations))
    passes.update(first_wall_runoff_iterations=first_wall_runoff_iterations)
    try:  # the bundle's rules (second_pass.PASS_RULES): one error line before any work
        second = check_pass_options(passes, "--")
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    # None: the bundle's rule (the second pass's iterations)
    n_search = first_search_iterations(second["first_wall_search_iterations"], second["second_iterations"])
    second.update(first_wall_search_iterations=n_search, second_step_start=bool(second_step_start))
    second.update(first_wall_closings_mm=[float(r) for r in first_wall_closings_mm])
    if similarity not in SIMILARITIES:
        raise SystemExit(f"error: --similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
    second.update(similarity=similarity, case_seed=int(case_seed))
    build_case(case_path(case_seed), case_seed)  # written once per seed (again when its code is newer)
    if run is not None:
        print(json.dumps(run_one(run, threads, iterations=iterations, **second)))
        return
    results = []
    for config in configs:
        load_before = os.getloadavg()
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.benchmark_refine", "--run", config, "--threads", str(threads)]
            + [arg for key, value in second.items() for arg in (f"--{key}", str(value))]
            + ([] if iterations is None else ["--iterations", ",".join(str(int(i)) for i in iterations)]),
            cwd=BUNDLE_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["loadavg_1min_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
        result["cpu_count"] = os.cpu_count()
        print(json.dumps(result), flush=True)
        results.append(result)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
