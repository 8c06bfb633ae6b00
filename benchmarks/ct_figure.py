"""The figure of the known-motion CT benchmark (:mod:`benchmarks.benchmark_ct_refine` ``--figure``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))[None]


def figure(case: dict, fields: dict[str, np.ndarray], path: Path, body: np.ndarray) -> None:
    """Coronal slice through the cavity, superior up. Top: fixed, moving, and the moving image warped by our
    refinement and by the best classical baseline present. Bottom: the S component (mm) of the true field and of
    those fields (and of the Jacobian-only refinement): the true one jumps at the cavity wall (black contour)
    where the contents slide along it. ``body``: the body mask (bool, the fixed grid), which bounds the slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from monai.networks.blocks import Warp

    affine, spacing = case["affine"], case["spacing"]
    direction = affine[:3, :3] / spacing
    s_axis = int(np.argmax(np.abs(direction[2])))
    a_axis = int(np.argmax(np.abs(direction[1])))
    lr_axis = 3 - s_axis - a_axis
    e_s = direction.T @ np.array([0.0, 0.0, 1.0])  # patient S in the array-axis frame
    cav = case["cavity"]
    idx = int(np.argmax(cav.sum(axis=tuple(k for k in range(3) if k != a_axis))))  # coronal slice through the cavity
    lr_extent = np.nonzero(np.take(body, idx, axis=a_axis).any(axis=1 if lr_axis < s_axis else 0))[0]

    def coronal(volume: np.ndarray) -> np.ndarray:
        sl = np.take(volume, idx, axis=a_axis)  # axes (lr, s) in increasing axis order
        sl = (sl if lr_axis < s_axis else sl.T)[lr_extent.min() : lr_extent.max() + 1].T  # rows: S, columns: LR
        return sl[::-1] if direction[2, s_axis] > 0 else sl  # superior at the top

    def s_component(ddf: np.ndarray) -> np.ndarray:
        return np.einsum("i,i...->...", e_s, ddf * spacing[:, None, None, None])

    warp = Warp(mode="bilinear", padding_mode="border")
    ours = "refine_full" if "refine_full" in fields else None
    base = next((m for m in ("elastix_rigidity", "elastix", "ants_syn") if m in fields), None)
    images = [("fixed", case["fixed"]), ("moving", case["moving"])]
    maps = [("true", case["ddf"])]
    for name in (ours, "refine_jacobian", base):
        if name is not None and name in fields:
            if name != "refine_jacobian":
                warped = warp(_t(case["moving"])[None], _t(fields[name]).float())[0, 0].numpy()
                images.append((f"warped: {name}", warped))
            maps.append((name, fields[name]))
    cols = max(len(images), len(maps))
    aspect = spacing[s_axis] / spacing[lr_axis]
    fig, axes = plt.subplots(2, cols, figsize=(2.4 * cols, 2.0), squeeze=False)
    vmax = float(np.abs(s_component(case["ddf"])).max())
    contour = coronal(cav.astype(float))
    im = None
    for row, panels in enumerate((images, maps)):
        for col in range(cols):
            ax = axes[row, col]
            ax.axis("off")
            if col >= len(panels):
                continue
            title, vol = panels[col]
            if row == 0:
                ax.imshow(coronal(vol), aspect=aspect, cmap="gray", vmin=-250, vmax=250, interpolation="nearest")
            else:
                vol, title = s_component(vol), f"u_S {title} (mm)"
                im = ax.imshow(coronal(vol), aspect=aspect, cmap="coolwarm", vmin=-vmax, vmax=vmax)
            ax.contour(contour, [0.5], colors="k", linewidths=0.5)
            ax.set_title(title, fontsize=6)
    if im is not None:
        fig.colorbar(im, ax=axes[1, :].tolist(), fraction=0.02, pad=0.01)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
