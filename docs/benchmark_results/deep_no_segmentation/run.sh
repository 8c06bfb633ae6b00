#!/bin/bash
# From the bundle's root: every variant of diagnose.py on seeds 0-2, two at a time (1 thread each), into diagnose.log.
D=docs/benchmark_results/deep_no_segmentation
V="first first:smooth=0.1 first:smooth=0.05 first:gamma=0.1 first:levels=4 continue:smooth=0.02 continue:smooth=0.1"
V="$V edge:0.05 edge:0.1 band pseudo:0.5 pseudo:0.6 pseudo:0.7"
tmp=$(mktemp -d)
for v in $V; do for s in 0 1 2; do echo "$s $v"; done; done | nl -nrz -w3 |
    xargs -P 2 -L 1 bash -c 'PYTHONPATH=. python $0/diagnose.py $2 $3 2>&1 | grep -v "Warp: Using" > '"$tmp"'/$1.txt' $D
cat "$tmp"/*.txt > $D/diagnose.log
rm -r "$tmp"
