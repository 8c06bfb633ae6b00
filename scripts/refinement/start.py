"""The refinement's starting field from the CT network's prediction (``configs/refine.json`` with a network).

The network's field is smooth on its coarse grid: where the cavity's contents slide along the wall it cannot part
them from the wall, and it drags the ribs, the spine and the body wall along with the organs (docs/README.md, *Why
the network does little on the held-out CT*). A refinement of few iterations does not undo that drag. With the fixed
image's segmentation the refinement knows the cavity, so the start can slide at the wall already:

- ``"field"``: the network's field everywhere (the start of bundle 0.4.0 to 0.9.4);
- ``"cavity"``: the network's field inside the cavity (where the breath moves the contents) and the network's rigid
  pre-alignment outside it (bones, muscle, fat: what moves with the patient on the table, not with the breath);
  without a rigid pre-alignment, no displacement outside. Without a segmentation there is no cavity: the field.

Fields are (1, 3, *S) in voxels of the refinement grid; ``side`` is the cavity as
:func:`scripts.regions.cavity.cavity_regions` returns it with ``return_side=True`` (1 inside, -1 on the organ-organ
pair bands, which lie inside too, 0 outside), (1, 1, *S).
"""

from __future__ import annotations

import torch

__all__ = ["START_MODES", "network_start"]

START_MODES = ("field", "cavity")


def network_start(
    ddf: torch.Tensor, rigid_ddf: torch.Tensor | None = None, side: torch.Tensor | None = None, mode: str = "field"
) -> torch.Tensor:
    """The starting field (1, 3, *S) from the network's ``ddf`` and ``rigid_ddf`` (None: identity) and the cavity's
    ``side`` (None: no segmentation), as ``mode`` says (module docstring)."""
    if mode not in START_MODES:
        raise ValueError(f"network start must be one of {START_MODES}, got {mode!r}")
    if mode == "field" or side is None:
        return ddf
    if side.shape[2:] != ddf.shape[2:]:
        raise ValueError(f"the cavity's side {tuple(side.shape)} is not on the field's grid {tuple(ddf.shape)}")
    outside = torch.zeros_like(ddf) if rigid_ddf is None else rigid_ddf.to(ddf)
    return torch.where(side.to(ddf.device) != 0, ddf, outside)
