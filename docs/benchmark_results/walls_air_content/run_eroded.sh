#!/bin/bash
# The share of the organ labels' erosion in the air's gain on the real CT (stop 54 presumed it): every organ label one
# voxel short (--perturbations eroded_organs, nothing missing), configs/refine.json's refinement, the real CT's default
# wall, seeds 0-5, with the air as content (A) and the labels alone (B, unlabelled_air_hu=null); bundle 0.9.22's code,
# each case on 1 thread; from the bundle's root, side by side:
#   bash docs/benchmark_results/walls_air_content/run_eroded.sh A & bash docs/benchmark_results/walls_air_content/run_eroded.sh B
B=".venv/bin/python -m benchmarks.benchmark_walls --threads 1 --anatomies ct --walls default --seeds 0,1,2,3,4,5"
D=docs/benchmark_results/walls_air_content
if [ "$1" = A ]; then
  PYTHONPATH=. $B --perturbations clean,eroded_organs --out $D/eroded_air > $D/eroded_a.log 2>&1
else
  PYTHONPATH=. $B --perturbations clean,eroded_organs --refine-option unlabelled_air_hu=null --out $D/eroded_labels > $D/eroded_b.log 2>&1
fi
