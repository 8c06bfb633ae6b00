"""The regularisation mask from a segmentation: 0 Jacobian (default), 1 rigid (bones), 2 sliding (a band around
listed organ interfaces; sliding overrides rigid).

Everything is keyed by label NAME (``configs/regions.json``) and mapped to ids through a label table
(:func:`scripts.regions.labels.label_table`): the TotalSegmentator v2 ``total`` table by default, or the dataset's own
names -> ids mapping. The sliding normals come from :mod:`scripts.regions.normals`; the MONAI transform that builds
both on the fly is :class:`scripts.data.transforms.RegularisationRegionsd`; ``python -m scripts.regions.precompute``
writes them to disk. Conventions (axes, spacing, normals): see :mod:`scripts.regions.normals`.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from scripts.regions.labels import RIGID, SLIDING
from scripts.regions.labels import label_table as _resolve_table
from scripts.regions.normals import compute_normals

__all__ = [
    "DEFAULT_SPEC",
    "RegionSpec",
    "load_region_spec",
    "as_label_array",
    "sliding_band",
    "build_regularisation_mask",
    "downsample_regions",
    "spacing_from_affine",
    "regions_from_labels",
]

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = BUNDLE_ROOT / "configs" / "regions.json"


@dataclass(frozen=True)
class RegionSpec:
    """Resolved region specification (label ids).

    Attributes:
        rigid: sorted label ids of the rigid structures (bones).
        sliding: unique unordered ``(id_a, id_b, radius_voxels)`` triples with ``id_a < id_b``.
        names: id -> name for every id used (for messages and reports).
    """

    rigid: tuple[int, ...]
    sliding: tuple[tuple[int, int, int], ...]
    names: dict[int, str] = field(default_factory=dict, compare=False)


_SPEC_KEYS = {"description", "groups", "rigid", "sliding"}


def _resolve_name(name: str, table: Mapping[str, int], groups: Mapping[str, Sequence[str]]) -> list[str]:
    """Expand ``@group`` and check that every name is in the label table (ValueError naming it otherwise)."""
    if not isinstance(name, str):
        raise ValueError(f"region spec: expected a label name or '@group', got {name!r}")
    if name.startswith("@"):
        group = name[1:]
        if group not in groups:
            close = difflib.get_close_matches(group, list(groups), n=3)
            hint = f" (did you mean {', '.join('@' + c for c in close)}?)" if close else ""
            raise ValueError(f"region spec: unknown group {name!r}{hint}")
        return [n for member in groups[group] for n in _resolve_name(member, table, groups)]
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise ValueError(f"region spec: unknown label name {name!r}: not in the label table{hint}")
    return [name]


def load_region_spec(
    path_or_dict: str | os.PathLike | Mapping | None = None,
    label_table: Mapping[str, int] | str | os.PathLike | None = None,
) -> RegionSpec:
    """Read a region specification (JSON file or dict, see ``configs/regions.json``) and resolve names to ids.

    Args:
        path_or_dict: JSON path or dict with keys ``rigid`` (names), ``sliding`` (``[a, b, radius_voxels]``),
            optional ``groups`` (``{"g": [names]}``, referenced as ``"@g"``) and ``description``.
            ``None``: the bundle's ``configs/regions.json``.
        label_table: names -> ids (or anything ``label_table()`` accepts); ``None``: TotalSegmentator v2.

    Raises:
        ValueError: an unknown label name or group (the message names it and suggests close matches), a bad
            radius or an unknown top-level key.
    """
    if path_or_dict is None:
        path_or_dict = DEFAULT_SPEC
    if isinstance(path_or_dict, Mapping):
        raw = dict(path_or_dict)
    else:
        with open(path_or_dict) as f:
            raw = json.load(f)
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"region spec: unknown key(s) {sorted(unknown)}; expected {sorted(_SPEC_KEYS)}")
    table = _resolve_table(label_table if label_table is not None else "totalsegmentator")
    groups = raw.get("groups", {}) or {}

    rigid_names = [n for item in raw.get("rigid", []) for n in _resolve_name(item, table, groups)]
    pairs: dict[tuple[int, int], int] = {}
    names = {table[n]: n for n in rigid_names}
    for entry in raw.get("sliding", []):
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            raise ValueError(f"region spec: sliding entry {entry!r} is not [name_a, name_b, radius_voxels]")
        a_list, b_list, radius = (
            _resolve_name(entry[0], table, groups),
            _resolve_name(entry[1], table, groups),
            entry[2],
        )
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
            raise ValueError(f"region spec: sliding entry {entry!r}: radius must be an integer >= 1 (voxels)")
        for a in a_list:
            for b in b_list:
                ia, ib = table[a], table[b]
                names[ia], names[ib] = a, b
                if ia != ib:
                    key = (min(ia, ib), max(ia, ib))
                    pairs[key] = max(radius, pairs.get(key, 0))  # a pair listed twice keeps its larger radius
    rigid = tuple(sorted({table[n] for n in rigid_names}))
    sliding = tuple(sorted((a, b, r) for (a, b), r in pairs.items()))
    return RegionSpec(rigid=rigid, sliding=sliding, names=names)


def as_label_array(labels: Any, what: str = "label map") -> np.ndarray:
    """Return a 3D integer numpy array (X, Y, Z) from an array/tensor (a leading or trailing singleton is dropped).

    Raises:
        ValueError: not 3D, not integer-valued, or negative values.
    """
    if hasattr(labels, "detach"):  # torch tensor / MetaTensor
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    elif arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"{what} must be 3D (X, Y, Z) or (1, X, Y, Z), got shape {tuple(arr.shape)}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise ValueError(
                f"{what} must hold integer label ids, got non-integer {arr.dtype} values: is this an image, not a "
                "segmentation?"
            )
        arr = arr.astype(np.int32)
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold integer label ids, got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise ValueError(f"{what} holds negative label ids (min {arr.min()}): is this an image, not a segmentation?")
    return arr


def ball(radius: int) -> np.ndarray:
    """Euclidean ball structuring element ``|offset|^2 <= radius^2`` (voxels), bool (2r+1, 2r+1, 2r+1)."""
    g = np.arange(-radius, radius + 1)
    return (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2) <= radius * radius


def _grow(box: tuple[slice, ...], r: int, shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Box (find_objects slices) grown by r voxels, clipped to the volume, as [(start, stop)] per axis."""
    return [(max(s.start - r, 0), min(s.stop + r, n)) for s, n in zip(box, shape)]


def sliding_band(labels: np.ndarray, pairs: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Voxels within ``r`` voxels (Euclidean ball) of both labels of a pair, for any pair: bool (X, Y, Z).

    Each pair is handled only inside the intersection of the two labels' bounding boxes grown by r (plus an r
    margin for the dilation), so absent or distant pairs cost nothing.
    """
    out = np.zeros(labels.shape, dtype=bool)
    if not len(pairs) or labels.size == 0:
        return out
    max_id = max(max(a, b) for a, b, _ in pairs)
    boxes = ndimage.find_objects(labels, max_label=max_id)
    for a, b, r in pairs:
        box_a, box_b = boxes[a - 1], boxes[b - 1]
        if box_a is None or box_b is None:
            continue
        inner = [
            (max(p0, q0), min(p1, q1))
            for (p0, p1), (q0, q1) in zip(_grow(box_a, r, labels.shape), _grow(box_b, r, labels.shape))
        ]
        if any(lo >= hi for lo, hi in inner):
            continue
        crop = tuple(slice(max(lo - r, 0), min(hi + r, n)) for (lo, hi), n in zip(inner, labels.shape))
        sub = labels[crop]
        struct = ball(r)
        overlap = ndimage.binary_dilation(sub == a, struct) & ndimage.binary_dilation(sub == b, struct)
        out[crop] |= overlap
    return out


def build_regularisation_mask(labels: Any, spec: RegionSpec) -> np.ndarray:
    """Regularisation mask from a label map.

    Args:
        labels: integer label map (X, Y, Z) (or (1, X, Y, Z)); numpy array or tensor.
        spec: resolved ``RegionSpec`` (``load_region_spec``).

    Returns:
        uint8 (X, Y, Z): 0 Jacobian (default), 1 rigid (labels in ``spec.rigid``), 2 sliding (``sliding_band`` of
        ``spec.sliding``; overrides rigid).
    """
    arr = as_label_array(labels)
    mask = np.zeros(arr.shape, dtype=np.uint8)
    if spec.rigid:
        lut = np.zeros(max(int(arr.max(initial=0)), max(spec.rigid)) + 1, dtype=np.uint8)
        lut[list(spec.rigid)] = RIGID
        mask = lut[arr]
    mask[sliding_band(arr, spec.sliding)] = SLIDING
    return mask


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Pixel-centre nearest indices: output voxel i samples input ``floor((i + 0.5) * n_in / n_out)``."""
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def downsample_regions(
    reg_mask: Any,
    normals: Any,
    factor: int | Sequence[int] | None = 2,
    target_shape: Sequence[int] | None = None,
    normals_mode: str = "nearest",
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a regularisation mask and its normals to a coarser grid.

    Args:
        reg_mask: uint8 (X, Y, Z) or (1, X, Y, Z).
        normals: float (3, X, Y, Z), mm frame (which resampling leaves valid).
        factor: integer downsampling factor (one or per axis); ignored when ``target_shape`` is given.
        target_shape: output (X', Y', Z').
        normals_mode: ``"nearest"`` (same samples as the mask) or ``"linear"`` (trilinear, align_corners=False,
            then renormalised; where neighbouring normals cancel, the nearest sample is used).

    Returns:
        ``(mask, normals)``: uint8 with the input's channel layout, float32 (3, X', Y', Z'); the mask is sampled at
        pixel centres (nearest), normals are unit vectors on sliding voxels and 0 elsewhere.
    """
    mask = np.asarray(reg_mask.detach().cpu() if hasattr(reg_mask, "detach") else reg_mask)
    had_channel = mask.ndim == 4
    m3 = mask[0] if had_channel else mask
    nrm = np.asarray(normals.detach().cpu() if hasattr(normals, "detach") else normals, dtype=np.float32)
    if m3.ndim != 3 or nrm.shape != (3,) + m3.shape:
        raise ValueError(f"expected mask (X, Y, Z) and normals (3, X, Y, Z), got {mask.shape} and {nrm.shape}")
    if target_shape is None:
        f = np.broadcast_to(np.asarray(factor if factor is not None else 1, dtype=np.int64), (3,))
        if np.any(f < 1):
            raise ValueError(f"factor must be >= 1, got {factor}")
        target_shape = tuple(max(int(n // fi), 1) for n, fi in zip(m3.shape, f))
    target_shape = tuple(int(t) for t in target_shape)
    ix = np.ix_(*(_nearest_indices(n, t) for n, t in zip(m3.shape, target_shape)))
    small = m3[ix]
    nearest = nrm[(slice(None),) + ix].astype(np.float64)
    if normals_mode == "nearest":
        out = nearest
    elif normals_mode == "linear":
        import torch

        t = torch.from_numpy(nrm[None].astype(np.float32))
        out = torch.nn.functional.interpolate(t, size=target_shape, mode="trilinear", align_corners=False)[0]
        out = out.numpy().astype(np.float64)
        weak = np.linalg.norm(out, axis=0) < 0.5
        out[:, weak] = nearest[:, weak]
    else:
        raise ValueError(f"normals_mode must be 'nearest' or 'linear', got {normals_mode!r}")
    norm = np.linalg.norm(out, axis=0, keepdims=True)
    keep = (small == SLIDING)[None] & (norm > 0)
    out = np.divide(out, norm, out=np.zeros_like(out), where=keep).astype(np.float32)
    return (small[None] if had_channel else small).astype(np.uint8), out


def spacing_from_affine(affine: Any) -> np.ndarray:
    """Voxel size (mm) along the array axes: the column norms of the affine's 3x3 part, rounded to 1e-6 mm (so
    that float32 round-off in stored affines does not change the k-nearest-neighbour tie-breaking)."""
    a = np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=np.float64)
    return np.round(np.sqrt((a[:3, :3] ** 2).sum(axis=0)), 6)


def regions_from_labels(
    labels: Any,
    spec: RegionSpec,
    k: int = 40,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    normals_method: str = "knn",
    sigma_mm: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mask uint8 (X, Y, Z) and normals float32 (3, X, Y, Z) from a label map (X, Y, Z) or (1, X, Y, Z).

    ``k``, ``normals_method`` and ``sigma_mm`` as in ``compute_normals``; ``spacing`` in mm.
    """
    mask = build_regularisation_mask(labels, spec)
    normals = compute_normals(mask == SLIDING, k=k, spacing=spacing, method=normals_method, sigma_mm=sigma_mm)
    return mask, normals
