#!/bin/bash
# What the air costs: the overlay's timing case (benchmark_refine --run with configs/refine_wall_search.json's
# options) under cProfile, bundle 0.9.20 (OLD tree: `git worktree add /tmp/oldtree b77231d`) and 0.9.21 (NEW), in the
# order old, new, new, old: the seconds of cavity_regions in all (and of _air_content, its new part). Each tree builds
# its cached case first, in its own TMPDIR, outside the profile (the case's regions come from the tree's cavity.py).
# usage: profile_regions.sh [OLD [NEW]] (defaults /tmp/oldtree, /work/main)
OLD=${1:-/tmp/oldtree}; NEW=${2:-/work/main}
for tree in $OLD $NEW; do
  mkdir -p /tmp/case_$(basename $tree)
  (cd $tree && TMPDIR=/tmp/case_$(basename $tree) PYTHONPATH=. /work/main/.venv/bin/python -c "
from benchmarks.benchmark_refine import build_case; build_case()" > /dev/null 2>&1)
done
for tree in $OLD $NEW $NEW $OLD; do
  echo "== $tree $(date +%H:%M:%S)"
  (cd $tree && TMPDIR=/tmp/case_$(basename $tree) PYTHONPATH=. /work/main/.venv/bin/python -c "
import cProfile, pstats, io
from benchmarks.benchmark_refine import main
cProfile.run('''main(run='rigidity_shearing_jacobian', first_wall_search=1, first_wall_region_mm=20, second_step_start=True,
     first_wall_closings_mm=[12], first_wall_search_iterations=20, first_wall_runoff_iterations=40)''', '/tmp/regions.prof')
out = io.StringIO()
pstats.Stats('/tmp/regions.prof', stream=out).sort_stats('cumulative').print_stats(r'cavity.py:\d+\((cavity_regions|_air_content|cavity_mask|body_mask)\)')
print('\n'.join(line for line in out.getvalue().splitlines() if 'cavity.py' in line))
" 2>&1 | grep -v '^{')
done
