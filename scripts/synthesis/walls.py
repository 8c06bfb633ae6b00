"""Where the cavity ends, drawn more than one way, and segmentations perturbed as a segmenter's would be.

The sliding of a known-motion case (:mod:`scripts.synthesis.breathing`) happens at ITS cavity wall; a refinement
estimates the wall from a segmentation (:func:`scripts.regions.cavity.cavity_regions`). When both use one
definition, a method is measured on the wall it was tuned on. Here the true wall is drawn in several anatomically
reasonable ways, and the segmentation a method gets is degraded as TotalSegmentator's would be (organ Dice about
0.9, small organs or lobes sometimes missing), so that accuracy is measured on walls and labels nobody tuned on.

Wall variants (keywords of :func:`scripts.synthesis.breathing.make_breathing_case`; :data:`WALL_VARIANTS`, or one
drawn at random per case by :func:`draw_wall`):

- the closing radius that bridges fissures, fat and the gaps between organs (12-28 mm; default 20);
- the psoas in the cavity (it moves with the contents) or out of it (default: the kidneys slide on it); the back
  muscles stay out (with them in, the cavity wraps the spine and the drawn motion folds);
- the diaphragm region: bridged (default) or outside, the thorax and the abdomen closed apart so that the lung
  bases slide on the diaphragm;
- the parietal boundary moved 1-2 voxels out (into the wall tissue, never into a bone) or in (the organs' outer
  voxel layer moves with the wall; the cavity goes on beyond the scan, whose ends are no wall);
- a sliding layer: the jump builds up over 2-3 voxels' depth instead of at one voxel face (thinner layers
  fold on the voxel grid).

Segmentation perturbations (:func:`perturb_segmentation`, the label map only; the truth is untouched): organs eroded
or dilated by 1-2 voxels each, the smallest organ or a lung lobe missing, noisy boundaries (boundary voxels that take
a neighbour's label where a smooth random field is high).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from scripts.synthesis.breathing import bone_ids, cavity_ids

__all__ = ["WALL_VARIANTS", "SEG_PERTURBATIONS", "draw_wall", "perturb_segmentation"]

WALL_VARIANTS: dict[str, dict] = {
    "default": {},
    "tight": {"cavity_kwargs": {"closing_mm": 12.0}},
    "wide": {"cavity_kwargs": {"closing_mm": 28.0}},
    "psoas_in": {"cavity_kwargs": {"muscles_in": True}},
    "diaphragm_out": {"cavity_kwargs": {"split_diaphragm": True}},
    "out2": {"cavity_kwargs": {"shift_vox": 2}},
    "in1": {"cavity_kwargs": {"shift_vox": -1}},
    "layer": {"layer_mm": 2.0, "layer_vox": True},
}
"""Named wall definitions: keywords of ``make_breathing_case`` (``layer_vox``: ``layer_mm`` is in voxels of the
case's largest spacing, resolved by :func:`wall_kwargs`)."""

SEG_PERTURBATIONS: dict[str, dict] = {
    "clean": {},
    "eroded": {"radius": (-1, -1)},
    "dilated": {"radius": (1, 1)},
    "mixed": {"radius": (-2, 2)},
    "missing": {"missing": True},
    "noisy": {"noise": 0.3},
    "segmenter": {"radius": (-1, 1), "missing": True, "noise": 0.2},
    "eroded_organs": {"radius": (-1, -1), "only": "organs"},
    "eroded_bones": {"radius": (-1, -1), "only": "bones"},
}
"""Named perturbations: keywords of :func:`perturb_segmentation` (``segmenter``: all of them, milder;
``eroded_organs`` / ``eroded_bones``: ``eroded`` split, to tell which labels cost what)."""


def wall_kwargs(variant: str | dict, spacing: Sequence[float]) -> dict:
    """The ``make_breathing_case`` keywords of a named variant (or a drawn one) on a grid of ``spacing`` mm."""
    if isinstance(variant, str):
        if variant not in WALL_VARIANTS:
            raise ValueError(f"wall variant must be one of {sorted(WALL_VARIANTS)}, got {variant!r}")
        variant = WALL_VARIANTS[variant]
    kwargs = {k: v for k, v in variant.items() if k != "layer_vox"}
    if variant.get("layer_vox"):
        kwargs["layer_mm"] = float(variant["layer_mm"]) * float(max(spacing))
    return kwargs


def draw_wall(rng: np.random.Generator) -> dict:
    """A random wall definition (the keywords of ``make_breathing_case`` before :func:`wall_kwargs`): closing radius
    12-28 mm, psoas in (1 in 3), diaphragm out (1 in 3), boundary shift -2..2 voxels, a sliding layer of 2-3
    voxels (1 in 2)."""
    cavity = {
        "closing_mm": float(rng.uniform(12.0, 28.0)),
        "split_diaphragm": bool(rng.random() < 1 / 3),
        "shift_vox": int(rng.integers(-2, 3)),
    }
    if rng.random() < 1 / 3:
        cavity["muscles_in"] = True
    layer = float(rng.uniform(2.0, 3.0)) if rng.random() < 0.5 else 0.0
    return {"cavity_kwargs": cavity, "layer_mm": layer, "layer_vox": True}


def _present(seg: np.ndarray, ids: Sequence[int], min_voxels: int) -> dict[int, int]:
    counts = np.bincount(seg.ravel().astype(np.int64), minlength=max(ids) + 1)
    return {i: int(counts[i]) for i in ids if counts[i] >= min_voxels}


def perturb_segmentation(
    seg: np.ndarray,
    rng: np.random.Generator,
    radius: tuple[int, int] = (0, 0),
    missing: bool = False,
    noise: float = 0.0,
    min_voxels: int = 50,
    only: str | None = None,
) -> tuple[np.ndarray, dict]:
    """A label map (X, Y, Z) degraded as a segmenter's output would be; returns (perturbed copy, what was done).

    Args:
        seg: TotalSegmentator v2 ids. rng: the case's random generator.
        radius: each label present (>= ``min_voxels``) is grown (> 0, into background and organs, never into a bone)
            or shrunk (< 0, to background) by a radius drawn uniformly from this range, 0 excluded when the range
            holds other values. ``only``: ``"bones"`` or ``"organs"`` (every other label) grow or shrink, the rest
            stays (None: every label).
        missing: the smallest cavity organ present, or (1 in 2, when there are any) a random lung lobe, set to 0.
        noise: the share of boundary voxels (roughly) that take a 6-neighbour's label, where a smooth random field
            (sigma 2 voxels) is highest, so that the errors come in patches as a segmenter's do.
    """
    if seg.ndim != 3:
        raise ValueError(f"expected a (X, Y, Z) label map, got shape {seg.shape}")
    lo, hi = int(radius[0]), int(radius[1])
    if lo > hi:
        raise ValueError(f"radius must be (low, high) with low <= high, got {radius}")
    if only not in (None, "bones", "organs"):
        raise ValueError(f"only must be None, 'bones' or 'organs', got {only!r}")
    out = seg.copy()
    info: dict = {"grown": {}, "shrunk": {}, "missing": None, "noisy_voxels": 0}
    ids = [int(i) for i in np.unique(seg) if i != 0]
    bone_labels = bone_ids()
    bones = np.isin(seg, bone_labels)
    choices = [r for r in range(lo, hi + 1) if r != 0] or [0]
    if only is not None:
        ids = [i for i in ids if (i in bone_labels) == (only == "bones")]
    if choices != [0]:
        for label in rng.permutation(list(_present(seg, ids, min_voxels))):
            r = int(rng.choice(choices))
            mask = seg == label
            if r < 0:
                out[mask & ~ndi.binary_erosion(mask, iterations=-r) & (out == label)] = 0
                info["shrunk"][int(label)] = r
            else:
                grow = ndi.binary_dilation(mask, iterations=r) & ~mask
                if label not in bone_labels:
                    grow &= ~bones
                out[grow] = label
                info["grown"][int(label)] = r
    if missing:
        lobe_ids = cavity_ids()[:5]  # the five lung lobes lead CAVITY_CONTENTS
        lobes = _present(out, lobe_ids, min_voxels)
        organs = _present(out, [i for i in cavity_ids() if i not in lobe_ids], min_voxels)
        if lobes and (not organs or rng.random() < 0.5):
            drop = int(rng.choice(list(lobes)))
        elif organs:
            drop = min(organs, key=organs.get)
        else:
            drop = None
        if drop is not None:
            out[out == drop] = 0
            info["missing"] = drop
    if noise > 0:
        field = ndi.gaussian_filter(rng.standard_normal(seg.shape), 2.0)
        for axis in range(3):
            for step in (-1, 1):
                neighbour = np.roll(out, step, axis=axis)
                boundary = neighbour != out
                if not boundary.any():
                    continue
                threshold = np.quantile(field[boundary], 1.0 - noise / 6.0)
                flip = boundary & (field >= threshold) & ~np.isin(neighbour, bone_labels) & ~bones
                out[flip] = neighbour[flip]
                info["noisy_voxels"] += int(flip.sum())
    return out, info
