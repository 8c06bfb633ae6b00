"""Tried and dropped (stop 55): the wall search per ORGAN instead of per 20 mm Gaussian region. Each voxel of the
search's zone belongs to its nearest cavity-content label; per label, the candidate whose mean local NCC^2 over the
label's zone voxels beats the current choice's by the margin wins there (``scripts.refinement.wall_search._regional``
replaced, ``search_wall_shift`` wrapped to compute the partition on the working grid). WHY tried: the segmenter
perturbation shrinks or grows each label by its own radius, so the needed shift changes from organ to organ. With
``ORGAN=1`` in the environment the patch applies, else the bundle's own search runs; the other arguments are
``benchmarks.benchmark_walls``'s.

Usage, from the bundle's root (``organ_*.log``):
    . docs/benchmark_results/overlay_options.sh
    ORGAN=1 PYTHONPATH=. python docs/benchmark_results/walls_bone_edges/diagnosis/search_per_organ.py --threads 1 \\
        --log-search --anatomies ct --walls out2 --seeds 0,3,5 --perturbations segmenter $OV --out /tmp/organ_a
"""

import os
import sys

import numpy as np
from scipy import ndimage as ndi

import scripts.refinement.wall_search as wall_search
from benchmarks.benchmark_walls import main
from scripts.synthesis.breathing import cavity_ids

PARTITION = {}


def search_by_organ(images, spacing, ddf, regions, *args, **kwargs):
    seg = np.asarray(regions[0])
    nearest = ndi.distance_transform_edt(~np.isin(seg, cavity_ids()), return_distances=False, return_indices=True)
    PARTITION["labels"] = seg[tuple(nearest)]  # each voxel's nearest content label
    return SEARCH(images, spacing, ddf, regions, *args, **kwargs)


def regional_by_organ(local, current, candidates, zone, sigma, margin):
    part = PARTITION["labels"]
    current = np.broadcast_to(np.asarray(current), zone.shape)
    out = np.array(current, copy=True)
    for label in np.unique(part[zone]):
        cell = zone & (part == label)
        if cell.sum() < 20:
            continue
        base = float(np.mean(np.choose(current[cell], [v[cell] for v in local])))
        means = [float(local[i][cell].mean()) for i in candidates]
        if max(means) - base > margin:
            out[part == label] = candidates[int(np.argmax(means))]
    return out


SEARCH = wall_search.search_wall_shift
if os.environ.get("ORGAN") == "1":
    wall_search.search_wall_shift, wall_search._regional = search_by_organ, regional_by_organ
main(sys.argv[1:])
