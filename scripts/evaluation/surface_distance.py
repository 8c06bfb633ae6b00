"""Surface distances between two 3D masks, the algorithm of the Learn2Reg evaluation (its HD95).

The challenge (github.com/MDL-UzL/L2R, ``evaluation/utils.py``) computes HD95 with the surface-distance code of
github.com/google-deepmind/surface-distance (vendored in ``evaluation/surface-distance``). This module reimplements that
algorithm (written from its description, not copied), so that our HD95 is the challenge's to round-off:

1. Both masks are cropped to the bounding box of their union, with one empty voxel after it on every axis.
2. Every voxel gets the 8-bit code of its 2x2x2 neighbourhood (itself and the voxels one index lower on every
   axis, outside the crop counted empty): the corners of the original voxels. A code other than 0 and 255 is a
   surface element ("surfel").
3. Each surfel's area is the area of the marching-cubes surface of its code: the polygons through the midpoints of
   the cube edges whose ends differ, triangulated, every triangle's area vector scaled by the voxel spacing (area
   vector (n0, n1, n2) -> (n0 s1 s2, n1 s0 s2, n2 s0 s1)) and the norms summed. The challenge's table of triangles
   is that of marching cubes with (a) on a face with two diagonal inside corners, the inside corners kept apart when
   at most 4 corners are inside and the outside corners kept apart otherwise, and (b) every polygon triangulated to
   the largest total area (at unit spacing). ``_unit_triangles`` builds it that way; the test compares it with the
   challenge's table for all 256 codes.
4. The distance of each surfel of one mask to the other mask's surface is the Euclidean distance transform (scipy,
   with the spacing) of the other mask's non-surfel voxels.
5. Robust Hausdorff distance at ``percent``: in each direction, the distances sorted (ties by area), the first one
   whose cumulative area fraction reaches ``percent / 100``; the larger of the two directions. An empty mask gives
   ``inf``.

The challenge calls it with unit spacing (``np.ones(3)``): Learn2Reg HD95 is in voxels of the evaluation grid.
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["surfel_area_table", "surface_distances", "robust_hausdorff", "hd95"]

# bit of the neighbourhood code for each corner offset (a, b, c) of the 2x2x2 cube (offset 0: one index lower)
_CORNER_BITS = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]], dtype=np.int64)
_CORNERS = list(itertools.product(range(2), repeat=3))
_EDGES = [(p, q) for p in _CORNERS for q in _CORNERS if p < q and sum(abs(a - b) for a, b in zip(p, q)) == 1]


def _polygons(code: int) -> list[list[np.ndarray]]:
    """Marching-cubes polygons (cycles of edge midpoints, unit cube) of a neighbourhood code."""
    inside = {p for p in _CORNERS if code & int(_CORNER_BITS[p])}
    cut = [e for e in _EDGES if (e[0] in inside) != (e[1] in inside)]
    keep_apart = inside if len(inside) <= 4 else set(_CORNERS) - inside
    neighbours: dict[tuple, list[tuple]] = {}
    for axis, side in itertools.product(range(3), range(2)):
        face_edges = [e for e in cut if e[0][axis] == side and e[1][axis] == side]
        if len(face_edges) == 2:
            segments = [tuple(face_edges)]
        elif len(face_edges) == 4:  # ambiguous face: one segment around each corner kept apart
            corners = [p for p in _CORNERS if p[axis] == side and p in keep_apart]
            segments = [tuple(e for e in face_edges if p in e) for p in corners]
        else:
            segments = []
        for s, t in segments:
            neighbours.setdefault(s, []).append(t)
            neighbours.setdefault(t, []).append(s)
    polygons, seen = [], set()
    for start in neighbours:  # every cut edge has exactly two neighbours: the graph is a union of cycles
        if start in seen:
            continue
        cycle, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in neighbours[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            cycle.append(cur)
            seen.add(cur)
        polygons.append([np.mean(np.array(e, dtype=np.float64), axis=0) for e in cycle])
    return polygons


def _largest_area_triangulation(poly: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Area vectors (T, 3) of the triangulation of a polygon (as a cycle) with the largest total area."""
    n = len(poly)

    def vec(i: int, k: int, j: int) -> np.ndarray:
        return np.cross(poly[k] - poly[i], poly[j] - poly[i]) / 2

    @functools.lru_cache(maxsize=None)
    def best(i: int, j: int) -> tuple[float, tuple[tuple[int, int, int], ...]]:
        if j - i < 2:
            return 0.0, ()
        options = []
        for k in range(i + 1, j):
            (al, tl), (ar, tr) = best(i, k), best(k, j)
            options.append((al + ar + float(np.linalg.norm(vec(i, k, j))), tl + tr + ((i, k, j),)))
        top = max(a for a, _ in options)
        return next(o for o in options if o[0] >= top - 1e-12)

    return [vec(*t) for t in best(0, n - 1)[1]]


@functools.lru_cache(maxsize=1)
def _unit_triangles() -> tuple[np.ndarray, ...]:
    """Per code (256), the (T, 3) area vectors of its triangles at unit spacing."""
    out = []
    for code in range(256):
        vectors = [v for poly in _polygons(code) for v in _largest_area_triangulation(poly)]
        out.append(np.array(vectors, dtype=np.float64).reshape(-1, 3))
    return tuple(out)


def surfel_area_table(spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """(256,) surfel area of every neighbourhood code for a voxel ``spacing`` (s0, s1, s2)."""
    s = np.asarray(spacing, dtype=np.float64)
    if s.shape != (3,):
        raise ValueError(f"spacing must have 3 values, got {tuple(spacing)}")
    scale = np.array([s[1] * s[2], s[0] * s[2], s[0] * s[1]])
    return np.array([np.linalg.norm(t * scale, axis=1).sum() for t in _unit_triangles()])


def _neighbour_codes(mask: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Codes (hi - lo + 2 per axis) of the mask cropped to [lo, hi]: corner i covers voxels i - 1 and i."""
    crop = mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1].astype(np.int64)
    padded = np.pad(crop, 1)  # empty voxel before and after the crop on every axis
    n = tuple(hi - lo + 2)
    codes = np.zeros(n, dtype=np.int64)
    for a, b, c in _CORNERS:
        codes += _CORNER_BITS[a, b, c] * padded[a : a + n[0], b : b + n[1], c : c + n[2]]
    return codes


def surface_distances(
    mask_gt: np.ndarray, mask_pred: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> dict[str, np.ndarray]:
    """Distances of every surfel of each 3D mask to the other mask's surface, and the surfel areas.

    Args:
        mask_gt, mask_pred: (X, Y, Z) masks (anything that is nonzero is inside).
        spacing: voxel size (3,) (the challenge: ones, distances in voxels).

    Returns:
        ``distances_gt_to_pred``, ``surfel_areas_gt``, ``distances_pred_to_gt``, ``surfel_areas_pred``: (N,) float64
        arrays sorted by distance (ties by area); empty when the mask is empty, ``inf`` distances when the other is.
    """
    gt, pred = np.asarray(mask_gt).astype(bool), np.asarray(mask_pred).astype(bool)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(f"expected two 3D masks of one shape, got {gt.shape} and {pred.shape}")
    sp = np.asarray(spacing, dtype=np.float64)
    table = surfel_area_table(sp)
    union = np.argwhere(gt | pred)
    if union.size == 0:
        empty = np.zeros(0)
        return dict(
            distances_gt_to_pred=empty, surfel_areas_gt=empty, distances_pred_to_gt=empty, surfel_areas_pred=empty
        )
    lo, hi = union.min(axis=0), union.max(axis=0)
    codes = {k: _neighbour_codes(m, lo, hi) for k, m in (("gt", gt), ("pred", pred))}
    border = {k: (c != 0) & (c != 255) for k, c in codes.items()}
    dist = {
        k: ndimage.distance_transform_edt(~b, sampling=sp) if b.any() else np.full(b.shape, np.inf)
        for k, b in border.items()
    }
    out = {}
    for a, b in (("gt", "pred"), ("pred", "gt")):
        d, area = dist[b][border[a]], table[codes[a][border[a]]]
        order = np.lexsort((area, d))
        out[f"distances_{a}_to_{b}"], out[f"surfel_areas_{a}"] = d[order], area[order]
    return out


def _percentile_distance(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    if len(distances) == 0:
        return float("inf")
    cumulative = np.cumsum(areas) / np.sum(areas)
    index = int(np.searchsorted(cumulative, percent / 100.0))
    return float(distances[min(index, len(distances) - 1)])


def robust_hausdorff(distances: dict[str, np.ndarray], percent: float = 95.0) -> float:
    """Area-weighted ``percent`` Hausdorff distance of :func:`surface_distances` (``inf`` when a mask is empty)."""
    return max(
        _percentile_distance(distances["distances_gt_to_pred"], distances["surfel_areas_gt"], percent),
        _percentile_distance(distances["distances_pred_to_gt"], distances["surfel_areas_pred"], percent),
    )


def hd95(mask_gt: np.ndarray, mask_pred: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """The challenge's HD95 of two 3D masks (in voxels with the default unit spacing, in mm with the voxel size)."""
    return robust_hausdorff(surface_distances(mask_gt, mask_pred, spacing), 95.0)
