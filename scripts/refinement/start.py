"""The refinement's starting fields: from the CT network's prediction (``configs/refine.json`` with a network), and
the second pass's step at the wall.

The network's field is smooth on its coarse grid: where the cavity's contents slide along the wall it cannot part
them from the wall, and it drags the ribs, the spine and the body wall along with the organs (docs/README.md, *Why
the network does little on the held-out CT*). A refinement of few iterations does not undo that drag. With the fixed
image's segmentation the refinement knows the cavity, so the start can slide at the wall already:

- ``"field"``: the network's field everywhere (the start of bundle 0.4.0 to 0.9.4);
- ``"cavity"``: the network's field inside the cavity (where the breath moves the contents) and the network's rigid
  pre-alignment outside it (bones, muscle, fat: what moves with the patient on the table, not with the breath);
  without a rigid pre-alignment, no displacement outside. Without a segmentation there is no cavity: the field.

**The step at the wall** (:func:`step_at_wall`, the second pass's start, :mod:`scripts.refinement.second_pass`): each
voxel of the sliding band takes the field of the nearest voxel off the band on its own side of the wall. A field
carried up from the coarse levels reaches the finest one smooth across the wall, and on the finest grid the image
says little about the voxels next to it (muscle beside liver: about the same HU), so the slip stays smeared over the
two voxel layers of the band: on the real CT (seed 0, clean labels) the first layer inside the cavity kept 3.3 mm of
error on 7.9 mm of motion, the first layer outside 2.2 mm on 0.9 mm, and 60 more iterations on the finest level did
not change them (docs/README.md, *Walls nobody tuned on*). Started from a step, the iterations keep it where the
image agrees and relax it where it does not.

Fields are (1, 3, *S) in voxels of the refinement grid; ``side`` is the cavity as
:func:`scripts.regions.cavity.cavity_regions` returns it with ``return_side=True`` (1 inside, -1 on the organ-organ
pair bands, which lie inside too, 0 outside), (1, 1, *S).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy import ndimage as ndi

__all__ = ["START_MODES", "network_start", "step_at_wall"]

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


def step_at_wall(ddf: torch.Tensor, band: torch.Tensor, side: torch.Tensor, spacing: Sequence[float]) -> torch.Tensor:
    """The field ``ddf`` (1, 3, *S) with each voxel of the sliding ``band`` ((1, 1, *S), nonzero: in the band) whose
    ``side`` is known (0 or 1; -1, an organ-organ pair band, is left as it is) taking the value of the nearest voxel
    off the band on the same side (distances in mm with ``spacing`` (3,)); a side with no voxel off the band is left
    as it is (module docstring)."""
    if band.shape[2:] != ddf.shape[2:] or side.shape[2:] != ddf.shape[2:]:
        raise ValueError(f"band {tuple(band.shape)} and side {tuple(side.shape)} must lie on the field's grid "
                         f"{tuple(ddf.shape)}")  # fmt: skip
    in_band = band[0, 0].cpu().numpy() != 0
    where = side[0, 0].cpu().numpy()
    u = ddf[0].detach().cpu().numpy().copy()
    for s in (0, 1):
        target, source = in_band & (where == s), ~in_band & (where == s)
        if not target.any() or not source.any():
            continue
        nearest = ndi.distance_transform_edt(~source, sampling=[float(x) for x in spacing], return_distances=False,
                                             return_indices=True)  # fmt: skip
        u[:, target] = u[(slice(None),) + tuple(index[target] for index in nearest)]
    return torch.from_numpy(u)[None].to(ddf)
