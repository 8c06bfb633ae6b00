#!/bin/bash
# back to back: the refinement before (the old commit checked out with `git worktree add /tmp/oldtree COMMIT`: d1da6e5
# for 0.9.17, 8c52e7f for 0.9.18) and after (this tree, /work/main), without and with the overlay options.
# usage: run_timing.sh [OVERLAY_OPTIONS [RUNS]]: RUNS "default overlay" (the default), or one of them
OV=${1:-"--first_wall_search 1 --first_wall_region_mm 20 --second_step_start true --first_wall_closings_mm [12] --first_wall_search_iterations 20 --first_wall_runoff_iterations 40"}
RUNS=${2:-"default overlay"}
for order in "old new" "new old"; do
  for which in $order; do
    tree=/tmp/oldtree; [ $which = new ] && tree=/work/main
    for name in $RUNS; do
      opts=""; [ $name = overlay ] && opts="$OV"
      echo -n "$which $name $(date +%H:%M:%S) "
      (cd $tree && PYTHONPATH=. /work/main/.venv/bin/python -m benchmarks.benchmark_refine --configs '["rigidity_shearing_jacobian"]' $opts 2>&1 | grep '"seconds"' | tail -1)
    done
  done
done
