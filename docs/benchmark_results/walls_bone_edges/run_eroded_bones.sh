#!/bin/bash
# Every bone label one voxel short and nothing else (--perturbations clean,eroded_bones,eroded), configs/refine.json's
# refinement on the real CT's and the phantom's default wall, seeds 0-2, each case on 1 thread; run from a tree's root,
# the output folder as argument: 0.9.21 from a worktree as in run_new_seeds.sh, 0.9.22 from the bundle, side by side:
#   (cd /tmp/wt921 && bash /work/main/docs/benchmark_results/walls_bone_edges/run_eroded_bones.sh /work/main/docs/benchmark_results/walls_bone_edges/eroded_bones_0921) &
#   bash docs/benchmark_results/walls_bone_edges/run_eroded_bones.sh docs/benchmark_results/walls_bone_edges/eroded_bones_0922
mkdir -p "$1"
PYTHONPATH=. .venv/bin/python -m benchmarks.benchmark_walls --threads 1 --walls default --seeds 0,1,2 \
  --perturbations clean,eroded_bones,eroded --anatomies ct,phantom --out "$1" > "$1/run.log" 2>&1
