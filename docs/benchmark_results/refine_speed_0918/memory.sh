#!/bin/bash
# peak memory of the refinement at clinical size (the 256 x 256 x 200 CT phantom, the 192 x 192 x 150 working grid,
# 2 iterations per level and the second pass's 30), the code before (/tmp/oldtree, 8c52e7f) and after (/work/main)
for tree in /work/main /tmp/oldtree; do
  echo "== $tree $(date +%H:%M:%S)"
  (cd $tree && PYTHONPATH=. /work/main/.venv/bin/python -m benchmarks.benchmark_memory --cases refine --stages --out_dir /tmp/bench_memory_$(basename $tree) 2>&1 | grep -v Warning | tail -12)
done
