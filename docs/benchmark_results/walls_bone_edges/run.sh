#!/bin/bash
# The bones' rim grown along the 26 neighbours (bundle 0.9.22), the cases of ../walls_air_content/run.sh that ran
# bundle 0.9.21's default (its *_air folders: the baseline), each case on 1 thread; from the bundle's root, side by side:
#   bash docs/benchmark_results/walls_bone_edges/run.sh A & bash docs/benchmark_results/walls_bone_edges/run.sh B
# The overlay's 96 held-out cases: ../refine_speed_0917/walls/run.sh A|B docs/benchmark_results/walls_bone_edges/walls
B=".venv/bin/python -m benchmarks.benchmark_walls --threads 1 --log-search --walls default"
. "$(dirname "$0")/../overlay_options.sh"  # OV: the overlay's options
D=docs/benchmark_results/walls_bone_edges
run() { PYTHONPATH=. $B "$@"; }
if [ "$1" = A ]; then  # configs/refine.json (no overlay) on the phantom, seeds 0-8; the overlay on its seeds 3-8
  { run --anatomies phantom --seeds 0,1,2,3,4,5,6,7,8 --perturbations clean,segmenter --out $D/plain_phantom
    run --anatomies phantom --seeds 3,4,5,6,7,8 --perturbations clean,segmenter $OV --out $D/overlay_phantom; } > $D/a.log 2>&1
else  # configs/refine.json on the real CT, a segmenter's labels, seeds 0-5
  run --anatomies ct --seeds 0,1,2,3,4,5 --perturbations segmenter --out $D/plain_ct > $D/b.log 2>&1
fi
