#!/bin/bash
# The overlay (configs/refine.json merged with configs/refine_wall_search.json) as benchmark_walls' --refine-option
# flags, in OV, for the results' scripts to source: . "$(dirname "$0")/../overlay_options.sh". The run-off's
# iterations from RUNOFF when set (the overlay's own: 40).
OV="--refine-option first_wall_search=1 --refine-option second_step_start=true --refine-option first_wall_region_mm=20"
OV="$OV --refine-option first_wall_closings_mm=[12] --refine-option first_wall_search_iterations=20"
OV="$OV --refine-option first_wall_runoff_iterations=${RUNOFF:-40}"
