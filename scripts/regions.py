"""Regularisation regions from a segmentation: the mask (Jacobian / rigid / sliding) and the sliding normals.

Per voxel of the fixed image the regularisation mask holds 0 (Jacobian loss, default), 1 (rigid: bones) or
2 (sliding: a band around listed organ interfaces; sliding overrides rigid). On sliding voxels a unit normal to
the interface is estimated by PCA of the nearby sliding voxels (smallest-eigenvalue eigenvector): the k nearest
(the paper's definition, ``method="knn"``) or a Gaussian window (``method="gaussian"``, accurate on bands several
voxels thick, where k = 40 neighbours are too few).

Everything is keyed by label NAME (``configs/regions.json``) and mapped to ids through a label table: the
TotalSegmentator v2 ``total`` table by default, or the dataset's own names -> ids mapping.

Conventions
-----------
* Arrays are indexed (X, Y, Z) = array axes 0, 1, 2; channel-first tensors are (C, X, Y, Z).
* ``spacing`` is the voxel size along the array axes in mm.
* Normals are exact unit vectors, component k along array axis k, expressed in the physical (mm) frame of the
  array axes, i.e. for the coordinates ``x_k = index_k * spacing_k`` (the affine's rotation is not applied).
  This frame is unchanged by resampling. ``normals_in_voxel_frame`` converts to voxel-index units.
* Sign: each normal is flipped so that ``n . d >= 0`` with the fixed direction ``d = (1, sqrt 2, sqrt 3) / sqrt 6``
  (no lattice plane with integer-ratio normal is perpendicular to d, so axis-aligned and diagonal planes get one
  consistent sign). The shearing loss is invariant to the sign.

Command line::

    python -m scripts.regions precompute --labels seg.nii.gz --out_dir DIR [--spec configs/regions.json] [--k 40]
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type
from scipy import ndimage
from scipy.spatial import cKDTree

logger = logging.getLogger(__name__)

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = BUNDLE_ROOT / "configs" / "regions.json"

JACOBIAN, RIGID, SLIDING = 0, 1, 2

# TotalSegmentator v2 task "total": name of label id i + 1 (ids are 1-based, 0 is background).
TOTALSEG_V2_TOTAL_NAMES = (
    ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas"]
    + ["adrenal_gland_right", "adrenal_gland_left"]
    + ["lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right"]
    + ["lung_lower_lobe_right", "esophagus", "trachea", "thyroid_gland", "small_bowel", "duodenum", "colon"]
    + ["urinary_bladder", "prostate", "kidney_cyst_left", "kidney_cyst_right", "sacrum", "vertebrae_S1"]
    + [f"vertebrae_L{i}" for i in range(5, 0, -1)]
    + [f"vertebrae_T{i}" for i in range(12, 0, -1)]
    + [f"vertebrae_C{i}" for i in range(7, 0, -1)]
    + ["heart", "aorta", "pulmonary_vein", "brachiocephalic_trunk", "subclavian_artery_right"]
    + ["subclavian_artery_left", "common_carotid_artery_right", "common_carotid_artery_left"]
    + ["brachiocephalic_vein_left", "brachiocephalic_vein_right", "atrial_appendage_left", "superior_vena_cava"]
    + ["inferior_vena_cava", "portal_vein_and_splenic_vein", "iliac_artery_left", "iliac_artery_right"]
    + ["iliac_vena_left", "iliac_vena_right", "humerus_left", "humerus_right", "scapula_left", "scapula_right"]
    + ["clavicula_left", "clavicula_right", "femur_left", "femur_right", "hip_left", "hip_right", "spinal_cord"]
    + [f"gluteus_{m}_{s}" for m in ("maximus", "medius", "minimus") for s in ("left", "right")]
    + ["autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain", "skull"]
    + [f"rib_{s}_{i}" for s in ("left", "right") for i in range(1, 13)]
    + ["sternum", "costal_cartilages"]
)
TOTALSEG_V2_TOTAL: dict[str, int] = {name: i + 1 for i, name in enumerate(TOTALSEG_V2_TOTAL_NAMES)}

# Fixed reference direction for the sign of the normals (see module docstring).
_SIGN_REFERENCE = np.array([1.0, np.sqrt(2.0), np.sqrt(3.0)]) / np.sqrt(6.0)


# ----------------------------------------------------------------------------------------------------------------
# Label tables and the region specification
# ----------------------------------------------------------------------------------------------------------------
def _normalise_table(table: Mapping) -> dict[str, int]:
    """Return a names -> ids dict from a names -> ids or ids -> names mapping (JSON keys may be strings)."""
    if "labels" in table and isinstance(table["labels"], Mapping):  # nnU-Net / MSD dataset.json style
        table = table["labels"]
    out: dict[str, int] = {}
    for key, value in table.items():
        name, idx = (value, key) if isinstance(value, str) else (str(key), value)  # ids -> names, or names -> ids
        if isinstance(idx, str) and idx.strip().isdigit():  # JSON object keys are strings
            idx = int(idx)
        if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or idx < 0:
            raise ValueError(f"label table entry {key!r}: {value!r} is not a name -> non-negative integer id pair")
        out[name] = int(idx)
    return out


def label_table(source: str | os.PathLike | Mapping = "totalsegmentator") -> dict[str, int]:
    """Label names -> integer ids.

    Args:
        source: ``"totalsegmentator"`` (``totalsegmentator.map_to_binary.class_map["total"]`` when that package
            imports, else the built-in TotalSegmentator v2 table), a dict (names -> ids, or ids -> names), or the
            path of a JSON file holding such a dict (a ``{"labels": {...}}`` dataset.json also works).
    """
    if isinstance(source, Mapping):
        return _normalise_table(source)
    if str(source).lower() in ("totalsegmentator", "total", "totalsegmentator_v2"):
        try:
            from totalsegmentator.map_to_binary import class_map  # optional dependency

            return _normalise_table(class_map["total"])
        except Exception:  # not installed, or an unexpected layout: the built-in table is the same v2 table
            return dict(TOTALSEG_V2_TOTAL)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"label table {str(source)!r} is neither 'totalsegmentator' nor an existing JSON file")
    with open(path) as f:
        return _normalise_table(json.load(f))


_resolve_table = label_table  # load_region_spec's argument shadows the function's name


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


# ----------------------------------------------------------------------------------------------------------------
# The regularisation mask
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# Normals
# ----------------------------------------------------------------------------------------------------------------
def _knn_covariances(points: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Covariance (N, 3, 3) of each point's k nearest points (itself included), mm^2; one tree, chunked queries."""
    tree = cKDTree(points)
    cov = np.empty((len(points), 3, 3), dtype=np.float64)
    for start in range(0, len(points), chunk):
        rows = slice(start, start + chunk)
        _, neighbours = tree.query(points[rows], k=k, workers=-1)  # (n, k)
        nb = points[neighbours]  # (n, k, 3)
        nb = nb - nb.mean(axis=1, keepdims=True)
        cov[rows] = np.einsum("nki,nkj->nij", nb, nb) / k
    return cov


def _gaussian_kernels(sigma_vox: float, truncate: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1D kernels ``g(d)``, ``d g(d)``, ``d^2 g(d)`` (d in voxels) of a Gaussian window, float32."""
    radius = max(int(np.ceil(truncate * sigma_vox)), 1)
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (d / sigma_vox) ** 2)
    g /= g.sum()
    return tuple(k.astype(np.float32) for k in (g, d * g, d * d * g))


def _gaussian_covariances(sliding: np.ndarray, spacing: np.ndarray, sigma_mm: float) -> np.ndarray:
    """Gaussian-window covariance (N, 3, 3) of the sliding voxels around each sliding voxel, mm^2.

    The moments of orders 0-2 of the sliding indicator about each voxel (offsets ``q - p``) are separable filters
    (kernels ``g``, ``d g``, ``d^2 g`` per axis): full passes along axes 0 and 1 on the band's bounding box, the
    last axis only at the sliding voxels (N, in C order). Peak memory: three float32 copies of the bounding box.
    """
    idx = np.nonzero(sliding)
    kern = [_gaussian_kernels(sigma_mm / s) for s in spacing]
    margin = [len(k[0]) // 2 for k in kern]
    lo = [max(int(i.min()) - m, 0) for i, m in zip(idx, margin)]
    hi = [min(int(i.max()) + m + 1, n) for i, m, n in zip(idx, margin, sliding.shape)]
    band = sliding[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.float32)
    i0, i1, i2 = (i - a for i, a in zip(idx, lo))
    taps = i2[:, None] + np.arange(-margin[2], margin[2] + 1)[None, :]  # (N, taps) along the last axis
    valid = (taps >= 0) & (taps < band.shape[2])
    taps = np.clip(taps, 0, band.shape[2] - 1)
    moments = {}
    for o0 in range(3):
        pass0 = ndimage.correlate1d(band, kern[0][o0], axis=0, mode="constant")
        for o1 in range(3 - o0):
            pass1 = ndimage.correlate1d(pass0, kern[1][o1], axis=1, mode="constant")
            lines = np.where(valid, pass1[i0[:, None], i1[:, None], taps], 0.0).astype(np.float64)
            for o2 in range(3 - o0 - o1):
                moments[(o0, o1, o2)] = lines @ kern[2][o2].astype(np.float64)
    m0 = moments[(0, 0, 0)]
    mean = np.stack([moments[(1, 0, 0)], moments[(0, 1, 0)], moments[(0, 0, 1)]], axis=1) * spacing / m0[:, None]
    cov = np.empty((len(m0), 3, 3), dtype=np.float64)
    for a in range(3):
        for b in range(a, 3):
            order = tuple(int(a == j) + int(b == j) for j in range(3))
            cov[:, a, b] = cov[:, b, a] = moments[order] * spacing[a] * spacing[b] / m0 - mean[:, a] * mean[:, b]
    return cov


def compute_normals(
    sliding: np.ndarray,
    k: int = 40,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    method: str = "knn",
    sigma_mm: float | None = None,
    chunk: int = 65536,
) -> np.ndarray:
    """Unit normals of the sliding interface: PCA of the sliding voxels around each sliding voxel.

    The normal is the eigenvector of the smallest eigenvalue of the local covariance of sliding-voxel positions
    (physical coordinates ``index * spacing``), for all voxels at once (batched ``np.linalg.eigh``).

    * ``method="knn"`` (the paper's definition): the k nearest sliding voxels, one cKDTree (queries on all cores,
      chunked), batched covariance by einsum. Accuracy needs a neighbourhood much wider than the band is thick:
      with k = 40 and bands 4 voxels thick (radius 2) the normals are unreliable (see the tests' figures).
    * ``method="gaussian"``: a Gaussian window of ``sigma_mm`` (default ``2 * max(spacing)``; use at least half
      the band's thickness in mm) instead of the k nearest; the moments are separable filters, so the cost does
      not grow with the window. Symmetric windows: exact for axis-aligned planes, < 1 degree on oblique ones.

    Args:
        sliding: bool (X, Y, Z), True on sliding voxels (e.g. ``reg_mask == 2``).
        k: ``knn`` neighbours per voxel, itself included (reference code: 40); fewer sliding voxels -> all.
        spacing: voxel size along the array axes, mm.
        method: ``"knn"`` or ``"gaussian"``.
        sigma_mm: ``gaussian`` window standard deviation, mm.
        chunk: voxels per batched ``knn`` query.

    Returns:
        float32 (3, X, Y, Z): unit normal (channel = array axis, mm frame; sign per module docstring) on sliding
        voxels, 0 elsewhere. With 1 or 2 sliding voxels no plane is defined: a RuntimeWarning is issued and all
        normals are 0 (the shearing term then vanishes there); with none, zeros silently.
    """
    sliding = np.asarray(sliding, dtype=bool)
    if sliding.ndim != 3:
        raise ValueError(f"sliding mask must be 3D (X, Y, Z), got shape {sliding.shape}")
    if method not in ("knn", "gaussian"):
        raise ValueError(f"method must be 'knn' or 'gaussian', got {method!r}")
    if method == "knn" and k < 3:
        raise ValueError(f"k must be >= 3 to fit a plane, got {k}")
    spacing = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing.tolist()}")
    out = np.zeros((3,) + sliding.shape, dtype=np.float32)
    idx = np.nonzero(sliding)
    n_vox = idx[0].size
    if n_vox == 0:
        return out
    if n_vox < 3:
        warnings.warn(f"only {n_vox} sliding voxel(s): no plane to fit, their normals are set to 0", RuntimeWarning)
        return out
    if method == "knn":
        cov = _knn_covariances(np.stack(idx, axis=1) * spacing, min(k, n_vox), chunk)
    else:
        sigma = float(sigma_mm) if sigma_mm is not None else 2.0 * float(spacing.max())
        if sigma <= 0:
            raise ValueError(f"sigma_mm must be > 0, got {sigma_mm}")
        cov = _gaussian_covariances(sliding, spacing, sigma)
    normals = np.linalg.eigh(cov)[1][:, :, 0]  # eigenvalues ascending: smallest first
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    normals *= np.where(normals @ _SIGN_REFERENCE < 0, -1.0, 1.0)[:, None]
    out[(slice(None),) + idx] = normals.T.astype(np.float32)
    return out


def normals_in_voxel_frame(normals: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Convert mm-frame unit normals (3, X, Y, Z) to unit normals of the same planes in voxel-index units.

    A plane ``n . x_mm = c`` with ``x_mm = index * spacing`` is ``(n * spacing) . index = c``: scale each
    component by its spacing and renormalise (zeros stay zero).
    """
    s = np.asarray(spacing, dtype=np.float64).reshape(3, 1, 1, 1)
    v = np.asarray(normals, dtype=np.float64) * s
    norm = np.linalg.norm(v, axis=0, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Downsampling
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# MONAI transform
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# Command line: precompute masks and normals for label maps on disk
# ----------------------------------------------------------------------------------------------------------------
def _nifti_stem(path: Path) -> str:
    """File name without ``.nii.gz`` / ``.nii``."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def output_names(label_path: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``(<out_dir>/<name>_reg_mask.nii.gz, <out_dir>/<name>_normals.nii.gz)``; ``<name>`` is the label map's file
    name without ``.nii.gz`` and without a trailing ``_seg`` (``case_seg.nii.gz`` -> ``case_reg_mask.nii.gz``)."""
    stem = _nifti_stem(Path(label_path))
    stem = stem[: -len("_seg")] if stem.endswith("_seg") and len(stem) > 4 else stem
    out = Path(out_dir)
    return out / f"{stem}_reg_mask.nii.gz", out / f"{stem}_normals.nii.gz"


def _label_files(labels: str | os.PathLike) -> list[Path]:
    """One label map, or every ``*.nii.gz`` / ``*.nii`` in a folder (outputs of this tool excluded)."""
    path = Path(labels)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith((".nii.gz", ".nii")))
        files = [p for p in files if not _nifti_stem(p).endswith(("_reg_mask", "_normals"))]
        if not files:
            raise FileNotFoundError(f"no *.nii.gz label maps in folder {path}")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"label map not found: {path}")
    return [path]


def _descrip(k: int, method: str, sigma_mm: float | None) -> str:
    """NIfTI ``descrip`` of a normals file: records the parameters, so that the cache notices a change."""
    return f"biomech-reg normals knn k={k}" if method == "knn" else f"biomech-reg normals gaussian sigma={sigma_mm}"


def _is_up_to_date(label_path: Path, outputs: tuple[Path, Path], spec_path: Path | None, descrip: str) -> bool:
    """Both outputs exist, are newer than the label map (and the spec file) and the normals' ``descrip`` (their
    parameters) matches."""
    import nibabel as nib

    if not all(p.is_file() for p in outputs):
        return False
    newest_input = max(label_path.stat().st_mtime, spec_path.stat().st_mtime if spec_path else 0.0)
    if min(p.stat().st_mtime for p in outputs) < newest_input:
        return False
    try:
        found = nib.load(str(outputs[1])).header["descrip"].tobytes().rstrip(b"\0").decode(errors="replace")
    except Exception:
        return False
    return found == descrip


def _save_nifti(data: np.ndarray, like: Any, path: Path, descrip: str = "") -> None:
    """Write ``data`` with the affine (and spatial header fields) of NIfTI image ``like``, atomically."""
    import nibabel as nib

    header = like.header.copy()
    header.set_data_dtype(data.dtype)
    img = nib.Nifti1Image(data, like.affine, header=header)
    img.header.set_slope_inter(1.0, 0.0)
    qcode, scode = int(like.header["qform_code"]), int(like.header["sform_code"])
    img.set_qform(like.affine, code=qcode)
    img.set_sform(like.affine, code=scode if (scode or qcode) else 2)  # keep the input's codes
    if descrip:
        img.header["descrip"] = descrip.encode()[:79]
    tmp = path.with_name(path.name.replace(".nii.gz", ".partial.nii.gz"))
    nib.save(img, str(tmp))
    os.replace(tmp, path)


def _progress(items: list, desc: str):
    """tqdm over items when installed, else plain logging."""
    try:
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, unit="file")
    except ImportError:
        for i, item in enumerate(items, 1):
            logger.info("%s [%d/%d] %s", desc, i, len(items), getattr(item, "name", item))
            yield item


def _resolve_spec_path(spec: str | os.PathLike | None) -> Path:
    """The spec file; a relative path missing from the working directory is looked up in the bundle root."""
    if spec is None:
        return DEFAULT_SPEC
    path = Path(spec)
    if not path.is_file() and not path.is_absolute() and (BUNDLE_ROOT / path).is_file():
        path = BUNDLE_ROOT / path
    if not path.is_file():
        raise FileNotFoundError(f"region spec not found: {spec}")
    return path


def precompute(
    labels: str,
    out_dir: str,
    spec: str | None = None,
    k: int = 40,
    label_table_path: str | None = None,
    overwrite: bool = False,
    method: str = "knn",
    sigma_mm: float | None = None,
) -> list[str]:
    """Write ``<name>_reg_mask.nii.gz`` (uint8 0/1/2) and ``<name>_normals.nii.gz`` (float32 X,Y,Z,3, mm frame,
    component k = array axis k) for one label map or every ``*.nii.gz`` in a folder, with the label map's affine.

    Up-to-date outputs (newer than the label map and the spec, same normals parameters) are skipped unless
    ``overwrite``. Errors (missing file, non-3D or non-integer label map, unknown label name) name the culprit.

    Args:
        labels: label map (NIfTI) or folder of label maps.
        out_dir: output folder (created).
        spec: region spec JSON (default: the bundle's configs/regions.json).
        k: neighbours for the ``knn`` normals.
        label_table_path: JSON names -> ids of the label maps (default: TotalSegmentator v2 ``total``).
        overwrite: recompute even when outputs are up to date.
        method, sigma_mm: normals estimator (``knn`` or ``gaussian``), see ``compute_normals``.

    Returns:
        the written (or up-to-date) output paths.
    """
    import nibabel as nib

    files = _label_files(labels)
    spec_path = _resolve_spec_path(spec)
    region_spec = load_region_spec(spec_path, label_table(label_table_path or "totalsegmentator"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    descrip = _descrip(k, method, sigma_mm)
    written, skipped = [], 0
    for path in _progress(files, "regions"):
        outputs = output_names(path, out)
        written += [str(p) for p in outputs]
        if not overwrite and _is_up_to_date(path, outputs, spec_path, descrip):
            skipped += 1
            continue
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        arr = as_label_array(data, what=f"label map {path}")
        mask, normals = regions_from_labels(arr, region_spec, k, spacing_from_affine(img.affine), method, sigma_mm)
        _save_nifti(mask, img, outputs[0])
        _save_nifti(np.ascontiguousarray(np.moveaxis(normals, 0, -1)), img, outputs[1], descrip=descrip)
        logger.info(
            "%s: %d rigid, %d sliding voxels", path.name, int((mask == RIGID).sum()), int((mask == SLIDING).sum())
        )
    logger.info("%d file(s): %d computed, %d up to date", len(files), len(files) - skipped, skipped)
    return written


def main() -> None:
    """Entry point: ``python -m scripts.regions precompute ...``."""
    import fire

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        fire.Fire({"precompute": precompute})
    except (FileNotFoundError, ValueError) as err:  # user errors: one line, no traceback
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
