"""Does the model fit the images it is given? One warning line when it does not: before the first pair, when the
inputs are unlike its training data; after each pair, when its field leaves the two images less alike.

**The inputs.** A registration network only knows the intensities it was trained on. The configs say which:
``trained_on`` is ``"ct"`` for the shipped CT model (``configs/inference.json`` alone, the default;
``configs/ct.json`` for a model of the AbdomenCTCT grid) and ``"synthetic"`` for the paper's synthetic-bars model
(``configs/synthetic.json``). Before the first pair is registered, :func:`check_modality` samples a few slices of each
input image and warns, in one line naming the file and the config to use, when

- a CT (Hounsfield units: air at about -1000) goes to the synthetic model, or
- an image that is no CT in HU (MR-like intensities, or a CT already rescaled) goes to the CT model.

Only NIfTI inputs are sampled (other formats are not judged); the check reads at most ``slices`` slices per image
and at most ``max_images`` images, so it costs little against the registration itself. It warns, never stops: the
user may know better.

**The field.** A trained network can be confidently wrong on a pair unlike its training pairs, and nothing in its
field says so (no fold, a plausible size). The CT model of bundle 0.8.1 learnt the mean motion of its generated
pairs, which all breathed one way: it reads that motion off the fixed image, hardly looking at the moving one, and
moves every pair breathing the other way by the wrong sign (body endpoint error 4.00 -> 5.25 mm on the held-out CT,
docs/benchmark_results/ct_network_directions_shipped/). :func:`check_alignment` sees that on those pairs: the mean
squared difference of the two network inputs over the fixed image's foreground rises (0.0034 -> 0.0039 on average),
where it falls by half on the pairs breathing the trained way (0.0035 -> 0.0016). It is measured on the network grid,
in the model's own intensity scale, the moving input warped by the predicted field as the network warps it
(bilinear, border): cheap next to the writing. Foreground: the fixed input above a tenth of its range (body and lungs
on a CT, not the air around it). A field that lowers the difference passes; that does not prove it right.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from scripts.networks.registration import CachedGridWarp
from scripts.regions.label_free import hounsfield_like

__all__ = ["TRAINED_ON", "looks_like_ct", "check_modality", "alignment_change", "check_alignment"]

logger = logging.getLogger(__name__)

TRAINED_ON = ("synthetic", "ct")
CT_CONFIGS = "--config_file configs/inference.json alone (the default)"
SYNTHETIC_CONFIGS = "--config_file \"['configs/inference.json','configs/synthetic.json']\""


def looks_like_ct(path: str | Path, slices: int = 5) -> bool | None:
    """True when the image's intensities are CT Hounsfield units (a few slices through
    :func:`scripts.regions.label_free.hounsfield_like`: air or lung below -500 HU in the 1st percentile, nothing below
    -1100 HU beyond it); False when they are not; None for a file that is not NIfTI or cannot be read."""
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return None
    try:
        proxy = nib.load(str(path)).dataobj
        depth = proxy.shape[2] if len(proxy.shape) > 2 else 1
        picks = np.unique(np.linspace(0, depth - 1, num=min(slices, depth)).round().astype(int))
        sample = np.concatenate([np.asarray(proxy[:, :, int(k)], dtype=np.float32).ravel() for k in picks])
    except Exception:  # an unreadable file is reported by the checks of the run, not here
        return None
    if not np.isfinite(sample).any():
        return None
    return hounsfield_like(sample)


def _images(entries: Iterable[Mapping[str, Any]], max_images: int) -> list[str]:
    seen: list[str] = []
    for entry in entries:
        for role in ("fixed", "moving"):
            path = entry.get(role)
            if path and str(path) not in seen:
                seen.append(str(path))
            if len(seen) >= max_images:
                return seen
    return seen


def check_modality(dataset: Any, trained_on: str, max_images: int = 8) -> list[str]:
    """Warn (one line per mismatched image, through the logger) when the inputs of ``dataset`` (its ``data``: pair
    dicts with ``fixed`` and ``moving`` paths) are unlike what the model was ``trained_on``; returns the lines."""
    if trained_on not in TRAINED_ON:
        raise ValueError(f"trained_on must be one of {TRAINED_ON}, got {trained_on!r}")
    lines = []
    for path in _images(getattr(dataset, "data", dataset) or [], max_images):
        ct = looks_like_ct(path)
        if trained_on == "synthetic" and ct:
            lines.append(
                f"{path} is a CT (Hounsfield units) but this model was trained on the synthetic bars of the paper: "
                f"register CT with the CT model: {CT_CONFIGS}"
            )
        elif trained_on == "ct" and ct is False:
            lines.append(
                f"{path} does not look like a CT in Hounsfield units (air at -1000) but this model was trained on CT: "
                "for another modality train on your own pairs (configs/train.json with --dataset pairs) or register "
                f"without a model (configs/refine.json); the paper's synthetic bars: {SYNTHETIC_CONFIGS}"
            )
    for line in lines:
        logger.warning("warning: %s", line)
    return lines


def alignment_change(image: torch.Tensor, ddf: torch.Tensor) -> dict[str, float] | None:
    """``{"mse_before", "mse_after"}`` of a network input ``image`` (2, *S) (fixed, moving) and a field ``ddf``
    (1, 3, *S) in voxels of that grid; None when the field lies on another grid (the refinement's) or the fixed input
    is constant."""
    if image.ndim != 4 or image.shape[0] != 2 or tuple(ddf.shape[2:]) != tuple(image.shape[1:]):
        return None
    fixed, moving = image[0].float(), image[1:2].float()[None].to(ddf.device)
    low, high = float(fixed.min()), float(fixed.max())
    if high <= low:
        return None
    foreground = (fixed > low + 0.1 * (high - low)).to(ddf.device)
    warped = CachedGridWarp(mode="bilinear", padding_mode="border")(moving, ddf.float())[0, 0]
    fixed = fixed.to(ddf.device)
    before = float(((moving[0, 0] - fixed) ** 2)[foreground].mean())
    after = float(((warped - fixed) ** 2)[foreground].mean())
    return {"mse_before": before, "mse_after": after}


def check_alignment(name: str, image: torch.Tensor, ddf: torch.Tensor) -> dict[str, float] | None:
    """:func:`alignment_change`, with one warning line naming the pair and the fix when the difference rose."""
    change = alignment_change(image, ddf)
    if change is not None and change["mse_after"] > change["mse_before"]:
        logger.warning(
            "%s: the model's field leaves the two images less alike than before (mean squared difference %.4g -> "
            "%.4g in the fixed image's foreground): this model does not register this pair; register it with "
            "configs/refine.json (test-time refinement)",
            name,
            change["mse_before"],
            change["mse_after"],
        )
    return change
