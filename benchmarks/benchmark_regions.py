"""Benchmark: regularisation mask + sliding normals on a synthetic 192x160x256 torso, vs a per-voxel PCA loop.

The label map carries TotalSegmentator v2 names (so configs/regions.json applies): lung lobes, heart, liver,
spleen, stomach, kidneys, adrenal glands, pancreas, duodenum, small bowel, colon, aorta, inferior vena cava,
portal vein, vertebrae (boxes) and ribs (tubes), 2 mm voxels. Timings use 2 threads.

    python -m benchmarks.benchmark_regions [--threads 2] [--loop_voxels 2000] [--k 40]
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # thread limits must be set before numpy / torch load their thread pools
    _threads = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "2"
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)

import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from scripts.regions.labels import SLIDING, TOTALSEG_V2_TOTAL  # noqa: E402
from scripts.regions.masks import build_regularisation_mask, load_region_spec  # noqa: E402
from scripts.regions.normals import compute_normals  # noqa: E402

SHAPE = (192, 160, 256)
SPACING = (2.0, 2.0, 2.0)  # mm: 384 x 320 x 512 mm, thorax + abdomen


def _grid(shape=SHAPE, spacing=SPACING) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open (broadcastable) physical coordinate grids x, y, z in mm."""
    return tuple(
        (np.arange(n, dtype=np.float32) * s).reshape([-1 if a == i else 1 for a in range(3)])
        for i, (n, s) in enumerate(zip(shape, spacing))
    )


def _ellipsoid(grid, centre, semi) -> np.ndarray:
    """Bool mask of an axis-aligned ellipsoid (mm)."""
    return sum(((g - c) / s) ** 2 for g, c, s in zip(grid, centre, semi)) <= 1.0


def _tube(grid, points: np.ndarray, radius: float) -> np.ndarray:
    """Bool mask of a tube of ``radius`` mm around a polyline (M, 3) mm, sampled densely (distance to samples)."""
    seg = np.concatenate(
        [np.linspace(a, b, max(int(np.linalg.norm(b - a) / 1.0), 2)) for a, b in zip(points[:-1], points[1:])]
    )
    lo = np.maximum(seg.min(0) - radius, 0)
    hi = seg.max(0) + radius
    sl = tuple(slice(int(lo[i] // SPACING[i]), min(int(hi[i] // SPACING[i]) + 2, SHAPE[i])) for i in range(3))
    pts = np.stack(np.meshgrid(*[g.ravel()[s] for g, s in zip(grid, sl)], indexing="ij"), axis=-1).reshape(-1, 3)
    dist, _ = cKDTree(seg).query(pts, k=1)
    out = np.zeros(SHAPE, dtype=bool)
    out[sl] = (dist <= radius).reshape(tuple(s.stop - s.start for s in sl))
    return out


def synthetic_torso() -> np.ndarray:
    """Synthetic TotalSegmentator-labelled torso, uint8 (192, 160, 256): axis 0 right->left, 1 anterior->
    posterior, 2 inferior->superior. Later structures overwrite earlier ones, which makes organs touch."""
    t = TOTALSEG_V2_TOTAL
    g = _grid()
    x, y, z = g
    lab = np.zeros(SHAPE, dtype=np.uint8)

    def paint(mask, name):
        lab[mask] = t[name]

    # lungs, split into lobes by oblique fissure planes
    right = _ellipsoid(g, (128, 160, 400), (62, 85, 115))
    left = _ellipsoid(g, (256, 160, 400), (58, 85, 115))
    oblique = (z - 380) + 0.8 * (y - 160)  # > 0: upper part
    paint(right & (oblique <= 0), "lung_lower_lobe_right")
    paint(right & (oblique > 0) & (z - 420 - 0.3 * (y - 160) <= 0), "lung_middle_lobe_right")
    paint(right & (z - 420 - 0.3 * (y - 160) > 0) & (oblique > 0), "lung_upper_lobe_right")
    paint(left & (oblique <= 0), "lung_lower_lobe_left")
    paint(left & (oblique > 0), "lung_upper_lobe_left")
    paint(_ellipsoid(g, (205, 115, 335), (58, 48, 52)), "heart")
    paint(_ellipsoid(g, (130, 150, 262), (88, 78, 62)), "liver")  # its dome cuts into the right lung base
    paint(_ellipsoid(g, (285, 205, 285), (30, 45, 52)), "spleen")
    paint(_ellipsoid(g, (245, 120, 262), (42, 36, 45)), "stomach")
    paint(_ellipsoid(g, (262, 232, 205), (26, 30, 52)), "kidney_left")
    paint(_ellipsoid(g, (122, 232, 192), (26, 30, 52)), "kidney_right")
    paint(_ellipsoid(g, (250, 222, 255), (14, 10, 12)), "adrenal_gland_left")
    paint(_ellipsoid(g, (135, 222, 246), (14, 10, 12)), "adrenal_gland_right")
    paint(_ellipsoid(g, (205, 172, 218), (62, 14, 14)), "pancreas")
    paint(_ellipsoid(g, (160, 160, 205), (16, 16, 36)), "duodenum")
    paint(_ellipsoid(g, (192, 110, 140), (85, 55, 60)), "small_bowel")
    colon = _ellipsoid(g, (192, 130, 140), (125, 75, 95)) & ~_ellipsoid(g, (192, 130, 140), (100, 75, 70))
    paint(colon & (lab == 0), "colon")
    paint(_tube(g, np.array([[205, 195, 90], [205, 195, 380]], np.float32), 12), "aorta")
    paint(_tube(g, np.array([[168, 192, 90], [168, 192, 300]], np.float32), 12), "inferior_vena_cava")
    paint(
        _tube(g, np.array([[150, 170, 245], [200, 182, 232], [275, 200, 240]], np.float32), 6),
        "portal_vein_and_splenic_vein",
    )
    # vertebrae: boxes of 22 mm with 4 mm discs, L5 at the bottom to T1 at the top
    names = [f"vertebrae_L{i}" for i in range(5, 0, -1)] + [f"vertebrae_T{i}" for i in range(12, 0, -1)]
    for i, name in enumerate(names):
        z0 = 40 + 26 * i
        paint((abs(x - 192) <= 20) & (abs(y - 240) <= 16) & (z >= z0) & (z < z0 + 22), name)
    # ribs: tubes from the spine round the body, descending anteriorly
    theta = np.linspace(0.25, 2.4, 24)
    for i in range(1, 13):
        z_post = 505 - 21 * (i - 1)
        for side, sign in (("left", 1), ("right", -1)):
            pts = np.stack(
                [192 + sign * 133 * np.sin(theta), 160 + 112 * np.cos(theta), z_post - 30 * theta / 2.4], axis=1
            ).astype(np.float32)
            paint(_tube(g, pts, 5) & (lab == 0), f"rib_{side}_{i}")
    return lab


def per_voxel_pca_seconds(sliding: np.ndarray, k: int, n_sample: int, spacing=SPACING, seed: int = 0) -> float:
    """Seconds for the reference-style loop (one kNN query + one small PCA per voxel) on ``n_sample`` voxels."""
    points = np.argwhere(sliding) * np.asarray(spacing)
    tree = cKDTree(points)
    sample = np.random.default_rng(seed).choice(len(points), size=min(n_sample, len(points)), replace=False)
    try:  # the reference code fits scikit-learn's PCA per voxel
        from sklearn.decomposition import PCA
    except ImportError:
        PCA = None
    start = time.perf_counter()
    for i in sample:
        _, nb = tree.query(points[i], k=k)
        if PCA is not None:
            PCA(n_components=3).fit(points[nb]).components_[-1]
        else:
            centred = points[nb] - points[nb].mean(axis=0)
            np.linalg.eigh(centred.T @ centred)[1][:, 0]
    return time.perf_counter() - start, ("sklearn PCA" if PCA is not None else "numpy eigh")


def run(threads: int = 2, loop_voxels: int = 2000, k: int = 40, repeats: int = 2) -> dict:
    """Time mask + normals (knn and gaussian) and the per-voxel loop; print and return the figures."""
    try:
        import torch

        torch.set_num_threads(int(threads))
    except ImportError:
        pass
    t0 = time.perf_counter()
    labels = synthetic_torso()
    t_build = time.perf_counter() - t0
    spec = load_region_spec()
    best = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        mask = build_regularisation_mask(labels, spec)
        t1 = time.perf_counter()
        compute_normals(mask == SLIDING, k=k, spacing=SPACING, method="knn")
        t2 = time.perf_counter()
        compute_normals(mask == SLIDING, spacing=SPACING, method="gaussian")
        t3 = time.perf_counter()
        for key, val in (("mask", t1 - t0), ("knn", t2 - t1), ("gaussian", t3 - t2)):
            best[key] = min(best.get(key, np.inf), val)
    n_sliding = int((mask == SLIDING).sum())
    loop_s, loop_kind = per_voxel_pca_seconds(mask == SLIDING, k, loop_voxels)
    n_loop = min(loop_voxels, n_sliding)
    loop_all = loop_s * n_sliding / n_loop
    result = {
        "shape": SHAPE,
        "voxels": int(labels.size),
        "labels_present": int(len(np.unique(labels)) - 1),
        "rigid_voxels": int((mask == 1).sum()),
        "sliding_voxels": n_sliding,
        "synthetic_labels_s": t_build,
        "mask_s": best["mask"],
        "normals_knn_s": best["knn"],
        "normals_gaussian_s": best["gaussian"],
        "mask_plus_knn_s": best["mask"] + best["knn"],
        "mask_plus_gaussian_s": best["mask"] + best["gaussian"],
        "loop_kind": loop_kind,
        "loop_voxels": n_loop,
        "loop_s": loop_s,
        "loop_extrapolated_s": loop_all,
        "speedup_knn": loop_all / best["knn"],
    }
    print(f"volume {SHAPE} = {labels.size} voxels, {result['labels_present']} labels, spacing {SPACING} mm")
    print(f"rigid voxels {result['rigid_voxels']}, sliding voxels {n_sliding}; threads {threads}, k = {k}")
    print(f"mask                      {best['mask']:8.2f} s")
    print(f"normals knn (batched)     {best['knn']:8.2f} s   -> mask + normals {result['mask_plus_knn_s']:.2f} s")
    total = result["mask_plus_gaussian_s"]
    print(f"normals gaussian          {best['gaussian']:8.2f} s   -> mask + normals {total:.2f} s")
    print(
        f"per-voxel loop ({loop_kind}) {loop_s:.2f} s for {n_loop} voxels -> {loop_all:.1f} s extrapolated to "
        f"{n_sliding} voxels; batched knn is {result['speedup_knn']:.0f}x faster"
    )
    return result


def main(threads: int = 2, loop_voxels: int = 2000, k: int = 40, repeats: int = 2) -> None:
    """Command line: print the figures (``run`` returns them as a dict)."""
    run(threads, loop_voxels, k, repeats)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
