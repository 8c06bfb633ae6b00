"""Test-time refinement as the inference workflow's inferer (``configs/refine.json``): per pair, optimise the field
with the biomechanical prior (:func:`scripts.refinement.optimiser.refine_pair`), starting from the network's
prediction or from identity, on a ~2 mm grid over the fixed image.

Per pair (the :class:`scripts.inference.predict.PairData` reaches the inferer through ``PreparePair(pass_pair=True)``):

1. Initial field: the network's prediction on its own grid (``use_network``), or zero; with ``network_start``
   ``"cavity"`` and a segmentation, the network's field inside the cavity only and its rigid pre-alignment outside
   (:mod:`scripts.refinement.start`).
2. The refinement grid G: the fixed image's grid coarsened to about ``grid_mm`` per voxel (edge-aligned, never finer
   than the image). The fixed image is area-averaged onto G; the moving image is averaged to about ``grid_mm`` on its
   own grid, then sampled onto G through the affines. Both are normalised (``intensity``: the CT window, or min-max).
3. Regions on G from the segmentation of the fixed image (``--fixed_seg``, a TotalSegmentator ``total`` label map on
   the fixed grid, sampled at G's voxel centres; without it, made on the fly by :mod:`scripts.regions.segment` when
   TotalSegmentator and its weights are installed): bones rigid, sliding along the whole cavity wall (and, with
   ``organ_pairs``, at the organ interfaces of ``configs/regions.json``; :func:`scripts.regions.cavity.cavity_regions`).
   Without a segmentation, a CT's bones from its HU alone (``image_bones_hu``, :mod:`scripts.regions.label_free`), the
   log-Jacobian prior elsewhere, with a notice; then (``motion_cavity``, the default) steps 3 and 4 again, the second
   pass included (from the field, ``motion_cavity_step_start``), with the contents that this first field moved as the
   cavity, or (``shear_band``) a second pass along where it shears.
4. :func:`scripts.refinement.optimiser.refine_pair` (with ``first_wall_search`` > 0 and the sliding band, its finest
   level after the wall search, :func:`scripts.refinement.wall_search.first_pass_with_search`); with the sliding band
   and ``second_iterations`` > 0 (120 by default), then the second pass (:mod:`scripts.refinement.second_pass`: the
   wall moved to where that field shears, ``second_iterations`` more iterations on G). The field (voxels of G) goes
   to the writer with G as its grid, and the loss curve (the second pass's rows one level past the first's) to the
   pair's entry of ``summary.json`` (``refinement``), with the share of G's voxels outside the sliding band that fold
   (det J <= 0). Where the prior holds none should; above :data:`FOLD_WARNING_PERCENT` (or when the similarity ends
   the first pass's finest level worse than it started it) the run warns: the optimisation diverged (e.g. too large
   a ``lr``).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer

from scripts.evaluation.metrics import fold_percents
from scripts.io.errors import InputError
from scripts.io.options import check_number, check_optional_numbers, check_schedule, is_number, parse_flag, parse_null
from scripts.io.resampling import area_resize, coarse_grid, field_to_fixed_grid, labels_on_coarse_grid, warp_to_fixed
from scripts.refinement.optimiser import DEFAULT_LEVELS, refine_pair
from scripts.refinement.pyramid import WORKING_GRID_MM
from scripts.refinement.second_pass import (
    SECOND_PASS_BAND_FOLD_WEIGHT,
    SECOND_PASS_ITERATIONS,
    SECOND_PASS_LR,
    SECOND_PASS_SNAP_MM,
    SECOND_PASS_STEP_START,
    SECOND_PASS_WALL_SEARCH,
    check_pass_options,
    first_search_iterations,
    second_pass,
    shear_band_pass,
)
from scripts.refinement.similarity import SIMILARITIES
from scripts.refinement.start import START_MODES, network_start
from scripts.refinement.wall_search import (
    FIRST_PASS_WALL_CLOSINGS_MM,
    FIRST_PASS_WALL_REGION_MM,
    FIRST_PASS_WALL_SEARCH,
    WALL_RUNOFF_ITERATIONS,
    first_pass_with_search,
)
from scripts.regions import label_free
from scripts.regions import segment as totalsegmentator
from scripts.regions.cavity import body_mask, cavity_regions
from scripts.regions.labels import RIGID, SLIDING

__all__ = ["RefinementInferer", "FOLD_WARNING_PERCENT"]

logger = logging.getLogger(__name__)

# folded voxels outside the sliding band (% of them) above which a refinement is reported as diverged
FOLD_WARNING_PERCENT = 0.1
INTENSITIES = ("ct", "minmax")
SEGMENT_CHOICES = ("if_available", "always", "never")
# the pair on G: its shape, affine, spacing; the fixed HU; both images normalised (1, 1, *G); the network's start
Prepared = namedtuple("Prepared", "shape affine spacing fixed_hu fixed moving init rigid")


def _normalise(volume: torch.Tensor, intensity: str, window: Sequence[float]) -> torch.Tensor:
    if intensity == "ct":
        lo, hi = float(window[0]), float(window[1])
        return ((volume - lo) / (hi - lo)).clamp(0.0, 1.0)
    lo, hi = float(volume.min()), float(volume.max())
    return (volume - lo) / (hi - lo) if hi > lo else torch.zeros_like(volume)


REGION_DEFAULTS = {key: p.default for key, p in inspect.signature(cavity_regions).parameters.items()}


class RefinementInferer(Inferer):
    """Inferer of ``configs/refine.json`` (module docstring). Returns ``{"ddf": (1, 3, *G)}`` in voxels of G and
    sets the pair's ``net_affine`` / ``net_shape`` to G, so the writer brings the field back to the fixed grid.

    Args:
        network_inferer: the inferer that runs the network (``RegistrationInferer``), used when ``use_network``.
        use_network: start from the network's prediction (False: from identity).
        network_start: with ``use_network``, ``"field"`` (the network's field everywhere) or ``"cavity"`` (inside
            the cavity only, the rigid pre-alignment outside; :mod:`scripts.refinement.start`).
        grid_mm: voxel size of the refinement grid, mm (None: the fixed image's grid). intensity, hu_window: "ct" (that
            CT window to [0, 1], clipped) or "minmax" (each image to [0, 1]).
        regulariser: the prior with regions (``rigidity_shearing_jacobian``, or ``rigidity_jacobian``, ``jacobian``);
            without a segmentation the prior is ``jacobian``.
        similarity: "lncc", "mind" (MIND-SSC) or "mse".
        gamma, smooth, levels, iterations, lr: see :func:`scripts.refinement.optimiser.refine_pair` (None: its default).
        band_mm, closing_mm: half width of the sliding band along the cavity wall; the radius of the closing that
            merges the cavity contents into one cavity (mm).
        bone_trim_hu, bone_hu, unlabelled_bone_hu, unlabelled_air_hu: with a CT, the image's rules of
            ``cavity_regions`` (its keywords, HU; None: that rule off; ``bone_trim_hu`` off by default).
        second_iterations: iterations of the second pass (:mod:`scripts.refinement.second_pass`; default
            :data:`~scripts.refinement.second_pass.SECOND_PASS_ITERATIONS`, 120; 0: none), run when the prior slides
            (``rigidity_shearing_jacobian`` with a segmentation).
        second_snap_mm, second_lr: how far the second pass may move the wall (mm); the step of its Adam iterations.
        second_band_fold_weight: the fold barrier's weight on the second pass's band relative to the rest (1.0).
        second_step_start: start the second pass from a step at its wall (:func:`~.start.step_at_wall`; the default).
        second_wall_search: before the second pass, try every shift of the whole labelled wall within this many
            voxels in or out and keep the one the image's similarity prefers (0: none, the default; it costs
            2 n + 1 passes of ``second_iterations``; :func:`scripts.refinement.wall_search.search_wall_shift`).
        first_wall_search: the same search before the first pass's finest level, each candidate refined for
            ``first_wall_search_iterations`` (None: ``second_iterations``, at most 30; 30 when 0), the finest level
            then with the chosen wall (0: none, the default; :func:`~.wall_search.first_pass_with_search`).
        first_wall_region_mm: 0: that search moves the whole wall by one shift; > 0: a region of it by its own where
            a candidate's similarity, averaged over this many mm, beats the whole wall's there by a margin
            (``search_wall_shift``'s ``region_mm``).
        first_wall_closings_mm: other closing radii of the cavity (mm; a list, or one number) that search tries as
            candidates too, per region with ``first_wall_region_mm`` (none, the default; ``search_wall_shift``'s
            ``closings``).
        first_wall_runoff_iterations: > 0: where that search's local NCC and its candidates' objective prefer
            different shifts for the whole wall, both go on this many iterations and are chosen again (0: none, the
            default; ``search_wall_shift``'s ``runoff``).
        sided_upsampling: carry the field between levels with each side of the wall from its own side (see
            :func:`~scripts.refinement.optimiser.refine_pair`); off by default, for large motions.
        organ_pairs: also let the organ-organ pairs of the region spec slide (lung / liver, ...); off by default:
            in breathing the cavity contents move together and slide along the wall (docs/README.md, the CT
            benchmark: the pair bands let textureless organs lag behind).
        image_bones_hu: without a segmentation, the voxels of a CT above this many HU are rigid ("auto": 60 HU above
            its soft tissue, at least 100; :func:`scripts.regions.label_free.image_bones`); None: the log-Jacobian
            prior.
        motion_cavity: with those bones and a CT, the labelled refinement again (its second pass included), with the
            cavity where the first field moved (this fraction of its 95th percentile, by default :data:`~scripts.
            regions.label_free.MOTION_CAVITY_FRACTION`; :func:`scripts.regions.label_free.motion_labels`; None: off).
        motion_cavity_step_start: its second pass from a step at its wall (as ``second_step_start``); off by default
            (:data:`~scripts.regions.label_free.MOTION_CAVITY_STEP_START`: the moved wall is a guess).
        shear_band: where that is off or nothing moved, the second pass slides along the band where the first field
            shears this much (:func:`~scripts.refinement.second_pass.shear_band_pass`; None: no band, no second pass).
        segment: without ``--fixed_seg``: "if_available" (TotalSegmentator on the fly when it and its weights are
            installed, else the log-Jacobian prior with a notice), "always" (an error when it cannot run) or "never".
        progress: show a progress bar per pair.
    """

    def __init__(
        self,
        network_inferer: Inferer | None = None,
        use_network: bool = False,
        grid_mm: float | None = WORKING_GRID_MM,
        intensity: str = "ct",
        hu_window: Sequence[float] = (-1200.0, 400.0),
        regulariser: str = "rigidity_shearing_jacobian",
        similarity: str = "lncc",
        gamma: float | None = None,
        smooth: float | None = None,
        levels: int | None = None,
        iterations: int | Sequence[int] | None = None,
        lr: float | Sequence[float] | None = None,
        band_mm: float = 1.5,
        closing_mm: float = 20.0,
        bone_trim_hu: float | None = None,
        bone_hu: float | None = REGION_DEFAULTS["bone_hu"],
        unlabelled_bone_hu: float | None = REGION_DEFAULTS["unlabelled_bone_hu"],
        unlabelled_air_hu: float | None = REGION_DEFAULTS["unlabelled_air_hu"],
        organ_pairs: bool = False,
        image_bones_hu: float | str | None = "auto",
        shear_band: float | None = label_free.SHEAR_BAND_THRESHOLD,
        motion_cavity: float | None = label_free.MOTION_CAVITY_FRACTION,
        motion_cavity_step_start: bool = label_free.MOTION_CAVITY_STEP_START,
        segment: str = "if_available",
        progress: bool = True,
        second_iterations: int = SECOND_PASS_ITERATIONS,
        second_snap_mm: float = SECOND_PASS_SNAP_MM,
        second_lr: float = SECOND_PASS_LR,
        second_band_fold_weight: float = SECOND_PASS_BAND_FOLD_WEIGHT,
        second_step_start: bool = SECOND_PASS_STEP_START,
        second_wall_search: int = SECOND_PASS_WALL_SEARCH,
        first_wall_search: int = FIRST_PASS_WALL_SEARCH,
        first_wall_region_mm: float = FIRST_PASS_WALL_REGION_MM,
        first_wall_closings_mm: Sequence[float] = FIRST_PASS_WALL_CLOSINGS_MM,
        first_wall_search_iterations: int | None = None,
        first_wall_runoff_iterations: int = WALL_RUNOFF_ITERATIONS,
        sided_upsampling: bool = False,
        network_start: str = "field",
    ):
        super().__init__()
        if network_start not in START_MODES:
            raise InputError(f"--refine_network_start must be one of {START_MODES}, got {network_start!r}")
        self.network_start = network_start
        if intensity not in INTENSITIES:
            raise InputError(f"--refine_intensity must be one of {INTENSITIES}, got {intensity!r}")
        if similarity not in SIMILARITIES:
            raise InputError(f"--refine_similarity must be one of {SIMILARITIES}, got {similarity!r}")
        if use_network and network_inferer is None:
            raise ValueError("use_network needs the network_inferer")
        if segment not in SEGMENT_CHOICES:
            raise InputError(f"--segment_fixed must be one of {SEGMENT_CHOICES}, got {segment!r}")
        self.segment = segment
        self.network_inferer, self.use_network = network_inferer, bool(use_network)
        grid_mm, gamma, smooth, levels, iterations, lr = map(
            parse_null, (grid_mm, gamma, smooth, levels, iterations, lr)
        )  # "null" as typed on the command line
        grid_note = "mm; or null: the fixed image's grid"
        self.grid_mm = (
            None if grid_mm is None else check_number(grid_mm, "--refine_grid_mm", strict=True, note=grid_note)
        )
        self.intensity, self.hu_window = intensity, tuple(float(h) for h in hu_window)
        self.regulariser, self.similarity, self.band_mm, self.progress = regulariser, similarity, band_mm, progress
        self.closing_mm, self.organ_pairs = float(closing_mm), bool(organ_pairs)
        rules = dict(bone_trim_hu=bone_trim_hu, bone_hu=bone_hu, unlabelled_bone_hu=unlabelled_bone_hu,
                     unlabelled_air_hu=unlabelled_air_hu)  # fmt: skip
        self.hu_rules = check_optional_numbers(rules, "HU; null turns that rule off")
        self.image_bones_hu = parse_null(image_bones_hu)
        if self.image_bones_hu is not None:
            label_free.bone_threshold_hu(np.zeros(1), self.image_bones_hu, "--refine_image_bones_hu")  # checks it
        band, note = parse_null(shear_band), "the least shear, mm / mm; or null: no band"
        self.shear_band = None if band is None else check_number(band, "--refine_shear_band", strict=True, note=note)
        self.motion_cavity = label_free.check_motion_fraction(motion_cavity)
        for name, weight in (("gamma", gamma), ("smooth", smooth)):
            if weight is not None:
                check_number(weight, f"--refine_{name}", note="or null: the default of the prior in use")
        check_schedule(levels, iterations, lr, DEFAULT_LEVELS)
        passes = dict(second_iterations=second_iterations, second_snap_mm=second_snap_mm, second_lr=second_lr,
                      second_band_fold_weight=second_band_fold_weight, second_wall_search=second_wall_search,
                      first_wall_search=first_wall_search, first_wall_region_mm=first_wall_region_mm,
                      first_wall_search_iterations=parse_null(first_wall_search_iterations),
                      first_wall_runoff_iterations=first_wall_runoff_iterations)  # fmt: skip
        checked = check_pass_options(passes, "--refine_")  # second_pass.PASS_RULES
        self.second_iterations, self.second_snap_mm = checked["second_iterations"], checked["second_snap_mm"]
        self.second_lr, self.second_band_fold_weight = checked["second_lr"], checked["second_band_fold_weight"]
        self.second_step_start = parse_flag(second_step_start, "refine_second_step_start")
        self.motion_cavity_step_start = parse_flag(motion_cavity_step_start, "refine_motion_cavity_step_start")
        self.second_wall_search, self.first_wall_search = checked["second_wall_search"], checked["first_wall_search"]
        self.first_wall_region_mm = checked["first_wall_region_mm"]
        closings = [first_wall_closings_mm] if is_number(first_wall_closings_mm) else first_wall_closings_mm
        if not (isinstance(closings, (list, tuple)) and all(is_number(r) and r > 0 for r in closings)):
            raise InputError(
                f"--refine_first_wall_closings_mm must be a list of radii > 0 (mm; [] none), got {closings!r}"
            )
        if closings and self.first_wall_search == 0:
            raise InputError(
                "--refine_first_wall_closings_mm needs --refine_first_wall_search >= 1 (the search tries them)"
            )
        self.first_wall_closings_mm = tuple(float(r) for r in closings)
        n_search = checked["first_wall_search_iterations"]
        self.first_wall_search_iterations = first_search_iterations(n_search, self.second_iterations)
        self.first_wall_runoff_iterations = checked["first_wall_runoff_iterations"]
        flag = "--refine_first_wall_runoff_iterations"
        if self.first_wall_runoff_iterations and self.first_wall_search == 0:
            raise InputError(f"{flag} needs --refine_first_wall_search >= 1 (the run-off is that search's)")
        options = {"gamma": gamma, "smooth": smooth, "levels": levels, "iterations": iterations, "lr": lr}
        self.options = {key: value for key, value in options.items() if value is not None}
        self.options["sided_upsampling"] = parse_flag(sided_upsampling, "refine_sided_upsampling")

    def regions(self, pair: Any, shape: Sequence[int], spacing: np.ndarray, fixed_hu: torch.Tensor, seg=None):
        """(regulariser, reg_mask, normals, wall side, label map) on the refinement grid: from ``seg`` (on it) or the
        fixed segmentation; without (a notice; normals, side, labels None), a CT's bones by HU or the Jacobian prior."""
        if seg is None and pair.fixed_seg is None:
            pair.fixed_seg = self.segment_on_the_fly(pair)
        if seg is None and pair.fixed_seg is None:
            hu = fixed_hu.numpy()
            if self.image_bones_hu is None or self.regulariser == "jacobian" or not label_free.hounsfield_like(hu):
                logger.warning("%s: no segmentation of the fixed image (--fixed_seg): refining with the log-Jacobian "
                               "prior only (no rigid bones, no sliding)", pair.name)  # fmt: skip
                return "jacobian", None, None, None, None
            mask, threshold = label_free.image_bones(hu, self.image_bones_hu, "--refine_image_bones_hu")
            rigid = float((mask == RIGID).mean() * 100.0)
            pair.report["image_bones"] = {"hu": threshold, "rigid_percent": rigid}
            slide = "then sliding where it shears" if self.shear_band and self.second_iterations else "no sliding"
            slide = "then the cavity where that field moves" if self.motion_cavity is not None else slide
            logger.warning("%s: no segmentation of the fixed image (--fixed_seg): the voxels above %.0f HU rigid "
                           "(bones), the log-Jacobian prior elsewhere (%s)", pair.name, threshold, slide)  # fmt: skip
            return "rigidity_jacobian", torch.from_numpy(mask)[None, None], None, None, None
        seg = labels_on_coarse_grid(np.asarray(pair.fixed_seg), shape) if seg is None else seg
        body = fixed_hu.numpy() if self.intensity == "ct" else None
        mask, normals, side = cavity_regions(seg, spacing, image=body, return_side=True, **self.region_options)
        counts = int((mask == RIGID).sum()), int((mask == SLIDING).sum())
        logger.info("%s: regions on the %s grid: %d rigid, %d sliding voxels", pair.name, "x".join(map(str, shape)),
                    *counts)  # fmt: skip
        mask, normals, side = torch.from_numpy(mask), torch.from_numpy(normals), torch.from_numpy(side)
        return self.regulariser, mask[None, None], normals[None], side[None, None], seg

    @property
    def region_options(self) -> dict[str, Any]:
        return {
            "band_mm": self.band_mm,
            "closing_mm": self.closing_mm,
            "pairs": self.organ_pairs,
            **self.hu_rules,
        }

    def segment_on_the_fly(self, pair: Any) -> np.ndarray | None:
        """TotalSegmentator's label map of the fixed image, or None (:func:`scripts.regions.segment.segment_fixed`)."""
        if self.segment != "never":  # None otherwise
            return totalsegmentator.segment_fixed(pair.fixed_path, pair.fixed_shape, self.segment, pair.name)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, pair: Any = None, **kwargs: Any):
        if pair is None or pair.fixed is None:
            raise ValueError("the refinement needs the pair's native volumes: use PreparePair(pass_pair=True) and "
                             "InferencePairDataset(keep_fixed=True), as configs/refine.json does")  # fmt: skip
        start = time.perf_counter()
        return self.refine(pair, self.prepare(inputs, network, pair, kwargs.get("spacing")), start, kwargs.get("seg"))

    def prepare(self, inputs: torch.Tensor, network: torch.nn.Module, pair: Any, net_spacing: Any = None) -> Prepared:
        """The pair on the refinement grid G (steps 1 and 2 of the module docstring)."""
        shape, affine = coarse_grid(pair.fixed_shape, pair.fixed_affine, self.grid_mm)
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        init = rigid = None
        if self.use_network:
            out = self.network_inferer(inputs, network, spacing=net_spacing)
            init = field_to_fixed_grid(out["ddf"], pair.net_affine, affine, shape)[None]
            if self.network_start == "cavity" and "rigid_ddf" in out:
                rigid = field_to_fixed_grid(out["rigid_ddf"], pair.net_affine, affine, shape)[None]
        fixed_hu = area_resize(pair.fixed, shape)
        m_shape, m_affine = coarse_grid(pair.moving.shape, pair.moving_affine, self.grid_mm)
        moving_coarse = area_resize(pair.moving, m_shape)
        moving_hu, _ = warp_to_fixed(moving_coarse, m_affine, affine, shape, None, fill=float(moving_coarse.min()))
        fixed, moving = (_normalise(hu, self.intensity, self.hu_window)[None, None] for hu in (fixed_hu, moving_hu))
        return Prepared(shape, affine, spacing, fixed_hu, fixed, moving, init, rigid)

    def refine(self, pair: Any, prepared: Prepared, start: float, seg: np.ndarray | None = None):
        """``{"ddf": (1, 3, *G)}``: steps 3 and 4 of the module docstring on the ``prepared`` pair, with the moved
        cavity's labels ``seg`` on G (None: the fixed segmentation, or none); ``start``: when the pair's work began."""
        shape, affine, spacing, fixed_hu, fixed, moving, init, rigid = prepared
        step_start = self.second_step_start if seg is None else self.motion_cavity_step_start
        regulariser, reg_mask, normals, side, seg = self.regions(pair, shape, spacing, fixed_hu, seg)
        init_mode = self.network_start if side is not None else "field"
        init = None if init is None else network_start(init, rigid, side, init_mode)
        options = dict(self.options, similarity=self.similarity, regulariser=regulariser, grid_mm=None)
        slides = regulariser == "rigidity_shearing_jacobian" and seg is not None
        moves = seg is None and reg_mask is not None and self.motion_cavity is not None and self.intensity == "ct"
        image = fixed_hu.numpy() if self.intensity == "ct" else None
        with torch.enable_grad():  # evaluators run the inferer under no_grad
            first = dict(reg_mask=reg_mask, normals=normals, wall_side=side, init_ddf=init, progress=self.progress)
            shift, closing = 0, None  # the first pass's wall: the labels' moved by this many voxels, their closing
            if self.first_wall_search > 0 and slides:
                searched = (self.region_options, dict(options, **first), self.first_wall_search)
                ddf, curve, shift, closing = first_pass_with_search(
                    fixed, moving, spacing.tolist(), seg, image, *searched, self.first_wall_search_iterations,
                    self.first_wall_region_mm, self.first_wall_closings_mm, self.first_wall_runoff_iterations,
                )  # fmt: skip
            else:
                ddf, curve = refine_pair(fixed, moving, spacing.tolist(), **first, **options)
            if moves:
                field, body = ddf[0].numpy() * spacing.reshape(3, 1, 1, 1), body_mask(image)
                bones, cavity = reg_mask[0, 0].numpy() == RIGID, {"fraction": self.motion_cavity}
                seg = label_free.motion_labels(field, bones, body, self.motion_cavity, spacing=spacing, report=cavity)
                cavity["content_voxels"] = moved = int((seg == label_free.MOTION_CONTENT_LABEL).sum())
                if moved:  # else (nothing moved off the bones): the band where it shears, if anywhere
                    logger.info("%s: no segmentation: refined again in the cavity that moved (%d voxels, %d of them "
                                "grown)", pair.name, moved, cavity["grown"])  # fmt: skip
                    out = self.refine(pair, prepared, start, seg)  # with its second pass (0.9.30): README
                    pair.report["refinement"].update(seconds=time.perf_counter() - start, first_pass_seconds=curve[
                        -1]["seconds"], motion_cavity=cavity)  # fmt: skip
                    return out
                logger.info("%s: no segmentation: the first field moved nothing off the bones: the band where it "
                            "shears instead", pair.name)  # fmt: skip
                seg = None
            if self.second_iterations > 0 and slides:
                ddf, more, regions = second_pass(
                    fixed, moving, spacing.tolist(), ddf, seg, image=image, region_options=self.region_options,
                    refine_options=dict(options, progress=self.progress), snap_mm=self.second_snap_mm,
                    iterations=self.second_iterations, lr=self.second_lr, band_fold_weight=self.second_band_fold_weight,
                    step_start=step_start, wall_search=self.second_wall_search, wall_shift=shift,
                    wall_closing_mm=closing,
                )  # fmt: skip
                reg_mask = torch.from_numpy(regions[0])[None, None]
            elif self.second_iterations > 0 and seg is None and reg_mask is not None and self.shear_band is not None:
                body = body if moves else body_mask(image) if image is not None else np.ones(tuple(shape), bool)
                ddf, more, reg_mask = shear_band_pass(
                    fixed, moving, spacing.tolist(), ddf, reg_mask, body, self.shear_band,
                    dict(options, progress=self.progress), self.second_iterations, self.second_lr,
                    self.second_band_fold_weight,
                )  # fmt: skip
                logger.info("%s: no segmentation: the second pass slides along %d voxels where the first field shears",
                            pair.name, int((reg_mask == SLIDING).sum()))  # fmt: skip
            else:
                more = []
            # the similarity at the start of the first pass's finest level and at its best state (lowest total loss);
            # not the second pass's: its objective differs (its band, a stronger diffusion), its similarity may fall
            rows = [row for row in curve if row["level"] == curve[-1]["level"]] if curve else []
            level, seconds = (curve[-1]["level"] + 1, curve[-1]["seconds"]) if curve else (0, 0.0)
            curve += [dict(row, level=level, seconds=row["seconds"] + seconds) for row in more]
        folds, folds_in_band = fold_percents(ddf, reg_mask)
        finest = [rows[0]["similarity"], min(rows, key=lambda row: row["total"])["similarity"]] if rows else [0.0, 0.0]
        if folds > FOLD_WARNING_PERCENT or finest[-1] > finest[0]:  # (levels' similarities are not comparable)
            logger.warning("%s: the refinement diverged (%.2f %% of the voxels off the sliding band fold, similarity "
                           "on the finest level %.4g -> %.4g): lower --refine_lr (now %s) or raise --refine_gamma",
                           pair.name, folds, *finest, self.options.get("lr", "the default 0.3"))  # fmt: skip
        pair.net_affine, pair.net_shape = affine, tuple(shape)
        pair.report["refinement"] = {
            "fold_percent_off_band": folds,
            "fold_percent_in_band": folds_in_band,
            "grid": list(shape),
            "grid_spacing_mm": [float(s) for s in spacing],
            "start": "identity" if not self.use_network else "network_cavity" if init_mode == "cavity" else "network",
            "regulariser": regulariser,
            "similarity": self.similarity,
            "seconds": time.perf_counter() - start,
            "loss_curve": curve,
            **({"motion_cavity": cavity} if moves else {}),  # its report where the band ran instead
        }
        return {"ddf": ddf}
