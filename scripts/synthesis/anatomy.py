"""Generated CT training cases: random phantom anatomy moved by a random biomechanical motion, with the true field.

:func:`generated_case` draws, from one seed, everything that varies between scans and between breaths:

- **anatomy** (:func:`random_phantom`): the CT-like phantom of :func:`scripts.synthesis.phantom.make_ct_phantom` on a
  random field of view (width 330-420 mm, depth 260-340 mm, height 200-320 mm: body size against the field of
  view), random voxel size (4.5-5.5 mm in-plane, 4.5-6 mm across slices), a random storage orientation, organ
  sizes and positions jittered, tissue HU values jittered (soft tissue +-25 HU, lung +-60 HU, bone +-150 HU), image
  blur 0.4-1.0 voxel and noise 5-25 HU; with ``texture_hu`` > 0 a tissue texture (:func:`tissue_texture`: smooth
  HU variations in the body, vessel-like spots in the lungs), so that a network finds something to match inside the
  organs, as in a real CT, and not only at their edges; with ``bone_hu`` (low, high) bones of a real CT's density
  (:func:`real_bones`: marrow drawn in that range, a brighter cortical shell) instead of the phantom's solid 700 HU;
- **motion**: breathing (:func:`scripts.synthesis.breathing.make_breathing_case`: the cavity contents slide along
  the wall, each bone group moves rigidly, a smooth wall motion) whose amplitude (3-14 mm), anterior part, wall motion
  and whose cavity wall definition (closing, opening and smoothing radii) are drawn per case, then a small rigid
  offset of the whole moving scan (rotation <= 2 degrees, translation <= 4 mm); with ``cranial_fraction`` > 0 that
  share of the cases breathes the other way (the contents move cranially: the fixed image is the deeper breath);
- **field of view along the body axis**: a random slab (``min_slab_mm``, 90 mm by default, to the whole height) of
  the moved pair, so that organs move in and out of the scan as in a real breath-hold pair.

The returned field follows the bundle's convention (MONAI ``Warp``): ``ddf`` (3, X, Y, Z) in voxels of the fixed
grid, ``fixed(x) = moving(x + ddf(x))``. Composition with the rigid offset s (mm, array frame; q = voxel index times
spacing): the moving scan is ``moving'(p) = moving(s^-1(p))``, so ``fixed(x) = moving'(x + u(x) + s(x + u(x)))``.

Seeds: case ``i`` of split ``k`` draws from ``np.random.SeedSequence([seed, k, i, 19])``; a case whose drawn field
folds is drawn again from the next sub-stream (at most 5 tries); the direction alone draws from
``SeedSequence([seed, k, i, 23])``, the texture from ``SeedSequence([seed, k, i, 29, try])`` and the bones' density
from ``SeedSequence([seed, k, i, 31, try])``, so that a case's anatomy and motion are the same in either direction,
with or without texture, with dense or real bones.
Everything is NumPy/SciPy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from scripts.regions.labels import TOTALSEG_V2_TOTAL, learn2reg_labels_from_totalsegmentator
from scripts.synthesis.breathing import bone_ids, make_breathing_case
from scripts.synthesis.phantom import PHANTOM_HU, make_ct_phantom

__all__ = [
    "SPLIT_IDS",
    "MIN_SLAB_MM",
    "random_phantom",
    "rigid_offset",
    "with_labels",
    "draw_cranial",
    "tissue_texture",
    "real_bones",
    "generated_case",
]

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
MIN_SLAB_MM = 90.0  # the thinnest slab along the body axis, by default
AXCODES = ("RAS", "LPS", "PLS", "LAS", "RPI")
_JITTER_HU = {"lung": 60.0, "bone": 150.0, "air": 0.0}


def random_phantom(rng: np.random.Generator, height_mm: Sequence[float] = (200.0, 320.0)) -> dict:
    """A phantom of random anatomy, field of view, voxel size, orientation, HU values, blur and noise (see the module
    docstring): :func:`scripts.synthesis.phantom.make_ct_phantom`'s dict."""
    fov = np.array([rng.uniform(330, 420), rng.uniform(260, 340), rng.uniform(*height_mm)])
    spacing = np.array([rng.uniform(4.5, 5.5), rng.uniform(4.5, 5.5), rng.uniform(4.5, 6.0)])
    shape = tuple(int(max(16, round(f / s))) for f, s in zip(fov, spacing))
    hu = {name: value + rng.normal(0.0, _JITTER_HU.get(name, 25.0) / 2) for name, value in PHANTOM_HU.items()}
    return make_ct_phantom(
        shape,
        tuple(float(s) for s in spacing),
        str(rng.choice(AXCODES)),
        rng,
        noise_hu=float(rng.uniform(5.0, 25.0)),
        tissue_hu=hu,
        blur_voxels=float(rng.uniform(0.4, 1.0)),
    )


def tissue_texture(rng: np.random.Generator, phantom: dict, amplitude_hu: float) -> np.ndarray:
    """The phantom's ``image`` (int16 HU) with a texture of ``amplitude_hu`` (HU std) drawn from ``rng``: in the body a
    smooth random field (two Gaussian-correlated scales, 4 and 10 mm), in the lungs vessel-like spots (+200-500 HU
    where a 3-mm field exceeds 1.5 std). The phantom's organs are homogeneous otherwise: a real CT's are not."""
    if amplitude_hu <= 0:
        return phantom["image"]
    image = phantom["image"].astype(np.float32)
    spacing = np.sqrt((np.asarray(phantom["affine"])[:3, :3] ** 2).sum(axis=0))

    def field(sigma_mm: float) -> np.ndarray:
        f = ndi.gaussian_filter(rng.normal(size=image.shape).astype(np.float32), sigma_mm / spacing)
        return f / max(float(f.std()), 1e-6)

    texture = amplitude_hu * (0.6 * field(4.0) + 0.8 * field(10.0))
    lungs = np.isin(phantom["seg"], [i for n, i in TOTALSEG_V2_TOTAL.items() if n.startswith("lung_")])
    vessels = lungs & (field(3.0) > 1.5)
    image = np.where(image > -900, image + texture, image) + vessels * rng.uniform(200.0, 500.0)
    return np.clip(np.round(image), -1024, 3071).astype(np.int16)


def real_bones(rng: np.random.Generator, phantom: dict, marrow_hu: Sequence[float]) -> tuple[np.ndarray, dict]:
    """(image int16 HU, drawn): the phantom's ``image`` with the bones of a real CT's density, drawn from ``rng``.

    The phantom paints every bone a solid ``tissue_hu["bone"]`` (700 HU): brighter than the top of the CT model's HU
    window (400), so a network trained on it can take "saturated" for "bone". A real abdomen CT's bones are mostly
    marrow: in the held-out CT the vertebrae's voxels have a median of 153 HU (10-90 %: 82-351), the ribs' 220 HU
    (97-352), little above the liver (46). Here the bones' inside becomes marrow of a HU drawn uniformly in
    ``marrow_hu`` and their outer voxel a cortex brighter by 50-400 HU. The painted image was blurred
    (``blur_voxels``) before its noise, a linear step, so the change is made exactly: the image plus the blurred
    difference of the two paintings. ``drawn``: ``{"marrow_hu", "cortex_hu"}``."""
    low, high = (float(v) for v in marrow_hu)
    drawn = {"marrow_hu": float(rng.uniform(low, high)), "cortex_hu": float(rng.uniform(50.0, 400.0))}
    bone = np.isin(phantom["seg"], bone_ids())
    if not bone.any():
        return phantom["image"], drawn
    shell = bone & ~ndi.binary_erosion(bone)
    change = (drawn["marrow_hu"] - float(phantom["tissue_hu"]["bone"])) * bone + drawn["cortex_hu"] * shell
    image = phantom["image"] + ndi.gaussian_filter(change.astype(np.float32), float(phantom["blur_voxels"]))
    return np.clip(np.round(image), -1024, 3071).astype(np.int16), drawn


def rigid_offset(rng: np.random.Generator, max_deg: float = 2.0, max_mm: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """(R (3, 3), t (3,) mm): a random rotation of at most ``max_deg`` about a random axis, a translation of at most
    ``max_mm`` per axis (array frame)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    return rotation, rng.uniform(-max_mm, max_mm, size=3)


def _compose_rigid(case: dict, rotation: np.ndarray, shift: np.ndarray) -> None:
    """Move the case's moving scan (image and labels) by the rigid offset about the grid centre and compose the
    true field with it, in place (see the module docstring)."""
    spacing = case["spacing"]
    shape = case["fixed"].shape
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    centre = (np.asarray(shape) - 1) / 2 * spacing
    p = grid * spacing[:, None, None, None]
    inverse = np.einsum("ji,j...->i...", rotation, p - (centre + shift)[:, None, None, None])  # R^T (p - c - t)
    source = (inverse + centre[:, None, None, None]) / spacing[:, None, None, None]
    case["moving"] = ndi.map_coordinates(case["moving"], source, order=1, mode="nearest").astype(np.float32)
    case["moving_seg"] = ndi.map_coordinates(case["moving_seg"], source, order=0, mode="nearest")
    q = p + case["ddf_mm"]  # x + u(x), mm
    s = np.einsum("ij,j...->i...", rotation - np.eye(3), q - centre[:, None, None, None]) + shift[:, None, None, None]
    case["ddf_mm"] = (case["ddf_mm"] + s).astype(np.float32)
    case["ddf"] = (case["ddf_mm"] / spacing[:, None, None, None]).astype(np.float32)


def _crop_slab(case: dict, rng: np.random.Generator, min_mm: float = MIN_SLAB_MM) -> None:
    """Keep a random slab along the array axis closest to the body's S axis (at least ``min_mm`` thick), in place:
    every volume of the case is cut, the affine's origin moves to the slab's first slice."""
    lin = case["affine"][:3, :3]
    axis = int(np.argmax(np.abs(lin[2])))
    n = case["fixed"].shape[axis]
    thickness = int(np.clip(round(rng.uniform(min_mm, n * case["spacing"][axis]) / case["spacing"][axis]), 8, n))
    start = int(rng.integers(0, n - thickness + 1))
    cut = [slice(None)] * 3
    cut[axis] = slice(start, start + thickness)
    shape = case["fixed"].shape
    for key, value in list(case.items()):
        if isinstance(value, np.ndarray) and value.ndim >= 3 and value.shape[-3:] == shape:
            case[key] = value[(Ellipsis, *cut)]
    offset = np.zeros(3)
    offset[axis] = start
    affine = case["affine"].copy()
    affine[:3, 3] += lin @ offset
    case["affine"] = affine


def with_labels(case: dict) -> dict:
    """The case with ``fixed_label`` / ``moving_label``: its segmentations as Learn2Reg AbdomenCTCT ids (Dice)."""
    case["fixed_label"] = learn2reg_labels_from_totalsegmentator(case["fixed_seg"])
    case["moving_label"] = learn2reg_labels_from_totalsegmentator(case["moving_seg"])
    return case


def draw_cranial(index: int, split: str, seed: int, cranial_fraction: float) -> bool:
    """Whether case ``index`` of ``split`` breathes cranially: with probability ``cranial_fraction``, own stream."""
    if not 0.0 <= float(cranial_fraction) <= 1.0:
        raise ValueError(f"cranial_fraction must lie in [0, 1], got {cranial_fraction!r}")
    stream = np.random.SeedSequence([int(seed), SPLIT_IDS[split], int(index), 23])
    return bool(np.random.default_rng(stream).random() < float(cranial_fraction))


def generated_case(
    index: int,
    split: str = "train",
    seed: int = 0,
    slab: bool = True,
    cranial_fraction: float = 0.0,
    texture_hu: float = 0.0,
    min_slab_mm: float = MIN_SLAB_MM,
    bone_hu: Sequence[float] | None = None,
) -> dict:
    """Case ``index`` of ``split``: :func:`scripts.synthesis.breathing.make_breathing_case`'s dict on a random
    phantom, composed with a rigid offset and cut to a random slab, plus ``fixed_label`` / ``moving_label``
    (Learn2Reg AbdomenCTCT ids, for Dice) and ``info["drawn"]`` (the drawn parameters). ``cranial_fraction``: the
    probability that the case breathes cranially (:func:`draw_cranial`; 0: every case caudally, as before 0.8.2);
    ``texture_hu``: the largest texture amplitude (:func:`tissue_texture`, drawn in [0, texture_hu] per case);
    ``min_slab_mm``: the thinnest slab kept along the body axis (drawn uniformly up to the whole height);
    ``bone_hu``: (low, high), the range of the bones' marrow HU (:func:`real_bones`; None: the phantom's 700 HU)."""
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {tuple(SPLIT_IDS)}, got {split!r}")
    cranial = draw_cranial(index, split, seed, cranial_fraction)
    streams = np.random.SeedSequence([int(seed), SPLIT_IDS[split], int(index), 19]).spawn(5)
    for attempt, stream in enumerate(streams):
        rng = np.random.default_rng(stream)
        phantom = random_phantom(rng)
        bones = {}
        if bone_hu is not None:
            bone_rng = np.random.default_rng([int(seed), SPLIT_IDS[split], int(index), 31, attempt])
            phantom["image"], bones = real_bones(bone_rng, phantom, bone_hu)
        texture = 0.0
        if texture_hu > 0:
            texture_rng = np.random.default_rng([int(seed), SPLIT_IDS[split], int(index), 29, attempt])
            texture = float(texture_rng.uniform(0.0, float(texture_hu)))
            phantom["image"] = tissue_texture(texture_rng, phantom, texture)
        low = rng.uniform(3.0, 8.0)
        drawn = {
            "amplitude_mm": (low, low + rng.uniform(2.0, 6.0)),
            "wall_mm": rng.uniform(1.0, 3.0),
            "anterior": rng.uniform(0.0, 0.3),
            "rotation_deg": rng.uniform(0.3, 1.5),
            "cavity_kwargs": {
                "closing_mm": rng.uniform(12.0, 25.0),
                "opening_mm": rng.uniform(5.0, 10.0),
                "smooth_mm": rng.uniform(4.0, 8.0),
            },
            "cranial": cranial,
        }
        try:
            case = make_breathing_case(phantom["image"].astype(np.float32), phantom["seg"], phantom["affine"], rng,
                                       **drawn)  # fmt: skip
        except RuntimeError:  # the drawn field folds: draw the case again
            continue
        rotation, shift = rigid_offset(rng)
        _compose_rigid(case, rotation, shift)
        if slab:
            _crop_slab(case, rng, min_slab_mm)
        with_labels(case)
        case["info"]["drawn"] = {
            **drawn,
            "texture_hu": texture,
            **bones,
            "rotation": rotation.tolist(),
            "shift_mm": shift.tolist(),
            "tries": attempt,
        }
        return case
    raise RuntimeError(f"generated case {index} of {split!r} (seed {seed}) folds in every one of its 5 draws")
