#!/bin/bash
# the overlay's time where its run-off ran (benchmark_refine --case_seed 2, 192x160x256, 2 threads, in this process):
# 0.9.19 (OLD tree, `git worktree add /tmp/oldtree b3d236f`) with the overlay's options (run-off 40) and without its
# run-off, 0.9.20 (NEW tree) without the run-off, and the default, in two rounds of opposite order (the search's log
# line says whether a run-off ran: on this session's machine none did at seed 2, so b and d ran the same computation).
# usage: timing.sh [OLD [NEW [SEED]]] (defaults /tmp/oldtree, /work/main, 2)
OLD=${1:-/tmp/oldtree}; NEW=${2:-/work/main}; SEED=${3:-2}
OV="first_wall_search=1, first_wall_region_mm=20, second_step_start=True, first_wall_closings_mm=[12], first_wall_search_iterations=20"
run() {  # tree name options
  echo -n "$2 $(date +%H:%M:%S) "
  (cd $1 && PYTHONPATH=. /work/main/.venv/bin/python -c "
import logging; logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')
from benchmarks.benchmark_refine import main
main(run='rigidity_shearing_jacobian', case_seed=$SEED${3:+, $3})
" 2>&1 | grep -E "run-off|seconds" | sed 's/scripts.refinement.wall_search: //' | cut -c1-200 | tr '\n' ' '; echo)
}
for order in "a b c d" "d c b a"; do
  for r in $order; do
    case $r in
      a) run $NEW "0.9.20 default" "" ;;
      b) run $OLD "0.9.19 overlay(run-off 40)" "$OV, first_wall_runoff_iterations=40" ;;
      c) run $NEW "0.9.20 overlay(no run-off)" "$OV, first_wall_runoff_iterations=0" ;;
      d) run $OLD "0.9.19 overlay(no run-off)" "$OV, first_wall_runoff_iterations=0" ;;
    esac
  done
done
