"""Resampling between grids through their affines, and the displacement field back on the fixed image's grid.

Conventions: a grid is an array shape with a 4x4 affine from voxel index to world mm (MONAI's/nibabel's RAS
affines; any one world frame works as long as all affines share it). Volumes are channel-first (C, X, Y, Z).
A displacement in voxels of a grid has channel k along array axis k and maps a voxel i to the point
``affine @ (i + d(i))`` (the moving point of fixed point i, as MONAI's ``Warp``).

- :func:`index_map`, :func:`sample_volume`: sample a volume at index coordinates (trilinear or nearest; points
  outside the volume's extent, index < -0.5 or > N - 0.5 as ITK, get a fill value);
- :func:`resample_to_grid`: a preprocessed image onto another image's grid (the moving image onto the fixed
  image's network grid when the two lie on different grids; training and inference share it);
- :func:`field_to_fixed_grid`: the network's displacement (network voxels) -> voxels of the fixed image's native grid;
- :func:`physical_displacement`, :func:`warp_to_fixed`;
- :func:`coarse_grid`, :func:`area_resize`, :func:`labels_on_coarse_grid`: a coarser grid over the same box, a
  volume averaged onto it and a label map sampled on it (the refinement's grid, the rigid bones' grid).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "index_map",
    "sample_volume",
    "same_grid",
    "resample_to_grid",
    "field_to_fixed_grid",
    "physical_displacement",
    "warp_to_fixed",
    "coarse_grid",
    "area_resize",
    "labels_on_coarse_grid",
]


def _affine(a) -> np.ndarray:
    return np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=np.float64)


def index_map(transform: np.ndarray, shape: Sequence[int], ddf: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Index coordinates ``transform[:3] @ (i + ddf(i), 1)`` of every voxel i of a grid of ``shape``: 3 tensors
    broadcastable to ``shape`` (float32, on ``ddf``'s device when given)."""
    device = ddf.device if ddf is not None else None
    base = []
    for axis, n in enumerate(shape):
        view = [1, 1, 1]
        view[axis] = n
        ar = torch.arange(n, dtype=torch.float32, device=device).reshape(view)
        base.append(ar if ddf is None else ddf[axis] + ar)
    coords = []
    for k in range(3):
        acc = None
        for axis in range(3):
            coef = float(transform[k, axis])
            if abs(coef) < 1e-12:
                continue
            term = base[axis] if coef == 1.0 else base[axis] * coef
            acc = term if acc is None else acc + term
        offset = float(transform[k, 3])
        acc = acc + offset if offset != 0.0 else acc
        coords.append(acc)
    return coords


def sample_volume(
    volume: torch.Tensor,
    coords: Sequence[torch.Tensor],
    out_shape: Sequence[int],
    mode: str = "bilinear",
    fill: float | None = 0.0,
    slab: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a (C, X, Y, Z) volume at voxel-index coordinates (3 tensors broadcastable to ``out_shape``).

    ``mode``: "bilinear" (trilinear) or "nearest". Points outside the volume's extent (index < -0.5 or
    > N - 0.5 on an axis, as ITK) get ``fill`` (None: the border value); points between the last voxel centre and
    the extent take the border value. ``slab``: output slices along axis 0 sampled at a time (bounds the
    temporaries; None: all at once). Returns the (C, *out_shape) samples and the boolean inside mask (*out_shape).
    """
    out_shape = tuple(int(s) for s in out_shape)
    step = out_shape[0] if not slab else int(slab)
    out = torch.empty((volume.shape[0], *out_shape), dtype=torch.float32, device=volume.device)
    inside = torch.empty(out_shape, dtype=torch.bool, device=volume.device)
    source = volume[None].float()
    for start in range(0, out_shape[0], step):
        stop = min(start + step, out_shape[0])
        part = [c if c.shape[0] == 1 else c[start:stop] for c in coords]
        part_shape = (stop - start, *out_shape[1:])
        grid = torch.empty((1, *part_shape, 3), dtype=torch.float32, device=volume.device)
        ins = torch.ones(part_shape, dtype=torch.bool, device=volume.device)
        for k in range(3):
            n = volume.shape[1 + k]
            # grid_sample's last dim is (z, y, x) = axes 2, 1, 0; a size-1 axis maps every index to its one voxel
            grid[0, ..., 2 - k] = part[k] * (2.0 / (n - 1)) - 1.0 if n > 1 else 0.0 * part[k]
            ins &= (part[k] >= -0.5) & (part[k] <= n - 0.5)
        res = F.grid_sample(source, grid, mode=mode, padding_mode="border", align_corners=True)[0]
        del grid
        if fill is not None:
            res = torch.where(ins, res, torch.as_tensor(fill, dtype=res.dtype, device=res.device))
        out[:, start:stop] = res
        inside[start:stop] = ins
    return out, inside


def same_grid(shape_a, affine_a, shape_b, affine_b, atol: float = 1e-4) -> bool:
    """Same array shape and the same affine (to ``atol`` mm)."""
    return tuple(shape_a) == tuple(shape_b) and np.allclose(_affine(affine_a), _affine(affine_b), atol=atol)


def resample_to_grid(
    image: torch.Tensor,
    affine,
    grid_affine,
    grid_shape: Sequence[int],
    fill: float | None = None,
    mode: str = "bilinear",
) -> tuple[torch.Tensor, float]:
    """A (C, *S) image with ``affine`` resampled (``mode``: "bilinear" trilinear, or "nearest" for label maps) onto
    the grid (``grid_affine``, ``grid_shape``).

    Points outside the image's field of view get ``fill`` (None: the image's minimum). Returns the (C, *grid)
    float32 image and the fraction of the grid that the image covers. The same grid: returned unchanged, 1.0.
    """
    if same_grid(image.shape[1:], affine, grid_shape, grid_affine):
        return image, 1.0
    data = image.as_tensor() if hasattr(image, "as_tensor") else image
    fill = float(data.min()) if fill is None else float(fill)
    to_image = np.linalg.inv(_affine(affine)) @ _affine(grid_affine)
    out, inside = sample_volume(data, index_map(to_image, grid_shape), grid_shape, mode=mode, fill=fill)
    return out, float(inside.float().mean())


def _mix(matrix: np.ndarray, field: torch.Tensor) -> torch.Tensor:
    """``matrix @ field`` per voxel: (3, 3) x (3, *S) -> (3, *S), for an invertible matrix (no zero row); zero
    coefficients are skipped (axis-aligned grids cost one multiply per component)."""
    return torch.stack(
        [sum(field[k] * float(matrix[c, k]) for k in range(3) if abs(matrix[c, k]) > 1e-12) for c in range(3)]
    )


def field_to_fixed_grid(
    ddf_net: torch.Tensor, net_affine, fixed_affine, fixed_shape: Sequence[int], slab: int = 64
) -> torch.Tensor:
    """The network's displacement on its grid -> the same physical field in voxels of the fixed image's grid.

    Args:
        ddf_net: (1, 3, *net) or (3, *net) displacement in network voxels (channel k along network axis k).
        net_affine: (4, 4) affine of the network grid (the fixed image's affine after the preprocessing's spatial
            transforms, e.g. ``Orientationd`` and ``Resized``: MONAI tracks it in the MetaTensor).
        fixed_affine, fixed_shape: the fixed image's native grid.

    Returns:
        (3, *fixed_shape) float32 displacement in fixed-grid voxels. The vectors are re-expressed exactly
        (``A_f^-1 A_net d``, a per-voxel 3x3 map that commutes with interpolation), then interpolated
        trilinearly at every fixed voxel's position on the network grid (border values beyond the last network
        voxel centre). When the network grid is an edge-aligned rescaling of the fixed grid (no reorientation),
        this is ``F.interpolate(align_corners=False)`` exactly, which is used (fast path).
    """
    ddf = ddf_net[0] if ddf_net.ndim == 5 else ddf_net
    ddf = (ddf.as_tensor() if hasattr(ddf, "as_tensor") else ddf).float()
    a_net, a_fix = _affine(net_affine), _affine(fixed_affine)
    ddf = _mix(np.linalg.inv(a_fix[:3, :3]) @ a_net[:3, :3], ddf)
    fixed_shape = tuple(int(s) for s in fixed_shape)
    to_net = np.linalg.inv(a_net) @ a_fix
    net_shape = ddf.shape[1:]
    scale = np.array(net_shape, dtype=np.float64) / np.array(fixed_shape, dtype=np.float64)
    edge_aligned = np.allclose(to_net[:3, :3], np.diag(scale), atol=1e-6) and np.allclose(
        to_net[:3, 3], (scale - 1.0) / 2.0, atol=1e-5
    )
    if edge_aligned:
        if tuple(net_shape) == fixed_shape:
            return ddf.contiguous()
        return F.interpolate(ddf[None], size=fixed_shape, mode="trilinear", align_corners=False)[0]
    return sample_volume(ddf, index_map(to_net, fixed_shape), fixed_shape, fill=None, slab=slab)[0]


def physical_displacement(ddf_vox: torch.Tensor, affine) -> torch.Tensor:
    """(3, *S) displacement in voxels of a grid -> (3, *S) millimetres in the affine's world frame."""
    return _mix(_affine(affine)[:3, :3], ddf_vox)


def warp_to_fixed(
    volume: np.ndarray | torch.Tensor,
    moving_affine,
    fixed_affine,
    fixed_shape: Sequence[int],
    ddf_vox: torch.Tensor | None,
    mode: str = "bilinear",
    fill: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A (X, Y, Z) volume on the moving grid sampled at ``A_m^-1 A_f (i + ddf_vox(i))`` for every fixed voxel i
    (``ddf_vox`` None: no displacement): (X_f, Y_f, Z_f) samples and the inside mask."""
    device = ddf_vox.device if ddf_vox is not None else torch.device("cpu")
    if isinstance(volume, torch.Tensor):
        data = (volume.as_tensor() if hasattr(volume, "as_tensor") else volume).float()[None].to(device)
    else:
        data = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None].to(device)
    to_moving = np.linalg.inv(_affine(moving_affine)) @ _affine(fixed_affine)
    coords = index_map(to_moving, fixed_shape, ddf_vox)
    out, inside = sample_volume(data, coords, fixed_shape, mode=mode, fill=fill)
    return out[0], inside


def coarse_grid(shape: Sequence[int], affine: np.ndarray, grid_mm: float | None) -> tuple[tuple[int, ...], np.ndarray]:
    """The grid covering the same box as (``shape``, ``affine``) with about ``grid_mm`` per voxel (voxel edges
    aligned, as MONAI's ``Resize``; an axis already coarser keeps its voxels): (shape, affine)."""
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if grid_mm is None:
        return tuple(int(n) for n in shape), affine
    out = tuple(max(2, min(int(n), int(round(n * s / float(grid_mm))))) for n, s in zip(shape, spacing))
    scale = np.array(shape, dtype=np.float64) / np.array(out, dtype=np.float64)
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] @ np.diag(scale)
    new[:3, 3] = affine[:3, :3] @ ((scale - 1.0) / 2.0) + affine[:3, 3]
    return out, new


def area_resize(volume: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """(X, Y, Z) -> ``shape`` over the same box: area averaging (every output voxel averages the input voxels it
    covers)."""
    if tuple(volume.shape) == tuple(shape):
        return volume.float()
    return F.interpolate(volume[None, None].float(), size=tuple(shape), mode="area")[0, 0]


def labels_on_coarse_grid(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A label map (X, Y, Z) sampled at the voxel centres of the edge-aligned coarser grid of ``shape``
    (:func:`coarse_grid`'s): nearest, no label mixed."""
    index = [np.minimum(np.floor((np.arange(m) + 0.5) * (n / m)).astype(np.int64), n - 1) for n, m in
             zip(labels.shape, shape)]  # fmt: skip
    return labels[np.ix_(*index)]
