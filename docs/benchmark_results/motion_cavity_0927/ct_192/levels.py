"""The 192 x 160 x 256 pair that ``benchmarks/benchmark_inference.py --out_dir /tmp/t192_cav2`` left behind, through
``run_inference_workflow`` with the options given as JSON; prints the wall time and the refinement's seconds at the
end of each level of its loss curve (with the moved cavity the first pass's, then the labelled refinement's levels and
second pass: level 3).

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_0927/ct_192/levels.py '{"refine_motion_cavity": 0.6}'
"""

import json
import sys
import tempfile
import time

import torch

from scripts.inference.predict import run_inference_workflow

torch.set_num_threads(2)
pair, options = "/tmp/t192_cav2", json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
with tempfile.TemporaryDirectory() as out:
    start = time.perf_counter()
    run_inference_workflow(None, ("inference.json", "refine.json"), fixed=f"{pair}/bench_fixed.nii.gz",
                           moving=f"{pair}/bench_moving.nii.gz", output_dir=out, progress=False, **options)  # fmt: skip
    wall = time.perf_counter() - start
    report = json.load(open(f"{out}/summary.json"))["pairs"][0]["refinement"]
levels = {}
for row in report["loss_curve"]:
    levels.setdefault(row["level"], []).append(row["seconds"])
print(options, f"wall {wall:.1f}", "first", report.get("first_pass_seconds"), "refine", round(report["seconds"], 1),
      report["grid"], {k: (len(v), round(min(v), 1), round(max(v), 1)) for k, v in levels.items()},
      report.get("motion_cavity"))  # fmt: skip
