#!/bin/bash
# the 13 held-out cases of the overlay's 96 (refine_speed_0919/walls) where its run-off ran, with the run-off's
# iterations RUNOFF (default 20; the overlay: 40), each case on 1 thread as there, two queues: from the bundle's root,
#   bash docs/benchmark_results/walls_runoff20/run.sh A & bash docs/benchmark_results/walls_runoff20/run.sh B
# (a second argument: the output folder instead of this one). The other 83 cases run no run-off: unchanged.
B=".venv/bin/python -m benchmarks.benchmark_walls --threads 1 --perturbations segmenter --log-search"
R="--refine-option first_wall_search=1 --refine-option second_step_start=true --refine-option first_wall_region_mm=20"
R="$R --refine-option first_wall_closings_mm=[12] --refine-option first_wall_search_iterations=20"
R="$R --refine-option first_wall_runoff_iterations=${RUNOFF:-20}"
D=${2:-docs/benchmark_results/walls_runoff20}
run() { PYTHONPATH=. $B $R "$@"; }
if [ "$1" = A ]; then
  { run --anatomies ct --seeds 5 --walls default,in1 --out $D/a1
    run --anatomies ct --seeds 1,2 --walls tight --out $D/a2
    run --anatomies ct --seeds 0 --walls out2,wide --out $D/a3
    run --anatomies ct --seeds 0 --walls default --amplitude-mm 15,30 --flow-steps 7 --out $D/a4; } > $D/a.log 2>&1
else
  { run --anatomies ct --seeds 0 --walls layer --out $D/b1
    run --anatomies ct --seeds 2 --walls diaphragm_out --out $D/b2
    run --anatomies phantom --seeds 2 --walls default --out $D/b3
    run --anatomies phantom --seeds 0,1 --walls in1 --out $D/b4
    run --anatomies phantom --seeds 0 --walls layer --out $D/b5; } > $D/b.log 2>&1
fi
