"""Sliding on walls nobody tuned on: the refinement over the wall variants and segmentation perturbations of
:mod:`scripts.synthesis.walls`.

Each case is a known breathing motion (:func:`scripts.synthesis.breathing.make_breathing_case`) on the held-out
abdomen CT (``ct``: ``example_ct_sm``) or the CT phantom (``phantom``), its TRUE cavity wall drawn by one variant
(``--walls``: names of :data:`scripts.synthesis.walls.WALL_VARIANTS`, or ``random``: one drawn per case by
:func:`scripts.synthesis.walls.draw_wall`), ``--seeds`` seeds each. The refinement (``refine_full`` of
:mod:`benchmarks.benchmark_ct_refine`, as ``configs/refine.json`` runs it: regions from the fixed segmentation by
:func:`scripts.regions.cavity.cavity_regions`) gets the fixed segmentation clean or perturbed (``--perturbations``:
names of :data:`scripts.synthesis.walls.SEG_PERTURBATIONS`, drawn with the case's seed); the evaluation always uses
the truth (its wall, bones and labels).

Printed and written (``--out``: results.md, results.json): per anatomy, wall variant and perturbation, the mean over
the seeds of the slip recovered, the wall-band EPE (``--band-mm`` on both sides of the true wall), the body EPE,
the bone rigidity error, the fold % off the true band and the seconds; and a row per case in the JSON.

Run (from the bundle root)::

    python -m benchmarks.benchmark_walls --anatomies ct --seeds 0,1,2 --perturbations clean,segmenter
    python -m benchmarks.benchmark_walls --walls out2,layer --seeds 0 --wall-band-mm 3.0   # a refinement option
    python -m benchmarks.benchmark_walls --walls default --seeds 0 --refine-option fold_barrier=0   # any other
    python -m benchmarks.benchmark_walls --walls default --seeds 0 --perturbations clean,eroded_organs --profile
    python -m benchmarks.benchmark_walls --walls default --amplitude-mm 15,30 --flow-steps 7   # deep breathing
    python -m benchmarks.benchmark_walls --walls default --perturbations clean --method refine_true_wall
    python -m benchmarks.benchmark_walls --walls default --perturbations clean --method refine_from_truth
    python -m benchmarks.benchmark_walls --perturbations clean --method refine_image_band   # no segmentation

``--profile`` also prints where each refinement puts the slip across the true wall (:func:`jump_profile`);
``--log-search`` the wall search's choices as the bundle logs them (each candidate's share and mean local NCC^2;
with ``--refine-option first_wall_search=1``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from benchmarks.benchmark_ct_refine import DATA_DIR, run_method
from benchmarks.ct_evaluation import case_regions, evaluate
from benchmarks.options import FLAG_HELP, parse_refine_options
from scripts.synthesis.breathing import load_real_ct, make_breathing_case, phantom_anatomy
from scripts.synthesis.walls import SEG_PERTURBATIONS, WALL_VARIANTS, draw_wall, perturb_segmentation, wall_kwargs

ANATOMIES = ("ct", "phantom")
WALL_METHODS = ("refine_full", "refine_true_wall", "refine_from_truth", "refine_image", "refine_image_band")
WALL_METHODS += ("refine_image_cavity",)
KEYS = ("slip", "epe_band", "epe_body", "rigidity", "fold_pct_off_band", "seconds")
KEYS += ("slip_seen", "epe_body_seen", "epe_band_seen")  # over the voxels the moving image sees


def anatomy(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image HU, TotalSegmentator v2 label map, affine) of the held-out CT or of the phantom of that seed."""
    if name == "ct":
        return load_real_ct(DATA_DIR)
    if name == "phantom":
        return phantom_anatomy(np.random.default_rng([seed, 10]))
    raise ValueError(f"anatomy must be one of {ANATOMIES}, got {name!r}")


def wall_case(name: str, seed: int, wall: str, **motion) -> dict:
    """A known-motion case of anatomy ``name`` whose true wall is the variant ``wall`` (``random``: drawn); ``motion``:
    further keywords of :func:`make_breathing_case` (``amplitude_mm``, ``flow_steps``)."""
    image, seg, affine = anatomy(name, seed)
    rng = np.random.default_rng([seed, 20])
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    variant = draw_wall(rng) if wall == "random" else wall
    case = make_breathing_case(image, seg, affine, rng, **wall_kwargs(variant, spacing), **motion)
    case["wall_variant"] = variant
    return case


def jump_profile(ddf: np.ndarray, case: dict, offsets_mm: np.ndarray, min_jump_mm: float = 2.0) -> list[float]:
    """Where a field puts the slip: its displacement (mm) along the true jump's direction at ``offsets_mm`` along the
    outward normal from the inner voxels of the true wall (trilinear), averaged over those whose true jump is at
    least ``min_jump_mm``, minus the value at the last offset. The true field gives a step between 0 and one voxel
    out; a field that smears the slip over the band gives a ramp, one whose band is off puts the ramp beside it."""
    spacing = np.asarray(case["spacing"], dtype=float)
    jump = case["jump"]
    points = np.argwhere(case["wall"] & case["cavity"] & (np.linalg.norm(jump, axis=0) >= min_jump_mm))
    if len(points) == 0:
        return [float("nan")] * len(offsets_mm)
    normals = case["normals"][:, points[:, 0], points[:, 1], points[:, 2]].T
    direction = jump[:, points[:, 0], points[:, 1], points[:, 2]].T
    direction = direction / np.linalg.norm(direction, axis=1, keepdims=True)
    u_mm = np.asarray(ddf, dtype=np.float64) * spacing[:, None, None, None]
    values = []
    for offset in offsets_mm:
        coords = (points + offset * normals / spacing).T
        sampled = np.stack([ndi.map_coordinates(u_mm[k], coords, order=1, mode="nearest") for k in range(3)], axis=1)
        values.append(float(np.mean((sampled * direction).sum(axis=1))))
    return [v - values[-1] for v in values]


def summarise(rows: list[dict]) -> dict[str, float]:
    return {k: float(np.nanmean([r[k] for r in rows])) for k in KEYS}


def markdown(summary: dict) -> str:
    lines = [
        "| anatomy | wall | segmentation | slip | band EPE | body EPE | bone rigidity | fold % off band | s "
        "| slip, seen | body EPE, seen | band EPE, seen |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, wall, pert), m in summary.items():
        lines.append(
            f"| {name} | {wall} | {pert} | {100 * m['slip']:.0f} % | {m['epe_band']:.2f} | {m['epe_body']:.2f} | "
            f"{m['rigidity']:.4f} | {m['fold_pct_off_band']:.3f} | {m['seconds']:.1f} | {100 * m['slip_seen']:.0f} % | "
            f"{m['epe_body_seen']:.2f} | {m['epe_band_seen']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--anatomies", default="ct,phantom", help=f"comma-separated subset of {','.join(ANATOMIES)}")
    p.add_argument("--walls", default=",".join(WALL_VARIANTS), help="wall variants, or random")
    p.add_argument("--perturbations", default="clean,segmenter", help=f"of {','.join(SEG_PERTURBATIONS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--band-mm", type=float, default=6.0, help="half width of the evaluation band around the wall")
    p.add_argument("--wall-band-mm", type=float, default=None, help="cavity_regions band_mm (default: its own)")
    p.add_argument("--bone-hu", default=None, help="cavity_regions bone_hu, or none (default: its own)")
    p.add_argument("--iterations", default=None, help="refinement iterations per level, coarsest first")
    p.add_argument(
        "--refine-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=FLAG_HELP,
    )
    p.add_argument("--amplitude-mm", default=None, help="LO,HI range of the contents' motion (default: generator's)")
    p.add_argument("--flow-steps", type=int, default=0, help="generate the motion as a flow (deep breathing), 7")
    p.add_argument(
        "--method",
        default="refine_full",
        choices=WALL_METHODS,
        help="the refinement as configs/refine.json runs it; given the TRUE wall band, bones and normals; or with "
        "those started from the TRUE field, the finest level only (where the objective leads from the truth); with no "
        "segmentation: the bones from the image, and also the band where its field shears (--refine_shear_band), or "
        "the labelled refinement in the cavity its field moved (--refine_motion_cavity)",
    )
    p.add_argument("--profile", action="store_true", help="also print where the slip lies (see jump_profile)")
    p.add_argument("--log-search", action="store_true", help="also print the wall search's choices (its log)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--out", default="benchmark_walls", help="folder for results.md / results.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.log_search:
        logging.basicConfig(format="%(name)s: %(message)s")
        logging.getLogger("scripts.refinement.wall_search").setLevel(logging.INFO)
    names, walls = args.anatomies.split(","), args.walls.split(",")
    perts, seeds = args.perturbations.split(","), [int(s) for s in args.seeds.split(",")]
    for given, allowed, what in (
        (names, ANATOMIES, "anatomy"),
        (walls, (*WALL_VARIANTS, "random"), "wall variant"),
        (perts, tuple(SEG_PERTURBATIONS), "perturbation"),
    ):
        for g in given:
            if g not in allowed:
                raise SystemExit(f"error: unknown {what} {g!r}; choose from {', '.join(allowed)}")
    refine_kwargs: dict = {"similarity": "lncc"}
    if args.wall_band_mm is not None:
        refine_kwargs["band_mm"] = args.wall_band_mm
    if args.bone_hu is not None:
        refine_kwargs["bone_hu"] = None if args.bone_hu.lower() == "none" else float(args.bone_hu)
    refine_kwargs.update(parse_refine_options(args.refine_option))
    if args.iterations:
        refine_kwargs["iterations"] = [int(i) for i in args.iterations.split(",")]
        refine_kwargs["levels"] = len(refine_kwargs["iterations"])
    motion: dict = {"flow_steps": args.flow_steps} if args.flow_steps else {}
    if args.amplitude_mm:
        try:
            lo, hi = (float(a) for a in args.amplitude_mm.split(","))
            if not 0 <= lo < hi:
                raise ValueError(args.amplitude_mm)
        except ValueError:
            raise SystemExit(
                f"error: --amplitude-mm takes LO,HI with 0 <= LO < HI, got {args.amplitude_mm!r}"
            ) from None
        motion["amplitude_mm"] = (lo, hi)
    cases, grouped = [], {}
    offsets = np.arange(-4, 5) * 1.5  # mm along the outward normal of the true wall, for --profile
    for name in names:
        for wall in walls:
            for seed in seeds:
                start = time.perf_counter()
                case = wall_case(name, seed, wall, **motion)
                regions = case_regions(case, args.band_mm)
                built = time.perf_counter() - start
                true_profile = jump_profile(case["ddf"], case, offsets) if args.profile else None
                motion_info = {
                    k: case["info"][k] for k in ("organ_motion_mm_p5_p50_p95", "jump_mm_mean", "det_min_inside")
                }
                squeezed = case["det_in"][case["cavity"]] < 0.5  # the true field compresses these to < half
                motion_info["cavity_det_below_half_pct"] = float(100.0 * squeezed.mean())
                for pert in perts:
                    rng = np.random.default_rng([seed, 30])
                    seg, info = perturb_segmentation(case["fixed_seg"], rng, **SEG_PERTURBATIONS[pert])
                    ddf, seconds, own = run_method(args.method, {**case, "fixed_seg": seg}, refine_kwargs, {})
                    row = evaluate(ddf, case, regions, own)
                    row.update(seconds=seconds, anatomy=name, wall=wall, seed=seed, perturbation=pert)
                    row["variant"] = case["wall_variant"]
                    row["motion"] = dict(motion_info)
                    row["seg_changed_pct"] = float(100.0 * (seg != case["fixed_seg"]).mean())
                    row["missing_label"] = info["missing"]
                    if args.profile:
                        row["profile_offsets_mm"] = offsets.tolist()
                        row["profile_mm"] = jump_profile(ddf, case, offsets)
                        row["profile_true_mm"] = true_profile
                    cases.append(row)
                    grouped.setdefault((name, wall, pert), []).append(row)
                    print(
                        f"{name} {wall} seed {seed} {pert}: slip {100 * row['slip']:.0f} %, band EPE "
                        f"{row['epe_band']:.2f}, body EPE {row['epe_body']:.2f}, rigidity {row['rigidity']:.4f}, "
                        f"fold off band {row['fold_pct_off_band']:.3f} %, {seconds:.1f} s (case {built:.1f} s)",
                        flush=True,
                    )
                    if args.profile:
                        print("  slip profile, mm along the normal " + " ".join(f"{o:+.1f}" for o in offsets))
                        for label, values in (("true", true_profile), ("refined", row["profile_mm"])):
                            print(f"  {label:>8s}: " + " ".join(f"{v:5.2f}" for v in values), flush=True)
    summary = {key: summarise(rows) for key, rows in grouped.items()}
    table = markdown(summary)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table)
    settings = {"argv": sys.argv[1:] if argv is None else argv, "refine_kwargs": refine_kwargs, "band_mm": args.band_mm}
    settings["motion"], settings["method"] = motion, args.method
    payload = {"settings": settings, "summary": {" / ".join(k): v for k, v in summary.items()}, "cases": cases}
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    print(table)
    return summary


if __name__ == "__main__":
    main()
