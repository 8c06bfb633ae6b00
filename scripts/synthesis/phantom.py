"""CT test data with known answers, for the real-CT pipeline (``configs/ct.json``): a CT-like abdominal phantom in
the Learn2Reg AbdomenCTCT layout (``make_ct_phantom``, ``write_learn2reg_phantom``: HU intensities, TotalSegmentator and
Learn2Reg label maps, a flipped/permuted affine with anisotropic voxels, one oblique flat lung/abdomen interface), and a
deformed copy of a real CT with a known field, rigid on the vertebrae (``deform_ct``, ``write_deformed_ct_pair``)::

    python -m scripts.synthesis.phantom phantom --out_dir /tmp/AbdomenCTCT_phantom --num_images 6
    python -m scripts.synthesis.phantom deformed_pair --ct ct.nii.gz --seg ct_seg.nii.gz --out_dir /tmp/ct_pair
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from scripts.io.errors import run_cli
from scripts.regions.labels import (
    LEARN2REG_ABDOMEN_LABELS,
    TOTALSEG_V2_TOTAL,
    learn2reg_labels_from_totalsegmentator,
    vertebrae_ids,
)

# # The phantom is drawn in world coordinates (RAS+, mm, origin at the volume centre): x to the patient's right... here
# simply +x = "R", +y = "A", +z = "S" as nibabel's axis codes say. Organs carry TotalSegmentator v2 names (label map
# for the regions) and Learn2Reg AbdomenCTCT ids (label map for Dice). The right lung lower lobe sits on the liver
# (and the left one on the spleen and stomach) along ONE oblique plane, the diaphragm: z = z_d + tan(tilt) * y, so the
# sliding normals there must equal the plane normal (0, -sin tilt, cos tilt) in world coordinates.

PHANTOM_HU = {
    "air": -1000.0,
    "fat": -90.0,
    "soft": 15.0,
    "lung": -850.0,
    "liver": 60.0,
    "spleen": 50.0,
    "stomach": 20.0,
    "kidney": 35.0,
    "gallbladder": 10.0,
    "pancreas": 45.0,
    "vessel": 150.0,
    "bone": 700.0,
}
DIAPHRAGM_TILT_DEG = 20.0  # tilt of the lung/abdomen interface plane about the x (left-right) axis


def phantom_affine(shape: Sequence[int], spacing: Sequence[float], axcodes: str = "PLS") -> np.ndarray:
    """4x4 affine of a volume whose array axes point along ``axcodes`` (nibabel codes, e.g. "PLS": axis 0 towards
    posterior, 1 towards the left, 2 superior), voxel sizes ``spacing`` (mm per array axis), centred on the origin."""
    from nibabel.orientations import axcodes2ornt

    ornt = axcodes2ornt(tuple(axcodes))
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for k, (world_axis, flip) in enumerate(ornt):
        affine[int(world_axis), k] = flip * float(spacing[k])
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape, dtype=float) - 1) / 2)
    return affine


def diaphragm_normal(tilt_deg: float = DIAPHRAGM_TILT_DEG) -> np.ndarray:
    """Unit normal (world RAS+ frame) of the phantom's lung/abdomen interface plane z = z_d + tan(tilt) y."""
    t = np.radians(tilt_deg)
    return np.array([0.0, -np.sin(t), np.cos(t)])


def make_ct_phantom(
    shape: Sequence[int] = (40, 36, 48),
    spacing: Sequence[float] = (3.0, 3.5, 3.5),
    axcodes: str = "PLS",
    rng: np.random.Generator | None = None,
    noise_hu: float = 10.0,
    tissue_hu: Mapping[str, float] | None = None,
    blur_voxels: float = 0.6,
) -> dict:
    """One CT-like abdominal phantom (organs as ellipsoids, vertebrae as boxes, ribs as tubes).

    Sizes and positions are fractions of the field of view (so any grid works) with per-image random jitter from
    ``rng``; ``tissue_hu`` overrides tissue values of :data:`PHANTOM_HU`; ``blur_voxels`` is the Gaussian blur
    (voxels) before the noise of ``noise_hu`` (HU std). Returns a dict: ``image`` int16 HU (X, Y, Z), ``seg`` uint8
    TotalSegmentator v2 ids, ``label`` uint8 Learn2Reg AbdomenCTCT ids (0..13), ``affine`` (4, 4) (non-identity:
    ``axcodes``, anisotropic ``spacing``), ``diaphragm_z`` (mm, plane height at y = 0), and the ``tissue_hu`` (every
    tissue's HU) and ``blur_voxels`` it was drawn with.
    """
    from scipy.ndimage import gaussian_filter

    T = TOTALSEG_V2_TOTAL
    hu_of = {**PHANTOM_HU, **(tissue_hu or {})}

    rng = np.random.default_rng(0) if rng is None else rng
    shape = tuple(int(s) for s in shape)
    affine = phantom_affine(shape, spacing, axcodes)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), axis=0)
    world = np.einsum("ij,j...->i...", affine[:3, :3].astype(np.float32), grid) + affine[:3, 3, None, None, None]
    x, y, z = world
    hx, hy, hz = (np.abs(affine[:3, :3]) @ np.asarray(shape, dtype=float)) / 2  # half extents along x, y, z (mm)

    def jit(scale: float) -> float:
        return float(rng.normal(0.0, scale))

    def ellipsoid(c, r) -> np.ndarray:
        r = [ri * (1.0 + jit(0.05)) for ri in r]
        c = [ci + jit(0.05) * h for ci, h in zip(c, (hx, hy, hz))]
        return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1.0

    seg = np.zeros(shape, dtype=np.uint8)
    hu = np.full(shape, hu_of["air"], dtype=np.float32)
    body_r = ((x / (0.92 * hx)) ** 2 + (y / (0.88 * hy)) ** 2) ** 0.5
    hu[body_r <= 1.0] = hu_of["fat"]
    inner = body_r <= 0.9
    hu[inner] = hu_of["soft"]
    zd = 0.15 * hz + jit(0.06) * hz
    above = z >= zd + np.tan(np.radians(DIAPHRAGM_TILT_DEG)) * y  # thorax side of the diaphragm plane
    lung_zone = (body_r <= 0.78) & above
    organs = [
        ("lung_lower_lobe_right", lung_zone & (x > 0.08 * hx), "lung"),
        ("lung_lower_lobe_left", lung_zone & (x < -0.08 * hx), "lung"),
        ("liver", (body_r <= 0.8) & ~above & (x > 0.02 * hx) & (z > zd - 0.55 * hz), "liver"),
        (
            "spleen",
            ellipsoid((-0.55 * hx, -0.25 * hy, zd - 0.15 * hz), (0.2 * hx, 0.22 * hy, 0.2 * hz)) & ~above,
            "spleen",
        ),
        (
            "stomach",
            ellipsoid((-0.3 * hx, 0.3 * hy, zd - 0.2 * hz), (0.22 * hx, 0.25 * hy, 0.18 * hz)) & ~above,
            "stomach",
        ),
        (
            "gallbladder",
            ellipsoid((0.35 * hx, 0.4 * hy, zd - 0.35 * hz), (0.08 * hx, 0.1 * hy, 0.1 * hz)),
            "gallbladder",
        ),
        (
            "kidney_right",
            ellipsoid((0.42 * hx, -0.45 * hy, zd - 0.6 * hz), (0.13 * hx, 0.13 * hy, 0.22 * hz)),
            "kidney",
        ),
        (
            "kidney_left",
            ellipsoid((-0.42 * hx, -0.45 * hy, zd - 0.6 * hz), (0.13 * hx, 0.13 * hy, 0.22 * hz)),
            "kidney",
        ),
        ("pancreas", ellipsoid((-0.05 * hx, 0.05 * hy, zd - 0.5 * hz), (0.32 * hx, 0.08 * hy, 0.07 * hz)), "pancreas"),
    ]
    aorta_c = (-0.1 * hx + jit(0.02) * hx, -0.32 * hy + jit(0.02) * hy)
    ivc_c = (0.14 * hx + jit(0.02) * hx, -0.28 * hy + jit(0.02) * hy)
    organs += [
        ("aorta", ((x - aorta_c[0]) ** 2 + (y - aorta_c[1]) ** 2 <= (0.08 * hx) ** 2) & inner, "vessel"),
        (
            "inferior_vena_cava",
            ((x - ivc_c[0]) ** 2 + (y - ivc_c[1]) ** 2 <= (0.07 * hx) ** 2) & (z < zd - 0.15 * hz),
            "vessel",
        ),
    ]
    # bones: five vertebral bodies (boxes) along z, shifted together (rigid spine), and six rib segments (tubes)
    spine = np.array([jit(0.03) * hx, -0.62 * hy + jit(0.02) * hy, jit(0.04) * hz])
    names = ["vertebrae_L3", "vertebrae_L2", "vertebrae_L1", "vertebrae_T12", "vertebrae_T11"]
    step = 2 * hz / len(names)
    for i, name in enumerate(names):
        zc = -hz + (i + 0.5) * step + spine[2]
        box = (
            (np.abs(x - spine[0]) <= 0.13 * hx) & (np.abs(y - spine[1]) <= 0.12 * hy) & (np.abs(z - zc) <= 0.38 * step)
        )
        organs.append((name, box, "bone"))
    a, b = 0.84 * 0.92 * hx, 0.84 * 0.88 * hy
    ring = ((x / a) ** 2 + (y / b) ** 2) ** 0.5
    tube = 0.045 * min(hx, hy)
    for j, number in enumerate((9, 10, 11)):
        zr = zd + (0.25 - 0.3 * j) * hz
        rib = ((ring - 1.0) * min(a, b)) ** 2 + (z - zr) ** 2 <= tube**2
        rib &= y < 0.35 * hy
        organs += [
            (f"rib_right_{number}", rib & (x > 0.2 * hx), "bone"),
            (f"rib_left_{number}", rib & (x < -0.2 * hx), "bone"),
        ]
    for name, region, tissue in organs:
        seg[region] = T[name]
        hu[region] = hu_of[tissue]
    hu = gaussian_filter(hu, blur_voxels) + rng.normal(0.0, noise_hu, size=shape).astype(np.float32)
    return {
        "image": np.clip(np.round(hu), -1024, 3071).astype(np.int16),
        "seg": seg,
        "label": learn2reg_labels_from_totalsegmentator(seg),
        "affine": affine,
        "diaphragm_z": zd,
        "tissue_hu": hu_of,
        "blur_voxels": float(blur_voxels),
    }


def _save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def write_learn2reg_phantom(
    out_dir: str = "phantom_AbdomenCTCT",
    num_images: int = 6,
    num_val_images: int = 2,
    shape: Sequence[int] = (40, 36, 48),
    spacing: Sequence[float] = (3.0, 3.5, 3.5),
    axcodes: str = "PLS",
    seed: int = 0,
    seg_folder: str = "totalsegmentator",
) -> str:
    """Write ``num_images`` phantoms (:func:`make_ct_phantom`) in the Learn2Reg AbdomenCTCT layout.

    ``AbdomenCTCT_dataset.json`` (``training``: every image with its label; ``registration_val``: every pair of the
    last ``num_val_images`` images, fixed before moving, as the challenge lists them), ``imagesTr/`` (int16 HU),
    ``labelsTr/`` (Learn2Reg ids), ``<seg_folder>/<image name>_seg.nii.gz`` (TotalSegmentator v2 ids, as
    ``python -m scripts.regions.segment run`` names them). Returns ``out_dir``.
    """
    if not 2 <= num_val_images < num_images - 1:
        raise ValueError("need 2 <= num_val_images < num_images - 1 (validation pairs, and >= 2 training images)")
    out = Path(out_dir)
    training = []
    for i in range(1, num_images + 1):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, i]))
        case = make_ct_phantom(shape, spacing, axcodes, rng)
        name = f"AbdomenCTCT_{i:04d}_0000"
        _save_nifti(case["image"], case["affine"], out / "imagesTr" / f"{name}.nii.gz")
        _save_nifti(case["label"], case["affine"], out / "labelsTr" / f"{name}.nii.gz")
        _save_nifti(case["seg"], case["affine"], out / seg_folder / f"{name}_seg.nii.gz")
        training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    val_images = [t["image"] for t in training[-num_val_images:]]
    val = [{"fixed": a, "moving": b} for i, a in enumerate(val_images) for b in val_images[i + 1 :]]

    meta = {
        "name": "AbdomenCTCT",
        "description": "CT-like phantom in the Learn2Reg AbdomenCTCT layout (biomech-reg tests)",
        "tensorImageSize": {"0": "3D"},
        "tensorImageShape": {"0": list(shape)},
        "modality": {"0": "CT"},
        "labels": {"0": {"0": "background", **{str(k): v for k, v in LEARN2REG_ABDOMEN_LABELS.items()}}},
        "numTraining": num_images,
        "training": training,
        "numRegistration_val": len(val),
        "registration_val": val,
    }
    (out / "AbdomenCTCT_dataset.json").write_text(json.dumps(meta, indent=4) + "\n")
    return str(out)


def deform_ct(
    image: np.ndarray,
    seg: np.ndarray,
    spacing: Sequence[float],
    rng: np.random.Generator,
    smooth_mm: float = 4.0,
    rotation_deg: float = 3.0,
    translation_mm: float = 3.0,
    rigid_ids: Sequence[int] | None = None,
) -> dict:
    """A deformed copy of a CT with a known field: smooth elsewhere, rigid on the vertebrae.

    u(x) (voxels, (3, X, Y, Z)) blends a smooth random field (cubic upsampling of a coarse Gaussian grid, std
    ``smooth_mm`` per component) with one rigid motion of the vertebrae (rotation ~``rotation_deg`` about a random axis
    through their centroid, translation ~``translation_mm``): weight 1 on the vertebrae dilated by 2 voxels, falling
    smoothly to 0 around them. The copy is ``moving(x) = image(x + u(x))`` (trilinear; labels nearest).

    Returns a dict: ``moving`` (image dtype), ``moving_seg``, ``ddf`` float32 (3, X, Y, Z) voxels.
    """
    from scipy.ndimage import binary_dilation, gaussian_filter, map_coordinates, zoom

    shape = image.shape
    spacing = np.asarray(spacing, dtype=float)
    coarse = rng.normal(0.0, smooth_mm, size=(3, 5, 5, 4)) / spacing[:, None, None, None]
    smooth = np.stack([zoom(c, np.asarray(shape) / np.asarray(c.shape), order=3) for c in coarse])
    rigid_mask = np.isin(seg, list(vertebrae_ids() if rigid_ids is None else rigid_ids))
    rigid_field = np.zeros_like(smooth)
    weight = np.zeros(shape)
    if rigid_mask.any():
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        theta = np.radians(rng.normal(0.0, rotation_deg))
        k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
        rot = np.eye(3) + np.sin(theta) * k + (1.0 - np.cos(theta)) * (k @ k)
        grid_mm = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"))
        centre = grid_mm[:, rigid_mask].mean(axis=1)
        rel = grid_mm - centre[:, None, None, None]
        shift = rng.normal(0.0, translation_mm, size=3)
        rigid_mm = np.einsum("ij,j...->i...", rot - np.eye(3), rel) + shift[:, None, None, None]
        rigid_field = rigid_mm / spacing[:, None, None, None]
        core = binary_dilation(rigid_mask, iterations=2)
        weight = np.clip(gaussian_filter(core.astype(float), 2.0) * 2.0, 0.0, 1.0)
        weight[core] = 1.0
    ddf = (weight * rigid_field + (1.0 - weight) * smooth).astype(np.float32)
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")) + ddf
    moving = map_coordinates(image.astype(np.float32), coords, order=1, mode="nearest")
    moving_seg = map_coordinates(seg, coords, order=0, mode="constant", cval=0)
    return {"moving": moving.astype(image.dtype), "moving_seg": moving_seg.astype(seg.dtype), "ddf": ddf}


def inverse_ddf(ddf: np.ndarray, iterations: int = 20, tol: float = 1e-5) -> np.ndarray:
    """The field that registers a :func:`deform_ct` copy back: ``v(x) = -u(x + v(x))`` (fixed-point iterations,
    trilinear), so that ``moving(x + v(x)) = image(x)``. (3, X, Y, Z) voxels in, (3, X, Y, Z) float32 voxels out.

    Each iteration samples u at x + v(x) as MONAI's ``Warp`` does (``grid_sample``, align_corners, border padding),
    with the identity grid built once (``Warp`` rebuilds it on every call: most of its time on these grids). The
    iterations stop early once an iteration moves no voxel by more than ``tol`` voxels (a smooth field that contracts
    gets there in a few; a field that does not contract everywhere runs all ``iterations``)."""
    import torch
    from torch.nn import functional as F

    u = torch.from_numpy(np.ascontiguousarray(ddf, dtype=np.float32))[None]
    shape = u.shape[2:]
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in shape], dtype=torch.float32).reshape(1, 3, 1, 1, 1)
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    base = torch.stack(torch.meshgrid(*axes, indexing="ij"))[None] * scale - 1.0
    v = -u
    with torch.no_grad():
        for _ in range(int(iterations)):
            grid = (base + v * scale).permute(0, 2, 3, 4, 1).flip(-1)  # grid_sample wants (x, y, z) = (W, H, D)
            step = -F.grid_sample(u, grid, mode="bilinear", padding_mode="border", align_corners=True)
            change, v = float((step - v).abs().max()), step
            if change < tol:
                break
    return v[0].numpy()


def smooth_random_field(rng: np.random.Generator, shape: tuple, std_mm: float, nodes: int = 5) -> np.ndarray:
    """(3, *shape): random normal nodes (std ``std_mm``) zoomed to ``shape`` by cubic splines (``scipy.ndimage.zoom``,
    ``order=3``, ``"nearest"``), one axis at a time: the spline is a tensor product, so the zoom is the product of
    each axis's (shape, nodes) zoom matrix: the same values (tests/test_breathing.py) for three small matrix products
    instead of 64 spline taps a voxel."""
    coarse = rng.normal(0.0, std_mm, size=(3, *[max(3, min(nodes, n // 4 + 2)) for n in shape]))
    zooms = [_zoom_matrix(n, m) for n, m in zip(coarse.shape[1:], shape)]
    return np.einsum("ai,bj,ck,dijk->dabc", *zooms, coarse, optimize=True)


def _zoom_matrix(n: int, m: int) -> np.ndarray:
    """(m, n): ``ndimage.zoom(x, m / n, order=3, mode="nearest")`` of any length-n vector x as a matrix product."""
    from scipy.ndimage import zoom

    return np.stack([zoom(unit, m / n, order=3, mode="nearest") for unit in np.eye(n)], axis=1)


def write_deformed_ct_pair(ct: str, seg: str, out_dir: str = "ct_pair", seed: int = 0) -> str:
    """Write a CT and a deformed copy (:func:`deform_ct`) as a plain pair list for the ``pairs`` dataset.

    Files in ``out_dir``: ``fixed.nii.gz`` (the CT), ``moving.nii.gz``, their TotalSegmentator label maps
    ``fixed_seg`` / ``moving_seg``, Learn2Reg-style organ labels ``fixed_label`` / ``moving_label`` (from the
    segmentations), the true field ``ddf_true.nii.gz`` (X, Y, Z, 3, voxels) and ``pairs.json``: train = both
    directions, val = test = fixed <- moving. Returns the path of ``pairs.json``.
    """
    import nibabel as nib

    ct_img, seg_img = nib.load(ct), nib.load(seg)
    image = np.asanyarray(ct_img.dataobj)
    labels = np.asanyarray(seg_img.dataobj).astype(np.uint8)
    if labels.shape != image.shape:
        raise ValueError(f"segmentation {seg} {labels.shape} is not on the CT's grid {image.shape}")
    spacing = np.sqrt((ct_img.affine[:3, :3] ** 2).sum(axis=0))
    result = deform_ct(image, labels, spacing, np.random.default_rng(seed))
    out = Path(out_dir)
    files = {
        "fixed": image,
        "moving": result["moving"],
        "fixed_seg": labels,
        "moving_seg": result["moving_seg"],
        "fixed_label": learn2reg_labels_from_totalsegmentator(labels),
        "moving_label": learn2reg_labels_from_totalsegmentator(result["moving_seg"]),
        "ddf_true": np.moveaxis(result["ddf"], 0, -1),
    }
    for name, data in files.items():
        _save_nifti(data, ct_img.affine, out / f"{name}.nii.gz")
    forward = {k: f"{k}.nii.gz" for k in ("fixed", "moving", "fixed_label", "moving_label", "fixed_seg")}
    backward = {
        "fixed": "moving.nii.gz",
        "moving": "fixed.nii.gz",
        "fixed_label": "moving_label.nii.gz",
        "moving_label": "fixed_label.nii.gz",
        "fixed_seg": "moving_seg.nii.gz",
    }
    (out / "pairs.json").write_text(
        json.dumps({"train": [forward, backward], "val": [forward], "test": [forward]}, indent=4)
    )
    return str(out / "pairs.json")


if __name__ == "__main__":
    import fire

    run_cli(lambda: fire.Fire({"phantom": write_learn2reg_phantom, "deformed_pair": write_deformed_ct_pair}))
