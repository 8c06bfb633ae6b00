"""Steady under load: the refinement and the inference timed on a quiet machine and beside another job.

The pair: the held-out abdomen CT (``example_ct_sm``, 122 x 101 x 30, 3 mm) and a known breathing motion of it
(:func:`scripts.synthesis.breathing.real_ct_case`, seed 0), written as NIfTI with the fixed segmentation. Each
measurement is the product's command in a fresh process, as a user runs it::

    python -m monai.bundle run inference --config_file "['configs/inference.json','configs/refine.json']" \\
        --fixed F --moving M --fixed_seg S --output_dir OUT [--torch_threads T]

(and the CT network, ``configs/inference.json`` alone, for the inference); the time read is the pair's own
(``summary.json``: the refinement's ``seconds``, or the pair's ``seconds.total``), Python's start-up excluded. The
standard load is another user's job: the same refinement in a loop with 2 torch threads (``--load-threads``), started
before ours and stopped after it.

For each thread setting (``--settings``: ``auto``, the default of ``configs/inference.json``, and ``0``, torch's own
one thread per core, the behaviour before ``auto``) it prints the idle and the loaded seconds and their ratio
(goal: loaded <= 2x idle, and idle no slower with ``auto`` than with ``0``), and writes ``results.json`` (every run)
and ``results.md`` (the table) to ``--out_dir``. Run it on an otherwise quiet machine::

    python -m benchmarks.benchmark_load --out_dir /tmp/bench_load
    python -m benchmarks.benchmark_load --settings auto,0,1 --repeats 3 --timeout 300

A run past ``--timeout`` seconds is stopped and shown as ``> T`` (no further repeats of it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from scripts.synthesis.breathing import real_ct_case

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = BUNDLE_ROOT.parent / "shared" / "data" / "totalsegmentator_example"
REFINE = ["configs/inference.json", "configs/refine.json"]
NETWORK = ["configs/inference.json"]


def write_pair(out_dir: Path) -> dict[str, str]:
    """The known-motion CT pair as NIfTI: ``fixed``, ``moving``, ``fixed_seg`` paths."""
    case = real_ct_case(DATA_DIR, 0)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, array in (("fixed", case["fixed"]), ("moving", case["moving"]), ("fixed_seg", case["fixed_seg"])):
        dtype = np.int16 if key != "fixed_seg" else np.uint8
        paths[key] = str(out_dir / f"{key}.nii.gz")
        nib.save(nib.Nifti1Image(np.rint(array).astype(dtype), case["affine"]), paths[key])
    return paths


def command(configs: list[str], pair: dict[str, str], out: Path, threads: str | None, refine: bool) -> list[str]:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", repr(configs)]
    cmd += ["--bundle_root", str(BUNDLE_ROOT), "--fixed", pair["fixed"], "--moving", pair["moving"]]
    cmd += ["--output_dir", str(out), "--progress", "false"] if refine else ["--output_dir", str(out)]
    if refine:
        cmd += ["--fixed_seg", pair["fixed_seg"]]
    if threads is not None:
        cmd += ["--torch_threads", str(threads)]
    return cmd


def timed(configs: list[str], pair: dict[str, str], out: Path, threads: str | None, refine: bool,
          timeout: float) -> float:  # fmt: skip
    """Seconds of the pair itself (summary.json) for one run of the product's command; ``inf`` past ``timeout``."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    try:
        result = subprocess.run(command(configs, pair, out, threads, refine), cwd=BUNDLE_ROOT, env=env,
                                capture_output=True, text=True, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return float("inf")
    if result.returncode != 0:
        raise SystemExit(f"error: the measured command failed:\n{result.stderr[-2000:]}")
    entry = json.loads((out / "summary.json").read_text())["pairs"][0]
    return float(entry["refinement"]["seconds"]) if refine else float(entry["seconds"]["total"])


def _seconds(value: float, timeout: float) -> str:
    return f"{value:.1f}" if np.isfinite(value) else f"> {timeout:.0f}"


class Load:
    """Another user's job: the refinement in a loop with ``threads`` torch threads, in its own process group."""

    def __init__(self, pair: dict[str, str], out: Path, threads: int):
        loop = " ; ".join(
            [
                "while true",
                "do " + " ".join(f"'{c}'" for c in command(REFINE, pair, out, str(threads), True)) + " >/dev/null 2>&1",
                "done",
            ]
        )  # noqa: E501
        self.process = subprocess.Popen(["bash", "-c", loop], cwd=BUNDLE_ROOT, start_new_session=True)
        time.sleep(8.0)  # past its start-up: the load is computing when ours starts

    def stop(self) -> None:
        os.killpg(self.process.pid, 15)
        self.process.wait()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default="/tmp/bench_load")
    p.add_argument("--settings", default="auto,0", help="comma-separated --torch_threads values to compare")
    p.add_argument("--load-threads", type=int, default=2, help="torch threads of the load job")
    p.add_argument("--repeats", type=int, default=1, help="runs per measurement (the median is printed)")
    p.add_argument("--skip-network", action="store_true", help="time the refinement only")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds after which a run is stopped (> T s)")
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    pair = write_pair(out / "pair")
    kinds = [("refinement", REFINE, True)]
    if not args.skip_network and (BUNDLE_ROOT / "models" / "model_ct.pt").is_file():
        kinds.append(("CT network", NETWORK, False))
    results: dict = {}
    for loaded in (False, True):
        load = Load(pair, out / "load", args.load_threads) if loaded else None
        try:
            for kind, configs, refine in kinds:
                for setting in args.settings.split(","):
                    runs = []
                    while len(runs) < args.repeats and (not runs or np.isfinite(runs[-1])):  # a timeout ends it
                        runs.append(timed(configs, pair, out / f"run_{kind[:3]}_{setting}", setting, refine,
                                          args.timeout))  # fmt: skip
                    results.setdefault(kind, {}).setdefault(setting, {})["loaded" if loaded else "idle"] = runs
                    print(f"{kind}, --torch_threads {setting}, {'loaded' if loaded else 'idle'}: "
                          f"{', '.join(_seconds(r, args.timeout) for r in runs)} s", flush=True)  # fmt: skip
        finally:
            if load is not None:
                load.stop()
    lines = ["| work | --torch_threads | idle s (median) | loaded s (median) | loaded / idle |", "|" + "---|" * 5]
    for kind, rows in results.items():
        for setting, r in rows.items():
            idle, busy = float(np.median(r["idle"])), float(np.median(r["loaded"]))
            ratio = f"{busy / idle:.2f}" if np.isfinite(busy) else f"> {args.timeout / idle:.0f}"
            cells = (kind, setting, _seconds(idle, args.timeout), _seconds(busy, args.timeout), ratio)
            lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(f"load: the refinement in a loop with {args.load_threads} torch threads; {os.cpu_count()} cores\n{table}")
    record = {"load_threads": args.load_threads, "timeout": args.timeout, "results": results}
    (out / "results.json").write_text(json.dumps(record, indent=2))  # a timeout is written as Infinity
    (out / "results.md").write_text(table + "\n")
    return results


if __name__ == "__main__":
    main()
