"""Peak memory (RSS) and time of the bundle's two clinical-size cases, each run of the real workflow in a process of
its own (``ru_maxrss`` is then that run's peak, torch's allocations included, which ``tracemalloc`` does not see):

- ``refine``: the test-time refinement (``configs/inference.json`` + ``configs/refine.json``) of a CT-like pair of
  256 x 256 x 200 voxels at 1.5 mm (the CT phantom of :func:`scripts.synthesis.phantom.make_ct_phantom`, int16 HU,
  with its TotalSegmentator-like label map as ``--fixed_seg``; the moving image another draw of the phantom), on its
  192 x 192 x 150 grid of about 2 mm, NIfTI outputs: load, regions, refinement, outputs;
- ``outputs_nii``, ``outputs_nrrd``, ``outputs_mha``: the shipped network on a 512 x 512 x 300 pair (the synthetic
  int16 pair of :mod:`benchmarks.benchmark_inference`: oblique LPS fixed grid, RAS moving grid of another spacing),
  outputs as ``.nii.gz``, ``.nrrd`` or ``.mha``.

Peak memory does not depend on the number of refinement iterations (every iteration of a level holds the same
tensors): ``--iterations 2`` measures the peak in a fraction of the time; the time of the default schedule
(150 / 100 / 60) needs ``--iterations "[150, 100, 60]"``. Each run also reports its peak within each stage
(``--stages``: RSS sampled every few ms by a thread of the child; the overall peak is the exact ``ru_maxrss``)::

    OMP_NUM_THREADS=1 python -m benchmarks.benchmark_memory --cases refine --iterations 2 --threads 1
    OMP_NUM_THREADS=1 python -m benchmarks.benchmark_memory --cases outputs_nii,outputs_nrrd,outputs_mha --threads 1
    python -m benchmarks.benchmark_memory --cases refine --iterations "[150, 100, 60]" --threads 1   # the time

The inputs are written once into ``--out_dir`` (kept for the next run).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.benchmark_inference import make_pair
from scripts.inference import predict, writer
from scripts.refinement import inferer
from scripts.synthesis.phantom import make_ct_phantom

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
REFINE_SHAPE, REFINE_SPACING = (256, 256, 200), (1.5, 1.5, 1.5)
OUTPUTS_SHAPE = (512, 512, 300)
CASES = {
    "refine": (["inference.json", "refine.json"], ".nii.gz"),
    "outputs_nii": (["inference.json"], ".nii.gz"),
    "outputs_nrrd": (["inference.json"], ".nrrd"),
    "outputs_mha": (["inference.json"], ".mha"),
}
GIB = 2.0**30


def make_refine_pair(folder: Path) -> dict[str, str]:
    """The refinement's pair (module docstring) as int16 / uint8 NIfTI files in ``folder`` (kept when there)."""
    import nibabel as nib

    paths = {key: folder / f"refine_{key}.nii.gz" for key in ("fixed", "moving", "fixed_seg")}
    if not all(path.is_file() for path in paths.values()):
        folder.mkdir(parents=True, exist_ok=True)
        for seed, role in ((0, "fixed"), (1, "moving")):
            case = make_ct_phantom(REFINE_SHAPE, REFINE_SPACING, rng=np.random.default_rng(seed))
            nib.save(nib.Nifti1Image(case["image"], case["affine"]), str(paths[role]))
            if role == "fixed":
                nib.save(nib.Nifti1Image(case["seg"], case["affine"]), str(paths["fixed_seg"]))
    return {key: str(path) for key, path in paths.items()}


def make_outputs_pair(folder: Path) -> dict[str, str]:
    """The 512 x 512 x 300 pair (kept when there)."""
    fixed, moving = folder / "bench_fixed.nii.gz", folder / "bench_moving.nii.gz"
    if not (fixed.is_file() and moving.is_file()):
        make_pair(folder, OUTPUTS_SHAPE)
    return {"fixed": str(fixed), "moving": str(moving)}


class StagePeaks:
    """Peak RSS per stage of the run: a thread samples the process's resident memory (``/proc/self/statm``) every
    ``interval`` s and raises the peak of every stage open at that moment; :meth:`wrap` opens a stage around a
    function of a module (where the workflow looks it up)."""

    def __init__(self, interval: float = 0.005):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peaks: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.open: list[str] = []
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def rss(self) -> float:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * self.page

    def _poll(self) -> None:
        while not self._stop.is_set():
            value = self.rss()
            for name in list(self.open):
                self.peaks[name] = max(self.peaks.get(name, 0.0), value)
            time.sleep(self.interval)

    def wrap(self, owner, attribute: str, name: str) -> None:
        function = getattr(owner, attribute)

        @functools.wraps(function)
        def traced(*args, **kwargs):
            self.open.append(name)
            self.peaks[name] = max(self.peaks.get(name, 0.0), self.rss())
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
                self.open.remove(name)

        setattr(owner, attribute, traced)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_case(case: str, out_dir: Path, threads: int, iterations: list[int]) -> dict:
    """One case in this process (call it in a fresh process: ``ru_maxrss`` is then the run's own peak)."""
    import torch

    configs, ext = CASES[case]
    inputs = make_refine_pair(out_dir) if case == "refine" else make_outputs_pair(out_dir)
    output_dir = out_dir / f"out_{case}"
    shutil.rmtree(output_dir, ignore_errors=True)
    over = {**inputs, "output_dir": str(output_dir), "output_ext": ext, "torch_threads": threads}
    if case == "refine":
        over.update(refine_iterations=iterations, progress=False)
    elif not (BUNDLE_ROOT / "models" / "model.pt").is_file():
        over["handlers#0#_disabled_"] = True
    trace = StagePeaks()
    trace.wrap(predict, "load_pair", "load")
    trace.wrap(inferer.RefinementInferer, "regions", "regions")
    trace.wrap(inferer, "refine_pair", "refine_pair")
    trace.wrap(writer.RegistrationWriter, "_write_pair", "outputs")
    rss_imports = trace.rss() / GIB
    start, cpu = time.perf_counter(), time.process_time()
    with trace:
        predict.run_inference_workflow(BUNDLE_ROOT, configs, **over)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    pair = json.loads((output_dir / "summary.json").read_text())["pairs"][0]
    result = {
        "case": case,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rss_before_gib": rss_imports,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "torch_threads": torch.get_num_threads(),
        "stage_peak_gib": {name: value / GIB for name, value in trace.peaks.items()},
        "stage_seconds": trace.seconds,
        "outputs": sorted(Path(p).name for p in pair["outputs"].values()),
    }
    if case == "refine":
        refinement = pair["refinement"]
        curve = refinement["loss_curve"]
        ends = [
            max(row["seconds"] for row in curve if row["level"] == level)
            for level in sorted({r["level"] for r in curve})
        ]
        result.update(grid=refinement["grid"], iterations=len(curve), refine_seconds=refinement["seconds"])
        result["level_seconds"] = [b - a for a, b in zip([0.0] + ends[:-1], ends)]  # coarsest first
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--out_dir", default="/tmp/bench_memory", help="inputs (kept) and outputs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    parser.add_argument("--iterations", default="2", help='refinement iterations per level: N or "[150, 100, 60]"')
    parser.add_argument("--stages", action="store_true", help="also print the peak RSS within each stage")
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # child process mode: one case
    parser.add_argument("--make", default=None, help=argparse.SUPPRESS)  # child process mode: the inputs
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    iterations = json.loads(args.iterations)
    iterations = [int(iterations)] * 3 if isinstance(iterations, int) else [int(i) for i in iterations]
    if args.run:
        print(json.dumps(run_case(args.run, out_dir, args.threads, iterations)))
        return
    if args.make == "refine":
        make_refine_pair(out_dir)
        return
    if args.make:
        make_outputs_pair(out_dir)
        return
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        sys.exit(f"error: unknown case(s) {unknown}; choose among {sorted(CASES)}")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    env["PYTHONPATH"] = os.pathsep.join([str(BUNDLE_ROOT), os.environ.get("PYTHONPATH", "")])
    # the inputs are made in a child too: a process started by this one begins with this one's peak RSS as its own
    # (Linux keeps ru_maxrss across fork and exec), so this process must stay small
    for kind in sorted({"refine" if case == "refine" else "outputs" for case in cases}):
        cmd = [sys.executable, "-m", "benchmarks.benchmark_memory", "--make", kind, "--out_dir", str(out_dir)]
        subprocess.run(cmd, cwd=BUNDLE_ROOT, env=env, check=True)
    print(f"{os.cpu_count()} CPU cores, load average (1 min) {os.getloadavg()[0]:.1f}; torch threads {args.threads}")
    print("| case | peak RSS GiB | wall s | CPU s | notes |\n|---|---|---|---|---|")
    for case in cases:
        cmd = [sys.executable, "-W", "ignore", "-m", "benchmarks.benchmark_memory", "--run", case]
        cmd += ["--out_dir", str(out_dir), "--threads", str(args.threads), "--iterations", json.dumps(iterations)]
        child = subprocess.run(cmd, cwd=BUNDLE_ROOT, env=env, capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"error: the {case} run failed:\n{child.stderr[-4000:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        notes = f"RSS before the workflow {result['rss_before_gib']:.2f} GiB"
        if case == "refine":
            grid = "x".join(map(str, result["grid"]))
            levels = " / ".join(f"{t:.0f}" for t in result["level_seconds"])
            notes += f"; grid {grid}, {result['iterations']} iterations, refinement {result['refine_seconds']:.0f} s"
            notes += f" (levels, coarsest first: {levels} s)"
        print(f"| {case} | {result['peak_rss_gib']:.2f} | {result['seconds']:.0f} | {result['cpu_seconds']:.0f} | "
              f"{notes} |", flush=True)  # fmt: skip
        if args.stages:
            stages = ", ".join(f"{k} {v:.2f} GiB / {result['stage_seconds'][k]:.0f} s"
                               for k, v in result["stage_peak_gib"].items())  # fmt: skip
            print(f"|   stages: {stages} | | | | |", flush=True)
    print(f"load average (1 min) now: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
