"""The small fixed Learn2Reg case of tests/test_learn2reg.py (its reference values came from the official code).

Analytic (no random numbers), so that the same arrays are rebuilt anywhere: two 24^3 label maps with ellipsoids
and a box on the border, labels 1..5 (4: fixed only, 5: moving only -> skipped), and a smooth field of up to ~3
voxels that sends some points just outside the grid (the border convention of the label warp matters)."""

import numpy as np

SHAPE = (24, 24, 24)
SPACING = (1.5, 1.0, 2.0)  # written in the NIfTI headers (the official evaluation ignores it: HD95 in voxels)
LABELS = [1, 2, 3, 4, 5]


def _ellipsoid(centre, radii) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij"))
    c, r = np.asarray(centre)[:, None, None, None], np.asarray(radii)[:, None, None, None]
    return (((grid - c) / r) ** 2).sum(axis=0) <= 1.0


def label_maps() -> tuple[np.ndarray, np.ndarray]:
    """(fixed, moving) uint8 label maps of shape SHAPE."""
    fixed, moving = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    fixed[_ellipsoid((8.3, 9.1, 11.7), (5.2, 4.1, 6.3))] = 1
    fixed[_ellipsoid((16.2, 15.4, 10.3), (4.3, 6.1, 3.6))] = 2
    fixed[0:5, 18:24, 2:9] = 3
    fixed[_ellipsoid((18.1, 5.2, 19.4), (2.6, 2.2, 2.9))] = 4
    moving[_ellipsoid((9.6, 8.2, 12.9), (5.6, 3.8, 6.0))] = 1
    moving[_ellipsoid((14.9, 16.8, 11.1), (4.0, 6.4, 3.9))] = 2
    moving[0:4, 19:24, 3:11] = 3
    moving[_ellipsoid((4.2, 4.4, 20.1), (2.1, 2.5, 2.3))] = 5
    return fixed, moving


def displacement() -> np.ndarray:
    """(24, 24, 24, 3) float32 field in voxels of the fixed grid (a submission's content)."""
    x = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij")) / 24.0
    u0 = 1.1 + 1.6 * np.sin(2 * np.pi * x[1] + 0.3) * np.cos(np.pi * x[2])
    u1 = -0.7 + 1.9 * np.sin(np.pi * x[0] + 0.5) * np.sin(2 * np.pi * x[2] + 0.2)
    u2 = 0.4 + 1.3 * np.cos(2 * np.pi * x[0]) * np.sin(np.pi * x[1] + 0.1)
    return np.stack([u0, u1, u2], axis=-1).astype(np.float32)
