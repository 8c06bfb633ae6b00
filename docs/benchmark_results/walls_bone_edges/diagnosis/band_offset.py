"""Where the slip is lost: per case, the share of the TRUE wall's voxels that lie in the final sliding band, one
voxel off it (split by where the nearest band voxel lies: inside the true cavity, or outside it), two, more, and the
slip recovered over each share (``sliding_jump_ratio`` on that subset). The overlay (configs/refine.json with
configs/refine_wall_search.json, its options read from that file: ``overlay.py``), 1 thread a case (the split of
the voxels one off came with stop 56: the older logs here lack it).

Usage, from the bundle's root: PYTHONPATH=. python docs/benchmark_results/walls_bone_edges/diagnosis/band_offset.py
ANATOMY WALL SEEDS PERTURBATIONS [KEY=VALUE ...] (more refinement options), e.g. ``ct out2 3,4 segmenter``
(``band_offset.log``)."""

import sys

import numpy as np
import torch
from overlay import overlay_options  # this folder's
from scipy import ndimage as ndi

from benchmarks.benchmark_ct_refine import run_method
from benchmarks.benchmark_walls import wall_case
from scripts.evaluation.motion_metrics import sliding_jump_ratio
from scripts.synthesis.walls import SEG_PERTURBATIONS, perturb_segmentation

torch.set_num_threads(1)
name, wall, seeds, perts = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")], sys.argv[4].split(",")
options = overlay_options(sys.argv[5:])
for seed in seeds:
    case = wall_case(name, seed, wall)  # once for all the perturbations
    for pert in perts:
        seg, info = perturb_segmentation(
            case["fixed_seg"], np.random.default_rng([seed, 30]), **SEG_PERTURBATIONS[pert]
        )
        ddf, _, band = run_method("refine_full", {**case, "fixed_seg": seg}, options, {})
        off, nearest = ndi.distance_transform_edt(~band, return_indices=True)  # voxels from the nearest band voxel
        band_inside = case["cavity"][tuple(nearest)]  # that band voxel lies in the true cavity
        wall_voxels = case["wall"]
        pred, true = torch.from_numpy(ddf)[None].float(), torch.from_numpy(case["ddf"])[None].float()
        normals, spacing = torch.from_numpy(case["normals"]).float(), [float(s) for s in case["spacing"]]
        one_off = wall_voxels & (off > 0) & (off <= 1.5)
        subsets = {"all": wall_voxels, "in band": wall_voxels & (off == 0), "1 voxel off": one_off}
        subsets.update({"2 off": wall_voxels & (off > 1.5) & (off <= 2.5), "more": wall_voxels & (off > 2.5)})
        subsets.update({"1 off, band inside": one_off & band_inside, "1 off, band outside": one_off & ~band_inside})
        cells = []
        for label, subset in subsets.items():
            slip = float(
                sliding_jump_ratio(pred, true, torch.from_numpy(subset)[None], normals, spacing)["slip_ratio"][0]
            )
            cells.append(
                f"{label}: {100 * subset.sum() / wall_voxels.sum():.0f} % of the wall, slip {100 * slip:.0f} %"
            )
        print(f"{name} {wall} seed {seed} {pert} (missing {info['missing']}): " + " | ".join(cells), flush=True)
