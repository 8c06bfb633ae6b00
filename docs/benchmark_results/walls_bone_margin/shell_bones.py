"""What lies in the layer that bone_margin.patch opens to a wall grown outwards: the voxels two from the rigid mask
that ``cavity_regions`` builds from the (perturbed) labels, within two of its cavity (the labels' wall, outside it):
how many are TRUE bone, and their HU (10th / 50th / 90th percentile) against the rest's.

Usage, from the bundle's root: PYTHONPATH=. python docs/benchmark_results/walls_bone_margin/shell_bones.py ANATOMY WALL
SEEDS PERTURBATIONS, e.g. ``ct out2 3,4 segmenter,clean`` (``shell_bones.log``)."""

import sys

import numpy as np
from scipy import ndimage as ndi

from benchmarks.benchmark_walls import wall_case
from scripts.regions.cavity import cavity_regions
from scripts.synthesis.walls import SEG_PERTURBATIONS, perturb_segmentation

name, wall, seeds, perts = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")], sys.argv[4].split(",")
for seed in seeds:
    case = wall_case(name, seed, wall)
    for pert in perts:
        seg, _ = perturb_segmentation(case["fixed_seg"], np.random.default_rng([seed, 30]), **SEG_PERTURBATIONS[pert])
        spacing = [float(s) for s in case["spacing"]]
        mask, _, side = cavity_regions(seg, spacing, image=case["fixed"], return_side=True)
        rigid = mask == 1
        shell = ndi.binary_dilation(rigid, iterations=2) & ~ndi.binary_dilation(rigid, iterations=1)
        shell &= ndi.binary_dilation(side == 1, iterations=2) & (side != 1)
        cells = []
        for label, subset in (("true bone", shell & case["bones"]), ("no bone", shell & ~case["bones"])):
            hu = case["fixed"][subset]
            p = np.percentile(hu, [10, 50, 90]) if hu.size else [np.nan] * 3
            cells.append(f"{label} {hu.size} voxels, HU {p[0]:.0f} / {p[1]:.0f} / {p[2]:.0f}")
        print(f"{name} {wall} seed {seed} {pert}: " + "; ".join(cells))
