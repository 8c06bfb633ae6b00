"""Learn2Reg conventions: submission file names, the challenge's metrics, scoring a submission file, grid check.

The challenge's evaluation (github.com/MDL-UzL/L2R: ``evaluation/evaluation.py`` + ``utils.py``, and the older
grand-challenge template ``evaluation/L2RTest/evaluation.py``) reads a displacement field ``disp`` (X, Y, Z, 3) in
voxels of the FIXED image's full grid (warped(x) = moving(x + disp(x)), as our ``ddf``) and computes:

- SDlogJ: det of I + grad u by central differences (zero padding), 2 border voxels cropped on every side, then
  ``std(log((det + 3).clip(1e-9, 1e9)))`` (population std; the "+ 3" is the challenge's, reproduced as is).
- DSC / HD95: the moving labels warped with ``scipy.ndimage.map_coordinates(order=0)`` (mode "constant", 0 outside:
  a point up to half a voxel outside the grid reads 0, where MONAI's nearest ``Warp`` reads the border label), per
  label of the task's list (AbdomenCTCT: 1..13); a label absent from the fixed OR the moving labels is skipped (NaN);
  the pair's value is the mean over the others. HD95 is :func:`scripts.evaluation.surface_distance.hd95` with UNIT
  spacing: in voxels of the evaluation grid (AbdomenCTCT: 2 mm), whatever the image spacing.

File names: ``<Task>_<case 4 digits>_<modality 4 digits>.nii.gz`` inputs. The maintained script
(``evaluation/evaluation.py``) always accepts ``disp_FFFF_fffF_MMMM_mmmm`` (case and modality of fixed and moving)
and ``disp_FFFF_MMMM`` only for fixed modality 0000 and moving 0001; the template (``L2RTest/evaluation.py``)
accepts ``disp_FFFF_MMMM`` (and only it) when the modalities are equal or 0000 -> 0001, the long name otherwise.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy.ndimage import map_coordinates

from scripts.evaluation.surface_distance import hd95
from scripts.io.image_io import image_stem
from scripts.regions.labels import LEARN2REG_ABDOMEN_LABELS

__all__ = [
    "L2R_ABDOMEN_LABELS",
    "NAMINGS",
    "parse_learn2reg_name",
    "submission_names",
    "accepted_names",
    "grid_mismatch",
    "l2r_jacobian_determinant",
    "l2r_sdlogj",
    "l2r_warp_labels",
    "warp_labels",
    "label_scores",
    "score_field",
    "score_submission",
    "l2r_dice_per_label",
    "l2r_hd95_per_label",
    "learn2reg_metrics",
]

L2R_ABDOMEN_LABELS = tuple(LEARN2REG_ABDOMEN_LABELS)  # 1..13
NAMINGS = ("official", "template", "both")


# ----------------------------------------------------------------------------------------------------------------------
# submission file names
def _stem(path: Any) -> str:
    name = Path(str(path)).name
    return name[: -len(".npz")] if name.endswith(".npz") else image_stem(name)


def parse_learn2reg_name(path: Any) -> tuple[str, str]:
    """(case, modality) as 4-digit strings of ``<Task>_<case>_<modality>.nii.gz``; any other name: its last number
    is the case id and the modality is ``0000``. ValueError naming the file when the name holds no number."""
    stem = _stem(path)
    match = re.search(r"_(\d{4})_(\d{4})$", stem)
    if match:
        return match.group(1), match.group(2)
    numbers = re.findall(r"\d+", stem)
    if not numbers:
        raise ValueError(
            f"{path}: no case number in the file name (Learn2Reg names are <Task>_<case>_<modality>.nii.gz)"
        )
    return f"{int(numbers[-1]):04d}", "0000"


def _long_short(fixed: Any, moving: Any) -> tuple[str, str, bool, bool]:
    (fc, fm), (mc, mm) = parse_learn2reg_name(fixed), parse_learn2reg_name(moving)
    short_official = fm == "0000" and mm == "0001"
    short_template = fm == mm or short_official
    return f"disp_{fc}_{fm}_{mc}_{mm}", f"disp_{fc}_{mc}", short_official, short_template


def submission_names(fixed: Any, moving: Any, naming: str = "official", ext: str = ".nii.gz") -> list[str]:
    """The submission file name(s) of a pair, from the fixed and moving image file names.

    ``naming``: "official" -> ``disp_FFFF_ffff_MMMM_mmmm`` (accepted by the maintained ``evaluation/evaluation.py``
    for every pair); "template" -> the name the grand-challenge template ``L2RTest/evaluation.py`` reads
    (``disp_FFFF_MMMM`` for equal modalities or 0000 -> 0001, else the long name); "both" -> both (one name when they
    coincide)."""
    if naming not in NAMINGS:
        raise ValueError(f"unknown Learn2Reg naming {naming!r}; choose one of {NAMINGS}")
    long, short, _, short_template = _long_short(fixed, moving)
    template = short if short_template else long
    names = {"official": [long], "template": [template], "both": [long] if template == long else [long, template]}
    return [n + ext for n in names[naming]]


def accepted_names(fixed: Any, moving: Any) -> list[str]:
    """Stems (no extension) a submission of the pair may have, the long name first: what either script reads."""
    long, short, short_official, short_template = _long_short(fixed, moving)
    return [long, short] if (short_official or short_template) else [long]


def grid_mismatch(fixed: Any, moving: Any, atol: float = 1e-3) -> str | None:
    """A warning text when the fixed and moving images are not on one grid (shape or affine differ), else None.

    The challenge warps the moving labels in array indices of the fixed grid: a field that is physically right for
    images on different grids is scored as if they were on one. ``fixed``/``moving``: file paths, nibabel images or
    ``(shape, affine)`` pairs; ``atol``: affine tolerance (mm)."""

    def grid(x: Any) -> tuple[tuple[int, ...], np.ndarray]:
        if isinstance(x, (str, os.PathLike)):
            import nibabel as nib

            x = nib.load(str(x))
        if hasattr(x, "affine"):
            return tuple(x.shape[:3]), np.asarray(x.affine, dtype=np.float64)
        shape, affine = x
        return tuple(int(s) for s in shape[:3]), np.asarray(affine, dtype=np.float64)

    (fs, fa), (ms, ma) = grid(fixed), grid(moving)
    problems = []
    if fs != ms:
        problems.append(f"shapes {fs} and {ms}")
    if not np.allclose(fa, ma, rtol=0.0, atol=atol):
        problems.append(f"affines differ (max |difference| {np.abs(fa - ma).max():.4g})")
    if not problems:
        return None
    names = "" if not isinstance(fixed, (str, os.PathLike)) else f" ({fixed} and {moving})"
    return (
        f"fixed and moving images are not on the same grid{names}: {', '.join(problems)}. The Learn2Reg evaluation "
        "warps the moving labels in array indices of the fixed grid, so it will not score this pair's (physically "
        "correct) field as intended; resample the moving image onto the fixed grid first."
    )


# ----------------------------------------------------------------------------------------------------------------------
# metrics (torch, batched: the evaluation workflow)
def l2r_jacobian_determinant(ddf: torch.Tensor) -> torch.Tensor:
    """Learn2Reg's Jacobian determinant of a displacement field (B, 3, X, Y, Z) in voxels: (B, X-4, Y-4, Z-4).

    Central differences (the challenge's zero padding only touches the outermost voxels, which its 2-voxel border
    crop removes: this is the same as the interior central differences computed here)."""
    if ddf.ndim != 5 or ddf.shape[1] != 3 or min(ddf.shape[2:]) < 5:
        raise ValueError(f"expected a (B, 3, X, Y, Z) field with every X, Y, Z >= 5, got {tuple(ddf.shape)}")
    u = ddf.double()
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2), slice(2, -2))

    def d(axis: int) -> torch.Tensor:  # (B, 3, X-4, Y-4, Z-4): d u_c / d x_axis at the cropped voxels
        return (torch.roll(u, -1, dims=2 + axis)[inner] - torch.roll(u, 1, dims=2 + axis)[inner]) / 2

    g = torch.stack([d(0), d(1), d(2)], dim=2)  # (B, 3 components, 3 axes, ...)
    j = g + torch.eye(3, dtype=g.dtype, device=g.device).reshape(1, 3, 3, 1, 1, 1)
    return torch.linalg.det(j.permute(0, 3, 4, 5, 1, 2)).to(ddf.dtype)


def l2r_sdlogj(ddf: torch.Tensor) -> torch.Tensor:
    """Learn2Reg SDlogJ per pair: (B,), the challenge's ``std(log((det J + 3).clip(1e-9, 1e9)))``."""
    det = l2r_jacobian_determinant(ddf).double()
    logj = torch.log((det + 3.0).clamp(1e-9, 1e9))
    return logj.reshape(logj.shape[0], -1).std(dim=1, unbiased=False).to(ddf.dtype)


def warp_labels(moving_label: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """The challenge's label warp: moving labels (X', Y', Z') at ``identity + disp`` of the fixed grid, nearest
    neighbour, 0 outside (``map_coordinates(order=0)``). ``disp``: (X, Y, Z, 3) voxels. Returns (X, Y, Z) float64."""
    disp = np.asarray(disp, dtype=np.float64)
    if disp.ndim != 4 or disp.shape[-1] != 3:
        raise ValueError(f"expected a (X, Y, Z, 3) displacement field, got {disp.shape}")
    identity = np.stack(np.meshgrid(*[np.arange(n) for n in disp.shape[:3]], indexing="ij"))
    return map_coordinates(np.asarray(moving_label, dtype=np.float64), identity + disp.transpose(3, 0, 1, 2), order=0)


def l2r_warp_labels(moving_label: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """Moving labels (B, 1, *S) warped by ``ddf`` (B, 3, *S, voxels) as the challenge does (:func:`warp_labels`):
    (B, 1, *S) of the labels' dtype."""
    m, u = moving_label.detach().cpu().numpy(), ddf.detach().cpu().double().numpy()
    out = np.stack([warp_labels(m[b, 0], u[b].transpose(1, 2, 3, 0))[None] for b in range(m.shape[0])])
    return torch.as_tensor(out).round().to(moving_label.dtype).to(moving_label.device)


def label_scores(
    fixed: np.ndarray, moving: np.ndarray, warped: np.ndarray, labels: Sequence[int], spacing: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-label Dice and HD95 (L,) of warped moving labels against the fixed ones, NaN for the labels the challenge
    skips (absent from fixed or moving). HD95 in voxels (the challenge) or, with ``spacing`` (3,), in mm."""
    sp = np.ones(3) if spacing is None else np.asarray(spacing, dtype=np.float64).reshape(3)
    dice, dist = np.full(len(labels), np.nan), np.full(len(labels), np.nan)
    for i, lab in enumerate(labels):
        f = fixed == lab
        if not f.any() or not (moving == lab).any():
            continue
        w = warped == lab
        total = f.sum() + w.sum()
        dice[i] = 2 * (f & w).sum() / total if total else 0.0
        dist[i] = hd95(f, w, sp)
    return dice, dist


def _nanmean(x: np.ndarray) -> float:
    return float(np.mean(x[~np.isnan(x)])) if (~np.isnan(x)).any() else float("nan")


def score_field(
    disp: np.ndarray,
    fixed_label: np.ndarray,
    moving_label: np.ndarray,
    labels: Sequence[int] = L2R_ABDOMEN_LABELS,
    before: bool = False,
) -> dict[str, Any]:
    """The challenge's scores of one field on the fixed image's full grid.

    Args:
        disp: (X, Y, Z, 3) displacement in voxels of the fixed grid (the submission's content).
        fixed_label: (X, Y, Z) labels; moving_label: the moving labels (same grid: see :func:`grid_mismatch`).
        labels: label ids (AbdomenCTCT: 1..13).
        before: also score the zero field (``dice_before``, ``hd95_before``: the unregistered pair).

    Returns:
        ``dice``, ``hd95`` (voxels), ``sdlogj`` (floats), ``dice_per_label``, ``hd95_per_label`` (lists, NaN where
        skipped), ``labels``; with ``before`` also ``dice_before``, ``hd95_before`` and their per-label lists.
    """
    disp = np.asarray(disp, dtype=np.float64)
    fixed_label, moving_label = np.asarray(fixed_label), np.asarray(moving_label)
    if disp.shape != fixed_label.shape + (3,):
        raise ValueError(f"field of shape {disp.shape} is not on the fixed grid {fixed_label.shape} (+ (3,))")
    labels = [int(lab) for lab in labels]
    dice, dist = label_scores(fixed_label, moving_label, warp_labels(moving_label, disp), labels)
    sdlogj = float(l2r_sdlogj(torch.from_numpy(disp.transpose(3, 0, 1, 2)[None].copy()))[0])
    out: dict[str, Any] = {"dice": _nanmean(dice), "hd95": _nanmean(dist), "sdlogj": sdlogj, "labels": labels}
    out.update(dice_per_label=dice.tolist(), hd95_per_label=dist.tolist())
    if before:
        zero = warp_labels(moving_label, np.zeros_like(disp))
        d0, h0 = label_scores(fixed_label, moving_label, zero, labels)
        out.update(dice_before=_nanmean(d0), hd95_before=_nanmean(h0))
        out.update(dice_before_per_label=d0.tolist(), hd95_before_per_label=h0.tolist())
    return out


def score_submission(
    disp_file: Any,
    fixed_label_file: Any,
    moving_label_file: Any,
    labels: Sequence[int] = L2R_ABDOMEN_LABELS,
    before: bool = False,
) -> dict[str, Any]:
    """:func:`score_field` of a submission file (``.nii.gz`` or single-array ``.npz``), read as the challenge does
    (``get_fdata``: float64). FileNotFoundError naming a missing file."""
    import nibabel as nib

    for path in (disp_file, fixed_label_file, moving_label_file):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found")
    if str(disp_file).endswith(".npz"):
        with np.load(disp_file) as z:
            if len(z.files) != 1:
                raise ValueError(f"{disp_file}: a .npz submission holds exactly one array, found {z.files}")
            disp = z[z.files[0]].astype(np.float32).astype(np.float64)
    else:
        disp = nib.load(str(disp_file)).get_fdata()
    fixed = nib.load(str(fixed_label_file)).get_fdata()
    moving = nib.load(str(moving_label_file)).get_fdata()
    if disp.shape != fixed.shape + (3,):
        raise ValueError(f"{disp_file}: shape {disp.shape}, expected the fixed grid {fixed.shape + (3,)}")
    return score_field(disp, fixed, moving, labels, before=before)


# ----------------------------------------------------------------------------------------------------------------------
# batched torch API (PairMetricsWriter): the same metrics on the grid of the given tensors
def _present(fixed_label: torch.Tensor, moving_label: torch.Tensor, labels) -> torch.Tensor:
    """(B, L) bool: label present in both the fixed and the moving labels (the challenge skips the others)."""
    f = torch.stack([(fixed_label == lab).flatten(1).any(dim=1) for lab in labels], dim=1)
    m = torch.stack([(moving_label == lab).flatten(1).any(dim=1) for lab in labels], dim=1)
    return f & m


def _per_pair_spacing(spacing: Any, b: int) -> np.ndarray | None:
    if spacing is None:
        return None
    sp = torch.as_tensor(spacing, dtype=torch.float64)
    return (sp[b] if sp.ndim == 2 else sp).cpu().numpy()


def _per_label(warped, fixed_label, moving_label, labels, spacing, which: int) -> torch.Tensor:
    out = np.full((fixed_label.shape[0], len(labels)), np.nan)
    w, f, m = (t.detach().cpu().numpy() for t in (warped, fixed_label, moving_label))
    for b in range(f.shape[0]):
        out[b] = label_scores(f[b, 0], m[b, 0], w[b, 0], labels, _per_pair_spacing(spacing, b))[which]
    return torch.as_tensor(out)


def l2r_dice_per_label(
    warped_label: torch.Tensor, fixed_label: torch.Tensor, moving_label: torch.Tensor, labels=L2R_ABDOMEN_LABELS
) -> torch.Tensor:
    """Dice per label (B, L) of integer label maps (B, 1, *S); NaN for labels the challenge skips."""
    out = []
    for lab in labels:
        a, b = (warped_label == lab).flatten(1), (fixed_label == lab).flatten(1)
        out.append(2 * (a & b).sum(dim=1).double() / (a.sum(dim=1) + b.sum(dim=1)).double().clamp_min(1))
    return torch.where(_present(fixed_label, moving_label, labels), torch.stack(out, dim=1), torch.nan)


def l2r_hd95_per_label(
    warped_label: torch.Tensor,
    fixed_label: torch.Tensor,
    moving_label: torch.Tensor,
    labels=L2R_ABDOMEN_LABELS,
    spacing: Any = None,
) -> torch.Tensor:
    """The challenge's HD95 per label (B, L) (:func:`scripts.evaluation.surface_distance.hd95`): voxels when
    ``spacing`` is None (the challenge), mm with ``spacing`` (D,) or (B, D); NaN for skipped labels, inf for a label
    that vanished."""
    return _per_label(warped_label, fixed_label, moving_label, labels, spacing, 1)


def learn2reg_metrics(
    ddf: torch.Tensor,
    fixed_label: torch.Tensor,
    moving_label: torch.Tensor,
    labels=L2R_ABDOMEN_LABELS,
    spacing: Any = None,
) -> dict[str, torch.Tensor]:
    """The Learn2Reg metrics of a batch of pairs ON THE GRID OF THE TENSORS (not the submission's score unless that
    is the fixed image's full grid): name -> (B,).

    ``l2r_dice`` / ``l2r_dice_before`` (mean Dice over the labels present in both images, after / before
    registration), ``l2r_hd95`` / ``l2r_hd95_before`` (voxels, or mm with ``spacing``), ``l2r_sdlogj`` and the
    per-label Dice ``l2r_dice_<id>`` (NaN where the label is skipped).

    Args:
        ddf: (B, 3, *S) displacement in voxels of the labels' grid.
        fixed_label, moving_label: (B, 1, *S) integer label maps.
        labels: the label ids to evaluate (AbdomenCTCT: 1..13).
        spacing: voxel size (D,) or (B, D) in mm for HD95 (None: voxels, as the challenge).
    """
    labels = tuple(int(lab) for lab in labels)
    fixed_label, moving_label = fixed_label.round().long(), moving_label.round().long()
    warped = l2r_warp_labels(moving_label, ddf)
    per_label = l2r_dice_per_label(warped, fixed_label, moving_label, labels)
    out = {
        "l2r_dice_before": torch.nanmean(l2r_dice_per_label(moving_label, fixed_label, moving_label, labels), dim=1),
        "l2r_dice": torch.nanmean(per_label, dim=1),
        "l2r_hd95_before": torch.nanmean(
            l2r_hd95_per_label(moving_label, fixed_label, moving_label, labels, spacing), dim=1
        ),
        "l2r_hd95": torch.nanmean(l2r_hd95_per_label(warped, fixed_label, moving_label, labels, spacing), dim=1),
        "l2r_sdlogj": l2r_sdlogj(ddf.float()).double(),
    }
    out.update({f"l2r_dice_{lab:02d}": per_label[:, i].cpu() for i, lab in enumerate(labels)})
    return out
