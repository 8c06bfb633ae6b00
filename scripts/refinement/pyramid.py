"""The refinement's pyramid: grids of about a given voxel size, and images, fields and regions moved between them.

Conventions (those of :mod:`scripts.refinement.optimiser`): tensors (B, C, X, Y, Z); a grid of another shape spans
the same extent (``align_corners=True``: voxel centres 0..n-1 span the same extent on every grid), so a displacement
in voxels is rescaled by (m - 1) / (n - 1) along each axis when it moves from n to m voxels.

- :func:`working_shape`, :func:`grid_spacing`: the working grid of about ``grid_mm`` per voxel and its voxel size;
- :func:`resize_image`: anti-aliased (Gaussian blur of half the shrink factor) then trilinear;
- :func:`resize_field`: trilinear, in voxels of the new grid;
- :func:`resize_field_sided`: the same, each side of the sliding wall interpolated from its own side only;
- :func:`resize_regions`: the regularisation mask and its sliding normals, keeping a thin band alive;
- :func:`resize_side`: the wall's side (1 inside, 0 outside, -1 unknown), nearest sample;
- :func:`resize_labels`: a label map (or any map of classes), nearest sample;
- :func:`working_grid`: a pass's images, field, label map and CT on the working grid (:class:`WorkingGrid`), for the
  one-level passes of :mod:`scripts.refinement.wall_search` and :mod:`scripts.refinement.second_pass`;
- :func:`region_tensors`: ``cavity_regions``' arrays as the refinement takes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from scripts.regions.labels import RIGID, SLIDING

__all__ = [
    "WORKING_GRID_MM",
    "WorkingGrid",
    "working_shape",
    "grid_spacing",
    "resize_image",
    "resize_field",
    "resize_field_sided",
    "resize_regions",
    "resize_side",
    "resize_labels",
    "region_tensors",
    "working_grid",
]

# the working grid's voxel size, mm: refine_pair's ``grid_mm`` (scripts/refinement/optimiser.py says why 2 mm)
WORKING_GRID_MM = 2.0


def working_shape(shape: Sequence[int], spacing: Sequence[float], grid_mm: float | None) -> tuple[int, ...]:
    """Shape of the working grid: about ``grid_mm`` per voxel, never finer than the input (``None``: the input)."""
    if grid_mm is None:
        return tuple(int(n) for n in shape)
    return tuple(max(2, min(int(n), int(round((n - 1) * s / grid_mm)) + 1)) for n, s in zip(shape, spacing))


def grid_spacing(shape_in: Sequence[int], spacing: Sequence[float], shape_out: Sequence[int]) -> list[float]:
    """Voxel size (mm) of a grid of ``shape_out`` spanning the same extent as ``shape_in`` (align_corners)."""
    return [s * (n - 1) / max(m - 1, 1) for n, s, m in zip(shape_in, spacing, shape_out)]


def _gaussian_blur(image: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, X, Y, Z), sigma in voxels per axis (0: that axis untouched), the border
    replicated. Each axis is a weighted sum of shifted views of the padded image (one pass per tap): on the CPU a
    1-channel ``conv3d`` with a (k, 1, 1) kernel, the same sums, took 13 times as long (0.71 against 0.054 s for a
    192 x 160 x 256 image on 2 threads; the overlay blurs a dozen)."""
    out = image
    for axis, sigma in enumerate(sigmas):
        if sigma <= 0.2:
            continue
        radius = max(1, int(math.ceil(2.5 * sigma)))
        x = torch.arange(-radius, radius + 1, dtype=image.dtype)
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        kernel = (kernel / kernel.sum()).tolist()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        padded = F.pad(out, pad, mode="replicate")
        n = out.shape[2 + axis]
        out = padded.narrow(2 + axis, 0, n) * kernel[0]
        for tap in range(1, len(kernel)):
            out.add_(padded.narrow(2 + axis, tap, n), alpha=kernel[tap])
    return out


def resize_image(image: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Image (B, C, *S) on a grid of ``shape`` (same extent): anti-aliasing blur when shrinking, then trilinear."""
    shape = tuple(int(n) for n in shape)
    if tuple(image.shape[2:]) == shape:
        return image
    factors = [(n - 1) / max(m - 1, 1) for n, m in zip(image.shape[2:], shape)]
    image = _gaussian_blur(image, [0.5 * f if f > 1 else 0.0 for f in factors])
    return F.interpolate(image, size=shape, mode="trilinear", align_corners=True)


def resize_field(ddf: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Displacement (B, 3, *S) in voxels of its grid -> (B, 3, *shape) in voxels of the new grid (same extent)."""
    shape = tuple(int(n) for n in shape)
    if tuple(ddf.shape[2:]) == shape:
        return ddf
    scale = torch.tensor(
        [(m - 1) / max(n - 1, 1) for n, m in zip(ddf.shape[2:], shape)], dtype=ddf.dtype, device=ddf.device
    )
    out = F.interpolate(ddf, size=shape, mode="trilinear", align_corners=True)
    return out * scale.reshape(1, 3, 1, 1, 1)


def resize_field_sided(
    ddf: torch.Tensor, shape: Sequence[int], side_from: torch.Tensor | None, side_to: torch.Tensor | None
) -> torch.Tensor:
    """:func:`resize_field`, with the sliding wall kept sharp: a voxel of the new grid on a known side of the wall
    (``side_to`` 1 inside, 0 outside, (1, 1, *shape)) takes the trilinear weights of the old voxels on its own side
    only (``side_from``, (1, 1, *S)), renormalised; voxels of unknown side (-1), and those with no old voxel of their
    side among their 8 neighbours, take plain trilinear interpolation.

    WHY: the field of a coarse level slides at the wall, but plain trilinear upsampling blends the cavity's motion
    with the wall's at every fine voxel within a coarse voxel of the wall, so the next level starts with the contents
    next to the wall lagging, in tissue too homogeneous for the similarity to pull it back.
    """
    plain = resize_field(ddf, shape)
    if side_from is None or side_to is None:
        return plain
    shape = tuple(int(n) for n in shape)
    out = plain
    for value in (0.0, 1.0):
        weight = (side_from == value).to(ddf.dtype)
        cover = F.interpolate(weight, size=shape, mode="trilinear", align_corners=True)
        sided = resize_field(ddf * weight, shape) / cover.clamp_min(1e-6)
        out = torch.where((side_to == value) & (cover > 1e-3), sided, out)
    return out


def _nearest_sample(t: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """(B, C, *S) -> (B, C, *shape): the value of the voxel nearest each new voxel centre (same extent)."""
    idx = [
        torch.round(torch.arange(m, device=t.device, dtype=torch.float64) * (n - 1) / max(m - 1, 1)).long()
        for n, m in zip(t.shape[2:], shape)
    ]
    return t[:, :, idx[0]][:, :, :, idx[1]][:, :, :, :, idx[2]]


def resize_regions(
    reg_mask: torch.Tensor, normals: torch.Tensor | None, shape: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Regularisation mask (1, 1, *S) and normals (1, 3, *S) on a coarser grid of ``shape``.

    Rigid: nearest sample. Sliding: the band is first dilated by half the shrink factor, so that a band thinner
    than the coarse voxels survives; its normals are the renormalised mean of the normals in that window (the
    normals of :func:`scripts.regions.masks.compute_normals` have a consistent sign). Sliding overrides rigid.
    """
    shape = tuple(int(n) for n in shape)
    if tuple(reg_mask.shape[2:]) == shape:
        return reg_mask, normals
    factors = [(n - 1) / max(m - 1, 1) for n, m in zip(reg_mask.shape[2:], shape)]
    kernel = tuple(2 * int(math.ceil(f / 2)) + 1 if f > 1 else 1 for f in factors)
    padding = tuple(k // 2 for k in kernel)
    labels = reg_mask.round()
    sliding = (labels == SLIDING).float()
    dilated = F.max_pool3d(sliding, kernel, stride=1, padding=padding)
    out = torch.where(_nearest_sample(labels, shape) == RIGID, float(RIGID), 0.0)
    out = torch.where(_nearest_sample(dilated, shape) > 0, float(SLIDING), out).to(reg_mask.dtype)
    if normals is None:
        return out, None
    summed = F.avg_pool3d(normals.float() * sliding, kernel, stride=1, padding=padding, count_include_pad=False)
    n = _nearest_sample(summed, shape)
    norm = n.norm(dim=1, keepdim=True)
    n = torch.where((out == SLIDING) & (norm > 1e-6), n / norm.clamp_min(1e-6), torch.zeros_like(n))
    return out, n.to(normals.dtype)


def resize_side(side: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The wall's side (1, 1, *S) (1 inside the cavity, 0 outside, -1 unknown) on a grid of ``shape``: nearest sample,
    so that a coarse voxel keeps the side of the fine voxel at its centre (the coarse band, dilated by
    :func:`resize_regions`, lies on both sides of the wall, and each of its voxels gets one)."""
    return resize_labels(side, shape)


def resize_labels(labels: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A map of classes (B, C, *S) (labels, a mask) on a grid of ``shape`` (same extent): nearest sample."""
    shape = tuple(int(n) for n in shape)
    if tuple(labels.shape[2:]) == shape:
        return labels
    return _nearest_sample(labels, shape)


class WorkingGrid(NamedTuple):
    """A pass's inputs on the working grid: ``images`` (fixed, moving) (1, 1, *S) or None, ``spacing`` (3,) mm,
    ``ddf`` (1, 3, *S) voxels, ``regions`` (label map, CT or None, ``cavity_regions`` keywords) and the
    ``refine_options`` of each one-level pass there."""

    images: tuple[torch.Tensor, torch.Tensor] | None
    spacing: list[float]
    ddf: torch.Tensor
    regions: tuple[np.ndarray, np.ndarray | None, dict[str, Any]]
    refine_options: dict[str, Any]


def working_grid(
    fixed, moving, spacing, ddf, seg, image, region_options, refine_options, lr, band_fold_weight, with_images=True
):
    """The images, field, label map and CT on the refinement's working grid (module docstring), and the keywords of
    the one-level passes there: ``refine_options`` without the regions, start and schedule, with the pass's ``lr``
    (None: the finest level's) and ``band_fold_weight`` (None: the first pass's); the images only ``with_images``
    (a pass without iterations needs none)."""
    region_options = {
        k: v for k, v in (region_options or {}).items() if k not in ("snap_mm", "shear_field", "return_side")
    }
    drop = ("reg_mask", "normals", "wall_side", "init_ddf", "levels", "iterations")
    refine_options = {k: v for k, v in (refine_options or {}).items() if k not in drop}
    if band_fold_weight is not None:
        refine_options["band_fold_weight"] = float(band_fold_weight)
    if lr is not None:
        refine_options["lr"] = float(lr)
    elif isinstance(refine_options.get("lr"), (list, tuple)):
        refine_options["lr"] = float(refine_options["lr"][-1])
    in_shape = tuple(fixed.shape[2:])
    work = working_shape(in_shape, spacing, refine_options.pop("grid_mm", WORKING_GRID_MM))
    sp = grid_spacing(in_shape, spacing, work) if work != in_shape else [float(s) for s in spacing]
    seg_w = resize_labels(torch.from_numpy(np.asarray(seg).astype(np.int32))[None, None], work)[0, 0].numpy()
    image_w = None if image is None else resize_image(_volume(image), work)[0, 0].numpy()
    images = (resize_image(fixed.float(), work), resize_image(moving.float(), work)) if with_images else None
    return WorkingGrid(
        images, sp, resize_field(ddf.detach().float(), work), (seg_w, image_w, region_options), refine_options
    )


def region_tensors(mask: np.ndarray, normals: np.ndarray, side: np.ndarray) -> tuple[torch.Tensor, ...]:
    """``cavity_regions``' (mask, normals, side) arrays as :func:`refine_pair` takes them: (1, 1, *S) float mask,
    (1, 3, *S) normals, (1, 1, *S) float side."""
    return (
        torch.from_numpy(mask.astype(np.float32))[None, None],
        torch.from_numpy(normals)[None],
        torch.from_numpy(side.astype(np.float32))[None, None],
    )


def _volume(image: Any) -> torch.Tensor:
    """(X, Y, Z) array or tensor -> (1, 1, X, Y, Z) float32 tensor."""
    volume = image.detach().float() if isinstance(image, torch.Tensor) else torch.from_numpy(np.asarray(image))
    return volume.float().reshape((1, 1) + tuple(volume.shape[-3:]))
