#!/bin/bash
# Deep breathing (real CT, default wall, contents moving 15-30 mm), seeds 3-5, clean labels and a segmenter's: the
# overlay (configs/refine_wall_search.json) alone (overlay/) and with configs/refine_deep.json's options over it
# (overlay_deep/), side by side, each case on 1 thread; from the bundle's root, the output folder as argument.
. "$(dirname "$0")/../overlay_options.sh"  # OV: the overlay's options
C="--threads 1 --perturbations clean,segmenter --log-search $OV --anatomies ct --seeds 3,4,5 --walls default"
C="$C --amplitude-mm 15,30 --flow-steps 7"
B=".venv/bin/python -m benchmarks.benchmark_walls"
mkdir -p "$1/overlay" "$1/overlay_deep"
PYTHONPATH=. $B $C --out "$1/overlay" > "$1/overlay/deep.log" 2>&1 &
PYTHONPATH=. $B $C --refine-option sided_upsampling=true --refine-option second_iterations=120 --out "$1/overlay_deep" \
  > "$1/overlay_deep/deep.log" 2>&1
wait
