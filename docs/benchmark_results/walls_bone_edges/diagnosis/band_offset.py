"""Where the slip is lost: per case, the share of the TRUE wall's voxels that lie in the final sliding band, one
voxel off it, two, more, and the slip recovered over each share (``sliding_jump_ratio`` on that subset). The
overlay (configs/refine.json with configs/refine_wall_search.json, its options read from that file), 1 thread a case.

Usage, from the bundle's root: PYTHONPATH=. python docs/benchmark_results/walls_bone_edges/diagnosis/band_offset.py
ANATOMY WALL SEEDS PERTURBATIONS [KEY=VALUE ...] (more refinement options), e.g. ``ct out2 3,4 segmenter``
(``band_offset.log``)."""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from benchmarks.benchmark_ct_refine import run_method
from benchmarks.benchmark_walls import wall_case
from benchmarks.options import parse_refine_options
from scripts.evaluation.motion_metrics import sliding_jump_ratio
from scripts.synthesis.walls import SEG_PERTURBATIONS, perturb_segmentation

torch.set_num_threads(1)
name, wall, seeds, perts = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")], sys.argv[4].split(",")
config = json.loads(Path("configs/refine_wall_search.json").read_text())  # refine_<key>: the benchmarks' <key>
overlay = [f"{k.removeprefix('refine_')}={json.dumps(v)}" for k, v in config.items() if k.startswith("refine_")]
options = {"similarity": "lncc", **parse_refine_options(overlay + sys.argv[5:])}
for seed in seeds:
    case = wall_case(name, seed, wall)  # once for all the perturbations
    for pert in perts:
        seg, info = perturb_segmentation(
            case["fixed_seg"], np.random.default_rng([seed, 30]), **SEG_PERTURBATIONS[pert]
        )
        ddf, _, band = run_method("refine_full", {**case, "fixed_seg": seg}, options, {})
        off = ndi.distance_transform_edt(~band)  # voxels from the nearest band voxel
        wall_voxels = case["wall"]
        pred, true = torch.from_numpy(ddf)[None].float(), torch.from_numpy(case["ddf"])[None].float()
        normals, spacing = torch.from_numpy(case["normals"]).float(), [float(s) for s in case["spacing"]]
        subsets = {"all": wall_voxels, "in band": wall_voxels & (off == 0)}
        subsets.update(
            {"1 voxel off": wall_voxels & (off > 0) & (off <= 1.5), "2 off": wall_voxels & (off > 1.5) & (off <= 2.5)}
        )
        subsets["more"] = wall_voxels & (off > 2.5)
        cells = []
        for label, subset in subsets.items():
            slip = float(
                sliding_jump_ratio(pred, true, torch.from_numpy(subset)[None], normals, spacing)["slip_ratio"][0]
            )
            cells.append(
                f"{label}: {100 * subset.sum() / wall_voxels.sum():.0f} % of the wall, slip {100 * slip:.0f} %"
            )
        print(f"{name} {wall} seed {seed} {pert} (missing {info['missing']}): " + " | ".join(cells), flush=True)
