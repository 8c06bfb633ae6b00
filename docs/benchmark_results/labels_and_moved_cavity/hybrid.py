"""The hybrid (a lead for issue 20, not adopted): a segmenter's labels plus, as one content label, the unlabelled
voxels of the moved region that a label-free first pass finds (``motion_labels``, grown by two voxels as the default
without a segmentation grows it), unless that region spilled over the wall (its edge near the skin: the rule that
stops its growth, ``MOTION_SPILL_SHARE``); then ``refine_full`` (the labelled default, ``configs/refine.json``) with the
labels and with the hybrid. ``plain``: every such voxel; ``outward``: only those outside the labels' own cavity
side; ``opened``: of those only where they reach two voxels or more beyond it (an opening by one voxel). One line a
case (docs/README.md, *Walls nobody tuned on*, bundle 0.9.28's bullet).

    PYTHONPATH=. python docs/benchmark_results/labels_and_moved_cavity/hybrid.py ct default,out2 0,1,2 segmenter plain
"""

import sys

import numpy as np
import torch
from scipy import ndimage

from benchmarks.benchmark_ct_refine import run_method
from benchmarks.benchmark_walls import wall_case
from benchmarks.ct_evaluation import case_regions, evaluate
from scripts.regions.cavity import body_mask, cavity_regions
from scripts.regions.label_free import MOTION_CONTENT_LABEL, MOTION_SPILL_SHARE, image_bones, motion_labels
from scripts.regions.labels import RIGID
from scripts.synthesis.walls import SEG_PERTURBATIONS, perturb_segmentation

# the labelled refinement as measured: bundle 0.9.28's second pass (30 iterations from the first field; 0.9.29's
# default starts it from a step and runs 120)
LABELLED = {"similarity": "lncc", "second_iterations": 30, "second_step_start": False}


def perturbed_case(anatomy: str, seed: int, wall: str, perturbation: str) -> tuple[dict, dict, np.ndarray]:
    """(the case of ``benchmarks.benchmark_walls``, its evaluation regions, the label map the refinement gets:
    ``perturbation`` drawn as that benchmark draws it, or the clean labels)."""
    case = wall_case(anatomy, seed, wall)
    regions, seg = case_regions(case, 6.0), case["fixed_seg"]
    if perturbation != "clean":
        seg, _ = perturb_segmentation(seg, np.random.default_rng([seed, 30]), **SEG_PERTURBATIONS[perturbation])
    return case, regions, seg


def main(anatomy: str, walls: list[str], seeds: list[int], perturbation: str, mode: str) -> None:
    for wall in walls:
        for seed in seeds:
            case, regions, seg = perturbed_case(anatomy, seed, wall, perturbation)
            spacing, fixed = np.asarray(case["spacing"], float), case["fixed"]
            first, _, _ = run_method("refine_image", case, {"similarity": "lncc"}, {})
            bones, body, report = image_bones(fixed)[0] == RIGID, body_mask(fixed), {}
            field = first * spacing[:, None, None, None]
            moved = motion_labels(field, bones, body, 0.6, spacing=spacing, report=report) == MOTION_CONTENT_LABEL
            add = moved & (seg == 0)
            if mode in ("outward", "opened"):
                add &= cavity_regions(seg, spacing, image=fixed, return_side=True)[2] != 1
            if mode == "opened":  # only where it reaches two voxels or more beyond the labels' cavity
                add = ndimage.binary_opening(add)
            spilled = report["edge_near_skin"] is not None and report["edge_near_skin"] > MOTION_SPILL_SHARE
            hybrid = seg.copy()
            if not spilled:
                hybrid[add] = MOTION_CONTENT_LABEL
            out = []
            for tag, labels in (("labels", seg), ("hybrid", hybrid)):
                if tag == "hybrid" and spilled:
                    out.append("hybrid = labels (spilled)")
                    continue
                ddf, seconds, own = run_method("refine_full", {**case, "fixed_seg": labels}, LABELLED, {})
                r = evaluate(ddf, case, regions, own)
                out.append(
                    f"{tag} slip {r['slip']:.3f} band {r['epe_band']:.2f} body {r['epe_body']:.2f} "
                    f"rig {r['rigidity']:.4f} s {seconds:.1f}"
                )
            print(
                f"{anatomy} {perturbation} {wall} {seed} edge {report['edge_near_skin']} grown {report['grown']} "
                f"added {int(add.sum())}: " + " | ".join(out),
                flush=True,
            )


if __name__ == "__main__":
    torch.set_num_threads(1)
    anatomy, walls, seeds, perturbation, mode = sys.argv[1:6]
    main(anatomy, walls.split(","), [int(s) for s in seeds.split(",")], perturbation, mode)
