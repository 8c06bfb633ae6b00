"""Deep breathing with no segmentation: where the refinement's field goes wrong, and what was tried (not adopted).

One case per call: the held-out CT, its default wall, contents moving 15-30 mm (``benchmark_walls --amplitude-mm
15,30 --flow-steps 7``), seed SEED. VARIANT (``KEY=VALUE`` options as JSON after a colon, comma-separated):

    none                                     no registration
    first[:smooth=0.1,gamma=0.1,levels=4]   refine_image (no segmentation: bones by HU, log-Jacobian + diffusion)
    continue:smooth=S                        first, then 100 iterations on the finest grid with diffusion S
    edge:SIGMA                               first, its diffusion charged exp(-(dI / SIGMA)^2) per pair (I in [0, 1])
    band                                     first, then the shear band's pass (configs/refine.json's default)
    pseudo:FRAC                              first; the contents = the body's voxels (bones out) that moved at least
                                             FRAC of the 95th percentile of |u|, largest component, holes filled, as
                                             one organ label and the bones by HU as a vertebra; then the labelled
                                             refinement (configs/refine.json + refine_wall_search.json +
                                             refine_deep.json) with that label map

Prints the benchmark's figures and the profile of the field along the true jump's direction at 3 mm steps along the
outward normal of the true wall (absolute, mm; ``benchmark_walls.jump_profile`` without its offset).

    PYTHONPATH=. python docs/benchmark_results/deep_no_segmentation/diagnose.py 0 first
"""

import json
import sys
import time

import numpy as np
import torch
from scipy import ndimage as ndi

import scripts.refinement.optimiser as optimiser
from benchmarks.benchmark_ct_refine import normalise, run_method
from benchmarks.benchmark_walls import wall_case
from benchmarks.ct_evaluation import batched, case_regions, evaluate
from scripts.refinement.pyramid import resize_image
from scripts.regions.cavity import body_mask
from scripts.regions.label_free import image_bones
from scripts.regions.labels import TOTALSEG_V2_TOTAL

OFFSETS_MM = np.arange(-10, 16) * 3.0
DEEP = dict(sided_upsampling=True, second_step_start=True, second_iterations=120)  # configs/refine_deep.json
OVERLAY = dict(first_wall_search=1, first_wall_region_mm=20, first_wall_closings_mm=[12])
OVERLAY.update(first_wall_search_iterations=20, first_wall_runoff_iterations=40)  # configs/refine_wall_search.json


def profile(ddf: np.ndarray, case: dict, min_jump_mm: float = 2.0) -> list[float]:
    spacing, jump = np.asarray(case["spacing"], dtype=float), case["jump"]
    points = np.argwhere(case["wall"] & case["cavity"] & (np.linalg.norm(jump, axis=0) >= min_jump_mm))
    normals = case["normals"][:, points[:, 0], points[:, 1], points[:, 2]].T
    direction = jump[:, points[:, 0], points[:, 1], points[:, 2]].T
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    u_mm = np.asarray(ddf, dtype=np.float64) * spacing[:, None, None, None]
    values = []
    for offset in OFFSETS_MM:
        coords = (points + offset * normals / spacing).T
        sampled = np.stack([ndi.map_coordinates(u_mm[k], coords, order=1, mode="nearest") for k in range(3)], 1)
        values.append(float(np.mean((sampled * direction).sum(axis=1))))
    return values


def edge_weighted(sigma: float, fixed: torch.Tensor):
    """optimiser.diffusion_weights with each pair's full charge times exp(-(dI / sigma)^2) of the level's image."""
    plain = optimiser.diffusion_weights

    def weights(spacing, shape, sliding, normals, side=None):
        out, image = plain(spacing, shape, sliding, normals, side), resize_image(fixed, tuple(shape))
        for axis, w in enumerate(out):
            n = shape[axis] - 1
            step = image.narrow(2 + axis, 1, n) - image.narrow(2 + axis, 0, n)
            w["full"] = w["full"] * torch.exp(-((step / sigma) ** 2))
        return out

    return weights


def pseudo_labels(ddf: np.ndarray, case: dict, frac: float) -> tuple[np.ndarray, float]:
    fixed, spacing = case["fixed"], np.asarray(case["spacing"])
    size = np.linalg.norm(ddf * spacing[:, None, None, None], axis=0)
    body, bones = body_mask(fixed), image_bones(fixed)[0].astype(bool)
    contents = body & ~bones & (size >= frac * np.percentile(size[body], 95))
    parts, n = ndi.label(contents)
    if n > 1:
        contents = parts == 1 + int(np.argmax(ndi.sum(contents, parts, range(1, n + 1))))
    contents = ndi.binary_fill_holes(contents)
    seg = np.zeros(fixed.shape, np.uint8)
    seg[contents], seg[bones] = TOTALSEG_V2_TOTAL["liver"], TOTALSEG_V2_TOTAL["vertebrae_L1"]
    dice = 2 * (contents & case["cavity"]).sum() / (contents.sum() + case["cavity"].sum())
    return seg, float(dice)


def main(seed: int, variant: str) -> None:
    torch.set_num_threads(1)
    name, _, arg = variant.partition(":")
    case = wall_case("ct", seed, "default", amplitude_mm=(15, 30), flow_steps=7)
    regions, start, note = case_regions(case, 6.0), time.perf_counter(), ""
    first = {"similarity": "lncc"}
    if name == "first" and arg:
        first.update({k: json.loads(v) for k, v in (kv.split("=") for kv in arg.split(","))})
        if "levels" in first:
            first["iterations"] = [150] * (first["levels"] - 3) + [150, 100, 60]
    if name == "edge":
        optimiser.diffusion_weights = edge_weighted(float(arg), batched(normalise(case["fixed"]))[None])
    method = {"band": "refine_image_band", "none": "none"}.get(name, "refine_image")
    ddf, _, own = run_method(method, case, {**first, "second_iterations": 30}, {})
    if name == "continue":
        f, m = (batched(normalise(case[k]))[None] for k in ("fixed", "moving"))
        bones = batched(image_bones(case["fixed"])[0].astype(np.float32))[None]
        options = dict(similarity="lncc", reg_mask=bones, regulariser="rigidity_jacobian", levels=1, grid_mm=None)
        options.update(init_ddf=batched(ddf), iterations=[100], smooth=float(arg.split("=")[1]))
        ddf = optimiser.refine_pair(f, m, list(case["spacing"]), **options)[0][0].numpy()
    if name == "pseudo":
        seg, dice = pseudo_labels(ddf, case, float(arg))
        note = f" (its contents' Dice with the true cavity {dice:.3f})"
        ddf, _, own = run_method(
            "refine_full", {**case, "fixed_seg": seg}, {"similarity": "lncc", **DEEP, **OVERLAY}, {}
        )
    row = evaluate(ddf, case, regions, own)
    keys = ("slip", "epe_band", "epe_body", "epe_organs", "epe_outside", "epe_bones", "rigidity", "fold_pct_off_band")
    print(
        f"seed {seed} {variant}: " + ", ".join(f"{k} {row[k]:.4g}" for k in keys),
        f"{time.perf_counter() - start:.0f} s" + note,
    )
    print("  profile mm at " + " ".join(f"{o:+.0f}" for o in OFFSETS_MM[::2]))
    print("    true  " + " ".join(f"{v:5.1f}" for v in profile(case["ddf"], case)[::2]))
    print("    field " + " ".join(f"{v:5.1f}" for v in profile(ddf, case)[::2]), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
