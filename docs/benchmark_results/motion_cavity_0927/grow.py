"""The moved cavity grown by N voxels (``motion_labels(..., grow=N)``): per case, the first pass without labels
(``refine_image``) once, then per N the moved cavity from its field (0.6 of its 95th percentile, as
``--refine_motion_cavity 0.6``; its Dice with the true cavity, the true cavity's share it adds and misses) and
``refine_full`` from identity with that label map, as ``configs/refine.json`` runs it; ``true``: the true cavity as
the one content label instead (the ceiling of any moved cavity). Seconds: the labelled refinement only.

Cases: those of ``benchmarks.benchmark_ct_refine`` (``ct<seed>``: the held-out CT; ``gen<i>``: generated, test
split), ``val<i>`` (generated, validation split), and ``dcm<seed>`` (the DICOM series of ../shared/data, another
patient, at 3 mm, moved by ``make_breathing_case``; only ``-cranial``: caudally its 14 slices fold). ``--summary
LOG...``: the means per group and variant.

    PYTHONPATH=. python docs/benchmark_results/motion_cavity_0927/grow.py 0,1,2,3,true dcm0-cranial,dcm1-cranial
    python docs/benchmark_results/motion_cavity_0927/grow.py --summary grow_dcm.log
"""

import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from benchmarks.benchmark_ct_refine import build_case, run_method
from benchmarks.ct_evaluation import case_regions, evaluate
from benchmarks.training_cts import dicom_pair
from scripts.regions.cavity import body_mask
from scripts.regions.label_free import MOTION_BONE_LABEL, MOTION_CONTENT_LABEL, image_bones, motion_labels
from scripts.regions.labels import RIGID
from scripts.synthesis.anatomy import generated_case
from scripts.synthesis.breathing import make_breathing_case

DATA = Path("../shared/data/totalsegmentator_example")
KEYS = ("slip", "epe_body", "epe_band", "epe95_band", "rigidity", "fold_pct_off_band", "seconds")


def any_case(name: str) -> dict:
    base, _, direction = name.partition("-")
    if base.startswith("dcm"):
        hu, seg, affine = dicom_pair(DATA, (3.0, 3.0, 3.0))
        return make_breathing_case(hu, seg, affine, np.random.default_rng(int(base[3:])), cranial=bool(direction))
    if base.startswith("val"):
        return generated_case(int(base[3:]), "val", cranial_fraction=float(bool(direction)))
    return build_case(name)


def main(variants: list[str], names: list[str], case_of=any_case, labelled: dict | None = None) -> None:
    """``case_of``: the case of a name; ``labelled``: the labelled refinement's options (default: LNCC, its second
    pass on, as 0.9.27 ran it; ``../motion_cavity_0928/grow_mm.py`` gives others)."""
    torch.set_num_threads(1)
    labelled = {"similarity": "lncc"} if labelled is None else labelled
    for name in names:
        case = case_of(name)
        regions = case_regions(case, 6.0)
        fixed, spacing, cavity = case["fixed"], np.asarray(case["spacing"]), case["cavity"]
        first, _, _ = run_method("refine_image", case, {"similarity": "lncc"}, {})
        bones, body = image_bones(fixed)[0] == RIGID, body_mask(fixed)
        for variant in variants:
            if variant == "true":
                seg = np.where(ndimage.binary_fill_holes(cavity & ~bones), MOTION_CONTENT_LABEL, 0).astype(np.uint8)
                seg[bones] = MOTION_BONE_LABEL
            else:
                seg = motion_labels(first * spacing[:, None, None, None], bones, body, 0.6, int(variant))
            contents = seg == MOTION_CONTENT_LABEL
            dice = 2 * (contents & cavity).sum() / max(contents.sum() + cavity.sum(), 1)
            added, missed = ((contents & ~cavity).sum() / cavity.sum(), (cavity & ~contents).sum() / cavity.sum())
            t0 = time.perf_counter()
            ddf, _, own = run_method("refine_full", {**case, "fixed_seg": seg}, labelled, {})
            row = dict(evaluate(ddf, case, regions, own), seconds=time.perf_counter() - t0)
            head = f"{name} grow {variant} (Dice {dice:.3f}, adds {added:.3f}, misses {missed:.3f}): "
            print(head + ", ".join(f"{k} {row[k]:.4g}" for k in KEYS), flush=True)


def summary(paths: list[str]) -> None:
    rows = defaultdict(list)
    for path in paths:
        for line in open(path):
            head, _, values = line.partition("): ")
            if not values:
                continue
            case, variant = head.split(" (")[0].split(" ", 1)
            group = {"dcm": "DICOM series", "ct": "held-out CT"}.get(re.sub(r"\d.*", "", case), "generated")
            group += ", cranial" if "cranial" in case else ""
            numbers = {k: float(v) for k, v in re.findall(r"(\w+) ([-0-9.e]+)", values)}
            numbers["dice"] = float(re.search(r"Dice ([0-9.]+)", head).group(1))
            rows[group, variant].append(numbers)
    print("| cases | variant | n | slip % | body EPE | band EPE | p95 band | rigidity | fold % off band | s | Dice |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (group, variant), items in sorted(rows.items()):
        m = {k: np.mean([r[k] for r in items]) for k in KEYS + ("dice",)}
        print(f"| {group} | {variant} | {len(items)} | {100 * m['slip']:.1f} | {m['epe_body']:.3f} | "
              f"{m['epe_band']:.3f} | {m['epe95_band']:.2f} | {m['rigidity']:.4f} | {m['fold_pct_off_band']:.4f} | "
              f"{m['seconds']:.1f} | {m['dice']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    summary(sys.argv[2:]) if sys.argv[1] == "--summary" else main(sys.argv[1].split(","), sys.argv[2].split(","))
