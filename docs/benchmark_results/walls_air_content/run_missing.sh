#!/bin/bash
# One label left out and nothing else (perturb_segmentation's `missing`: the smallest cavity organ, or 1 in 2 a lung
# lobe), the overlay, default wall, seeds 0-8, with the air as content (A) and the labels alone (B), each case on 1
# thread; from the bundle's root, side by side:
#   bash docs/benchmark_results/walls_air_content/run_missing.sh A & bash docs/benchmark_results/walls_air_content/run_missing.sh B
B=".venv/bin/python -m benchmarks.benchmark_walls --threads 1 --log-search --walls default --perturbations missing"
B="$B --seeds 0,1,2,3,4,5,6,7,8"
. "$(dirname "$0")/../overlay_options.sh"  # OV: the overlay's options
D=docs/benchmark_results/walls_air_content
if [ "$1" = A ]; then
  { PYTHONPATH=. $B $OV --anatomies phantom,ct --out $D/missing_air; } > $D/missing_a.log 2>&1
else
  { PYTHONPATH=. $B $OV --refine-option unlabelled_air_hu=null --anatomies phantom,ct --out $D/missing_labels; } > $D/missing_b.log 2>&1
fi
