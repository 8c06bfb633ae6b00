#!/bin/bash
# the refinement with MIND-SSC (12 channels warped) before (/tmp/mindold: `git worktree add /tmp/mindold 5d94ad0`,
# grid_sample) and after (/work/main, the hand-written sampler, channels last), alternating:
# per iteration (profile_refine --similarity mind, 1 and 2 threads), then whole runs (benchmark_refine, both passes,
# 2 threads) and one run with LNCC for comparison
for threads in 2 1; do
  for which in old new new old; do
    tree=/tmp/mindold; [ $which = new ] && tree=/work/main
    echo -n "profile $which threads=$threads $(date +%H:%M:%S) "
    (cd $tree && PYTHONPATH=. /work/main/.venv/bin/python -m benchmarks.profile_refine --threads $threads --iterations 5 --similarity mind 2>&1 | tail -1)
  done
done
for which in old new new old; do
  tree=/tmp/mindold; [ $which = new ] && tree=/work/main
  echo -n "run $which mind $(date +%H:%M:%S) "
  (cd $tree && PYTHONPATH=. /work/main/.venv/bin/python -m benchmarks.benchmark_refine --configs '["rigidity_shearing_jacobian"]' --similarity mind 2>&1 | grep '"seconds"' | tail -1)
done
echo -n "run new lncc $(date +%H:%M:%S) "
PYTHONPATH=. /work/main/.venv/bin/python -m benchmarks.benchmark_refine --configs '["rigidity_shearing_jacobian"]' 2>&1 | grep '"seconds"' | tail -1
