"""Figures: fixed / moving / warped slices with the deformation grid drawn over the warped image."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

__all__ = ["save_registration_figure", "save_sliding_figure"]


def _save(fig, path: str | Path) -> Path:
    """Lay out, write (100 dpi, folders created) and close a figure."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_deformed_grid(ax, ddf: torch.Tensor, axis: int, index: int, grid_step: int) -> None:
    """Draw the deformed grid of a slice on ``ax``: where each fixed-grid point x samples the moving image, x + u(x),
    every ``grid_step`` voxels along the two in-plane axes. ``ddf``: (3, X, Y, Z) voxels."""
    in_plane = [a for a in range(3) if a != axis]
    field = ddf.detach().float().cpu().select(axis + 1, index)  # (3, H, W)
    rows, cols = torch.meshgrid(
        torch.arange(field.shape[1], dtype=torch.float32),
        torch.arange(field.shape[2], dtype=torch.float32),
        indexing="ij",
    )
    warped_rows, warped_cols = rows + field[in_plane[0]], cols + field[in_plane[1]]
    for i in range(0, field.shape[1], grid_step):
        ax.plot(warped_rows[i, :], warped_cols[i, :], color="tab:orange", linewidth=0.6)
    for j in range(0, field.shape[2], grid_step):
        ax.plot(warped_rows[:, j], warped_cols[:, j], color="tab:orange", linewidth=0.6)
    ax.set_xlim(-0.5, field.shape[1] - 0.5)
    ax.set_ylim(-0.5, field.shape[2] - 0.5)


def save_registration_figure(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    warped: torch.Tensor,
    ddf: torch.Tensor,
    path: str | Path,
    axis: int = 2,
    index: int | None = None,
    grid_step: int = 4,
) -> Path:
    """Save a PNG of one slice (the paper's Fig. 4 style).

    Args:
        fixed, moving, warped: (X, Y, Z) images.
        ddf: (3, X, Y, Z) displacement in voxels (channel k along array axis k).
        axis: array axis normal to the slice; index: slice index (default: the middle).
        grid_step: spacing of the drawn grid lines, voxels.
    """
    index = fixed.shape[axis] // 2 if index is None else index
    in_plane = [a for a in range(3) if a != axis]

    def cut(volume: torch.Tensor) -> torch.Tensor:
        return volume.detach().float().cpu().select(axis, index)

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    panels = [("fixed", cut(fixed)), ("moving", cut(moving)), ("warped moving", cut(warped))]
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(image.T, cmap="gray", origin="lower", vmin=0, vmax=max(1e-6, float(cut(fixed).max())))
        ax.set_title(title)
    axes[3].imshow(cut(warped).T, cmap="gray", origin="lower", vmin=0, vmax=max(1e-6, float(cut(fixed).max())))
    draw_deformed_grid(axes[3], ddf, axis, index, grid_step)
    axes[3].set_title("deformation grid")
    for ax in axes:
        ax.set_xlabel(f"axis {in_plane[0]}")
        ax.set_ylabel(f"axis {in_plane[1]}")
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def save_sliding_figure(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    results: dict[str, tuple[torch.Tensor, torch.Tensor]],
    path: str | Path,
    true_ddf: torch.Tensor | None = None,
    axis: int = 2,
    index: int | None = None,
    grid_step: int = 2,
    tangent: int = 0,
) -> Path:
    """Save a PNG comparing models on one slice of a sliding pair: one row per model with fixed, moving, warped,
    the deformation grid over the warped image, and the tangential displacement across the slice (the slip).

    Args:
        fixed, moving: (X, Y, Z) images.
        results: model name -> (warped (X, Y, Z), ddf (3, X, Y, Z) voxels), one row each.
        true_ddf: optional (3, X, Y, Z) true field, drawn in the profile panel.
        axis: array axis normal to the slice; index: slice index (default: the middle).
        grid_step: spacing of the drawn grid lines, voxels.
        tangent: the displacement component drawn in the profile (shearing set: axis 0, the sliding direction); the
            profile runs along the other in-plane axis through the middle of the slice (across the contact plane).
    """
    index = fixed.shape[axis] // 2 if index is None else index
    in_plane = [a for a in range(3) if a != axis]
    if tangent not in in_plane:
        raise ValueError(f"tangent must be an in-plane axis {in_plane} of a slice normal to axis {axis}, got {tangent}")
    across = in_plane[1] if tangent == in_plane[0] else in_plane[0]

    def cut(volume: torch.Tensor) -> torch.Tensor:
        return volume.detach().float().cpu().select(axis, index)

    def profile(ddf: torch.Tensor) -> torch.Tensor:
        plane = cut(ddf[tangent])  # (H, W) over in_plane[0], in_plane[1]
        middle = plane.shape[in_plane.index(tangent)] // 2
        return plane.select(in_plane.index(tangent), middle)

    vmax = max(1e-6, float(cut(fixed).max()))
    fig, axes = plt.subplots(len(results), 5, figsize=(16, 3.4 * len(results)), squeeze=False)
    for row, (name, (warped, ddf)) in enumerate(results.items()):
        panels = [("fixed", cut(fixed)), ("moving", cut(moving)), (f"warped ({name})", cut(warped))]
        ax = axes[row]
        for a, (title, image) in zip(ax, panels + [("deformation grid", cut(warped))]):
            a.imshow(image.T, cmap="gray", origin="lower", vmin=0, vmax=vmax)
            a.set_title(title, fontsize=9)
            a.set_xticks([])
            a.set_yticks([])
            a.set_xlabel(f"axis {in_plane[0]}")
            a.set_ylabel(f"axis {in_plane[1]}")
        draw_deformed_grid(ax[3], ddf, axis, index, grid_step)
        ax[4].plot(profile(ddf).numpy(), marker=".", label=name)
        if true_ddf is not None:
            ax[4].plot(profile(true_ddf).numpy(), color="black", linestyle="--", label="true")
        ax[4].set_xlabel(f"axis {across} (voxels)")
        ax[4].set_ylabel(f"u along axis {tangent} (voxels)")
        ax[4].set_title("tangential displacement across the plane", fontsize=9)
        ax[4].legend(fontsize=8)
    return _save(fig, path)
