"""Unit normals of a sliding interface, by PCA of the sliding voxels around each sliding voxel.

Conventions
-----------
* Arrays are indexed (X, Y, Z) = array axes 0, 1, 2; channel-first tensors are (C, X, Y, Z).
* ``spacing`` is the voxel size along the array axes in mm.
* Normals are exact unit vectors, component k along array axis k, expressed in the physical (mm) frame of the
  array axes, i.e. for the coordinates ``x_k = index_k * spacing_k`` (the affine's rotation is not applied).
  This frame is unchanged by resampling. :func:`normals_in_voxel_frame` converts to voxel-index units.
* Sign: each normal is flipped so that ``n . d >= 0`` with the fixed direction ``d = (1, sqrt 2, sqrt 3) / sqrt 6``
  (no lattice plane with integer-ratio normal is perpendicular to d, so axis-aligned and diagonal planes get one
  consistent sign). The shearing loss is invariant to the sign.

Estimators: the k nearest sliding voxels (the paper's definition, ``method="knn"``) or a Gaussian window
(``method="gaussian"``, accurate on bands several voxels thick, where k = 40 neighbours are too few).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = ["compute_normals", "normals_in_voxel_frame"]

# Fixed reference direction for the sign of the normals (see module docstring).
_SIGN_REFERENCE = np.array([1.0, np.sqrt(2.0), np.sqrt(3.0)]) / np.sqrt(6.0)


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
