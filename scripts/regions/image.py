"""Regions from the CT image alone, with no segmentation: is an image in Hounsfield units, where are its bones.

Why. Two parts of the bundle must know a CT's bones without labels: the CT model's rigid bones
(:mod:`scripts.networks.bones`: the written field takes the rigid pre-alignment there) and the refinement without a
segmentation (:class:`scripts.refinement.inferer.RefinementInferer`: no ``--fixed_seg`` and no TotalSegmentator to
make one), whose bones otherwise bend with the organs beside them (the log-Jacobian prior alone: the held-out CT's
bones 0.036 of rigidity error, docs/README.md *Refinement without a segmentation*). Both read one rule here.

The threshold. A bone is brighter than the soft tissue around it, and how bright that tissue is depends on the
scan: about 40 HU without contrast (the held-out CT: organs' median 38 HU, marrow 137), 70-110 HU in a portal-venous
phase (the DICOM series of ../shared/data: liver median 93, p90 112; there a fixed 100 HU made half the liver rigid).
``hu="auto"`` (the default) takes ``max(100, median + 60)`` HU, the median over the fixed image's voxels between 0
and 250 HU (mostly soft tissue): 100 HU on the held-out CT and the generated phantoms, 133 HU on that DICOM series
(the liver then nowhere rigid, 90 % of the bones' voxels rigid). Limits: an enhanced aorta (150-250 HU) lies above
any such threshold and counts as bone (it lies on the spine), as do calcifications and oral contrast; a bone's
marrow dimmer than the threshold does not. An image that is not in HU (:func:`hounsfield_like`: an MR image, a
rescaled CT) has no bones by this rule.
"""

from __future__ import annotations

import numpy as np

from scripts.io.errors import InputError
from scripts.regions.labels import JACOBIAN, RIGID

__all__ = ["hounsfield_like", "bone_threshold_hu", "image_bones"]

AUTO_FLOOR_HU, AUTO_ABOVE_SOFT_HU = 100.0, 60.0


def hounsfield_like(values: np.ndarray) -> bool:
    """True when ``values`` (any shape; NaN / Inf ignored) are CT Hounsfield units: air or lung below -500 HU in the
    1st percentile, nothing below -1100 HU beyond it, nothing above 4000 HU below the 99.9th percentile. An MR image or
    a rescaled CT is not: its "bones" by HU would be anything bright."""
    sample = np.asarray(values, dtype=np.float32).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return False
    low, high = np.percentile(sample, [1, 99.9])
    return bool(-1100.0 <= low <= -500.0 and high <= 4000.0)


def bone_threshold_hu(fixed_hu: np.ndarray, hu: float | str = "auto", flag: str = "--rigid_bones_hu") -> float:
    """The bones' threshold in HU: ``hu`` itself, or with ``"auto"`` ``max(100, median + 60)`` over the voxels of
    ``fixed_hu`` between 0 and 250 HU (module docstring; 100 without any). Anything else is an :class:`InputError`
    naming ``flag``, the option that gave it."""
    if isinstance(hu, str) and hu.strip().lower() == "auto":
        volume = np.asarray(fixed_hu)
        soft = volume[(volume > 0) & (volume < 250)]
        median = float(np.median(soft)) if soft.size else 0.0
        return max(AUTO_FLOOR_HU, median + AUTO_ABOVE_SOFT_HU)
    if isinstance(hu, bool):
        hu = "true" if hu else "false"  # float(True) would be 1 HU
    try:
        return float(hu)
    except (TypeError, ValueError):
        raise InputError(f"{flag} {hu!r}: give a number of HU or auto (the default)") from None


def image_bones(fixed_hu: np.ndarray, hu: float | str = "auto", flag: str = "hu") -> tuple[np.ndarray, float]:
    """(regularisation mask (X, Y, Z) uint8: :data:`RIGID` on the voxels of ``fixed_hu`` above the bones' threshold,
    :data:`JACOBIAN` elsewhere; the threshold in HU, :func:`bone_threshold_hu` of ``hu``, ``flag`` naming it in an
    error). No sliding band: without
    labels there is no cavity wall. The threshold alone, no opening: on the held-out CT at 2 mm an opening took the
    thin ribs out and left their rigidity error at 0.022 against 0.005 (docs/README.md)."""
    threshold = bone_threshold_hu(fixed_hu, hu, flag)
    mask = np.where(np.asarray(fixed_hu) > threshold, RIGID, JACOBIAN).astype(np.uint8)
    return mask, threshold
