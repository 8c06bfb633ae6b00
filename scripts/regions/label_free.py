"""Regions with no segmentation: is an image in Hounsfield units, where are its bones, where does a field slide.

Why. Two parts of the bundle must know a CT's bones without labels: the CT model's rigid bones
(:mod:`scripts.networks.bones`: the written field takes the rigid pre-alignment there) and the refinement without a
segmentation (:class:`scripts.refinement.inferer.RefinementInferer`: no ``--fixed_seg`` and no TotalSegmentator to
make one), whose bones otherwise bend with the organs beside them (the log-Jacobian prior alone: the held-out CT's
bones 0.036 of rigidity error, docs/README.md *No segmentation at all*). Both read one rule here. Without labels
there is no cavity wall either; where the contents slid along it, a first refinement's field shears, and
:func:`shear_band` finds that sheet (below).

The threshold. A bone is brighter than the soft tissue around it, and how bright that tissue is depends on the
scan: about 40 HU without contrast (the held-out CT: organs' median 38 HU, marrow 137), 70-110 HU in a portal-venous
phase (the DICOM series of ../shared/data: liver median 93, p90 112; there a fixed 100 HU made half the liver rigid).
``hu="auto"`` (the default) takes ``max(100, median + 60)`` HU, the median over the fixed image's voxels between 0
and 250 HU (mostly soft tissue): 100 HU on the held-out CT and the generated phantoms, 133 HU on that DICOM series
(the liver then nowhere rigid, 90 % of the bones' voxels rigid). Limits: an enhanced aorta (150-250 HU) lies above
any such threshold and counts as bone (it lies on the spine), as do calcifications and oral contrast; a bone's
marrow dimmer than the threshold does not. An image that is not in HU (:func:`hounsfield_like`: an MR image, a
rescaled CT) has no bones by this rule.

The sliding band from a field. At a slip the true field jumps tangentially across the wall; a refinement without a
band (the log-Jacobian prior) smears that jump over a few voxels, and there its gradient is nearly a rank-one shear:
grad u ~ a n^T with a tangential (a . n = 0), n the wall's normal. :func:`shear_band` scores each voxel by the largest
singular value s1 of grad u (mm / mm) times 1 - |a . n| (a, n its singular vectors: 1 for a pure shear, 0 for a
compression along n), keeps the voxels whose score reaches ``threshold`` and is a maximum along n (the ridge: the
middle of the smeared jump, one or two voxels) and across which the jump is a step, not a slope: the tangential jump
of the field from 2 voxels before to 2 after the ridge along n is at least :data:`SHEAR_BAND_CONCENTRATION` (0.75) of
that from 5 before to 5 after (a smooth deformation of constant gradient: 0.4; a slip smeared over three voxels: about
0.9), grows them by a voxel (a band three or four voxels thick), and takes its normals from the band's own shape
(:func:`scripts.regions.normals.compute_normals`). 0.35: a 3 mm slip smeared over 9 mm. Both chosen on a few cases
(docs/README.md *No segmentation at all*): without the step rule a strong smooth deformation with no slip (the known
motion of tests/test_refine_workflow.py) got a band on a tenth of its voxels and 0.1 mm more endpoint error.

The cavity from a field (``--refine_motion_cavity``, the default without a segmentation since 0.9.28). The same first
field also says what moved: in breathing the contents slide along the wall, the rest moves little. :func:`motion_labels`
turns what moved (relative to the bones) into a label map, so that the labelled refinement's own cavity, band and side
(:mod:`scripts.regions.cavity`) stand in for a segmentation. It is only as good as that field: where the field drags the
wall with the contents (deep breathing) the cavity lies off the wall and the refinement folds there (docs/README.md *The
moved cavity*). The moved contents then grow by :data:`MOTION_CAVITY_GROW` (2) voxels of the field's grid, within the
body and off the bones: the first field smears the slip over a few voxels, and what moved 0.6 of the most ends about two
voxels inside the true wall (the held-out CT: 15-17 % of its cavity missed, under 0.5 % added), where a labelled
refinement whose wall lies a voxel or two off recovers little of the slip. Chosen on another patient (the DICOM series
of ../shared/data moved by the breathing generator: 0, 1, 2, 3 voxels gave 29-40, 47-57, 61-67, 63-65 % of the slip on
its 3 mm grid; 27, 45, 56, 53 % on its 2 mm grid: voxels, not mm) and confirmed on the held-out CT (60 -> 72 %). Unless
the moved region already spills over the wall: then it took the body wall along and comes near the skin, which the
cavity's contents never do (the abdominal wall lies between). On the tuning cases the share of its edge within
:data:`MOTION_SKIN_MM` (10 mm) of the skin was 0.000-0.005 where it adds at most 2 % of the cavity outside it, 0.21-0.25
where it adds 14-128 % (both phantoms, two of four generated cases): above :data:`MOTION_SPILL_SHARE` (0.05) it does not
grow (docs/README.md *The moved cavity*).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from scripts.io.errors import InputError
from scripts.io.options import check_number, parse_null
from scripts.regions.cavity import wall_layers
from scripts.regions.labels import JACOBIAN, RIGID, TOTALSEG_V2_TOTAL
from scripts.regions.normals import compute_normals

__all__ = [
    "hounsfield_like",
    "bone_threshold_hu",
    "image_bones",
    "shear_band",
    "normal_steps",
    "tangential_jump",
    "motion_labels",
    "motion_size",
    "check_motion_fraction",
    "MOTION_CAVITY_FRACTION",
    "MOTION_CAVITY_GROW",
    "MOTION_CAVITY_STEP_START",
    "MOTION_SKIN_MM",
    "MOTION_SPILL_SHARE",
    "edge_near_skin",
    "SHEAR_BAND_THRESHOLD",
    "SHEAR_BAND_CONCENTRATION",
]

AUTO_FLOOR_HU, AUTO_ABOVE_SOFT_HU = 100.0, 60.0
SHEAR_BAND_THRESHOLD = 0.35  # the least shear (s1 (1 - |a . n|), mm / mm) of a sliding band's ridge (module docstring)
SHEAR_BAND_CONCENTRATION = 0.75  # the least share of the tangential jump over 5 voxels that lies within 2 (a slip)
MOTION_CONTENT_LABEL, MOTION_BONE_LABEL = TOTALSEG_V2_TOTAL["liver"], TOTALSEG_V2_TOTAL["vertebrae_L1"]
MOTION_CAVITY_FRACTION = 0.6  # the least share of the 95th percentile of the field's size that counts as moved
MOTION_CAVITY_GROW = 2  # voxels that the moved contents grow by: the first field's smeared jump ends inside the wall
# the moved cavity's labelled refinement starts its second pass from its field, not from a step at its wall (0.9.30):
# that wall is a guess; at deep breathing a step there folds off the true wall (docs/README.md, The moved cavity)
MOTION_CAVITY_STEP_START = False
MOTION_SKIN_MM, MOTION_SPILL_SHARE = 10.0, 0.05  # no growth when more of their edge than this lies this near the skin


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
    error). The threshold alone, no opening: on the held-out CT an opening took most of the ribs out and left the
    bones' rigidity error at 0.022 against 0.005 (docs/benchmark_results/refine_image_bones/variants.log)."""
    threshold = bone_threshold_hu(fixed_hu, hu, flag)
    mask = np.where(np.asarray(fixed_hu) > threshold, RIGID, JACOBIAN).astype(np.uint8)
    return mask, threshold


def shear_band(
    field_mm: np.ndarray, spacing: Sequence[float], allowed: np.ndarray, threshold: float = SHEAR_BAND_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """(band bool (X, Y, Z), unit normals (3, X, Y, Z) float32) where the displacement ``field_mm`` (3, X, Y, Z), mm,
    on a grid of ``spacing`` mm, slides (module docstring), among the ``allowed`` voxels (bool (X, Y, Z): the body
    without the bones). No voxel shears that much: an empty band."""
    sp = np.asarray(spacing, dtype=np.float64)
    grad = np.stack([np.stack(np.gradient(np.asarray(c, np.float64), *sp)) for c in field_mm])  # (k, l, X, Y, Z)
    where = np.nonzero(allowed & (np.sqrt((grad**2).sum(axis=(0, 1))) >= threshold))  # s1 <= the Frobenius norm
    band = np.zeros(allowed.shape, bool)
    if where[0].size == 0:
        return band, np.zeros((3, *allowed.shape), np.float32)
    u, s, vt = np.linalg.svd(np.moveaxis(grad[(slice(None), slice(None)) + where], -1, 0))
    a, n = u[:, :, 0], vt[:, 0, :]
    score = np.zeros(allowed.shape)
    score[where] = s[:, 0] * (1.0 - np.abs((a * n).sum(axis=1)))
    step, here, ends = normal_steps(n, sp), np.stack(where, axis=1), np.array(allowed.shape) - 1
    ridge = score[where] >= threshold
    for sign in (1.0, -1.0):
        ridge &= score[where] >= score[tuple(np.clip(np.rint(here + sign * step).astype(int), 0, ends).T)]
    jumps = [tangential_jump(field_mm, here, step, n, voxels) for voxels in (2.0, 5.0)]
    ridge &= jumps[0] >= SHEAR_BAND_CONCENTRATION * jumps[1]  # a slip, not a smooth deformation
    band[tuple(here[ridge].T)] = True
    band = ndimage.binary_dilation(band) & allowed
    return band, compute_normals(band, spacing=sp, method="gaussian").astype(np.float32)  # an empty band: zeros


def normal_steps(normals: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """(N, 3) float: for each unit normal of ``normals`` (N, 3), in mm, the step that goes one voxel along its main
    axis on a grid of ``spacing`` mm (its other axes in proportion): the walk along a normal, voxel by voxel."""
    step = np.asarray(normals, np.float64) / np.asarray(spacing, np.float64)
    return step / np.abs(step).max(axis=1, keepdims=True)


def tangential_jump(
    field_mm: np.ndarray, here: np.ndarray, step: np.ndarray, normals: np.ndarray, voxels: float
) -> np.ndarray:
    """(N,) mm: the jump of ``field_mm`` (3, X, Y, Z), mm, across each voxel of ``here`` (N, 3) indices, from
    ``voxels`` ``step`` s (N, 3; :func:`normal_steps`) against its unit normal (``normals``, N, 3) to as many along it,
    less its part along that normal: the slip across a surface there (the grid's ends clamp). :func:`shear_band`'s
    step rule compares it over 2 and 5 voxels."""
    ends = np.array(field_mm.shape[1:]) - 1
    a_end, b_end = (np.clip(np.rint(here + sign * voxels * step).astype(int), 0, ends) for sign in (1.0, -1.0))
    jump = (field_mm[(slice(None), *a_end.T)] - field_mm[(slice(None), *b_end.T)]).T  # (N, 3) mm
    return np.linalg.norm(jump - (jump * normals).sum(axis=1, keepdims=True) * normals, axis=1)


def motion_labels(
    field_mm: np.ndarray,
    bones: np.ndarray,
    body: np.ndarray,
    fraction: float,
    grow: int = MOTION_CAVITY_GROW,
    spacing: Sequence[float] | None = None,
    report: dict | None = None,
) -> np.ndarray:
    """A label map (uint8, TotalSegmentator ids) of the cavity's contents as a first field ``field_mm``
    (3, X, Y, Z), mm, moved them: the ``body`` voxels off the ``bones`` (bool (X, Y, Z) each) whose displacement
    relative to the bones' mean reaches ``fraction`` of its 95th percentile over the body, their largest connected
    component with its holes filled and grown by ``grow`` voxels within the body off the bones unless, with the grid's
    ``spacing`` (mm) given, more than :data:`MOTION_SPILL_SHARE` of their edge lies within :data:`MOTION_SKIN_MM` of
    the skin (:func:`edge_near_skin`: they already took the body wall along; the module docstring), take one
    content label (:data:`MOTION_CONTENT_LABEL`, the liver's: any organ of the cavity would
    do); the bones a vertebra's. In breathing the contents move along the wall and the rest little, so the labelled
    refinement's cavity (:func:`scripts.regions.cavity.cavity_regions`) then lies near where they slide
    (docs/README.md *No segmentation at all*, *The moved cavity*). No body voxel moves: no content label.
    ``report`` (a dict, optional) receives ``edge_near_skin`` (that share; None without ``spacing`` or without
    contents) and ``grown`` (the voxels the growth added), always both."""
    size = motion_size(field_mm, bones)
    seg = np.zeros(body.shape, np.uint8)
    if report is not None:
        report.update(edge_near_skin=None, grown=0)  # what an empty body reports
    if body.any():
        contents = body & ~bones & (size >= max(fraction * np.percentile(size[body], 95), 1e-6))
        parts, n = ndimage.label(contents)
        if n > 1:
            contents = parts == 1 + int(np.argmax(ndimage.sum(contents, parts, range(1, n + 1))))
        near = None if spacing is None or not contents.any() else edge_near_skin(contents, body, spacing)
        before = int(contents.sum())
        if grow > 0 and contents.any() and (near is None or near <= MOTION_SPILL_SHARE):
            contents = ndimage.binary_dilation(contents, iterations=int(grow), mask=body & ~bones)
        if report is not None:
            report.update(edge_near_skin=near, grown=int(contents.sum()) - before)
        seg[ndimage.binary_fill_holes(contents)] = MOTION_CONTENT_LABEL
    seg[bones] = MOTION_BONE_LABEL
    return seg


def motion_size(field_mm: np.ndarray, bones: np.ndarray) -> np.ndarray:
    """(X, Y, Z) mm: the size of the displacement ``field_mm`` (3, X, Y, Z), mm, relative to its mean over the
    ``bones`` (bool (X, Y, Z); none: relative to nothing): what moved apart from the patient's own shift."""
    relative = field_mm - (field_mm[:, bones].mean(axis=1)[:, None, None, None] if bones.any() else 0.0)
    return np.linalg.norm(relative, axis=0)


def edge_near_skin(contents: np.ndarray, body: np.ndarray, spacing: Sequence[float]) -> float:
    """The share of the edge voxels of ``contents`` (bool (X, Y, Z), not empty; where they meet the scan's end is no
    edge) that lie within :data:`MOTION_SKIN_MM` of the outside of ``body`` (bool, the same grid of ``spacing`` mm)."""
    edge = contents & wall_layers(contents)  # its own side of the boundary
    depth = ndimage.distance_transform_edt(body, sampling=[float(s) for s in spacing])
    return float(np.mean(depth[edge] < MOTION_SKIN_MM))


def check_motion_fraction(value: float | str | None, flag: str = "--refine_motion_cavity") -> float | None:
    """``value`` as :func:`motion_labels`' ``fraction`` (a number in (0, 1); None or "null": off); anything else raises
    :class:`InputError` naming ``flag``."""
    value, note = parse_null(value), "and < 1: of the first field's 95th percentile; or null: off"
    fraction = None if value is None else check_number(value, flag, strict=True, note=note)
    if fraction is not None and fraction >= 1:
        raise InputError(f"{flag} must be a number > 0 ({note}), got {value!r}")
    return fraction
