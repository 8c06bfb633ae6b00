"""Time and memory of inference on a full-size CT-like pair (192 x 160 x 256 by default), I/O included.

Writes a synthetic pair (smooth random int16 "HU" content; the fixed image oblique and LPS, the moving image RAS
with another spacing and origin, so that the moving image must be resampled onto the fixed grid), then runs the real
inference path of ``configs/inference.json`` in a fresh process (``ConfigWorkflow``: config parsing, network,
checks, loading, prediction, field back to the fixed grid, warping, det J, writing) and prints its wall time and
peak RSS; then the same through the command line ``python -m monai.bundle run ...`` (Python start-up and imports
included)::

    python -m benchmarks.benchmark_inference --out_dir /tmp/bench_inference
    python -m benchmarks.benchmark_inference --image_size "[96, 80, 128]"   # the paper's CT network grid
    python -m benchmarks.benchmark_inference --configs inference.json,synthetic.json   # the paper's synthetic model
    python -m benchmarks.benchmark_inference --threads 1   # one torch thread (much faster on a busy machine)
    nice -n 10 python -m benchmarks.benchmark_inference --shape "[512, 512, 300]" --skip_cli --threads 2  # clinical
    nice -n 10 python -m benchmarks.benchmark_inference --shape "[512, 512, 600]" --skip_cli --threads 2
    python -m benchmarks.benchmark_inference --pair ct --configs inference.json,refine.json   # a real CT, no seg
    python -m benchmarks.benchmark_inference --pair ct --with_seg --configs inference.json,refine.json
    python -m benchmarks.benchmark_inference --pair ct --configs inference.json,refine.json \
        --override refine_motion_cavity=0.6   # any config key, its value as JSON; repeatable

``--pair ct``: instead of the random pair, the real CT pair with a known motion of ``benchmarks/benchmark_refine.py``
(the centre of the abdomen CT of ``../shared/data`` on a 1 mm grid of ``--shape``, deformed smoothly with its
"vertebrae" moved rigidly; :func:`benchmarks.benchmark_refine.ct_crop_pair`), so that what the time is spent on looks
like a CT (the refinement's sliding band, its bones): the figures then end with the body's endpoint error of the
written field against the known one (and the identity's). ``--with_seg`` also hands the refinement its threshold
stand-in label map as ``--fixed_seg`` (air in the body as lung, bone as a vertebra); without it the refinement runs
with no segmentation (its bones from the HU, its band where its first field shears).

Grids over ``scripts.inference.writer.STREAM_VOXELS`` voxels are post-processed in slabs
(:mod:`scripts.inference.streaming`); the stage ``slabs`` then replaces ``field_to_fixed_grid`` ... ``writing`` in the
per-stage times.

``--configs``: the files of ``configs/`` merged in order (default ``inference.json``: the shipped CT model). Without
the model's checkpoint (``models/model.pt``, ``models/model_ct.pt``; or with ``--random_weights``) the backbone keeps
its random initialisation: the cost is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from monai.bundle import ConfigParser

from benchmarks.benchmark_refine import ct_crop_pair
from benchmarks.options import parse_key_json
from scripts.inference.predict import run_inference_workflow

BUNDLE_ROOT = Path(__file__).resolve().parents[1]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 12) -> np.ndarray:
    """Smooth random field in [0, 1]: coarse noise upsampled trilinearly (scipy.ndimage.zoom, order 1)."""
    from scipy.ndimage import zoom

    small = rng.random((coarse, coarse, coarse)).astype(np.float32)
    field = zoom(small, [s / coarse for s in shape], order=1)[: shape[0], : shape[1], : shape[2]]
    return (field - field.min()) / max(float(field.max() - field.min()), 1e-6)


def make_pair(out_dir: Path, shape: tuple[int, int, int] = (192, 160, 256), seed: int = 0) -> tuple[str, str]:
    """Write ``bench_fixed.nii.gz`` and ``bench_moving.nii.gz`` (int16 HU) and return their paths."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for role in ("fixed", "moving"):
        body = _smooth_noise(rng, shape)
        ct = np.where(body > 0.35, -100.0 + 600.0 * body, -1000.0) + 20.0 * rng.standard_normal(shape)
        if role == "fixed":  # LPS, 1.5 x 1.5 x 1.2 mm, rotated by 0.1 rad about z
            c, s = np.cos(0.1), np.sin(0.1)
            rot = np.array([[-c, s, 0.0], [-s, -c, 0.0], [0.0, 0.0, 1.0]])
            affine = np.eye(4)
            affine[:3, :3] = rot @ np.diag([1.5, 1.5, 1.2])
            affine[:3, 3] = [140.0, 120.0, -150.0]
        else:  # RAS, 1.6 x 1.4 x 1.25 mm, another origin
            affine = np.diag([1.6, 1.4, 1.25, 1.0])
            affine[:3, 3] = [-150.0, -110.0, -160.0]
        path = out_dir / f"bench_{role}.nii.gz"
        nib.save(nib.Nifti1Image(ct.astype(np.int16), affine), str(path))
        paths.append(str(path))
    return paths[0], paths[1]


def make_ct_pair(out_dir: Path, shape: tuple[int, int, int] = (192, 160, 256), seed: int = 0) -> tuple[str, str]:
    """Write the real CT pair with a known motion (module docstring; int16 HU, RAS, 1 mm), its label map
    ``bench_fixed_seg.nii.gz`` and ``bench_truth.npz`` (the true field ``v`` in mm along the array axes, the ``body``)
    and return the pair's paths."""
    import nibabel as nib

    out_dir.mkdir(parents=True, exist_ok=True)
    pair = ct_crop_pair(seed, shape)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-0.5 * (n - 1) for n in shape]
    for name, key, dtype in (
        ("fixed", "fixed_hu", np.int16),
        ("moving", "moving_hu", np.int16),
        ("fixed_seg", "seg", np.uint8),
    ):
        values = np.rint(pair[key]) if dtype == np.int16 else pair[key]
        nib.save(nib.Nifti1Image(values.astype(dtype), affine), str(out_dir / f"bench_{name}.nii.gz"))
    np.savez_compressed(out_dir / "bench_truth.npz", v=pair["v"].astype(np.float32), body=pair["body"])
    return str(out_dir / "bench_fixed.nii.gz"), str(out_dir / "bench_moving.nii.gz")


def field_error(out_dir: Path) -> tuple[float, float]:
    """(the body's mean endpoint error of the written field against the true one of ``bench_truth.npz``, mm; that of
    the identity). The field file stores LPS vectors (docs/README.md *Outputs*); the pair's grid is RAS at 1 mm."""
    import nibabel as nib

    truth = np.load(out_dir / "bench_truth.npz")
    written = np.asarray(nib.load(str(out_dir / "out" / "bench_fixed__bench_moving_ddf.nii.gz")).dataobj)
    u = np.moveaxis(written[:, :, :, 0, :], -1, 0) * np.array([-1.0, -1.0, 1.0]).reshape(3, 1, 1, 1)  # LPS -> RAS
    body = truth["body"]
    error = np.linalg.norm(u - truth["v"], axis=0)[body].mean()
    return float(error), float(np.linalg.norm(truth["v"], axis=0)[body].mean())


def _checkpoint(configs: list[str]) -> Path:
    """The ``ckpt_path`` of the merged configs, as the workflow resolves it."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE_ROOT / "configs" / name) for name in configs])
    parser["bundle_root"] = str(BUNDLE_ROOT)
    parser.get_parsed_content("imports")
    return Path(parser.get_parsed_content("ckpt_path"))


def _overrides(
    fixed: str,
    moving: str,
    out_dir: Path,
    image_size: list[int] | None,
    random_weights: bool,
    threads: int = 0,
    configs: tuple[str, ...] = ("inference.json",),
    fixed_seg: str | None = None,
    extra: dict | None = None,
) -> dict:
    over = {"fixed": fixed, "moving": moving, "output_dir": str(out_dir / "out"), **(extra or {})}
    if fixed_seg is not None:
        over["fixed_seg"] = fixed_seg
    if threads > 0:
        over["torch_threads"] = threads
    if image_size is not None:
        over["image_size"] = image_size
    if random_weights or not _checkpoint(list(configs)).is_file():
        over["handlers#0#_disabled_"] = True
    return over


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    fixed: str,
    moving: str,
    out_dir: str,
    image_size: list[int] | None,
    random_weights: bool,
    threads: int = 0,
    configs: tuple[str, ...] = ("inference.json",),
    fixed_seg: str | None = None,
    extra: dict | None = None,
) -> dict:
    """The in-process run (call in a fresh process: ru_maxrss is the process's peak)."""
    t0 = time.perf_counter()
    import torch

    import_s = time.perf_counter() - t0
    over = _overrides(fixed, moving, Path(out_dir), image_size, random_weights, threads, configs, fixed_seg, extra)
    t1, cpu1 = time.perf_counter(), _cpu_seconds()
    run_inference_workflow(BUNDLE_ROOT, configs, **over)
    seconds, cpu = time.perf_counter() - t1, _cpu_seconds() - cpu1
    summary = json.loads((Path(over["output_dir"]) / "summary.json").read_text())
    return {
        "seconds_inference": seconds,
        "seconds_imports": import_s,
        "cpu_seconds": cpu,
        "torch_threads": torch.get_num_threads(),
        "seconds_postprocess": summary["pairs"][0]["seconds_postprocess"],
        "stages": summary["pairs"][0]["seconds"],
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "random_weights": bool(over.get("handlers#0#_disabled_", False)),
        "image_size": image_size or "config default",
        "configs": list(configs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default="/tmp/bench_inference")
    parser.add_argument("--shape", default="[192, 160, 256]", help="image shape, JSON list")
    parser.add_argument("--image_size", default=None, help="network grid override, JSON list (default: config)")
    parser.add_argument("--random_weights", action="store_true", help="do not load models/model.pt")
    parser.add_argument("--skip_cli", action="store_true", help="skip the command-line timing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (config key torch_threads; 0: default)")
    parser.add_argument(
        "--configs", default="inference.json", help="files of configs/ merged in order, comma-separated"
    )
    parser.add_argument("--pair", default="random", choices=("random", "ct"), help="the pair (module docstring)")
    parser.add_argument("--with_seg", action="store_true", help="--pair ct: hand over its label map as --fixed_seg")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=JSON", help="a config value")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    extra = parse_key_json(args.override, "--override", "KEY=JSON, e.g. refine_motion_cavity=0.6")
    if args.with_seg and args.pair != "ct":
        sys.exit("error: --with_seg needs --pair ct (the random pair has no label map)")
    configs = tuple(c.strip() for c in args.configs.split(",") if c.strip())
    for name in configs:
        if not (BUNDLE_ROOT / "configs" / name).is_file():
            sys.exit(f"error: no configs/{name}; --configs takes file names of configs/, e.g. inference.json,ct.json")
    out_dir = Path(args.out_dir)
    image_size = json.loads(args.image_size) if args.image_size else None
    fixed, moving = str(out_dir / "bench_fixed.nii.gz"), str(out_dir / "bench_moving.nii.gz")
    fixed_seg = str(out_dir / "bench_fixed_seg.nii.gz") if args.with_seg else None
    if args.measure:
        args_in = (image_size, args.random_weights, args.threads, configs, fixed_seg, extra)
        print(json.dumps(measure(fixed, moving, str(out_dir), *args_in)))
        return

    shape = tuple(json.loads(args.shape))
    (make_ct_pair if args.pair == "ct" else make_pair)(out_dir, shape)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BUNDLE_ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable,
        "-W",
        "ignore",
        "-m",
        "benchmarks.benchmark_inference",
        "--measure",
        "--out_dir",
        str(out_dir),
    ]
    cmd += ["--image_size", json.dumps(image_size)] if image_size else []
    cmd += ["--random_weights"] if args.random_weights else []
    cmd += ["--threads", str(args.threads), "--configs", ",".join(configs), "--pair", args.pair]
    cmd += ["--with_seg"] if args.with_seg else []
    cmd += [arg for option in args.override for arg in ("--override", option)]
    child = subprocess.run(cmd, cwd=BUNDLE_ROOT, env=env, capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"benchmark run failed:\n{child.stderr[-4000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    print(
        f"pair {shape} int16, configs {','.join(configs)}, network grid {result['image_size']}, "
        f"{os.cpu_count()} CPU cores, torch threads {result['torch_threads']}, "
        f"random weights: {result['random_weights']}, pair: {args.pair}"
        + (" with its label map" if args.with_seg else "")
        + (f", overrides {extra}" if extra else "")
    )
    print(
        f"in-process inference (ConfigWorkflow: parse, load, predict, resample, warp, det J, write): "
        f"{result['seconds_inference']:.2f} s (of which post-processing and writing {result['seconds_postprocess']:.2f}"
        f" s), CPU time {result['cpu_seconds']:.2f} s, peak RSS {result['peak_rss_gib']:.2f} GiB "
        f"(imports before it: {result['seconds_imports']:.2f} s)"
    )
    print("  per stage (s): " + ", ".join(f"{k} {v:.2f}" for k, v in result["stages"].items()))
    if args.pair == "ct":
        error, identity = field_error(out_dir)
        print(f"body endpoint error against the known motion: {error:.2f} mm (identity {identity:.2f} mm)")
    if not args.skip_cli:
        over = _overrides(
            fixed, moving, out_dir, image_size, args.random_weights, args.threads, configs, fixed_seg, extra
        )
        cli = [sys.executable, "-W", "ignore", "-m", "monai.bundle", "run", "inference"]
        files = [str(BUNDLE_ROOT / "configs" / name) for name in configs]
        cli += ["--config_file", repr(files), "--bundle_root", str(BUNDLE_ROOT)]
        for key, value in over.items():
            # null, not None: `monai.bundle run` drops an override whose value is None and keeps the config's value
            cli += [f"--{key}", json.dumps(value) if value is None or isinstance(value, list) else str(value)]
        start = time.perf_counter()
        proc = subprocess.run(cli, cwd=BUNDLE_ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"bundle command failed:\n{proc.stderr[-4000:]}")
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        print(f"bundle command (python -m monai.bundle run inference ...): {wall:.2f} s wall incl. start-up")
        print(f"peak RSS of the child processes: {rss:.2f} GiB")
    print(f"load average (1 min) now: {os.getloadavg()[0]:.2f} (other processes share the cores when it exceeds 0)")


if __name__ == "__main__":
    main()
