#!/bin/bash
# the overlay's timing case (benchmark_refine --run with the overlay's options) with the wall search's log lines:
# which candidates it chose and whether the run-off ran; before (/tmp/oldtree, 8c52e7f) and after (/work/main)
for tree in /tmp/oldtree /work/main; do
  echo "== $tree"
  (cd $tree && PYTHONPATH=. /work/main/.venv/bin/python -c "
import logging; logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')
from benchmarks.benchmark_refine import main
main(run='rigidity_shearing_jacobian', first_wall_search=1, first_wall_region_mm=20, second_step_start=True,
     first_wall_closings_mm=[12], first_wall_search_iterations=20, first_wall_runoff_iterations=40)
" 2>&1 | grep -E "wall search|seconds" | cut -c1-400)
done
