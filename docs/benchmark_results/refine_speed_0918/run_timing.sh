#!/bin/bash
# back to back: the refinement before (commit 8c52e7f, `git worktree add /tmp/oldtree 8c52e7f`) and after (this tree,
# /work/main), without and with the overlay options
OV="--first_wall_search 1 --first_wall_region_mm 20 --second_step_start true --first_wall_closings_mm [12] --first_wall_search_iterations 20 --first_wall_runoff_iterations 40"
for order in "old new" "new old"; do
  for which in $order; do
    tree=/tmp/oldtree; [ $which = new ] && tree=/work/main
    for opts in "" "$OV"; do
      name=default; [ -n "$opts" ] && name=overlay
      echo -n "$which $name $(date +%H:%M:%S) "
      (cd $tree && PYTHONPATH=. /work/main/.venv/bin/python -m benchmarks.benchmark_refine --configs '["rigidity_shearing_jacobian"]' $opts 2>&1 | grep '"seconds"' | tail -1)
    done
  done
done
