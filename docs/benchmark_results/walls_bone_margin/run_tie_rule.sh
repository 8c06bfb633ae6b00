#!/bin/bash
# The run-off's cases of ../walls_bone_edges/walls/ and new_seeds_0922/ (runoff_ties.txt) with tie_rule.patch applied,
# each case on 1 thread, two queues side by side. Run from the patched worktree's root (README.md gives its set-up)
# with the output folder as argument (tie_rule/). The cases whose two shifts were more than 0.001 apart after the
# run-off (tight 0, 1; diaphragm_out 0-2) are in it as a check: the patch must leave them as they were.
B=".venv/bin/python -m benchmarks.benchmark_walls --threads 1 --log-search"
. "$(dirname "$0")/../overlay_options.sh"  # OV: the overlay's options
O=$1
mkdir -p "$O"
{ PYTHONPATH=. $B $OV --anatomies ct --walls default --seeds 4 --perturbations segmenter --out $O/a1 > $O/a1.log 2>&1
  PYTHONPATH=. $B $OV --anatomies ct --walls tight --seeds 0,1 --perturbations segmenter --out $O/a2 > $O/a2.log 2>&1
  PYTHONPATH=. $B $OV --anatomies ct --walls default --seeds 7 --perturbations segmenter --out $O/a3 > $O/a3.log 2>&1
  PYTHONPATH=. $B $OV --anatomies ct --walls diaphragm_out --seeds 0 --perturbations clean --out $O/a4 > $O/a4.log 2>&1; } &
PYTHONPATH=. $B $OV --anatomies ct --walls diaphragm_out --seeds 1,2 --perturbations segmenter --out $O/b1 > $O/b1.log 2>&1
PYTHONPATH=. $B $OV --anatomies phantom --walls layer --seeds 0 --perturbations segmenter --out $O/b2 > $O/b2.log 2>&1
PYTHONPATH=. $B $OV --anatomies phantom --walls default --seeds 11,13 --perturbations segmenter --out $O/b3 > $O/b3.log 2>&1
PYTHONPATH=. $B $OV --anatomies phantom --walls default --seeds 14 --perturbations clean --out $O/b4 > $O/b4.log 2>&1
PYTHONPATH=. $B $OV --anatomies phantom --walls in1 --seeds 10,11,12 --perturbations segmenter --out $O/b5 > $O/b5.log 2>&1
wait
