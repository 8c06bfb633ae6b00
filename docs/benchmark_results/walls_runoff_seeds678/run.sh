#!/bin/bash
# The overlay (configs/refine_wall_search.json's options) on seeds no study has used (6-8), every wall variant, a
# segmenter's labels, with its run-off's iterations RUNOFF (40: the overlay; 0: none), each case on 1 thread; from the
# bundle's root, the two side by side:
#   RUNOFF=40 bash docs/benchmark_results/walls_runoff_seeds678/run.sh docs/benchmark_results/walls_runoff_seeds678/runoff40 &
#   RUNOFF=0 bash docs/benchmark_results/walls_runoff_seeds678/run.sh docs/benchmark_results/walls_runoff_seeds678/runoff0
B=".venv/bin/python -m benchmarks.benchmark_walls --threads 1 --perturbations segmenter --log-search"
: "${RUNOFF:?RUNOFF=40 or 0}"
. "$(dirname "$0")/../overlay_options.sh"  # OV: the overlay's options, its run-off's iterations RUNOFF
R="$OV"
D=${1:?the output folder}
mkdir -p $D
{ PYTHONPATH=. $B $R --anatomies ct --seeds 6,7,8 --walls default,tight,wide,out2,in1,layer,psoas_in,diaphragm_out --out $D/ct
  PYTHONPATH=. $B $R --anatomies phantom --seeds 6,7,8 --walls default,out2,in1,layer --out $D/phantom; } > $D/run.log 2>&1
