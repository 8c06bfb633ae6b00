#!/bin/bash
# Seeds no study had used: the overlay on the phantom's seeds 9-14 (four walls) and the real CT's seeds 6-8 (default,
# out2), a segmenter's labels, each case on 1 thread. Run from a tree's root, the output folder as argument; 0.9.21
# from a worktree (git worktree add /tmp/wt921 8d94ab0; ln -s /work/main/.venv /tmp/wt921/.venv; ln -s /work/shared
# /tmp/shared: the real CT lies in ../shared beside the tree), 0.9.22 from the bundle, side by side:
#   (cd /tmp/wt921 && bash /work/main/docs/benchmark_results/walls_bone_edges/run_new_seeds.sh /work/main/docs/benchmark_results/walls_bone_edges/new_seeds_0921) &
#   bash docs/benchmark_results/walls_bone_edges/run_new_seeds.sh docs/benchmark_results/walls_bone_edges/new_seeds_0922
B=".venv/bin/python -m benchmarks.benchmark_walls --threads 1 --log-search --perturbations segmenter"
. "$(dirname "$0")/../overlay_options.sh"  # OV: the overlay's options
mkdir -p "$1"
{ PYTHONPATH=. $B $OV --anatomies phantom --walls default,in1,layer,out2 --seeds 9,10,11,12,13,14 --out "$1/phantom"
  PYTHONPATH=. $B $OV --anatomies ct --walls default,out2 --seeds 6,7,8 --out "$1/ct"; } > "$1/run.log" 2>&1
