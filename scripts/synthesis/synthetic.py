"""Synthetic registration pairs of the paper (section 6.1): a rotated rigid bar and two sliding boxes.

Both sets are drawn on a 64³ reference grid and can be sampled on any 3D grid (default 64³): object sizes and
random offsets are given in *reference voxels* (1/64 of the field of view per axis), so a 32³ or 16³ volume shows
the same picture at a lower resolution. Images are the exact convolution of piecewise-constant objects with an
isotropic Gaussian (sigma = 1 reference voxel), sampled at the voxel centres: float32 in [0, 1].

- ``"rigid"``: one bright bar of 8 × 30 × 20 reference voxels (array axes 0, 1, 2), intensity 1, centred at the
  image centre plus a jitter ~N(0, 4) per axis, rotated about its centre by θ ~ N(0, 0.2) rad, either in-plane
  (about array axis 2, i.e. in the plane of axes 0 and 1) or about a random unit axis (``rotation="3d"``).
  Fixed and moving are two independent draws, so the true motion is a rigid rotation + translation.
  Labels: 1 inside the bar. ``reg_mask``: 1 (rigid) inside the fixed bar, 0 elsewhere. No sliding region.
- ``"shearing"``: two adjoining boxes of 20 × 10 × 20 reference voxels, A (intensity 0.8, label 1) below B
  (intensity 1.0, label 2) along array axis 1; they touch at the plane normal to axis 1 through the image centre.
  Each image draws s ~ N(0, 3) and shifts A by +s and B by -s along axis 0, so between fixed and moving the two
  boxes slide in opposite directions along their contact plane. ``reg_mask`` (of the fixed image): 1 (rigid) in
  both boxes, 2 (sliding) where the two box masks dilated by one voxel (6-connectivity) overlap, i.e. the
  2-voxel slab on either side of the contact plane where the boxes face each other; sliding overrides rigid.
  ``normals``: exactly (0, 1, 0) on sliding voxels.

Random offsets (centre jitter, shift s) are normal draws clipped at ±3 std, so objects stay inside the field of view
and the two boxes always touch. Angles are in radians, the rest in voxels of the 64³ reference grid.

A sample is a dict of channel-first arrays (X, Y, Z = the grid shape):

======================  ================  =====================================================
key                     shape             dtype / values
======================  ================  =====================================================
``fixed``, ``moving``   (1, X, Y, Z)      float32 in [0, 1]
``fixed_label``,        (1, X, Y, Z)      uint8; rigid: 0/1, shearing: 0/1 (box A)/2 (box B)
``moving_label``
``reg_mask``            (1, X, Y, Z)      uint8; 0 Jacobian, 1 rigid, 2 sliding (fixed image)
``normals``             (3, X, Y, Z)      float32; unit normals on reg_mask == 2, zero elsewhere;
                                          channel k = component along array axis k
======================  ================  =====================================================

`SyntheticRegistrationDataset` returns the same keys as torch tensors (float32 images/normals, uint8 labels/mask),
generated lazily and deterministically per (seed, split, index); splits use distinct seed streams, so the test
pairs are independent of the training pairs by construction.

Write a few pairs as NIfTI (identity affine, 1 mm voxels) to look at them::

    python -m scripts.synthesis.synthetic write --kind shearing --split test --num_pairs 2 --out_dir /tmp/synth

The CT-like phantom and the deformed real-CT pairs of the CT pipeline's tests live in :mod:`scripts.synthesis.phantom`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from scipy.ndimage import binary_dilation, generate_binary_structure
from scipy.special import erf

from scripts.io.errors import run_cli

REF_SIZE = 64  # the reference grid (paper: 64³); sizes below are in its voxels
SIGMA = 1.0  # Gaussian smoothing of the images, reference voxels
BAR_SIZE = (8.0, 30.0, 20.0)  # rigid bar, extent along array axes 0, 1, 2
BAR_JITTER_STD = 4.0  # centre jitter per axis
ANGLE_STD = 0.2  # rotation angle, radians
BOX_SIZE = (20.0, 10.0, 20.0)  # each shearing box; the two are stacked along axis 1
BOX_INTENSITIES = (0.8, 1.0)  # box A (label 1, lower along axis 1), box B (label 2)
SHIFT_STD = 3.0  # opposite shifts of the boxes along axis 0
CLIP_STDS = 3.0  # offsets are clipped at this many std
MIN_SIZE = 8  # smallest allowed grid size per axis

KINDS = ("rigid", "shearing")
SPLITS = {"train": 0, "val": 1, "test": 2}
ROTATIONS = ("inplane", "3d")


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"shape must be a sequence of 3 ints, got {shape!r}") from None
    if len(shape) != 3:
        raise ValueError(f"shape must be 3D (X, Y, Z), got {shape!r}")
    if min(shape) < MIN_SIZE:
        raise ValueError(f"shape must be at least {MIN_SIZE} voxels on every axis, got {shape!r}")
    return shape


def _ref_axis(n: int) -> np.ndarray:
    """(n,) float32 voxel-centre coordinates in reference voxels, origin at the image centre.

    Voxel i of n covers [i, i + 1) · 64 / n reference voxels."""
    return ((np.arange(n) + 0.5) * (REF_SIZE / n) - REF_SIZE / 2).astype(np.float32)


def _soft_interval(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Indicator of [lo, hi) convolved with a 1D Gaussian of std SIGMA, evaluated at p (same shape as p)."""
    k = np.float32(1.0 / (SIGMA * np.sqrt(2.0)))
    return 0.5 * (erf((hi - p) * k) - erf((lo - p) * k))


def _rotation(rng: np.random.Generator, rotation: str) -> np.ndarray:
    """(3, 3) rotation by θ ~ N(0, ANGLE_STD): about array axis 2 ("inplane") or a random unit axis ("3d")."""
    theta = rng.normal(0.0, ANGLE_STD)
    if rotation == "inplane":
        axis = np.array([0.0, 0.0, 1.0])
    elif rotation == "3d":
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
    else:
        raise ValueError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
    kx = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(theta) * kx + (1.0 - np.cos(theta)) * (kx @ kx)  # Rodrigues


def _clipped_normal(rng: np.random.Generator, std: float, size=None):
    return np.clip(rng.normal(0.0, std, size=size), -CLIP_STDS * std, CLIP_STDS * std)


def _draw_bar(rng: np.random.Generator, shape: tuple[int, int, int], rotation: str) -> tuple[np.ndarray, ...]:
    """One rigid-bar image: returns (image (X, Y, Z) float32 in [0, 1], label (X, Y, Z) uint8 0/1, rotation (3, 3),
    centre (3,) reference voxels); a bar point p (own frame) lies at ``centre + rotation @ p``.

    Evaluated only on the bar's bounding box plus 4 sigma (the image is < 4e-5 outside it, set to 0)."""
    rot = _rotation(rng, rotation)
    centre = _clipped_normal(rng, BAR_JITTER_STD, size=3)
    half = np.abs(rot) @ (np.array(BAR_SIZE) / 2) + 4 * SIGMA  # half-extent of the bounding box per array axis
    n = np.array(shape)
    lo = np.clip(np.floor((centre - half + REF_SIZE / 2) * n / REF_SIZE - 0.5).astype(int), 0, n)
    hi = np.clip(np.ceil((centre + half + REF_SIZE / 2) * n / REF_SIZE + 0.5).astype(int), 0, n)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    d = np.ix_(*(_ref_axis(n)[s] - np.float32(c) for n, s, c in zip(shape, crop, centre)))  # open grid
    sub_image, sub_label = np.float32(1.0), True
    for k, size in enumerate(BAR_SIZE):
        # coordinate along the bar's k-th own axis: p = Rᵀ (q - centre)
        p = d[0] * np.float32(rot[0, k]) + d[1] * np.float32(rot[1, k]) + d[2] * np.float32(rot[2, k])
        sub_image = sub_image * _soft_interval(p, -size / 2, size / 2)
        sub_label = sub_label & (np.abs(p) < size / 2)
    image = np.zeros(shape, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    image[crop] = np.clip(sub_image, 0.0, 1.0)
    label[crop] = sub_label
    return image, label, rot, centre


def _draw_boxes(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, float]:
    """One two-box image: returns (image (X, Y, Z) float32 in [0, 1], label (X, Y, Z) uint8 0/1 (A)/2 (B), shift s
    (box A at +s, box B at -s along axis 0, reference voxels))."""
    s = float(_clipped_normal(rng, SHIFT_STD))
    q0, q1, q2 = np.ix_(*(_ref_axis(n) for n in shape))
    w0, h1, w2 = (size / 2 for size in BOX_SIZE)
    image = np.zeros(shape, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    for value, (intensity, shift, (lo1, hi1)) in enumerate(
        zip(BOX_INTENSITIES, (s, -s), ((-2 * h1, 0.0), (0.0, 2 * h1))), start=1
    ):
        lo0, hi0 = shift - w0, shift + w0
        image += np.float32(intensity) * (
            _soft_interval(q0, lo0, hi0) * _soft_interval(q1, lo1, hi1) * _soft_interval(q2, -w2, w2)
        )
        inside = (q0 >= lo0) & (q0 < hi0) & (q1 >= lo1) & (q1 < hi1) & (q2 >= -w2) & (q2 < w2)
        label[inside] = value
    return np.clip(image, 0.0, 1.0), label, s


def make_rigid_pair(rng: np.random.Generator, shape: Sequence[int] = (64, 64, 64), rotation: str = "inplane") -> dict:
    """A rigid-bar pair: fixed and moving are two independent bar draws from ``rng``.

    Args:
        rng: numpy random generator (the only source of randomness).
        shape: grid (X, Y, Z), each >= 8.
        rotation: "inplane" (about array axis 2) or "3d" (about a random unit axis).

    Returns:
        dict of numpy arrays: fixed, moving (1, X, Y, Z) float32; fixed_label, moving_label (1, X, Y, Z) uint8 0/1;
        reg_mask (1, X, Y, Z) uint8 (1 in the fixed bar, 0 elsewhere); normals (3, X, Y, Z) float32 zeros;
        true_ddf (3, X, Y, Z) float32, the true motion of the bar in voxels (see :func:`true_rigid_ddf`; a rigid
        motion, defined on the whole grid); object_mask (1, X, Y, Z) uint8, 1 in the fixed bar.
    """
    shape = _check_shape(shape)
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
    fixed, fixed_label, fixed_rot, fixed_centre = _draw_bar(rng, shape, rotation)
    moving, moving_label, moving_rot, moving_centre = _draw_bar(rng, shape, rotation)
    return {
        "fixed": fixed[None],
        "moving": moving[None],
        "fixed_label": fixed_label[None],
        "moving_label": moving_label[None],
        "reg_mask": fixed_label[None].copy(),
        "normals": np.zeros((3, *shape), dtype=np.float32),
        "true_ddf": true_rigid_ddf(shape, fixed_rot, fixed_centre, moving_rot, moving_centre),
        "object_mask": fixed_label[None].copy(),
    }


def _ref_to_voxels(shape: tuple[int, int, int]) -> np.ndarray:
    """(3, 1, 1, 1) factors turning reference-voxel displacements into grid voxels (n / 64 per axis)."""
    return (np.asarray(shape, dtype=np.float64) / REF_SIZE).reshape(3, 1, 1, 1)


def true_rigid_ddf(
    shape: Sequence[int], fixed_rot: np.ndarray, fixed_centre: np.ndarray, moving_rot: np.ndarray, moving_centre
) -> np.ndarray:
    """The true field of a rigid-bar pair: (3, X, Y, Z) float32 voxels, channel k along array axis k.

    A fixed-grid point q (reference voxels) has bar coordinates p = R_fᵀ (q - c_f) and lies at c_m + R_m p in the
    moving image, so u(q) = c_m + R_m R_fᵀ (q - c_f) - q (then scaled by n / 64 per axis to grid voxels):
    ``warped(x) = moving(x + u(x))`` reproduces the fixed bar.
    """
    shape = _check_shape(shape)
    q = np.stack(np.meshgrid(*(_ref_axis(n).astype(np.float64) for n in shape), indexing="ij"))
    rel = q - np.asarray(fixed_centre, dtype=np.float64).reshape(3, 1, 1, 1)
    mapped = np.einsum("ij,j...->i...", np.asarray(moving_rot) @ np.asarray(fixed_rot).T, rel)
    u = mapped + np.asarray(moving_centre, dtype=np.float64).reshape(3, 1, 1, 1) - q
    return (u * _ref_to_voxels(shape)).astype(np.float32)


def true_shearing_ddf(shape: Sequence[int], fixed_shift: float, moving_shift: float) -> tuple[np.ndarray, np.ndarray]:
    """The true field of a two-box pair and its jump across the contact plane.

    Box A (below the plane along axis 1) moves by (s_m - s_f) along axis 0, box B by -(s_m - s_f); each box's motion
    is extended to its whole half-space (q1 < 0: A, q1 >= 0: B), so the field is piecewise constant with a
    tangential jump on the plane.

    Returns:
        ((3, X, Y, Z) float32 voxels, (3,) float32 the jump u_B - u_A in voxels, along axis 0).
    """
    shape = _check_shape(shape)
    delta = float(moving_shift) - float(fixed_shift)
    side = np.where(_ref_axis(shape[1]) < 0, 1.0, -1.0).reshape(1, -1, 1)
    u = np.zeros((3, *shape), dtype=np.float64)
    u[0] = delta * np.broadcast_to(side, shape)
    jump = np.array([-2.0 * delta * shape[0] / REF_SIZE, 0.0, 0.0], dtype=np.float32)
    return (u * _ref_to_voxels(shape)).astype(np.float32), jump


def make_shearing_pair(rng: np.random.Generator, shape: Sequence[int] = (64, 64, 64)) -> dict:
    """A two-box sliding pair: each image shifts box A by +s and box B by -s along axis 0, s ~ N(0, 3) per image.

    Args:
        rng: numpy random generator (the only source of randomness).
        shape: grid (X, Y, Z), each >= 8.

    Returns:
        dict of numpy arrays: fixed, moving (1, X, Y, Z) float32; fixed_label, moving_label (1, X, Y, Z) uint8
        0/1 (box A)/2 (box B); reg_mask (1, X, Y, Z) uint8 (fixed image: 1 in the boxes, 2 on the 2-voxel contact
        slab, 0 elsewhere); normals (3, X, Y, Z) float32, (0, 1, 0) on reg_mask == 2, zero elsewhere;
        true_ddf (3, X, Y, Z) float32 voxels and true_jump (3,) float32 voxels (:func:`true_shearing_ddf`);
        object_mask (1, X, Y, Z) uint8, 1 in the fixed boxes; interface_mask (1, X, Y, Z) uint8, the contact slab
        (reg_mask == 2), where the slip ratio is measured along ``normals``.
    """
    shape = _check_shape(shape)
    fixed, fixed_label, fixed_shift = _draw_boxes(rng, shape)
    moving, moving_label, moving_shift = _draw_boxes(rng, shape)
    true_ddf, true_jump = true_shearing_ddf(shape, fixed_shift, moving_shift)
    cross = generate_binary_structure(3, 1)
    sliding = binary_dilation(fixed_label == 1, cross) & binary_dilation(fixed_label == 2, cross)
    reg_mask = (fixed_label > 0).astype(np.uint8)
    reg_mask[sliding] = 2
    normals = np.zeros((3, *shape), dtype=np.float32)
    normals[1][sliding] = 1.0
    return {
        "fixed": fixed[None],
        "moving": moving[None],
        "fixed_label": fixed_label[None],
        "moving_label": moving_label[None],
        "reg_mask": reg_mask[None],
        "normals": normals,
        "true_ddf": true_ddf,
        "true_jump": true_jump,
        "object_mask": (fixed_label > 0).astype(np.uint8)[None],
        "interface_mask": sliding.astype(np.uint8)[None],
    }


class SyntheticRegistrationDataset(torch.utils.data.Dataset):
    """Lazily generated synthetic pairs; item i of a split is the same whenever (and wherever) it is requested.

    Item i draws from ``np.random.default_rng(np.random.SeedSequence([seed, split_id, i]))`` with split_id 0/1/2
    for train/val/test, so the splits are independent streams (no test pair repeats a training pair).

    Args:
        kind: "rigid" or "shearing".
        split: "train", "val" or "test".
        num_pairs: number of pairs (>= 1); the paper uses 200 / 50 / 50.
        seed: non-negative base seed.
        shape: grid (X, Y, Z), each >= 8.
        rotation: rigid set only, "inplane" or "3d".
        transform: optional callable applied to the item dict (after conversion to tensors), e.g. a MONAI Compose.

    Items (before ``transform``): dict of torch tensors, fixed / moving (1, X, Y, Z) float32, fixed_label /
    moving_label / reg_mask (1, X, Y, Z) uint8, normals (3, X, Y, Z) float32; see the module docstring.
    """

    def __init__(
        self,
        kind: str,
        split: str,
        num_pairs: int,
        seed: int = 0,
        shape: Sequence[int] = (64, 64, 64),
        rotation: str = "inplane",
        transform: Optional[Callable] = None,
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        if isinstance(num_pairs, bool) or not isinstance(num_pairs, (int, np.integer)) or num_pairs < 1:
            raise ValueError(f"num_pairs must be an int >= 1, got {num_pairs!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
        if transform is not None and not callable(transform):
            raise ValueError(f"transform must be callable or None, got {transform!r}")
        self.kind, self.split, self.num_pairs, self.seed = kind, split, int(num_pairs), int(seed)
        self.shape, self.rotation, self.transform = _check_shape(shape), rotation, transform

    def __len__(self) -> int:
        return self.num_pairs

    def pair(self, index: int) -> dict:
        """The numpy arrays of item ``index`` (no tensor conversion, no transform)."""
        if not -self.num_pairs <= index < self.num_pairs:
            raise IndexError(f"index {index} out of range for {self.num_pairs} pairs")
        index = int(index) % self.num_pairs
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, SPLITS[self.split], index]))
        if self.kind == "rigid":
            return make_rigid_pair(rng, self.shape, self.rotation)
        return make_shearing_pair(rng, self.shape)

    def __getitem__(self, index: int) -> dict:
        item = {key: torch.from_numpy(value) for key, value in self.pair(index).items()}
        return self.transform(item) if self.transform is not None else item


def write(
    kind: str = "rigid",
    split: str = "test",
    num_pairs: int = 2,
    out_dir: str = "synthetic",
    seed: int = 0,
    shape: Sequence[int] = (64, 64, 64),
    rotation: str = "inplane",
) -> list[str]:
    """Write pairs as NIfTI files (identity affine, 1 mm voxels) to look at in a viewer; returns the written paths.

    Per pair i: ``{kind}_{split}_pair_{i:03d}_{key}.nii.gz`` for each sample key, (X, Y, Z) volumes, except
    ``normals`` and ``true_ddf``, (X, Y, Z, 3) vector images (``true_jump``, a 3-vector, is not written).
    """
    import nibabel as nib

    data = SyntheticRegistrationDataset(kind, split, num_pairs, seed=seed, shape=shape, rotation=rotation)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(data)):
        for key, value in data.pair(i).items():
            if value.ndim < 4:
                continue
            volume = np.moveaxis(value, 0, -1) if key in ("normals", "true_ddf") else value[0]
            path = out / f"{kind}_{split}_pair_{i:03d}_{key}.nii.gz"
            nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
            paths.append(str(path))
    return paths


if __name__ == "__main__":
    import fire

    run_cli(lambda: fire.Fire({"write": write}))
