#!/bin/bash
# What the air costs: the overlay's timing case (benchmark_refine --run with configs/refine_wall_search.json's
# options) under cProfile (../refine_speed_0919/profile_regions.sh), bundle 0.9.20 (OLD tree: `git worktree add
# /tmp/oldtree b77231d`) and 0.9.21 (NEW), in the order old, new, new, old: the seconds of cavity_regions in all (and
# of _air_content, its new part). Each tree builds its cached case first, in its own TMPDIR, outside the profile (the
# case's regions come from the tree's cavity.py).
# usage: profile_regions.sh [OLD [NEW]] (defaults /tmp/oldtree, /work/main)
OLD=${1:-/tmp/oldtree}; NEW=${2:-/work/main}
for tree in $OLD $NEW; do
  mkdir -p /tmp/case_$(basename $tree)
  (cd $tree && TMPDIR=/tmp/case_$(basename $tree) PYTHONPATH=. /work/main/.venv/bin/python -c "
from benchmarks.benchmark_refine import build_case; build_case()" > /dev/null 2>&1)
done
for tree in $OLD $NEW $NEW $OLD; do
  TMPDIR=/tmp/case_$(basename $tree) bash "$(dirname "$0")/../refine_speed_0919/profile_regions.sh" $tree
done
