#!/bin/bash
# the overlay's 96 held-out cases (those of ../../walls_runoff/), two queues at a time on the 2 cores, from the bundle's
# root: bash docs/benchmark_results/refine_speed_0917/walls/run.sh A & bash docs/benchmark_results/refine_speed_0917/walls/run.sh B
# (a second argument: the output folder instead of this one, e.g. docs/benchmark_results/refine_speed_0918/walls;
# THREADS=2 in the environment: each case on 2 threads, for one queue at a time; EXTRA="--refine-option K=V ...": more
# options, e.g. EXTRA="--refine-option unlabelled_air_hu=null" for the labels' cavity alone since 0.9.21)
B=".venv/bin/python -m benchmarks.benchmark_walls --threads ${THREADS:-1} --perturbations clean,segmenter --log-search"
. "$(dirname "$0")/../../overlay_options.sh"  # OV: the overlay's options
R="$OV ${EXTRA:-}"  # EXTRA: more options (bundle 0.9.21's A/B)
D=${2:-docs/benchmark_results/refine_speed_0917/walls}
if [ "$1" = A ]; then
  PYTHONPATH=. $B $R --anatomies ct --seeds 0,1,2 --walls tight,out2,in1,wide --out $D/ct_a > $D/ct_a.log 2>&1
  PYTHONPATH=. $B $R --anatomies ct --seeds 3,4,5 --walls default,out2,in1 --out $D/ct345 > $D/ct345.log 2>&1
else
  PYTHONPATH=. $B $R --anatomies ct --seeds 0,1,2 --walls default,layer,psoas_in,diaphragm_out --out $D/ct_b > $D/ct_b.log 2>&1
  PYTHONPATH=. $B $R --anatomies phantom --seeds 0,1,2 --walls default,out2,in1,layer --out $D/phantom > $D/phantom.log 2>&1
  PYTHONPATH=. $B $R --anatomies ct --seeds 0,1,2 --walls default --amplitude-mm 15,30 --flow-steps 7 --out $D/ct_deep > $D/ct_deep.log 2>&1
fi
