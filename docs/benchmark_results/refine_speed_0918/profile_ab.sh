#!/bin/bash
# profile_refine, alternating the code before (commit 8c52e7f, checked out with `git worktree add /tmp/oldtree 8c52e7f`)
# and after (this tree, /work/main); usage: profile_ab.sh THREADS ROUNDS
T=${1:-2}; R=${2:-3}
for r in $(seq $R); do
  for tree in /tmp/oldtree /work/main; do
    echo -n "$tree "; (cd $tree && PYTHONPATH=. /work/main/.venv/bin/python -m benchmarks.profile_refine --threads $T --iterations 10 2>&1 | grep ms_per)
  done
done
