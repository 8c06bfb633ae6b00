"""Figures: fixed / moving / warped slices with the deformation grid drawn over the warped image."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

__all__ = ["save_registration_figure"]


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

    field = ddf.detach().float().cpu().select(axis + 1, index)  # (3, H, W)
    rows, cols = torch.meshgrid(
        torch.arange(field.shape[1], dtype=torch.float32),
        torch.arange(field.shape[2], dtype=torch.float32),
        indexing="ij",
    )
    # the deformed grid: where each fixed-grid point samples the moving image, x + u(x)
    warped_rows, warped_cols = rows + field[in_plane[0]], cols + field[in_plane[1]]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    panels = [("fixed", cut(fixed)), ("moving", cut(moving)), ("warped moving", cut(warped))]
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(image.T, cmap="gray", origin="lower", vmin=0, vmax=max(1e-6, float(cut(fixed).max())))
        ax.set_title(title)
    axes[3].imshow(cut(warped).T, cmap="gray", origin="lower", vmin=0, vmax=max(1e-6, float(cut(fixed).max())))
    for i in range(0, field.shape[1], grid_step):
        axes[3].plot(warped_rows[i, :], warped_cols[i, :], color="tab:orange", linewidth=0.6)
    for j in range(0, field.shape[2], grid_step):
        axes[3].plot(warped_rows[:, j], warped_cols[:, j], color="tab:orange", linewidth=0.6)
    axes[3].set_xlim(-0.5, field.shape[1] - 0.5)
    axes[3].set_ylim(-0.5, field.shape[2] - 0.5)
    axes[3].set_title("deformation grid")
    for ax in axes:
        ax.set_xlabel(f"axis {in_plane[0]}")
        ax.set_ylabel(f"axis {in_plane[1]}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
