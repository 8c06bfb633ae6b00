"""Regularisation regions at inference, with sliding along the whole wall of the body cavities.

The training regions (:mod:`scripts.regions.masks`) mark sliding only where two LISTED labels touch. At the cavity
wall the lungs and the abdominal organs slide along tissue that a ``total`` segmentation mostly leaves
unlabelled (intercostal muscles, parietal pleura, peritoneum, fat) or labels as something that does not move with
them (ribs, vertebrae, muscles): pairs of labels cannot describe it. Here the wall is the boundary of the cavity
CONTENT, wherever it meets anything else:

* content = the labels of the group ``cavity_contents`` of the region spec (``configs/regions.json``): the lung
  lobes, heart, liver, gallbladder, spleen, stomach, pancreas, duodenum, small bowel, colon, kidneys and adrenal
  glands (retroperitoneal, but they move with breathing and slide on the psoas and the posterior wall), and the
  vessels that run INSIDE those organs (portal/splenic vein, pulmonary vein), so that they do not open a wall
  inside the liver or a lung. Not content: bones, muscles, aorta and vena cava (fixed to the spine), oesophagus,
  trachea, bladder, prostate, unlabelled tissue;
* the cavity = content closed by a ball of ``closing_mm`` (bridges the fissures, the diaphragm gap between lung and
  liver/spleen, fat between organs) with its holes filled: those are interfaces INSIDE the cavity, handled by the
  organ-organ pairs of the spec; the wall is the boundary of this cavity; the image border is never a wall. With the
  CT, unlabelled air (below ``unlabelled_air_hu``, -400 HU) touching the content is content too: a lobe the segmenter
  missed is still dark, and without it the wall ran through the lung (the phantom, whose lung is one lobe a side,
  where the segmenter left one out: 36-49 -> 69-78 % of the slip; docs/README.md, bundle 0.9.21);
* the cavity keeps ``bone_gap`` voxels (1) off the rigid labels: the rigidity term's central differences at a bone's
  surface reach one voxel out, and where that voxel lay inside the cavity (a lung voxel against a rib) they
  spanned the slip, so the bone and the organ held each other back; with the gap the voxel beside the bone is the
  band's outer side, which moves with the wall;
* the sliding band = voxels within ``band_mm`` of the wall on either side (Euclidean distance in mm, the wall half a
  voxel beyond the boundary voxels' centres), inside the
  body when the CT is given (HU > -500, largest component, holes filled), so that no band lies in the air;
* its normals = the outward unit normal of the cavity, -grad(G_sigma * indicator) / |.| (mm frame, channel k along
  array axis k): well defined on both sides of the wall, smooth along it (so it survives averaging when the band is
  resampled), cheap (three separable filters), where the PCA normals of ``compute_normals`` would fit a plane to
  a band that is two walls thick at thin structures. Band voxels whose smoothed gradient is negligible (no clear
  wall within ~sigma) are dropped from the band.

The bones: the rigid labels of the spec, grown by the bright voxels next to them (diagonals too) when the CT is given
(:func:`rigid_from_image`, ``bone_hu`` 100 HU): a segmenter's bone boundary is off by a voxel here and there, and the
rigidity term then misses a rib's rim (with each label perturbed by ±1 voxel, a missing organ and noisy boundaries,
the bones' rigidity error on the real CT fell from 0.0282 to 0.0219 with it, 0.0218 to 0.0156 with every label
eroded by one voxel; 0.0022 / 0.0024 with the clean labels: ``benchmarks/benchmark_walls.py``). And, with the CT, the
UNLABELLED voxels of at least ``unlabelled_bone_hu`` (200 HU) that are not deep in the cavity (two voxels or more
inside it): a rib that the segmenter eroded away or missed has no label left to grow from (a rib is one or two voxels
thick at 3 mm), but it is still bright, and nothing else bright lies unlabelled in the wall (the contents' bright
voxels are labelled or lie deeper). The cavity's outer two voxel layers are searched too: the closing of the
contents bridges over a rib that lost its label. With a segmenter's labels (each label one voxel in or out, noisy
boundaries) the bones' rigidity error on the real CT fell from 0.0123 to 0.0039 (searching outside the cavity
only), with the bones eroded by one voxel from 0.0303 to 0.0043 (0.0022 with the clean labels, unchanged; seeds
0-2, ``benchmarks/benchmark_walls.py``); on the phantom the outer layers took it from 0.0226 to 0.0105. The bones
found this way grow their dim rim afterwards, as the labelled ones do (at 3 mm a rib's rim is partial volume, below
the 200 HU that finds the rib): with a segmenter's labels that took the bones' rigidity error from 0.0047 to 0.0034
on the real CT (default wall), from 0.0189 to 0.0085 at deep breathing, from 0.0109 to 0.0064 on the phantom,
nothing else changing (docs/README.md, *Walls nobody tuned on*). With ``bone_trim_hu`` (off by default; 0 HU
measured) a bone label's outer voxel layer dimmer than that is no bone: a segmenter's label grown a voxel into fat or
lung otherwise stays rigid and keeps the wall a voxel further in, and the slip is lost beside it. WHY 0 HU, not 50:
a real bone's rim is partial volume (docs/README.md, bundle 0.9.12). Off by default: on the phantom, whose ribs are a
voxel or two thick against the lung, the grown voxels it trims had held their neighbours rigid.

With the CT and ``snap_mm`` > 0 (off by default), the wall first moves to the strongest intensity edge within that
distance (:func:`snap_to_edge`): a lead for labels a voxel off the organs' boundary, measured in docs/README.md (*Walls
nobody tuned on*): it recovers most of the slip that eroded organ labels lose, and costs a little where the labels
are right. Given a first refinement's field (``shear_field``), the wall moves instead to where that field shears
most: the refinement's second pass (:mod:`scripts.refinement.second_pass`), on by default in ``configs/refine.json``.

With ``return_side``, the cavity also comes back as the wall's side (1 inside, 0 outside, -1 on the organ-organ pair
bands off the wall): the diffusion frees the slip on the pairs that cross the wall (:mod:`scripts.refinement.terms`).

Mask: 1 on the rigid labels of the spec (bones), 2 on the wall band and on the organ-organ pair bands of the spec
(their normals from :func:`scripts.regions.normals.compute_normals`, ``method="gaussian"``), 0 elsewhere; the wall
normal wins where the two bands overlap, and bones stay rigid everywhere (unlike the training regions, where a pair band
overrides rigid): a rib on the wall moves as a rigid body and the slip happens in the soft tissue beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from scripts.regions.labels import JACOBIAN, RIGID, SLIDING, label_table
from scripts.regions.masks import DEFAULT_SPEC, as_label_array, build_regularisation_mask, load_region_spec
from scripts.regions.memo import array_memo
from scripts.regions.normals import compute_normals

__all__ = ["CAVITY_GROUP", "DEFAULT_CAVITY_CONTENTS", "cavity_labels", "body_mask", "cavity_mask", "rigid_from_image"]
__all__ += ["snap_to_edge", "wall_band", "wall_layers", "cavity_regions"]

CAVITY_GROUP = "cavity_contents"
BAND_BALL_MAX = 125  # the most offsets of the band's ball dilated by (wall_band); more: two distance transforms
DEFAULT_CAVITY_CONTENTS = tuple(  # without a ``cavity_contents`` group in the spec (TotalSegmentator v2 names)
    """lung_upper_lobe_left lung_lower_lobe_left lung_upper_lobe_right lung_middle_lobe_right lung_lower_lobe_right
    heart atrial_appendage_left pulmonary_vein liver gallbladder portal_vein_and_splenic_vein spleen stomach
    pancreas duodenum small_bowel colon kidney_left kidney_right kidney_cyst_left kidney_cyst_right
    adrenal_gland_left adrenal_gland_right""".split()
)


def _expand(names: Sequence[str], groups: Mapping[str, Sequence[str]], table: Mapping[str, int]) -> list[int]:
    out = []
    for name in names:
        if isinstance(name, str) and name.startswith("@"):
            if name[1:] not in groups:
                raise ValueError(f"region spec: unknown group {name!r} in group {CAVITY_GROUP!r}")
            out += _expand(groups[name[1:]], groups, table)
        elif name in table:
            out.append(int(table[name]))
        else:
            raise ValueError(f"region spec: unknown label name {name!r} in group {CAVITY_GROUP!r}")
    return out


def cavity_labels(
    spec: str | os.PathLike | Mapping | None = None, table: Mapping[str, int] | str | None = None
) -> tuple[int, ...]:
    """Label ids of the cavity content: group ``cavity_contents`` of the spec (file or dict; ``None``: the bundle's
    ``configs/regions.json``), else :data:`DEFAULT_CAVITY_CONTENTS`; names resolved with ``table``."""
    spec = DEFAULT_SPEC if spec is None else spec
    raw = dict(spec) if isinstance(spec, Mapping) else json.loads(open(spec).read())
    groups = raw.get("groups", {}) or {}
    names = groups.get(CAVITY_GROUP, DEFAULT_CAVITY_CONTENTS)
    return tuple(sorted(set(_expand(names, groups, label_table(table if table is not None else "totalsegmentator")))))


def _check_spacing(spacing: Any) -> np.ndarray:
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {np.asarray(spacing).tolist()}")
    return sp


@array_memo  # the same body for every wall of a pair (scripts/regions/memo.py)
def body_mask(image: Any, threshold: float = -500.0) -> np.ndarray:
    """Body of a CT (X, Y, Z) in HU: voxels above ``threshold``, largest component, holes filled (in 3D and slice by
    slice along every axis, so that the lungs and an airway open at the crop border are inside): bool (X, Y, Z)."""
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    arr = arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr
    if arr.ndim != 3:
        raise ValueError(f"CT image must be 3D (X, Y, Z) or (1, X, Y, Z), got shape {arr.shape}")
    above = arr > threshold
    lab, n = ndimage.label(above)
    if n == 0:
        return above
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    body = ndimage.binary_fill_holes(lab == int(sizes.argmax()))
    for axis in range(3):
        for plane in np.moveaxis(body, axis, 0):  # views of the body: filled in place
            plane[...] = ndimage.binary_fill_holes(plane)
    return body


@array_memo  # the same closing for every shift of the wall search
def cavity_mask(
    labels: np.ndarray, content: Sequence[int], spacing: np.ndarray, closing_mm: float, extra: np.ndarray | None = None
) -> np.ndarray:
    """The closed, hole-filled union of the content labels (and of the voxels of bool ``extra``): bool (X, Y, Z).

    The closing by a ball of ``closing_mm`` is done with two Euclidean distance transforms (cost independent of the
    radius); the volume is padded (edge values) so that the image border does not erode the cavity."""
    inside = np.isin(labels, list(content)) if extra is None else np.isin(labels, list(content)) | extra
    if closing_mm > 0 and inside.any():
        pad = [(int(np.ceil(closing_mm / s)) + 1,) * 2 for s in spacing]
        padded = np.pad(inside, pad, mode="edge")
        dilated = ndimage.distance_transform_edt(~padded, sampling=spacing) <= closing_mm
        closed = ndimage.distance_transform_edt(dilated, sampling=spacing) > closing_mm
        inside = closed[tuple(slice(p, p + n) for (p, _), n in zip(pad, inside.shape))] | inside
    return ndimage.binary_fill_holes(inside)


@array_memo  # once per pair: the wall search's candidates share it
def _air_content(
    labels: np.ndarray, image: np.ndarray, body: np.ndarray, content: Sequence[int], hu: float
) -> np.ndarray:
    """The unlabelled voxels of the body darker than ``hu`` HU, in the (6-connected) components that touch a content
    label: a lung lobe the segmenter missed, gas beside the bowel; not the air between the body and the table, which
    the body mask's hole filling takes in."""
    air = (labels == 0) & (image < hu) & body
    parts, _ = ndimage.label(air)
    touching = np.unique(parts[ndimage.binary_dilation(np.isin(labels, list(content))) & air])
    return np.isin(parts, touching[touching > 0])


def rigid_from_image(bones: np.ndarray, image: np.ndarray, bone_hu: float = 100.0, grow: int = 1) -> np.ndarray:
    """The segmented bones (bool (X, Y, Z)) grown by the voxels of at least ``bone_hu`` HU within ``grow`` voxels of
    them, diagonals included. A label map shrunk or noisy at a bone's surface gets the bright rim back (on a rib one or
    two voxels thick the rim is much of the bone; a label shrunk all round keeps only diagonal neighbours at the
    edges); soft tissue next to a bone stays out (at 3 mm, 90 % of the voxels within two voxels of the example CT's
    bones lie below 84 HU, the bones' surface voxels a median of 187 HU); a bone the labels missed stays missed."""
    return bones | (ndimage.binary_dilation(bones, np.ones((3, 3, 3), bool), iterations=grow) & (image >= bone_hu))


def _smoothed_gradient(mask: np.ndarray, sigma_mm: float, spacing: np.ndarray) -> np.ndarray:
    """(3, X, Y, Z) gradient per mm of the mask's indicator smoothed by a Gaussian of ``sigma_mm``: minus its
    direction is the outward normal of the mask's boundary."""
    smooth = ndimage.gaussian_filter(mask.astype(np.float32), sigma_mm / spacing, mode="nearest")
    return np.stack(np.gradient(smooth, *spacing))


def wall_layers(mask: np.ndarray) -> np.ndarray:
    """The voxels that touch the mask's boundary (6-neighbours across it), on both sides, bool (X, Y, Z); the grid
    border is no boundary."""
    return (mask & ~ndimage.binary_erosion(mask, border_value=1)) | (ndimage.binary_dilation(mask) & ~mask)


def wall_band(cavity: np.ndarray, spacing: np.ndarray, band_mm: float) -> np.ndarray:
    """The voxels within ``band_mm`` of the cavity's wall on either side (their distance to the nearest voxel across it
    less half the finest voxel: the wall lies half a voxel beyond the boundary voxels' centres), bool (X, Y, Z). WHY
    dilations by that ball (up to :data:`BAND_BALL_MAX` offsets; the default band at 1-2 mm: 7-33), not two distance
    transforms: the same voxels at a fraction of the time, six bands per pair in the overlay's wall search."""
    reach = np.floor((band_mm + 0.5 * float(spacing.min()) + 1e-6) / spacing).astype(int)
    grid = np.meshgrid(*[np.arange(-r, r + 1) * s for r, s in zip(reach, spacing)], indexing="ij")
    ball = np.sqrt(sum(g**2 for g in grid)) - 0.5 * float(spacing.min()) <= band_mm + 1e-6
    if ball.sum() <= BAND_BALL_MAX:
        return (cavity & ndimage.binary_dilation(~cavity, ball)) | (~cavity & ndimage.binary_dilation(cavity, ball))
    distance = np.where(cavity, *(ndimage.distance_transform_edt(c, sampling=spacing) for c in (cavity, ~cavity)))
    return distance - 0.5 * float(spacing.min()) <= band_mm + 1e-6


def _shifted(mask: np.ndarray, k: int) -> np.ndarray:
    """The mask dilated (k > 0) or eroded (k < 0) by |k| voxels (6-neighbours)."""
    if k > 0:
        return ndimage.binary_dilation(mask, iterations=k)
    return ndimage.binary_erosion(mask, iterations=-k, border_value=1) if k < 0 else mask


def _moved(cavity: np.ndarray, k: int, bones: np.ndarray, bone_gap: int) -> np.ndarray:
    """The cavity shifted by k voxels (:func:`_shifted`), grown (k > 0) only farther than ``bone_gap + k`` voxels
    from the bones (``cavity_regions``' ``wall_shift``)."""
    if k > 0 and bones.any():
        return cavity | (_shifted(cavity, k) & ~ndimage.binary_dilation(bones, iterations=bone_gap + k))
    return _shifted(cavity, k)


def _edge(image: np.ndarray, normal: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """|grad I . n| per voxel: the intensity edge across the wall (I blurred by 0.7 voxel)."""
    grad_i = np.stack(np.gradient(ndimage.gaussian_filter(image.astype(np.float32), 0.7), *spacing))
    return np.abs((grad_i * normal).sum(0))


def _shear(field: np.ndarray, normal: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """|(grad u) n - ((grad u) n . n) n| per voxel: how fast the TANGENTIAL displacement changes across the wall,
    u (3, X, Y, Z) in mm (the slip of a refined field; its normal part is no slip)."""
    along_n = np.stack([(np.stack(np.gradient(c.astype(np.float32), *spacing)) * normal).sum(0) for c in field])
    return np.linalg.norm(along_n - (along_n * normal).sum(0, keepdims=True) * normal, axis=0)


def snap_to_edge(
    cavity: np.ndarray, image: np.ndarray | None, spacing: np.ndarray, snap_mm: float, field: np.ndarray | None = None
) -> np.ndarray:
    """The cavity (bool (X, Y, Z)) with its wall moved by up to ``snap_mm`` (whole voxels of the finest axis) to the
    strongest intensity edge of ``image`` (HU, same grid) next to it, or, given a displacement ``field`` (3, X, Y, Z)
    in mm on the same grid (a first refinement's), to where that field shears most (:func:`_shear`; ``image`` is then
    not used). Candidates: the cavity eroded or dilated by k voxels (6-neighbours), |k| <= snap_mm / min spacing; the
    strength of a candidate's wall is the mean of the edge |grad I . n| (or the shear; n the given wall's normal)
    over the two voxel layers that touch it, averaged along the wall (Gaussian, 2 voxels); each voxel near the wall
    takes the candidate with the strongest wall nearby (5 % weaker per voxel of shift, so that a flat image or a
    field without slip moves nothing)."""
    h = float(spacing.min())
    steps = int(np.floor(snap_mm / h + 1e-6))
    if steps < 1:
        return cavity
    grad_c = _smoothed_gradient(cavity, 2.0 * h, spacing)
    normal = -grad_c / np.maximum(np.linalg.norm(grad_c, axis=0), 1e-6)
    edge = _edge(image, normal, spacing) if field is None else _shear(field, normal, spacing)
    shifts = range(-steps, steps + 1)
    candidates = [_shifted(cavity, k) for k in shifts]
    sigma = 2.0 * h / spacing
    scores = []
    for k, cand in zip(shifts, candidates):
        level = wall_layers(cand).astype(np.float32)
        num = ndimage.gaussian_filter(edge * level, sigma, mode="nearest")
        den = ndimage.gaussian_filter(level, sigma, mode="nearest")
        scores.append(num / np.maximum(den, 1e-3) * (1.0 - 0.05 * abs(k)) - 1e-6 * abs(k))
    best = np.argmax(np.stack(scores), axis=0)
    out = np.take_along_axis(np.stack(candidates), best[None], axis=0)[0]
    near = candidates[-1] & ~candidates[0]  # where the candidates differ
    return np.where(near, out, cavity)


def cavity_regions(
    seg: Any,
    spacing: Sequence[float],
    image: Any | None = None,
    spec: str | os.PathLike | Mapping | None = None,
    table: Mapping[str, int] | str | None = None,
    band_mm: float = 1.5,
    closing_mm: float = 20.0,
    sigma_mm: float | None = None,
    pairs: bool = True,
    body_threshold: float = -500.0,
    bone_gap: int = 1,
    bone_hu: float | None = 100.0,
    bone_trim_hu: float | None = None,
    snap_mm: float = 0.0,
    unlabelled_bone_hu: float | None = 200.0,
    unlabelled_air_hu: float | None = -400.0,
    return_side: bool = False,
    shear_field: Any | None = None,
    wall_shift: int = 0,
) -> tuple[np.ndarray, ...]:
    """Regularisation mask and sliding normals with sliding along the whole cavity wall (module docstring).

    Args:
        seg: TotalSegmentator ``total`` label map of the FIXED image, (X, Y, Z) or (1, X, Y, Z), integer values.
        spacing: (3,) voxel size along the array axes, mm.
        image: optional CT (HU) on the same grid: the band is kept inside its body mask.
        spec: region spec (file, dict or ``None`` for ``configs/regions.json``): rigid labels, organ-organ pairs
            and the ``cavity_contents`` group.
        table: label names -> ids (``None``: TotalSegmentator v2).
        band_mm: half width of the wall band: voxels within ``band_mm`` of the wall, on both sides.
        closing_mm: radius of the closing that merges the content into one cavity; an (X, Y, Z) map of radii:
            each voxel's own (the wall search's closing candidates per region, :mod:`scripts.refinement.wall_search`).
        sigma_mm: Gaussian sigma of the smoothed indicator for the wall normals (default ``max(2 * band_mm,
            2 * max(spacing))``) and of the pair normals (``compute_normals`` default).
        pairs: also mark the organ-organ pair bands of the spec.
        body_threshold: HU threshold of the body mask.
        bone_gap: voxels between the bones and the cavity (0: the cavity may touch them).
        bone_hu: with ``image``, the bones grow by the voxels of at least ``bone_hu`` HU next to them
            (:func:`rigid_from_image`): a segmenter's bone boundary is off by a voxel or two, and on thin bones (ribs)
            that is much of the bone. ``None``: the segmentation's bones as they are.
        bone_trim_hu: with ``image``, a bone label's outer voxel layer below this many HU (at 0: fat, lung, air) is
            no bone: neither rigid nor kept off the wall (module docstring). ``None`` (the default): no trim.
        snap_mm: with ``image`` (or ``shear_field``), move the wall within this distance to the strongest intensity
            edge (or shear, :func:`snap_to_edge`); 0: the wall of the labels.
        unlabelled_bone_hu: with ``image``, the unlabelled voxels (label 0) of at least this many HU that are not
            two voxels or more inside the cavity are bones too (module docstring: a rib the segmenter eroded away);
            ``None``: only labelled bones.
        unlabelled_air_hu: with ``image``, the unlabelled voxels of the body darker than this many HU (lung, gas)
            that touch a content label are content (module docstring: a missed lobe); ``None``: the labels alone.
        return_side: also return the wall's side for ``refine_pair(wall_side=...)``.
        shear_field: a displacement field (3, X, Y, Z) in mm on the same grid, a first refinement's: with ``snap_mm``
            the wall moves to where that field shears most instead of to the strongest edge
            (:mod:`scripts.refinement.second_pass`).
        wall_shift: the cavity dilated (> 0) or eroded (< 0) by this many voxels (6-neighbours) before the snap and
            the bone gap: a candidate wall of the wall search (:mod:`scripts.refinement.wall_search`); an (X, Y, Z)
            map of whole voxels: each voxel's own shift (the search per region). Dilated, it grows only farther
            than ``bone_gap + wall_shift`` voxels from the bones: where a segmenter shrank a bone (costal cartilage,
            a rib), a wall grown by two voxels ran through its lost voxels and their rigidity error rose 4x (real
            CT, ``out2``, a segmenter's labels); near the bones the labels' wall stays.

    Returns:
        ``(mask, normals)``: uint8 (X, Y, Z) 0 Jacobian / 1 rigid / 2 sliding; float32 (3, X, Y, Z) unit normals
        (mm frame, channel k along array axis k) on sliding voxels, 0 elsewhere; with ``return_side`` also int8
        (X, Y, Z): 1 inside the cavity, 0 outside, -1 on the organ-organ pair bands off the wall (no side there).

    Raises:
        ValueError: non-integer or non-3D label map, an image of another shape, bad spacing, unknown label names.
    """
    labels = as_label_array(seg, what="segmentation (label map of the fixed image)")
    sp = _check_spacing(spacing)
    body = img = None
    if image is not None:
        img = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
        img = img[0] if img.ndim == 4 and img.shape[0] == 1 else img
        if img.shape != labels.shape:
            raise ValueError(
                f"segmentation {labels.shape} is not on the image's grid {img.shape}: resample it to the fixed image"
            )
        body = body_mask(img, body_threshold)
    radii = np.asarray(closing_mm, dtype=float)
    if band_mm <= 0 or radii.shape not in ((), labels.shape) or (radii < 0).any() or bone_gap < 0:
        shown = closing_mm if radii.ndim == 0 else f"a {radii.shape} map"  # closing_mm: a number or a map of them
        need = f"band_mm > 0, closing_mm >= 0 (or a {labels.shape} map of them), bone_gap >= 0"
        raise ValueError(f"need {need}, got {band_mm}, {shown}, {bone_gap}")
    region_spec = load_region_spec(spec, table)
    if not pairs:
        region_spec = type(region_spec)(rigid=region_spec.rigid, sliding=(), names=region_spec.names)
    mask = build_regularisation_mask(labels, region_spec)
    normals = np.zeros((3,) + labels.shape, dtype=np.float32)
    if (mask == SLIDING).any():
        normals = compute_normals(mask == SLIDING, spacing=sp, method="gaussian", sigma_mm=sigma_mm)

    content = cavity_labels(spec, table)  # a map of radii: each voxel's cavity closed with its own
    air = None  # with the CT: the unlabelled air that touches the content (a lobe the segmenter missed)
    if img is not None and unlabelled_air_hu is not None:
        air = _air_content(labels, img, body, content, unlabelled_air_hu)
    cavity = np.logical_or.reduce([cavity_mask(labels, content, sp, r, air) & (radii == r) for r in np.unique(radii)])
    band = np.zeros(labels.shape, dtype=bool)
    bones = np.isin(labels, region_spec.rigid)
    if img is not None and bone_trim_hu is not None and bones.any():  # a segmenter's bone grown into fat or lung
        trimmed = bones & ~ndimage.binary_erosion(bones) & (img < bone_trim_hu)
        bones &= ~trimmed
        mask[trimmed & (mask == RIGID)] = JACOBIAN
    if img is not None and unlabelled_bone_hu is not None:
        bones |= (labels == 0) & (img >= unlabelled_bone_hu) & ~_shifted(cavity, -2)
    if img is not None and bone_hu is not None and bones.any():  # after: a recovered rib gets its dim rim back too
        bones = rigid_from_image(bones, img, bone_hu)
    field = None if shear_field is None else np.asarray(shear_field, dtype=np.float32)
    if field is not None and field.shape != (3,) + labels.shape:
        raise ValueError(f"shear_field must be (3, *S) = {(3,) + labels.shape} in mm, got {field.shape}")
    shifts = np.asarray(wall_shift)
    if shifts.shape not in ((), labels.shape) or not np.array_equal(shifts, np.round(shifts)):
        raise ValueError(f"wall_shift must be whole voxels, one number or a {labels.shape} map, got {wall_shift!r}")
    # a map: each voxel takes the cavity of its own shift (the wall steps where the shift changes)
    cavity = np.logical_or.reduce([_moved(cavity, int(k), bones, bone_gap) & (shifts == k) for k in np.unique(shifts)])
    if (img is not None or field is not None) and snap_mm > 0 and cavity.any() and not cavity.all():
        cavity = snap_to_edge(cavity, img, sp, snap_mm, field=field)
    if bone_gap > 0 and bones.any():  # the wall keeps off the bones (module docstring)
        cavity &= ~ndimage.binary_dilation(bones, iterations=bone_gap)
    if cavity.any() and not cavity.all():
        band = wall_band(cavity, sp, band_mm) | wall_layers(cavity)  # those touching the wall always (a coarse axis)
        if body is not None:
            band &= body
        sigma = float(sigma_mm) if sigma_mm is not None else max(2.0 * band_mm, 2.0 * float(sp.max()))
        grad = _smoothed_gradient(cavity, sigma, sp)
        norm = np.linalg.norm(grad, axis=0)
        band &= norm > 1e-3 * float(norm.max())
        wall_normals = np.divide(-grad, norm, out=np.zeros_like(grad), where=band[None])
        mask[band] = SLIDING
        normals[:, band] = wall_normals[:, band]
    # every bone stays rigid, also where the wall band or a listed pair (lung / rib) touches it: the slip happens in
    # the soft tissue beside it (with the bands overriding them, ribs got the shearing term: 3.9x the rigidity error)
    mask[bones] = RIGID
    normals[:, mask != SLIDING] = 0.0
    if not return_side:
        return mask.astype(np.uint8), normals.astype(np.float32)
    side = cavity.astype(np.int8)
    side[(mask == SLIDING) & ~band] = -1
    return mask.astype(np.uint8), normals.astype(np.float32), side
