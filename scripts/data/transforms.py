"""Every MapTransform of the bundle: the steps of the real-CT preprocessing (``configs/ct.json``) that MONAI does
not provide.

- :class:`RegularisationRegionsd`: the regularisation mask and the sliding normals from a segmentation
  (:mod:`scripts.regions.masks`, :mod:`scripts.regions.normals`);
- :class:`ResampleRegionsd`: the regularisation mask (nearest, pixel centres) and the sliding normals (resampled,
  renormalised) onto the network grid, with the same geometry (and affine) as MONAI's ``Resized``;
- :class:`LoadImageSeriesd`: MONAI's ``LoadImaged`` (the first step of every ``preprocessing``) reading a DICOM series
  folder as the header checks see it (:func:`scripts.io.image_formats.series_files`: the largest series of the folder,
  checked for missing slices; MONAI's own ``ITKReader`` reads the first series GDCM lists and stretches a series with
  a missing slice over a uniform grid), every other input as ``LoadImaged`` does;
- :class:`AntiAliasedResized`: MONAI's ``Resized`` with ``anti_aliasing``, the same numbers, its Gaussian filter run
  line by line in bounded chunks (MONAI's ``conv3d`` buffer holds one copy of the volume per kernel tap);
- :class:`ReorientVectorsd`: vector components of a field loaded from a file (e.g. precomputed normals) re-expressed
  along the current array axes after ``Orientationd`` permuted/flipped those axes (``Orientationd`` moves the voxels
  but leaves each voxel's vector components untouched).

Conventions as in :mod:`scripts.regions.masks`: normals are unit vectors in the physical (mm) frame of the array axes,
component k along array axis k, zero outside the sliding region (``reg_mask == 2``).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import ITKReader, MetaTensor
from monai.networks.layers import gaussian_1d
from monai.transforms import LoadImaged, MapTransform, Resize
from monai.utils import convert_to_dst_type, ensure_tuple, optional_import

from scripts.io.image_formats import series_files
from scripts.regions.masks import (
    RegionSpec,
    downsample_regions,
    load_region_spec,
    regions_from_labels,
    spacing_from_affine,
)

__all__ = [
    "RegularisationRegionsd",
    "ResampleRegionsd",
    "ReorientVectorsd",
    "DicomSeriesReader",
    "LoadImageSeriesd",
    "direction_cosines",
    "resized_affine",
]


def direction_cosines(affine: Any) -> np.ndarray:
    """(3, 3) unit directions of the array axes in world space: the affine's 3x3 columns normalised."""
    a = np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=np.float64)[:3, :3]
    return a / np.linalg.norm(a, axis=0, keepdims=True)


def resized_affine(affine: Any, in_size: Sequence[int], out_size: Sequence[int]) -> torch.Tensor:
    """Affine of a grid resampled from ``in_size`` to ``out_size`` voxels over the same field of view, pixel-centre
    (``align_corners=False``) geometry as MONAI's ``Resize``: output voxel i sits at input coordinate
    ``(i + 0.5) * in / out - 0.5``."""
    f = torch.tensor([float(i) / float(o) for i, o in zip(in_size, out_size)], dtype=torch.float64)
    scale = torch.eye(4, dtype=torch.float64)
    scale[:3, :3] = torch.diag(f)
    scale[:3, 3] = (f - 1.0) / 2.0
    return torch.as_tensor(affine, dtype=torch.float64) @ scale


def _as_metatensor(array: np.ndarray, like: Any, affine: Any | None) -> Any:
    """``array`` as a MetaTensor carrying ``like``'s metadata with ``affine`` (plain numpy when ``like`` is not a
    MetaTensor)."""
    if not isinstance(like, MetaTensor):
        return torch.from_numpy(np.ascontiguousarray(array)) if isinstance(like, torch.Tensor) else array
    out = MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), meta=dict(like.meta))
    if affine is not None:
        out.affine = torch.as_tensor(affine, dtype=torch.float64)
    return out


class ResampleRegionsd(MapTransform):
    """Resample the regularisation mask and normals to ``spatial_size``
    (:func:`scripts.regions.masks.downsample_regions`).

    The mask is sampled at pixel centres (nearest neighbour, the same samples as ``Resized(mode="nearest-exact")``),
    the normals by the same nearest samples (``normals_mode="nearest"``) or trilinearly (``"linear"``) and then
    renormalised; normals are unit vectors on the resampled sliding voxels and 0 elsewhere. The normals' mm frame is
    unchanged by resampling (a plane keeps its physical normal), so no rescaling of the components is needed.
    MetaTensors get the affine MONAI's ``Resize`` would give (``align_corners=False`` geometry).

    Args:
        mask_key: regularisation mask (1, X, Y, Z), values 0/1/2.
        normals_key: normals (3, X, Y, Z).
        spatial_size: output grid (X', Y', Z'); -1 keeps an axis.
        normals_mode: ``"nearest"`` or ``"linear"``.
        allow_missing_keys: do nothing when the mask is absent (both keys must be present or absent together).
    """

    def __init__(
        self,
        mask_key: str = "reg_mask",
        normals_key: str = "normals",
        spatial_size: Sequence[int] = (96, 80, 128),
        normals_mode: str = "nearest",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__([mask_key, normals_key], allow_missing_keys)
        self.mask_key, self.normals_key = mask_key, normals_key
        self.spatial_size = tuple(int(s) for s in spatial_size)
        if len(self.spatial_size) != 3:
            raise ValueError(f"spatial_size must have 3 entries, got {spatial_size}")
        if normals_mode not in ("nearest", "linear"):
            raise ValueError(f"normals_mode must be 'nearest' or 'linear', got {normals_mode!r}")
        self.normals_mode = normals_mode

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = [key in d for key in (self.mask_key, self.normals_key)]
        if not all(present):
            if any(present) or not self.allow_missing_keys:
                missing = [k for k, p in zip((self.mask_key, self.normals_key), present) if not p]
                raise KeyError(
                    f"ResampleRegionsd needs both {self.mask_key!r} and {self.normals_key!r}; missing {missing}"
                )
            return d
        mask, normals = d[self.mask_key], d[self.normals_key]
        in_size = tuple(int(s) for s in mask.shape[-3:])
        out_size = tuple(n if s == -1 else s for s, n in zip(self.spatial_size, in_size))
        small_mask, small_normals = downsample_regions(
            mask, normals, target_shape=out_size, normals_mode=self.normals_mode
        )
        affine = None
        if isinstance(mask, MetaTensor):
            affine = resized_affine(mask.affine, in_size, out_size)
        d[self.mask_key] = _as_metatensor(small_mask, mask, affine)
        d[self.normals_key] = _as_metatensor(small_normals, normals, affine)
        return d


class ReorientVectorsd(MapTransform):
    """Re-express vector fields loaded from a file along the current array axes, after ``Orientationd``.

    A vector field stored in a NIfTI file (e.g. ``<case>_normals.nii.gz`` of ``python -m scripts.regions.masks
    precompute``) has its components along the FILE's array axes. ``Orientationd`` permutes and flips the voxel axes
    but not the components. With ``D0`` the unit axis directions of the file (``meta["original_affine"]``, recorded by
    ``LoadImaged``) and ``D1`` those of the current affine, the components become ``D1^T D0 v`` (exact for the signed
    permutations of ``Orientationd``; for any orthogonal axes in general). Zero vectors stay zero, unit ones unit.

    Apply it only to vectors computed in the file's frame, never to vectors computed after ``Orientationd`` (e.g. by
    :class:`RegularisationRegionsd`), whose ``original_affine`` is that of their source label map.

    Args:
        keys: vector fields (3, X, Y, Z) as MetaTensors with ``original_affine`` in their metadata.
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection = "normals", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            field = d[key]
            if not isinstance(field, MetaTensor) or "original_affine" not in field.meta:
                raise ValueError(
                    f"ReorientVectorsd: {key!r} must be a MetaTensor loaded by LoadImaged (original_affine)"
                )
            if field.shape[0] != 3:
                raise ValueError(
                    f"ReorientVectorsd: {key!r} must have 3 vector channels, got shape {tuple(field.shape)}"
                )
            rotation = direction_cosines(field.affine).T @ direction_cosines(field.meta["original_affine"])
            if np.allclose(rotation, np.eye(3), atol=1e-6):
                continue
            r = torch.as_tensor(rotation, dtype=field.dtype)
            d[key] = torch.einsum("ij,j...->i...", r, field)  # MetaTensor in, MetaTensor out (metadata kept)
        return d


class RegularisationRegionsd(MapTransform):
    """Add the regularisation mask and sliding normals computed from a label map.

    Reads ``data[key]``: label map (1, X, Y, Z) (channel-first tensor, MetaTensor or array; a float map with
    integral values is accepted). Spacing: from the MetaTensor's affine, else ``spacing`` (default 1 mm).
    Adds ``data[mask_key]`` uint8 (1, X, Y, Z) and ``data[normals_key]`` float32 (3, X, Y, Z) of the input's
    type (MetaTensors keep the label map's affine and metadata).

    Args:
        keys: the label map key(s) (one output pair per key: give sequences of mask/normals keys then).
        spec: ``RegionSpec``, or a path/dict for ``load_region_spec`` (``None``: configs/regions.json).
        label_table: names -> ids, or anything ``label_table()`` accepts (``None``: TotalSegmentator v2).
        k: neighbours for the ``knn`` normals.
        mask_key, normals_key: output key(s).
        spacing: fallback voxel size (mm) when the input carries no affine.
        normals_method, sigma_mm: see ``compute_normals`` (``"knn"``: the paper's k nearest; ``"gaussian"``).
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "fixed_label",
        spec: RegionSpec | str | os.PathLike | Mapping | None = None,
        label_table: Mapping[str, int] | str | os.PathLike | None = None,
        k: int = 40,
        mask_key: str | Sequence[str] = "reg_mask",
        normals_key: str | Sequence[str] = "normals",
        spacing: Sequence[float] | None = None,
        normals_method: str = "knn",
        sigma_mm: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spec = spec if isinstance(spec, RegionSpec) else load_region_spec(spec, label_table)
        self.k, self.normals_method, self.sigma_mm, self.spacing = k, normals_method, sigma_mm, spacing
        self.mask_keys = [mask_key] if isinstance(mask_key, str) else list(mask_key)
        self.normals_keys = [normals_key] if isinstance(normals_key, str) else list(normals_key)
        if len(self.mask_keys) != len(self.keys) or len(self.normals_keys) != len(self.keys):
            raise ValueError("give one mask_key and one normals_key per key")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, mkey, nkey in self.key_iterator(d, self.mask_keys, self.normals_keys):
            img = d[key]
            if isinstance(img, MetaTensor):
                spacing = spacing_from_affine(img.affine)
            else:
                spacing = self.spacing if self.spacing is not None else (1.0, 1.0, 1.0)
            mask, normals = regions_from_labels(
                img, self.spec, self.k, spacing, normals_method=self.normals_method, sigma_mm=self.sigma_mm
            )
            if isinstance(img, (np.ndarray, torch.Tensor)):  # same container type (and metadata) as the input
                d[mkey] = convert_to_dst_type(mask[None], img, dtype=mask.dtype)[0]
                d[nkey] = convert_to_dst_type(normals, img, dtype=normals.dtype)[0]
            else:
                d[mkey], d[nkey] = mask[None], normals
        return d


class DicomSeriesReader(ITKReader):
    """MONAI's ``ITKReader`` for DICOM series folders only (``verify_suffix``: a folder), reading the series
    :func:`series_files` picks and checks: the same series as the header checks."""

    def verify_suffix(self, filename: Sequence[Any] | Any) -> bool:
        names = ensure_tuple(filename)
        return len(names) == 1 and Path(str(names[0])).is_dir() and super().verify_suffix(filename)

    def read(self, data: Sequence[Any] | Any, **kwargs: Any):
        names = ensure_tuple(data)
        if len(names) != 1 or not Path(str(names[0])).is_dir():
            return super().read(data, **kwargs)
        itk, _ = optional_import("itk", allow_namespace_pkg=True)
        files = series_files(names[0])
        image = itk.imread(files if len(files) > 1 else files[0], **{**self.kwargs, **kwargs})
        if self.series_meta:  # as ITKReader: the first slice's metadata
            reader = itk.ImageSeriesReader.New(FileNames=files)
            reader.Update()
            meta = reader.GetMetaDataDictionaryArray()
            if len(meta) > 0:
                image.SetMetaDataDictionary(meta[0])
        return image


class LoadImageSeriesd(LoadImaged):
    """MONAI's ``LoadImaged`` (same arguments) that reads a DICOM series folder with :class:`DicomSeriesReader`;
    every other input is read by the reader MONAI chooses for it, as before."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self._loader.auto_select:  # readers chosen by the file name: ours is asked first and only takes folders
            self.register(DicomSeriesReader())


class AntiAliasedResized(MapTransform):
    """``Resized(keys, spatial_size, mode, anti_aliasing=True)`` of MONAI with its Gaussian filter run row by row.
    Images (C, *S).

    MONAI smooths before it shrinks (sigma = max(0, (in / out - 1) / 2) per axis, as skimage; an axis that does not
    shrink is not smoothed) with ``GaussianFilter``: a separable convolution, ``conv3d`` along each axis in turn over
    the whole volume, whose CPU buffer holds one copy of the volume per kernel tap. The same filter (MONAI's
    ``gaussian_1d`` kernels, zero padding, axis 0 first) is run here as ``conv1d`` over the image's lines along each
    axis, in chunks whose buffer holds at most ``buffer_voxels`` floats (64 MB by default), the same values to float
    rounding (tested against MONAI's ``Resized``). A 512 x 512 x 300 pair through the CT model: 10.0 GiB with
    MONAI's filter, 1.9 GiB with this one (``benchmarks/benchmark_memory.py``). MONAI's ``Resize`` without
    anti-aliasing then shrinks the image and records the operation and the affine as before.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        mode: str = "trilinear",
        buffer_voxels: int = 2**24,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.spatial_size = [int(n) for n in spatial_size]
        self.buffer_voxels = int(buffer_voxels)
        self.resize = Resize(self.spatial_size, mode=mode, anti_aliasing=False)

    def kernels(self, shape: Sequence[int]) -> list[torch.Tensor | None]:
        """MONAI's anti-aliasing kernel along each axis of ``shape`` (None: the axis does not shrink)."""
        sigmas = [max(0.0, (n / size - 1.0) / 2.0) for n, size in zip(shape, self.spatial_size)]
        return [gaussian_1d(torch.tensor(s), truncated=4.0, approx="erf") if s > 0 else None for s in sigmas]

    def smooth(self, img: Any) -> Any:
        """``img`` (C, *S) filtered along each shrinking axis in turn, line by line; a new tensor."""
        out = torch.as_tensor(img, dtype=torch.float).clone()
        for axis, kernel in enumerate(self.kernels(img.shape[1:])):
            if kernel is None:
                continue
            moved = out.movedim(axis + 1, -1)
            lines = moved.reshape(-1, moved.shape[-1])  # a copy unless the axis is the last
            pad, weight = kernel.numel() // 2, kernel.view(1, 1, -1).to(lines)
            step = max(1, self.buffer_voxels // (kernel.numel() * lines.shape[1]))
            for start in range(0, lines.shape[0], step):
                chunk = lines[start : start + step, None]
                lines[start : start + step] = F.conv1d(F.pad(chunk, (pad, pad)), weight)[:, 0]
            out = lines.view(moved.shape).movedim(-1, axis + 1)
        smoothed, *_ = convert_to_dst_type(out.contiguous(), dst=img, dtype=torch.float)
        return smoothed

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.ndim != len(self.spatial_size) + 1:
                raise ValueError(f"{key}: shape {tuple(img.shape)} is not (C, *S) with {len(self.spatial_size)} axes")
            d[key] = self.resize(self.smooth(img))
        return d
