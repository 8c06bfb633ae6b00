"""Where the bones' rigidity error lies: per case, the strain energy ||E||_F^2 of the refined field on the TRUE bone
voxels, split by whether the rigid mask that ``cavity_regions`` built from the (perturbed) labels holds them, and by
whether they touch the final sliding band, with the HU range of those not rigid; then the five bone labels holding
most of it (share, id, voxels, of those not rigid, touching the band, shrunk by the perturbation, grown by it).
configs/refine.json's refinement (``benchmarks.benchmark_ct_refine.run_method("refine_full")``), 1 thread a case;
with a fifth argument ``overlay``, merged with configs/refine_wall_search.json (``overlay.py``).

Usage, from the bundle's root: PYTHONPATH=. python docs/benchmark_results/walls_bone_edges/diagnosis/rigidity_split.py
ANATOMY WALL SEEDS PERTURBATIONS [overlay], e.g. ``phantom default 0,1,2 clean,segmenter`` (bundle 0.9.21 from a
worktree at 8d94ab0: ``rigidity_0921.log``; 0.9.22: ``rigidity_0922.log``); ``ct out2 4 segmenter overlay``: the
overlay's, with and without ../../walls_bone_margin/bone_margin.patch (``../../walls_bone_margin/rigidity_*.log``)."""

import sys

import numpy as np
import torch
from overlay import overlay_options  # this folder's
from scipy import ndimage as ndi

from benchmarks.benchmark_ct_refine import run_method
from benchmarks.benchmark_walls import wall_case
from scripts.losses.mechanics import gradient_components, strain_energy
from scripts.regions.cavity import cavity_regions
from scripts.synthesis.breathing import bone_ids
from scripts.synthesis.walls import SEG_PERTURBATIONS, perturb_segmentation

torch.set_num_threads(1)
name, wall, seeds, perts = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")], sys.argv[4].split(",")
options = overlay_options() if sys.argv[5:] == ["overlay"] else {"similarity": "lncc"}
for seed in seeds:
    case = wall_case(name, seed, wall)
    spacing, true_bones = [float(s) for s in case["spacing"]], case["bones"]
    for pert in perts:
        seg, info = perturb_segmentation(
            case["fixed_seg"], np.random.default_rng([seed, 30]), **SEG_PERTURBATIONS[pert]
        )
        rigid = cavity_regions(seg, spacing, image=case["fixed"])[0] == 1
        ddf, _, band = run_method("refine_full", {**case, "fixed_seg": seg}, options, {})
        energy = strain_energy(gradient_components(torch.from_numpy(ddf)[None].float(), spacing, "voxel"))[0].numpy()
        total = energy[true_bones].sum()
        touch = ndi.binary_dilation(band)
        parts = {"all": true_bones, "rigid": true_bones & rigid, "not rigid": true_bones & ~rigid}
        parts.update({"touch band": true_bones & touch, "off band": true_bones & ~touch})
        cells = [f"{k} n={int(v.sum())} e={energy[v].mean() if v.any() else 0:.4f} share={energy[v].sum() / total:.2f}"
                 for k, v in parts.items()]  # fmt: skip
        lost = case["fixed"][true_bones & ~rigid]  # the CT's HU on the true bone voxels the mask missed
        cells.append(f"not rigid HU {lost.min():.0f}..{lost.max():.0f}" if lost.size else "not rigid HU -")
        shrunk = [k for k in info["shrunk"] if k in bone_ids()]
        extra = f"; rigid off the true bones {int((rigid & ~true_bones).sum())}"
        extra += f"; bone labels shrunk {len(shrunk)}, missing {info['missing']}"
        print(f"{name} {wall} s{seed} {pert}: " + " | ".join(cells) + extra)
        rows = []
        for label in np.unique(case["fixed_seg"][true_bones]):
            cell = true_bones & (case["fixed_seg"] == label)
            rows.append((round(float(energy[cell].sum() / total), 2), int(label), int(cell.sum()),
                         int((cell & ~rigid).sum()), int((cell & touch).sum()), int(label) in info["shrunk"],
                         info["grown"].get(int(label))))  # fmt: skip
        print("   labels (share, id, n, not rigid, touch band, shrunk, grown):", sorted(rows, reverse=True)[:5])
