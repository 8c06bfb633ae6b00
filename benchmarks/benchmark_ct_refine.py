"""Known-motion benchmark of test-time registration on real CT (and the CT phantom): our refinement with the full
biomechanical prior and with the Jacobian-only prior, against elastix B-spline (with / without its rigidity
penalty) and ANTs SyN.

Rows: ``none`` (no registration) and ``true`` (the true field: its Dice is the ceiling of the label metrics, below 1
as nearest-neighbour labels cannot follow a slip at the wall) frame the methods.

Cases (:mod:`scripts.synthesis.breathing`): ``ct<seed>`` = the TotalSegmentator example CT (``example_ct_sm``,
122x101x30, 3 mm) with a breathing-like known motion drawn with that seed; ``phantom<seed>`` = the CT phantom;
``gen<index>`` = a held-out generated case (:func:`scripts.synthesis.anatomy.generated_case`, split ``test``: seeds
no training set draws); ``<case>-cranial``: the same case breathing the other way (the fixed image the deeper
breath); the tables start with the means over the cases of each kind. Every method registers moving -> fixed on the
fixed grid; its field (voxels, ``warped(x) = moving(x + u(x))``) is compared with the true one:

- endpoint error (mm, mean and 95th percentile) over the body, the organs (cavity contents), the bones, a band
  of ``--band-mm`` on both sides of the true cavity wall, and the body outside the cavity, bones excluded
  (``outside``: muscle, fat and skin, which move with the wall and the patient, not with the breath);
- Dice of the warped moving segmentation (nearest) against the fixed one: mean over the organ labels and over the
  bone labels present in the fixed image (>= 50 voxels);
- organ motion recovered: sum(u . u_true) / sum(|u_true|^2) over the organs (mm): the share of the organs' true
  motion that the field recovers along it (a field of the right direction but a quarter of the length: 25 %);
- bone rigidity error: mean ||E||_F^2 over the bone voxels (:func:`scripts.evaluation.metrics.rigidity_error`, mm);
- slip: fraction of the true tangential jump recovered across the true wall
  (:func:`scripts.evaluation.motion_metrics.sliding_jump_ratio`);
- fold %: det J <= 0 over the whole grid and outside the true wall band (dilated by one voxel); folded voxels
  outside the sliding band the method itself was given (the whole grid for a method without one): the Jacobian
  barrier applies there, so none should fold;
- seconds (wall clock, inflated when other jobs share the cores) and CPU seconds of this process (both threads;
  elastix/ANTs run in their own threads, counted too).

Our refinement gets only what a user has at test time: the two images and the FIXED segmentation, from which
:func:`scripts.regions.cavity.cavity_regions` builds the regions (bones rigid, also where they touch the wall; sliding
band along the cavity wall, normals: ``refine_full``, then its second pass, :mod:`scripts.refinement.second_pass`, as
``configs/refine.json`` runs both by default (``--second-iterations 0``: one pass); ``refine_pairs`` also the organ
pair bands of ``configs/regions.json``, ``--organ_pairs true``). Without a segmentation: ``refine_image``, the CT's
voxels above the bones' threshold rigid (:func:`scripts.regions.label_free.image_bones`, as ``configs/refine.json`` runs
without one since bundle 0.9.24), the log-Jacobian prior elsewhere; ``refine_jacobian``, no regions at all
(``regulariser="jacobian"``, plain diffusion: ``configs/refine.json`` without one until 0.9.23); ``refine_image_band``,
``refine_image`` and then its second pass along the band where its field shears
(:func:`scripts.refinement.second_pass.shear_band_pass`, ``--refine_shear_band 0.35``; ``--refine-option
shear_band=T`` another threshold); ``refine_image_cavity``, then ``refine_full`` with the cavity its field moved
(:func:`scripts.regions.label_free.motion_labels`, ``configs/refine.json``'s default since 0.9.28; since 0.9.30 with
its second pass from the first field, ``--refine-option motion_cavity_step_start=true`` from a step;
``motion_cavity=F``, ``motion_cavity_grow=N``: N voxels of growth instead of 2), or, where that field moved nothing
off the bones, the band's pass, as the product.

The CT network (``network``: the shipped ``models/model_ct.pt`` or ``--ckpt``, through the product's inference path,
:mod:`benchmarks.ct_network`) needs only the two images; ``network_refine`` is ``refine_full`` started from the
network's field (``--network-refine-iterations``, default 40,30,20), ``network_refine_image`` ``refine_image`` so;
``--network-image-size X,Y,Z`` runs a ``--ckpt`` trained on another grid (``--image_size`` of its training).

Run (from the bundle root; elastix/ANTs need ``pip install itk-elastix antspyx``)::

    python -m benchmarks.benchmark_ct_refine --cases ct0,ct1,phantom0 --out benchmark_ct_refine --figure
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from benchmarks.baselines import ants_syn, check_translation, elastix_bspline
from benchmarks.ct_evaluation import batched, case_regions, evaluate
from benchmarks.ct_figure import figure
from benchmarks.ct_network import NetworkMethod
from benchmarks.ct_tables import case_means, field_of_view_mm, format_value, markdown
from benchmarks.options import FLAG_HELP, parse_key_json, parse_refine_options
from scripts.io.errors import InputError
from scripts.refinement.optimiser import DEFAULT_ITERATIONS, refine_pair
from scripts.refinement.second_pass import (
    SECOND_PASS_BAND_FOLD_WEIGHT,
    SECOND_PASS_ITERATIONS,
    SECOND_PASS_LR,
    SECOND_PASS_SNAP_MM,
    SECOND_PASS_STEP_START,
    SECOND_PASS_WALL_SEARCH,
    first_search_iterations,
    second_pass,
    shear_band_pass,
)
from scripts.refinement.start import START_MODES, network_start
from scripts.refinement.wall_search import (
    FIRST_PASS_WALL_REGION_MM,
    FIRST_PASS_WALL_SEARCH,
    WALL_RUNOFF_ITERATIONS,
    first_pass_with_search,
)
from scripts.regions import label_free
from scripts.regions.cavity import body_mask, cavity_regions
from scripts.synthesis.anatomy import generated_case
from scripts.synthesis.breathing import phantom_case, real_ct_case

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = BUNDLE_ROOT.parent / "shared" / "data" / "totalsegmentator_example"
METHODS = ("none", "true", "refine_full", "refine_pairs", "refine_jacobian", "refine_image", "refine_image_band")
METHODS += ("elastix", "elastix_rigidity", "ants_syn")
NETWORK_METHODS = ("network", "network_refine", "network_refine_image")
# not in the default run: the refinement given the TRUE regions (the case's wall band and normals, its bones), the
# ceiling of a better wall; with them started from the TRUE field, the finest level's iterations only
# (``refine_from_truth``): where the objective leads from the truth, the floor of any start; the opt-in moved cavity
EXTRA_METHODS = ("refine_true_wall", "refine_from_truth", "refine_image_cavity") + NETWORK_METHODS
HU_WINDOW = (-1200.0, 400.0)
# options of cavity_regions, not of refine_pair
REGION_KEYS = ("band_mm", "closing_mm", "bone_gap", "bone_hu", "bone_trim_hu", "snap_mm")
REGION_KEYS += ("unlabelled_bone_hu", "unlabelled_air_hu")
# the second pass of the refinement (scripts/refinement/second_pass.py), as configs/refine.json runs it
SECOND_KEYS = (  # fmt: skip
    "second_iterations", "second_snap_mm", "second_lr", "second_band_fold_weight", "second_step_start",
    "second_wall_search", "first_wall_search", "first_wall_region_mm", "first_wall_closings_mm",
    "first_wall_search_iterations", "first_wall_runoff_iterations", "shear_band", "motion_cavity",
    "motion_cavity_grow", "motion_cavity_step_start",
)


def build_case(name: str, data_dir: Path = DATA_DIR) -> dict:
    """``ct<seed>``, ``phantom<seed>`` or ``gen<index>``: a :func:`scripts.synthesis.breathing.make_breathing_case`
    dict; ``<case>-cranial``: the same anatomy breathing the other way (the contents move cranially)."""
    base, _, direction = name.partition("-")
    if direction not in ("", "cranial"):
        raise ValueError(f"case must be ct<seed>, phantom<seed> or gen<index>, optionally -cranial, got {name!r}")
    cranial = direction == "cranial"
    if base.startswith("ct") and base[2:].isdigit():
        if not data_dir.is_dir():
            raise FileNotFoundError(f"real CT data not found at {data_dir} (case {name})")
        return real_ct_case(data_dir, int(base[2:]), cranial=cranial)
    if base.startswith("phantom") and base[7:].isdigit():
        return phantom_case(int(base[7:]), cranial=cranial)
    if base.startswith("gen") and base[3:].isdigit():
        return generated_case(int(base[3:]), "test", cranial_fraction=float(cranial))
    raise ValueError(f"case must be ct<seed>, phantom<seed> or gen<index>, optionally -cranial, got {name!r}")


def normalise(hu: np.ndarray) -> np.ndarray:
    lo, hi = HU_WINDOW
    return np.clip((hu - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- methods
def run_method(
    method: str, case: dict, refine_kwargs: dict, elastix_kwargs: dict
) -> tuple[np.ndarray, float, np.ndarray | None]:
    """(ddf (3, X, Y, Z) voxels on the fixed grid, seconds, the sliding band the method was given or None) of one
    method on one case. ``refine_pairs`` is ``refine_full`` plus the organ-organ pair bands of the region spec."""
    fixed, moving, spacing = case["fixed"], case["moving"], case["spacing"]
    init = None
    if method.startswith("network"):
        ddf, seconds = refine_kwargs["network"](fixed, moving, case["affine"])
        if method == "network":
            return ddf, seconds, None
        rigid = refine_kwargs["network"].rigid
        start = refine_kwargs["network"].network_field  # refine.json starts from the field without rigid bones
        init = (batched(start), seconds, None if rigid is None else batched(rigid))
        method = "refine_image" if method == "network_refine_image" else "refine_full"
        refine_kwargs = {**refine_kwargs, "iterations": refine_kwargs["network_refine_iterations"]}
    if method == "none":
        return np.zeros((3, *fixed.shape), np.float32), 0.0, None
    if method == "true":  # the ceiling of the label metrics: a slip is no bijection of the voxel grid near the wall
        return case["ddf"].astype(np.float32), 0.0, ndi.binary_dilation(case["wall"])  # it folds at the wall only
    band_pass, cavity = method == "refine_image_band", method == "refine_image_cavity"  # refine_image, then more
    method = "refine_image" if band_pass or cavity else method
    if method.startswith("refine"):
        start = time.perf_counter()
        kwargs = {
            k: v
            for k, v in refine_kwargs.items()
            if k not in REGION_KEYS + SECOND_KEYS + ("network", "network_refine_iterations", "network_start")
        }
        if init is not None:
            kwargs["init_ddf"] = init[0]
            start -= init[1]
        band = None
        if method in ("refine_full", "refine_pairs"):
            options = {k: v for k, v in refine_kwargs.items() if k in REGION_KEYS}
            mask, normals, side = cavity_regions(
                case["fixed_seg"], spacing, image=fixed, pairs=method == "refine_pairs", return_side=True, **options
            )
            kwargs.update(reg_mask=batched(mask.astype(np.float32))[None], normals=batched(normals))
            kwargs["wall_side"] = batched(side.astype(np.float32))[None]
            kwargs.setdefault("regulariser", "rigidity_shearing_jacobian")
            band = mask == 2
            if init is not None:  # the network's field inside the cavity, its rigid map outside (``cavity``)
                mode = refine_kwargs.get("network_start", "field")
                kwargs["init_ddf"] = network_start(init[0], init[2], kwargs["wall_side"], mode)
        elif method in ("refine_true_wall", "refine_from_truth"):
            mask = np.where(case["bones"], 1, 0).astype(np.float32)
            mask[case["wall"] & ~case["bones"]] = 2
            kwargs.update(reg_mask=batched(mask)[None], normals=batched(case["normals"]))
            kwargs["wall_side"] = batched(case["cavity"].astype(np.float32))[None]
            kwargs.setdefault("regulariser", "rigidity_shearing_jacobian")
            band = mask == 2
            if method == "refine_from_truth":
                kwargs.update(init_ddf=batched(case["ddf"].astype(np.float32)), levels=1)
                iterations = kwargs.get("iterations", DEFAULT_ITERATIONS)  # configs/refine.json's
                kwargs["iterations"] = [list(iterations)[-1]]  # the finest level's
        elif method == "refine_image":  # no segmentation: the CT's bones by HU, as configs/refine.json without one
            kwargs.update(
                reg_mask=batched(label_free.image_bones(fixed)[0].astype(np.float32))[None],
                regulariser="rigidity_jacobian",
            )
        else:
            kwargs["regulariser"] = "jacobian"
        f, m = batched(normalise(fixed))[None], batched(normalise(moving))[None]
        second = int(refine_kwargs.get("second_iterations", SECOND_PASS_ITERATIONS))  # configs/refine.json's default
        first_search = int(refine_kwargs.get("first_wall_search", FIRST_PASS_WALL_SEARCH))
        if method in ("refine_full", "refine_pairs") and first_search > 0:
            region_options = dict(options, pairs=method == "refine_pairs")
            ddf, _, shift, closing = first_pass_with_search(
                f,
                m,
                list(spacing),
                case["fixed_seg"],
                fixed,
                region_options,
                kwargs,
                first_search,
                search_iterations=first_search_iterations(refine_kwargs.get("first_wall_search_iterations"), second),
                region_mm=float(refine_kwargs.get("first_wall_region_mm", FIRST_PASS_WALL_REGION_MM)),
                closings=[float(r) for r in refine_kwargs.get("first_wall_closings_mm", ())],
                runoff=int(refine_kwargs.get("first_wall_runoff_iterations", WALL_RUNOFF_ITERATIONS)),
            )
        else:
            (ddf, _), shift, closing = refine_pair(f, m, list(spacing), **kwargs), 0, None
        if cavity:  # the labelled refinement with the cavity its field moved (as --refine_motion_cavity)
            field, bones = ddf[0].numpy() * np.reshape(spacing, (3, 1, 1, 1)), kwargs["reg_mask"][0, 0].numpy() == 1
            fraction = float(refine_kwargs.get("motion_cavity", label_free.MOTION_CAVITY_FRACTION))
            grow = int(refine_kwargs.get("motion_cavity_grow", label_free.MOTION_CAVITY_GROW))
            seg = label_free.motion_labels(field, bones, body_mask(fixed), fraction, grow, spacing)
            step = refine_kwargs.get("motion_cavity_step_start", label_free.MOTION_CAVITY_STEP_START)
            labelled = {**refine_kwargs, "second_step_start": bool(step)}  # its second pass, as configs/refine.json's
            if (seg == label_free.MOTION_CONTENT_LABEL).any():  # else the band, as configs/refine.json
                ddf, _, band = run_method("refine_full", {**case, "fixed_seg": seg}, labelled, elastix_kwargs)
                return ddf, time.perf_counter() - start, band
        if (band_pass or cavity) and second > 0:
            rest = {k: v for k, v in kwargs.items() if k not in ("reg_mask", "regulariser", "init_ddf")}
            threshold = float(refine_kwargs.get("shear_band", label_free.SHEAR_BAND_THRESHOLD))
            passed = (f, m, list(spacing), ddf, kwargs["reg_mask"], body_mask(fixed), threshold, rest, second)
            weight = float(refine_kwargs.get("second_band_fold_weight", SECOND_PASS_BAND_FOLD_WEIGHT))
            ddf, _, mask = shear_band_pass(*passed, float(refine_kwargs.get("second_lr", SECOND_PASS_LR)), weight)
            band = mask[0, 0].numpy() == 2
        if method in ("refine_full", "refine_pairs") and second > 0:
            ddf, _, (mask, _, _) = second_pass(
                f, m, list(spacing), ddf, case["fixed_seg"], image=fixed, refine_options=kwargs,
                region_options=dict(options, pairs=method == "refine_pairs"),
                snap_mm=float(refine_kwargs.get("second_snap_mm", SECOND_PASS_SNAP_MM)),
                iterations=second,
                lr=float(refine_kwargs.get("second_lr", SECOND_PASS_LR)),
                band_fold_weight=float(refine_kwargs.get("second_band_fold_weight", SECOND_PASS_BAND_FOLD_WEIGHT)),
                step_start=bool(refine_kwargs.get("second_step_start", SECOND_PASS_STEP_START)),
                wall_search=int(refine_kwargs.get("second_wall_search", SECOND_PASS_WALL_SEARCH)),
                wall_shift=shift,
                wall_closing_mm=closing,
            )  # fmt: skip
            band = mask == 2
        return ddf[0].numpy(), time.perf_counter() - start, band
    if method.startswith("elastix"):
        rigidity = case["bones"].astype(np.float32) if method == "elastix_rigidity" else None
        ddf, seconds = elastix_bspline(
            normalise(fixed), normalise(moving), spacing, rigidity=rigidity, **elastix_kwargs
        )
        return ddf, seconds, None
    if method == "ants_syn":
        return (*ants_syn(normalise(fixed), normalise(moving), spacing), None)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


# ---------------------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="ct0,ct1,phantom0", help="ct<n>, phantom<n>, gen<n>[-cranial], comma-separated")
    p.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS + EXTRA_METHODS)}"
    )
    p.add_argument("--out", default="benchmark_ct_refine", help="folder for results.md / results.json")
    p.add_argument("--figure", nargs="?", const="docs/figures", default=None, help="write ct_refine_<case>.png there")
    p.add_argument("--band-mm", type=float, default=6.0, help="half width of the evaluation band around the wall")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--similarity", default="lncc")
    p.add_argument("--gamma", type=float, default=None)
    p.add_argument("--smooth", type=float, default=None)
    p.add_argument("--iterations", default=None, help="per level, coarsest first, e.g. 80,50,30")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lncc-kernel", type=int, default=None, help="LNCC window, voxels of each level")
    p.add_argument("--grid-mm", type=float, default=None)
    p.add_argument("--wall-band-mm", type=float, default=None, help="cavity_regions band_mm (default: its own)")
    p.add_argument("--closing-mm", type=float, default=None, help="cavity_regions closing_mm (default: its own)")
    p.add_argument("--bone-gap", type=int, default=None, help="cavity_regions bone_gap (default: its own)")
    second_help = f"iterations of the second pass (default {SECOND_PASS_ITERATIONS}, as configs/refine.json; 0: none)"
    p.add_argument("--second-iterations", type=int, default=None, help=second_help)
    p.add_argument("--second-snap-mm", type=float, default=None, help="how far the second pass may move the wall")
    step_help = f"the second pass starts from a step at its wall (default {str(SECOND_PASS_STEP_START).lower()})"
    p.add_argument("--second-step-start", choices=("true", "false"), default=None, help=step_help)
    search_help = f"the second pass's wall search, voxels (default {SECOND_PASS_WALL_SEARCH}: none)"
    p.add_argument("--second-wall-search", type=int, default=None, help=search_help)
    first_help = "the wall search before the first pass's finest level, voxels (default 0: none)"
    p.add_argument("--first-wall-search", type=int, default=None, help=first_help)
    p.add_argument("--refine-option", action="append", default=[], metavar="KEY=VALUE", help=FLAG_HELP)
    p.add_argument("--elastix-iterations", type=int, default=300)
    p.add_argument("--elastix-grid-mm", type=float, default=12.0)
    p.add_argument("--elastix-rigidity-weight", type=float, default=0.1)
    p.add_argument("--skip-check", action="store_true", help="skip the known-translation check of elastix/ANTs")
    p.add_argument("--ckpt", default=None, help="CT network weights (default: the configs' models/model_ct.pt)")
    p.add_argument("--network-refine-iterations", default="40,30,20", help="network_refine: per level")
    p.add_argument("--prealign-image-size", default=None, help="X,Y,Z: the rigid pre-alignment's grid (network's)")
    p.add_argument("--network-override", action="append", default=[], help="KEY=JSON: a config value of the network")
    p.add_argument("--network-start", default="field", choices=START_MODES, help="network_refine: its start")
    p.add_argument(
        "--network-image-size", default=None, help="X,Y,Z: the --ckpt network's grid (default: the configs')"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS + EXTRA_METHODS:
            raise SystemExit(f"error: unknown method {m!r}; choose from {METHODS + EXTRA_METHODS}")
    refine_kwargs = {"similarity": args.similarity}
    keys = (
        "gamma",
        "smooth",
        "lr",
        "grid_mm",
        "lncc_kernel",
        "second_iterations",
        "second_snap_mm",
        "second_wall_search",
        "first_wall_search",
    )
    for key in keys:
        if getattr(args, key) is not None:
            refine_kwargs[key] = getattr(args, key)
    if args.second_step_start is not None:
        refine_kwargs["second_step_start"] = args.second_step_start == "true"
    if args.wall_band_mm is not None:
        refine_kwargs["band_mm"] = args.wall_band_mm
    if args.closing_mm is not None:
        refine_kwargs["closing_mm"] = args.closing_mm
    if args.bone_gap is not None:
        refine_kwargs["bone_gap"] = args.bone_gap
    if args.iterations:
        refine_kwargs["iterations"] = [int(i) for i in args.iterations.split(",")]
        refine_kwargs["levels"] = len(refine_kwargs["iterations"])
    refine_kwargs.update(parse_refine_options(args.refine_option))
    if any(m in NETWORK_METHODS for m in methods):
        size = args.network_image_size
        try:
            size = [int(n) for n in size.split(",")] if size else None
        except ValueError:
            raise SystemExit(f"error: --network-image-size {size}: give X,Y,Z as integers, e.g. 40,32,24") from None
        try:
            fine = [int(n) for n in args.prealign_image_size.split(",")] if args.prealign_image_size else None
            if fine is not None and (len(fine) != 3 or min(fine) < 1):
                raise ValueError
        except ValueError:
            raise SystemExit(
                f"error: --prealign-image-size {args.prealign_image_size}: give X,Y,Z as positive integers"
            ) from None
        overrides = parse_key_json(args.network_override, "--network-override", "KEY=JSON, e.g. bone_threshold=0.825")
        try:
            refine_kwargs["network"] = NetworkMethod(
                args.ckpt, image_size=size, prealign_image_size=fine, overrides=overrides
            )
        except InputError as err:
            raise SystemExit(f"error: {err}") from None
        refine_kwargs["network_refine_iterations"] = [int(i) for i in args.network_refine_iterations.split(",")]
        refine_kwargs["network_start"] = args.network_start
    elastix_kwargs = dict(
        iterations=args.elastix_iterations,
        grid_mm=args.elastix_grid_mm,
        rigidity_weight=args.elastix_rigidity_weight,
        threads=args.threads,
    )
    if not args.skip_check:
        for tool in {"elastix" if m.startswith("elastix") else "ants" for m in methods if m[:3] in ("ela", "ant")}:
            print(f"{tool}: field conversion checked on a known translation, error {check_translation(tool):.3f} vox")
    results: dict[str, dict[str, dict[str, float]]] = {}
    fov: dict[str, list[float]] = {}
    for name in [c for c in args.cases.split(",") if c]:
        case = build_case(name)
        fov[name] = field_of_view_mm(case)
        regions = case_regions(case, args.band_mm)
        results[name] = {}
        fields = {}
        for method in methods:
            cpu = time.process_time()
            ddf, seconds, own_band = run_method(method, case, refine_kwargs, elastix_kwargs)
            cpu = time.process_time() - cpu
            row = evaluate(ddf, case, regions, own_band)
            row["seconds"], row["cpu_seconds"] = seconds, cpu
            if method == "network":  # the inference's alignment check (scripts/inference/modality.py)
                row.update({f"alignment_{k}": v for k, v in refine_kwargs["network"].alignment.items()})
            results[name][method] = row
            fields[method] = ddf
            print(f"{name} {method}: " + ", ".join(f"{k} {format_value(k, v)}" for k, v in row.items()), flush=True)
        if args.figure:
            figure(case, fields, Path(args.figure) / f"ct_refine_{name}.png", regions["body"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    means = case_means(results)
    table = markdown({**means, **results}, fov)
    (out / "results.md").write_text(table)
    settings = {k: v for k, v in refine_kwargs.items() if k != "network"}
    meta = {"argv": argv, "refine_kwargs": settings, "elastix": elastix_kwargs, "band_mm": args.band_mm}
    if "network" in refine_kwargs:
        net = refine_kwargs["network"]
        meta["network"] = {"ckpt": str(net.ckpt), "image_size": net.image_size}
    (out / "results.json").write_text(
        json.dumps({"settings": meta, "means": means, "results": results, "field_of_view_mm": fov}, indent=2)
    )
    print(table)
    return results


if __name__ == "__main__":
    main()
