"""Does the network's field register the pair? One warning line when it leaves the two images less alike.

A trained network can be confidently wrong on a pair unlike its training pairs, and nothing in its field says so
(no fold, a plausible size). The CT model of bundle 0.8.1 had learnt the mean motion of its generated pairs, which all
breathed one way: it read that motion off the fixed image, hardly looking at the moving one, and moved every pair
breathing the other way by the wrong sign (body endpoint error 4.0 -> 5.3 mm on the held-out CT,
docs/benchmark_results/ct_network_directions_shipped/). The check below sees that: the mean squared difference of the
two network inputs over the fixed image's foreground rose (0.0056 -> 0.0061 on those pairs; it halved on the pairs
breathing the trained way).

Measured on the network grid, in the model's own intensity scale (its preprocessing), with the moving input warped
by the predicted field as the network warps it (bilinear, border): cheap next to the writing. Foreground: the fixed
input above a tenth of its range (body and lungs on a CT, not the air around it). A field that leaves the difference
where it was or lowers it passes; it does not prove the registration right.
"""

from __future__ import annotations

import logging

import torch

from scripts.networks.registration import CachedGridWarp

__all__ = ["alignment_change", "check_alignment"]

logger = logging.getLogger(__name__)


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
