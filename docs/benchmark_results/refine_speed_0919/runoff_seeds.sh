#!/bin/bash
# the overlay's time where its run-off runs: benchmark_refine's pair with other motions (--case_seed 1..3, each its own
# cached pair), the default and configs/refine_wall_search.json's options, in this process (--run) with the wall
# search's log lines (whether the run-off ran), 2 threads. usage: runoff_seeds.sh [SEEDS [RUNS]], RUNS among
# default, overlay, overlay_no_runoff (the overlay with --first_wall_runoff_iterations 0); "1 2 3" and "default overlay"
for seed in ${1:-1 2 3}; do
  for name in ${2:-default overlay}; do
    echo "== seed $seed $name $(date +%H:%M:%S)"
    opts=""
    ov="first_wall_search=1, first_wall_region_mm=20, second_step_start=True, first_wall_closings_mm=[12], first_wall_search_iterations=20"
    [ $name = overlay ] && opts="$ov, first_wall_runoff_iterations=40"
    [ $name = overlay_no_runoff ] && opts="$ov, first_wall_runoff_iterations=0"
    PYTHONPATH=. .venv/bin/python -c "
import logging; logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')
from benchmarks.benchmark_refine import main
main(run='rigidity_shearing_jacobian', case_seed=$seed, $opts)
" 2>&1 | grep -E "wall search|seconds" | cut -c1-420
  done
done
