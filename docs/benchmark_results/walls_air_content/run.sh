#!/bin/bash
# The unlabelled air touching the content taken as cavity content (cavity_regions' unlabelled_air_hu, -400 HU, bundle
# 0.9.21) against the labels alone (--refine-option unlabelled_air_hu=null), the same code, each case on 1 thread;
# from the bundle's root, the two queues side by side:
#   bash docs/benchmark_results/walls_air_content/run.sh A & bash docs/benchmark_results/walls_air_content/run.sh B
# The overlay's 96 held-out cases with the new default: ../refine_speed_0917/walls/run.sh A|B walls (here: walls/).
B=".venv/bin/python -m benchmarks.benchmark_walls --threads 1 --log-search --walls default"
. "$(dirname "$0")/../overlay_options.sh"  # OV: the overlay's options
OFF="--refine-option unlabelled_air_hu=null"
D=docs/benchmark_results/walls_air_content
run() { PYTHONPATH=. $B "$@"; }
if [ "$1" = A ]; then  # configs/refine.json (no overlay): the phantom, seeds 0-8; the real CT, a segmenter's labels
  { run --anatomies phantom --seeds 0,1,2,3,4,5,6,7,8 --perturbations clean,segmenter --out $D/plain_phantom_air
    run --anatomies phantom --seeds 0,1,2,3,4,5,6,7,8 --perturbations clean,segmenter $OFF --out $D/plain_phantom_labels
    run --anatomies ct --seeds 0,1,2,3,4,5 --perturbations segmenter --out $D/plain_ct_air; } > $D/a.log 2>&1
else  # the overlay on the phantom's seeds 3-8 (its 96 cases hold seeds 0-2); the real CT as in A, labels alone
  { run --anatomies phantom --seeds 3,4,5,6,7,8 --perturbations clean,segmenter $OV --out $D/overlay_phantom_air
    run --anatomies phantom --seeds 3,4,5,6,7,8 --perturbations clean,segmenter $OV $OFF --out $D/overlay_phantom_labels
    run --anatomies ct --seeds 0,1,2,3,4,5 --perturbations segmenter $OFF --out $D/plain_ct_labels; } > $D/b.log 2>&1
fi
