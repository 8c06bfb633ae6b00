#!/bin/bash
# the overlay's timing case (benchmark_refine --run with configs/refine_wall_search.json's options) under cProfile,
# before (/tmp/oldtree: `git worktree add /tmp/oldtree 1b2a17f`) and after (/work/main): how many times the regions'
# closing of the cavity (cavity_mask) and the body mask ran, and the seconds of cavity_regions in all.
# usage: profile_regions.sh [TREE ...] (the trees, profiled in that order; defaults /tmp/oldtree and /work/main)
# (bundle 0.9.21: any number of trees, and _air_content among the functions shown; ../walls_air_content/ calls it)
for tree in ${@:-/tmp/oldtree /work/main}; do
  echo "== $tree $(date +%H:%M:%S)"
  (cd $tree && PYTHONPATH=. /work/main/.venv/bin/python -c "
import cProfile, pstats, io
from benchmarks.benchmark_refine import main
cProfile.run('''main(run='rigidity_shearing_jacobian', first_wall_search=1, first_wall_region_mm=20, second_step_start=True,
     first_wall_closings_mm=[12], first_wall_search_iterations=20, first_wall_runoff_iterations=40)''', '/tmp/regions.prof')
out = io.StringIO()
pstats.Stats('/tmp/regions.prof', stream=out).sort_stats('cumulative').print_stats(r'cavity.py:\d+\((cavity_regions|_air_content|cavity_mask|body_mask)\)')
print('\n'.join(line for line in out.getvalue().splitlines() if 'cavity.py' in line))
" 2>&1 | grep -v '^{')
done
