#!/bin/bash
# Deep breathing (real CT, default wall, seeds 0-2, clean labels and a segmenter's), the overlay with the deep recipe's
# options (recipe/) against a piecewise start from the finest level only (piecewise/), side by side, each case on 1
# thread. Run from the root of a worktree with piecewise_start.patch applied (README.md), the output folder as argument.
. "$(dirname "$0")/../overlay_options.sh"  # OV: the overlay's options
C="--threads 1 --perturbations clean,segmenter --log-search $OV --anatomies ct --seeds 0,1,2 --walls default"
C="$C --amplitude-mm 15,30 --flow-steps 7 --refine-option second_iterations=120"
B=".venv/bin/python -m benchmarks.benchmark_walls"
mkdir -p "$1/recipe" "$1/piecewise"
PYTHONPATH=. $B $C --refine-option sided_upsampling=true --out "$1/recipe" > "$1/recipe/deep.log" 2>&1 &
PIECEWISE=1 PYTHONPATH=. $B $C --iterations 150 --out "$1/piecewise" > "$1/piecewise/deep.log" 2>&1
wait
