#!/bin/bash
# The overlay on seeds no study had chosen on (the phantom's seeds 9-14, four walls; the real CT's seeds 6-8, default
# and out2), clean labels and a segmenter's, each case on 1 thread, the phantom and the real CT side by side. Run from
# a tree's root with the output folder as argument: from the bundle (new_seeds_0922) and from a worktree with
# bone_margin.patch applied (new_seeds_margin; README.md gives its set-up).
B=".venv/bin/python -m benchmarks.benchmark_walls --threads 1 --log-search --perturbations clean,segmenter"
. "$(dirname "$0")/../overlay_options.sh"  # OV: the overlay's options
mkdir -p "$1"
PYTHONPATH=. $B $OV --anatomies phantom --walls default,in1,layer,out2 --seeds 9,10,11,12,13,14 --out "$1/phantom" \
  > "$1/phantom.log" 2>&1 &
PYTHONPATH=. $B $OV --anatomies ct --walls default,out2 --seeds 6,7,8 --out "$1/ct" > "$1/ct.log" 2>&1
wait
