"""Rigid bones in the written field: the CT model's bones move by its rigid pre-alignment, with no segmentation.

Why. The CT network predicts its field on a coarse grid (9 mm in-plane voxels on the 40x32x24 grid), where a smooth
field cannot part a rib from the liver beside it: where the organs slide along the cavity wall, the network drags the
bones with them and bends them (a bone rigidity error above 0.01 on the held-out CT). The model already knows how the
bones move: its rigid pre-alignment (:class:`scripts.networks.rigid.RigidPrealign`) is the rigid map that best
aligns the pair's bones. So, as the method's mechanics say (bones move rigidly), the written field takes that map
on the bones and keeps the network's field elsewhere:

    u(x) = w(x) u_rigid(x) + (1 - w(x)) u_network(x),   w(x) = clip((near + fall - d(x)) / fall, 0, 1),

d(x) the distance (mm) from x to the nearest voxel of the fixed image above the bones' threshold (below). w is 1 on
those voxels and within ``near`` mm of them (the marrow between two cortices, the partial-volume rim that a segmenter
calls bone: a real abdomen's marrow is 80-330 HU at 3 mm voxels) and falls to 0 over ``fall`` mm of the soft
tissue around them, where the strain of going from one motion to the other goes (a sharper fall folds; measured in
docs/README.md, *Rigid bones*). The two fields are exact on the bones' grid G (the fixed image's grid coarsened to
about ``grid_mm``): the rigid map is linear, so G's trilinear interpolation back to the fixed grid keeps it exact
where w is 1.

The threshold (:func:`scripts.regions.label_free.bone_threshold_hu`, the refinement without a segmentation reads the
same rule): ``hu="auto"`` (the default) takes ``max(100, median + 60)`` HU over the fixed image's soft tissue, so
that a portal-venous liver (70-110 HU) is no bone. Limits: an enhanced aorta (150-250 HU) lies above any such
threshold and moves with the bones (it lies on the spine); all bones share one rigid map. A fixed image that is not
in HU (:func:`scripts.regions.label_free.hounsfield_like`: an MR image, a rescaled CT) gets the network's field as
it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer
from scipy import ndimage

from scripts.io.errors import InputError
from scripts.io.resampling import area_resize, coarse_grid, field_to_fixed_grid
from scripts.regions.label_free import bone_threshold_hu, hounsfield_like

__all__ = ["bone_weight", "RigidBonesInferer"]


def bone_weight(fixed_hu: np.ndarray, spacing, hu: float | str = "auto", near_mm: float = 3.0, fall_mm: float = 6.0):
    """w (X, Y, Z) float32 in [0, 1] (module docstring) of a fixed image in HU on a grid of ``spacing`` mm: 1 within
    ``near_mm`` of the voxels above the threshold (:func:`bone_threshold_hu` of ``hu``), 0 beyond
    ``near_mm + fall_mm``, linear between; all 0 without any."""
    if not (float(fall_mm) > 0 and float(near_mm) >= 0):
        raise InputError(
            f"--rigid_bones_mm [{near_mm}, {fall_mm}]: give [near, fall] in mm, near >= 0 and fall > 0 (default [3, 6])"
        )
    bone = np.asarray(fixed_hu) > bone_threshold_hu(fixed_hu, hu)
    if not bone.any():
        return np.zeros(bone.shape, np.float32)
    distance = ndimage.distance_transform_edt(~bone, sampling=[float(s) for s in spacing])
    return np.clip((near_mm + fall_mm - distance) / fall_mm, 0.0, 1.0).astype(np.float32)


class RigidBonesInferer(Inferer):
    """Runs ``network_inferer`` (:class:`scripts.inference.predict.RegistrationInferer`), then, when the network has
    a rigid pre-alignment (``rigid_ddf`` among its outputs) and ``enabled``, blends it into the field on the bones
    (module docstring). Returns the network's outputs with ``ddf`` (1, 3, *G) in voxels of the bones' grid G and
    ``network_ddf``, the network's own (1, 3, *net); sets the pair's ``net_affine`` / ``net_shape`` to G (the writer
    brings the field back to the fixed grid) and its report's ``rigid_bones``. Needs the fixed image as read
    (``PreparePair(pass_pair=True)``, ``InferencePairDataset(keep_fixed=True)``).

    Args:
        network_inferer: the inferer that runs the network.
        enabled: False: the network's outputs as they are.
        hu: see :func:`bone_weight` (a number of HU or ``"auto"``).
        mm: ``[near_mm, fall_mm]`` of :func:`bone_weight` (``--rigid_bones_mm``).
        grid_mm: voxel size of the bones' grid, mm (None: the fixed image's grid).
    """

    def __init__(
        self,
        network_inferer: Inferer,
        enabled: bool = True,
        hu: float | str = "auto",
        mm: Sequence[float] = (3.0, 6.0),
        grid_mm: float | None = 3.0,
    ):
        super().__init__()
        self.network_inferer, self.enabled = network_inferer, bool(enabled)
        try:
            near_mm, fall_mm = (float(v) for v in mm)
        except (TypeError, ValueError):
            raise InputError(f"--rigid_bones_mm {mm!r}: give [near, fall] in mm, e.g. [3, 6] (the default)") from None
        self.hu, self.near_mm, self.fall_mm = hu, near_mm, fall_mm
        self.grid_mm = None if grid_mm is None else float(grid_mm)
        bone_weight(np.zeros((1, 1, 1)), (1.0, 1.0, 1.0), self.hu, self.near_mm, self.fall_mm)  # checks the values

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, pair: Any = None, **kwargs: Any):
        return self.blend(self.network_inferer(inputs, network, *args, **kwargs), pair)

    def blend(self, out: dict[str, torch.Tensor], pair: Any) -> dict[str, torch.Tensor]:
        """The network's outputs ``out`` (on the pair's network grid) with the bones taking the rigid map."""
        if not self.enabled or "rigid_ddf" not in out:
            return out
        if pair is None or pair.fixed is None:
            raise ValueError(
                "rigid bones need the pair's fixed image: use PreparePair(pass_pair=True) and "
                "InferencePairDataset(keep_fixed=True), as configs/inference.json does"
            )
        shape, affine = coarse_grid(pair.fixed_shape, pair.fixed_affine, self.grid_mm)
        fixed_hu = area_resize(pair.fixed, shape).numpy()
        if not hounsfield_like(fixed_hu):  # the modality check has warned (scripts/inference/modality.py)
            pair.report["rigid_bones"] = {"skipped": "the fixed image is not in Hounsfield units"}
            return out
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        threshold = bone_threshold_hu(fixed_hu, self.hu)
        weight = bone_weight(fixed_hu, spacing, threshold, self.near_mm, self.fall_mm)
        ddf = field_to_fixed_grid(out["ddf"], pair.net_affine, affine, shape)
        rigid = field_to_fixed_grid(out["rigid_ddf"], pair.net_affine, affine, shape)
        w = torch.from_numpy(weight).to(ddf.device)[None]
        pair.net_affine, pair.net_shape = affine, tuple(shape)
        pair.report["rigid_bones"] = {
            "hu": threshold,
            "near_mm": self.near_mm,
            "fall_mm": self.fall_mm,
            "grid": list(shape),
            "rigid_percent": float((weight >= 1.0).mean() * 100.0),
        }
        return {**out, "ddf": (ddf + w * (rigid - ddf))[None], "network_ddf": out["ddf"]}
