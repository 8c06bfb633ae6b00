"""Known-motion test cases on real anatomy: breathing-like sliding of the cavity contents, rigid bones.

Given a CT, its TotalSegmentator v2 segmentation and its affine, :func:`make_breathing_case` draws a displacement
field u with the bundle's convention (MONAI ``Warp``): u lives on the FIXED grid, channel k is the displacement
along array axis k, and the moving image satisfies ``fixed(x) = moving(x + u(x))`` (the moving image is built by
inverting x -> x + u(x), so warping it with the true u gives back the fixed image). The motion:

- cavity contents (lungs, heart, liver, spleen, stomach, kidneys, bowel, pancreas, portal and pulmonary veins; not the
  aorta and vena cava, fixed to the spine; the cavity is their closed, hole-filled, opened, smoothed union, away from
  the bones, the back muscles and the psoas, with the organ voxels the opening cut off the wall put back, so that the
  organs slide whole) move ``amplitude_mm`` (6-10 mm) mostly along the patient's S axis (from the affine), caudally
  (``cranial``: cranially, the fixed image in the deeper breath), with a smooth cranio-caudal profile and a small
  anterior part;
- at the cavity wall the contents SLIDE: u jumps across the wall by a tangential vector (the breathing motion with
  its normal part removed near the wall), the normal component is continuous;
- outside the cavity a smooth field of at most ``wall_mm`` (2 mm); every bone (each connected group of touching
  bones, together with a 1-voxel shell around it) moves by its own small rigid motion (rotation + translation
  bounded by ``wall_mm``), blended into the smooth field by truncated inverse-distance weights.

The field is smooth on each side of the wall (u_in = u_out + t inside the cavity, u_out outside, both smooth over
the whole grid), so det J > 0 is checked on each side; with ``flow_steps`` (deep breathing) the contents follow the
flow of t, then u_out. Everything is in NumPy/SciPy (the flow: MONAI's ``DVF2DDF``); shapes are (X, Y, Z) grids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from scripts.regions.cavity import wall_layers
from scripts.regions.labels import TOTALSEG_V2_TOTAL
from scripts.synthesis.phantom import inverse_ddf, make_ct_phantom, smooth_random_field

__all__ = [
    "CAVITY_CONTENTS",
    "bone_ids",
    "cavity_ids",
    "thorax_ids",
    "cavity_mask",
    "wall_band",
    "make_breathing_case",
    "load_real_ct",
    "phantom_anatomy",
    "real_ct_case",
    "phantom_case",
    "jacobian_det_np",
]

# as scripts.regions.cavity.DEFAULT_CAVITY_CONTENTS: aorta, vena cava, oesophagus, bladder stay outside
CAVITY_CONTENTS = (
    "lung_upper_lobe_left lung_lower_lobe_left lung_upper_lobe_right lung_middle_lobe_right lung_lower_lobe_right "
    "heart atrial_appendage_left pulmonary_vein liver gallbladder portal_vein_and_splenic_vein spleen stomach "
    "pancreas duodenum small_bowel colon kidney_left kidney_right kidney_cyst_left kidney_cyst_right "
    "adrenal_gland_left adrenal_gland_right"
).split()
_BONE_PREFIXES = ("vertebrae_", "rib_", "humerus_", "scapula_", "clavicula_", "femur_", "hip_")
_BONE_NAMES = ("sacrum", "sternum", "costal_cartilages", "skull")
_PSOAS = ("iliopsoas_left", "iliopsoas_right")
_OUTSIDE = ("spinal_cord", "autochthon_left", "autochthon_right") + _PSOAS


def _table() -> dict[str, int]:
    return dict(TOTALSEG_V2_TOTAL)


def bone_ids() -> list[int]:
    """TotalSegmentator v2 ids of every bone (vertebrae, sacrum, ribs, sternum, costal cartilages, limb girdles)."""
    return [i for n, i in _table().items() if n.startswith(_BONE_PREFIXES) or n in _BONE_NAMES]


def cavity_ids() -> list[int]:
    """TotalSegmentator v2 ids of the thoraco-abdominal cavity contents (:data:`CAVITY_CONTENTS`)."""
    table = _table()
    return [table[n] for n in CAVITY_CONTENTS]


def thorax_ids() -> list[int]:
    """TotalSegmentator v2 ids of the cavity contents above the diaphragm (lung lobes, heart, pulmonary vein)."""
    table = _table()
    return [table[n] for n in CAVITY_CONTENTS if n.startswith(("lung_", "heart", "atrial_", "pulmonary_"))]


def _ellipsoid(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    r = np.maximum(np.round(radius_mm / spacing).astype(int), 0)
    grids = np.meshgrid(*[np.arange(-k, k + 1) * s for k, s in zip(r, spacing)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2 + 1e-6


def _s_axis(affine: np.ndarray) -> int:
    """Array axis most aligned with the patient's S (world z in nibabel's RAS+)."""
    return int(np.argmax(np.abs(affine[2, :3])))


def _cavity_parts(
    seg: np.ndarray,
    affine: np.ndarray,
    closing_mm: float = 20.0,
    opening_mm: float = 9.0,
    smooth_mm: float = 6.0,
    bone_gap: int = 1,
    whole_organs: bool = True,
    muscles_in: bool = False,
    split_diaphragm: bool = False,
    shift_vox: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(smooth shape, cavity), bool (X, Y, Z): see :func:`cavity_mask`. The smooth shape (closed, opened, smoothed,
    without the bones) gives the wall's normals and the depth below it; the cavity adds the organ voxels back."""
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    contents = np.isin(seg, cavity_ids())
    if not contents.any():
        raise ValueError("segmentation has no cavity contents (lungs, liver, ... by TotalSegmentator v2 ids)")
    outside_names = tuple(n for n in _OUTSIDE if n not in _PSOAS) if muscles_in else _OUTSIDE
    if muscles_in:  # the psoas moves with the contents
        contents |= np.isin(seg, [_table()[n] for n in _PSOAS])
    pad = int(np.ceil(closing_mm / spacing.min())) + 1
    ball = _ellipsoid(closing_mm, spacing)
    # split_diaphragm: the thorax and the abdomen closed apart, the diaphragm between them outside the cavity
    parts = [np.isin(seg, thorax_ids()), contents & ~np.isin(seg, thorax_ids())] if split_diaphragm else [contents]
    closed = np.zeros(seg.shape, bool)
    for part in parts:  # padded: the cavity continues beyond the field of view
        closed |= ndi.binary_closing(np.pad(part, pad, mode="edge"), structure=ball)[(slice(pad, -pad),) * 3]
    closed |= contents
    s = _s_axis(affine)
    closed = np.moveaxis(closed, s, 0)
    closed = np.stack([ndi.binary_fill_holes(sl) for sl in closed])
    closed = np.moveaxis(closed, 0, s)
    outside = np.isin(seg, [_table()[n] for n in outside_names])
    closed &= ~outside
    if opening_mm > 0:
        closed = ndi.binary_opening(closed, structure=_ellipsoid(opening_mm, spacing))
    smooth = ndi.gaussian_filter(closed.astype(np.float32), smooth_mm / spacing, mode="nearest") >= 0.5
    bones = np.isin(seg, bone_ids())
    if bone_gap > 0 and bones.any():
        bones = ndi.binary_dilation(bones, iterations=bone_gap)
    smooth &= ~bones
    if whole_organs:  # put back the organ voxels that the opening and smoothing cut off the wall (not islands)
        near = ndi.distance_transform_edt(~smooth, sampling=spacing) <= max(opening_mm, smooth_mm)
        cavity = smooth | (contents & ~outside & ~bones & near)
    else:
        cavity = smooth
    if shift_vox > 0:  # the parietal boundary shift_vox voxels out, never into a bone
        smooth, cavity = (ndi.binary_dilation(m, iterations=shift_vox) & ~bones for m in (smooth, cavity))
    elif shift_vox < 0:  # in; the cavity goes on beyond the scan (before 0.9.11 its ends became a wall); the smooth
        # shape (the motion's normals and depth) stays: eroded, a 4-5 voxel neck of the real CT folds the motion
        cavity = ndi.binary_erosion(cavity, iterations=-shift_vox, border_value=1) & ~bones
    return smooth, cavity


def cavity_mask(seg: np.ndarray, affine: np.ndarray, **kwargs) -> np.ndarray:
    """Thoraco-abdominal cavity (bool (X, Y, Z)): the closed, hole-filled (per axial slice), opened, smoothed union
    of the contents, minus the bones dilated by ``bone_gap`` voxels (so every bone voxel's neighbours lie outside)
    and the back muscles / spinal cord; with ``whole_organs`` (default) the content voxels that the opening and
    smoothing cut off (within ``max(opening_mm, smooth_mm)`` of it, not beside a bone) are put back: an organ
    slides as a whole, its surface at the wall is the wall. Keywords: ``closing_mm`` (20), ``opening_mm`` (9),
    ``smooth_mm`` (6), ``bone_gap`` (1), ``whole_organs`` (True); the wall variants of
    :mod:`scripts.synthesis.walls`: ``muscles_in`` (False: the psoas stays out, the contents slide on it; True: it is
    content; the back muscles and spinal cord stay out), ``split_diaphragm`` (False: one closing over thorax and
    abdomen bridges the diaphragm) and ``shift_vox`` (0)."""
    return _cavity_parts(seg, affine, **kwargs)[1]


def wall_band(cavity: np.ndarray) -> np.ndarray:
    """Voxels on both sides of the cavity wall (6-neighbours across it), bool (X, Y, Z); the grid border is no wall."""
    return wall_layers(cavity.astype(bool))


def jacobian_det_np(ddf_vox: np.ndarray) -> np.ndarray:
    """det(I + grad u) of a (3, X, Y, Z) voxel field by central differences (np.gradient), (X, Y, Z)."""
    g = [np.gradient(ddf_vox[k]) for k in range(3)]
    j = [[g[k][m] + (1.0 if k == m else 0.0) for m in range(3)] for k in range(3)]
    return (
        j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
        - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
        + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0])
    )


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _rotation(rng: np.random.Generator, deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    theta = np.radians(rng.normal(0.0, deg))
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(theta) * k + (1.0 - np.cos(theta)) * (k @ k)


def _outside_field(seg, spacing, grid_mm, rng, wall_mm, rotation_deg, blend_mm):
    """Smooth field (mm, (3, *S)) <= ``wall_mm`` with one rigid motion per group of touching bones (+1 voxel)."""
    shape = seg.shape
    smooth = smooth_random_field(rng, shape, 0.4 * wall_mm)
    norm = np.sqrt((smooth**2).sum(0))
    smooth *= np.minimum(1.0, 0.75 * wall_mm / np.maximum(norm, 1e-9))
    bones = np.isin(seg, bone_ids())
    cores, n = ndi.label(ndi.binary_dilation(bones)) if bones.any() else (np.zeros(shape, int), 0)
    num = smooth / blend_mm**2
    den = np.full(shape, 1.0 / blend_mm**2)
    rigid_field = np.zeros((3, *shape))
    motions = []
    for c in range(1, n + 1):
        core = cores == c
        rot = _rotation(rng, rotation_deg)
        centre = grid_mm[:, core].mean(axis=1)
        shift = rng.normal(0.0, 0.4 * wall_mm, size=3)
        field = (
            np.einsum("ij,j...->i...", rot - np.eye(3), grid_mm - centre[:, None, None, None])
            + shift[:, None, None, None]
        )
        peak = np.sqrt((field[:, core] ** 2).sum(0)).max()
        if peak > 0.9 * wall_mm:  # keep the bone's motion within the wall bound: scale the rotation angle and shift
            field *= 0.9 * wall_mm / peak
        d = ndi.distance_transform_edt(~core, sampling=spacing)
        weight = np.where(core, 0.0, np.clip(1.0 / np.maximum(d, 1e-6) ** 2 - 1.0 / (3 * blend_mm) ** 2, 0.0, None))
        num += weight * field
        den += weight
        rigid_field[:, core] = field[:, core]
        motions.append({"voxels": int(core.sum()), "peak_mm": float(min(peak, 0.9 * wall_mm))})
    u = num / den
    u[:, cores > 0] = rigid_field[:, cores > 0]
    return u, bones, motions


def _flow(velocity_vox: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The displacements (voxels, (3, *S)) of the flows of ``velocity_vox`` and of its opposite (MONAI ``DVF2DDF``)."""
    import torch  # deferred: only the flow option needs torch here
    from monai.networks.blocks import DVF2DDF  # deferred: as above

    integrate = DVF2DDF(num_steps=steps)
    pad = int(np.ceil(np.abs(velocity_vox).max())) + 2  # the velocity continued beyond the grid: no point stops there
    padded = np.pad(velocity_vox, [(0, 0)] + [(pad, pad)] * 3, mode="edge")
    vel = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))[None]
    crop = (slice(None), *[slice(pad, -pad)] * 3)
    with torch.no_grad():
        return tuple(integrate(v)[0].double().numpy()[crop] for v in (vel, -vel))


def make_breathing_case(
    image: np.ndarray,
    seg: np.ndarray,
    affine: np.ndarray,
    rng: np.random.Generator,
    amplitude_mm: Sequence[float] = (6.0, 10.0),
    wall_mm: float = 2.0,
    rotation_deg: float = 1.0,
    anterior: float = 0.15,
    normal_mm: float = 10.0,
    wall_decay_mm: float = 12.0,
    blend_mm: float = 6.0,
    strength_frac: float = 0.2,
    cavity_kwargs: dict | None = None,
    layer_mm: float = 0.0,
    flow_steps: int = 0,
    cranial: bool = False,
) -> dict:
    """A moving image with a known breathing-like motion of ``image`` (fixed), see the module docstring.

    Args:
        image: fixed CT (X, Y, Z), HU. seg: TotalSegmentator v2 ids on the same grid. affine: (4, 4) (RAS+ world).
        rng: random generator (the case's seed). amplitude_mm: range of the contents' motion (cranio-caudal profile
        from the low end at the bottom of the cavity to the high end at its top). wall_mm: bound on the wall/outside
        motion (bones included). anterior: anterior part relative to the S motion. normal_mm: Gaussian smoothing of
        the cavity for its normals. wall_decay_mm: depth over which the normal part of the motion is removed.
        cavity_kwargs: options of :func:`cavity_mask` (the wall's definition). layer_mm: thickness of a sliding
        layer inside the wall over which the jump builds up (smoothstep of the depth; 0: the jump lies at the wall).
        flow_steps: 0 (default): the contents move by t, the breathing motion with its normal part removed near the
        wall; > 0: they move along the flow of t taken as a stationary velocity (MONAI's ``DVF2DDF``, that many
        scaling-and-squaring steps), a diffeomorphism, the moving image sampled through the flow of -t, its exact
        inverse. Deep breathing (15-30 mm) folds the additive field where the normal part is removed; the flow
        carries the contents along the wall instead (the velocity is tangential at the wall).
        cranial: the contents move cranially and posteriorly instead (the breathing motion reversed: the fixed image
        is the deeper breath). A real pair comes in either order; a network trained on one sees the direction in the
        fixed image alone and need not look at the moving one.

    Returns a dict: ``fixed`` float32, ``moving`` float32, ``fixed_seg``, ``moving_seg`` (seg dtype), ``ddf``
    float32 (3, X, Y, Z) voxels, ``ddf_mm`` (3, X, Y, Z) mm (array-axis frame), ``cavity``, ``wall`` (band on both
    sides), ``bones`` bool (X, Y, Z), ``normals`` float32 (3, X, Y, Z) unit outward normals in mm (array-axis frame)
    on the wall band, zero elsewhere, ``jump`` float32 (3, X, Y, Z) mm: inside minus outside field on the wall band
    (tangential), ``spacing`` (3,), ``affine``, ``det_in`` / ``det_out`` (det J of the smooth inside / outside
    fields on their sides) and ``info`` (amplitudes, motion percentiles, min det J).

    Raises:
        RuntimeError: when the drawn field folds (det J <= 0) on either side of the wall.
    """
    if image.shape != seg.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and segmentation {seg.shape} must share one 3D grid")
    shape = image.shape
    lin = np.asarray(affine, dtype=float)[:3, :3]
    spacing = np.sqrt((lin**2).sum(axis=0))
    direction = lin / spacing  # columns: unit world vectors of the array axes
    grid_mm = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"))
    shape_cav, cav = _cavity_parts(seg, affine, **(cavity_kwargs or {}))  # depth below the wall: smooth part
    u_out, bones, motions = _outside_field(seg, spacing, grid_mm, rng, wall_mm, rotation_deg, blend_mm)

    # breathing motion v (mm, array frame): caudal, amplitude growing towards the top of the cavity, small anterior part
    e_s, e_a = direction.T @ np.array([0.0, 0.0, 1.0]), direction.T @ np.array([0.0, 1.0, 0.0])
    height = np.einsum("i,i...->...", e_s, grid_mm)
    lo_h, hi_h = height[cav].min(), height[cav].max()
    zeta = np.clip((height - lo_h) / max(hi_h - lo_h, 1e-6), 0.0, 1.0)
    lo = rng.uniform(amplitude_mm[0], amplitude_mm[0] + 0.25 * (amplitude_mm[1] - amplitude_mm[0]))
    hi = rng.uniform(amplitude_mm[0] + 0.75 * (amplitude_mm[1] - amplitude_mm[0]), amplitude_mm[1])
    amp = (lo + (hi - lo) * zeta) / np.sqrt(1.0 + anterior**2)
    v = -amp * e_s[:, None, None, None] + anterior * amp * e_a[:, None, None, None]
    if cranial:
        v = -v
    v += smooth_random_field(rng, shape, 0.3)

    # outward normals of the smoothed cavity; remove the normal part of v near the wall (continuous normal motion)
    s = ndi.gaussian_filter(shape_cav.astype(np.float64), normal_mm / spacing, mode="nearest")
    g = -np.stack(np.gradient(s, *spacing))
    gnorm = np.sqrt((g**2).sum(0))
    n_hat = g / np.maximum(gnorm, 1e-12)
    depth = ndi.distance_transform_edt(shape_cav, sampling=spacing)  # 0 outside, >= one voxel inside
    weight = np.exp(-((np.maximum(depth - spacing.max() * 1.01, 0.0) / wall_decay_mm) ** 2))
    strength = np.clip(gnorm / (strength_frac * gnorm.max()), 0.0, 1.0)
    weight *= strength**2 * (3.0 - 2.0 * strength)  # no projection where the normal is ill-defined (deep inside)
    t = v - weight * (v * n_hat).sum(0) * n_hat
    if layer_mm > 0:  # a sliding layer: the jump builds up over layer_mm of depth below the smooth wall, as a
        # function of the smoothed indicator whose gradient is the normal: t is tangential, the ramp only shears
        ramp = _smoothstep((s - 0.5) / np.maximum(gnorm, 1e-12) / layer_mm)
        t = t * ramp
    to_vox = spacing[:, None, None, None]
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    if flow_steps > 0:  # x -> flow of t -> the outside motion: u_in(x) = t(x) + u_out(x + t(x))
        t_vox, back_vox = _flow(t / to_vox, flow_steps)
        t = t_vox * to_vox
        u_in = t + np.stack([ndi.map_coordinates(c, grid + t_vox, order=1, mode="nearest") for c in u_out])
    else:
        u_in = u_out + t

    ddf_mm = np.where(cav, u_in, u_out)
    wall = wall_band(cav)
    # invert each smooth side (points z(y) with z + u(z) = y), then pick the side the fixed point falls on
    z_out = grid + inverse_ddf(u_out / to_vox, iterations=30)
    if flow_steps > 0:  # the outside motion inverted by iteration, then the flow of -t: the flow of t's inverse
        z_in = z_out + np.stack([ndi.map_coordinates(c, z_out, order=1, mode="nearest") for c in back_vox])
    else:
        z_in = grid + inverse_ddf(u_in / to_vox, iterations=30)
    in_cav = ndi.map_coordinates(cav.astype(np.float32), z_in, order=1, mode="nearest") >= 0.5
    z = np.where(in_cav, z_in, z_out)
    fixed = image.astype(np.float32)
    moving = ndi.map_coordinates(fixed, z, order=1, mode="nearest")
    moving_seg = ndi.map_coordinates(seg, z, order=0, mode="nearest").astype(seg.dtype)

    det_in, det_out = jacobian_det_np(u_in / to_vox), jacobian_det_np(u_out / to_vox)
    if det_in[cav].min() <= 0 or det_out[~cav].min() <= 0:
        raise RuntimeError(
            f"the drawn field folds (min det J {det_in[cav].min():.3f} inside, {det_out[~cav].min():.3f} outside the "
            "cavity): use another seed or a smaller amplitude / larger normal_mm"
        )
    normals = np.where(wall, n_hat, 0.0).astype(np.float32)
    jump_mm = u_in - u_out  # tangential at the wall: t (the flow's chord along a curved wall with flow_steps)
    jump = np.where(wall, jump_mm, 0.0).astype(np.float32)
    contents = np.isin(seg, cavity_ids()) & cav
    mag = np.sqrt((ddf_mm**2).sum(0))
    return {
        "fixed": fixed,
        "moving": moving.astype(np.float32),
        "fixed_seg": seg,
        "moving_seg": moving_seg,
        "ddf": (ddf_mm / to_vox).astype(np.float32),
        "ddf_mm": ddf_mm.astype(np.float32),
        "cavity": cav,
        "wall": wall,
        "bones": bones,
        "normals": normals,
        "jump": jump,
        "spacing": spacing,
        "affine": np.asarray(affine, dtype=float),
        "det_in": det_in,
        "det_out": det_out,
        "info": {
            "amplitude_mm": [float(lo), float(hi)],
            "organ_motion_mm_p5_p50_p95": [float(np.percentile(mag[contents], q)) for q in (5, 50, 95)],
            "outside_max_mm": float(np.sqrt((u_out**2).sum(0))[~cav].max()),
            "bone_groups": motions,
            "jump_mm_mean": float(np.sqrt((jump_mm**2).sum(0))[wall & cav].mean()),
            "det_min_inside": float(det_in[cav].min()),
            "det_min_outside": float(det_out[~cav].min()),
        },
    }


def load_real_ct(data_dir: str | Path, name: str = "example_ct_sm") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image HU float32, TotalSegmentator v2 label map uint8, affine) of ``<data_dir>/<name>.nii.gz`` and its
    segmentation on the same grid (``example_seg`` for ``example_ct_sm``; ``example_seg_dicom`` needs the DICOM
    series, not handled here)."""
    import nibabel as nib

    segs = {"example_ct_sm": "example_seg"}
    if name not in segs:
        raise ValueError(f"no segmentation on the grid of {name!r}; choose one of {sorted(segs)}")
    ct, sg = (nib.load(str(Path(data_dir) / f"{n}.nii.gz")) for n in (name, segs[name]))
    image, seg = np.asanyarray(ct.dataobj).astype(np.float32), np.asanyarray(sg.dataobj).astype(np.uint8)
    if seg.shape != image.shape or not np.allclose(ct.affine, sg.affine, atol=1e-3):
        raise ValueError(f"{segs[name]} {seg.shape} is not on the grid of {name} {image.shape}")
    return image, seg, ct.affine


def phantom_anatomy(rng: np.random.Generator, shape=(40, 36, 48), spacing=(3.0, 3.5, 3.5)):
    """(image HU float32, label map, affine) of the CT phantom (:func:`scripts.synthesis.phantom.make_ct_phantom`,
    PLS) drawn with ``rng``."""
    ph = make_ct_phantom(shape, spacing, "PLS", rng)
    return ph["image"].astype(np.float32), ph["seg"], ph["affine"]


def real_ct_case(data_dir: str | Path, seed: int = 0, name: str = "example_ct_sm", **kwargs) -> dict:
    """:func:`make_breathing_case` on ``<data_dir>/<name>.nii.gz`` with its segmentation (:func:`load_real_ct`)."""
    return make_breathing_case(*load_real_ct(data_dir, name), np.random.default_rng(seed), **kwargs)


def phantom_case(seed: int = 0, shape: Sequence[int] = (40, 36, 48), spacing=(3.0, 3.5, 3.5), **kwargs) -> dict:
    """:func:`make_breathing_case` on the CT phantom (:func:`phantom_anatomy`)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 10]))
    return make_breathing_case(*phantom_anatomy(rng, shape, spacing), rng, **kwargs)
