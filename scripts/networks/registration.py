"""The registration model around a backbone, and the batch preparation of the Ignite workflows.

``network_def`` in the configs is the backbone alone (MONAI ``AttentionUnet``: 2 channels in,
fixed and moving; D channels out, a stationary velocity field in voxels), so that
``verify_net_in_out`` and ``ckpt_export`` (TorchScript) work on it. :class:`RegistrationNet`
wraps it for the workflows: velocity -> scaling-and-squaring (``DVF2DDF``) -> displacement ->
``Warp`` of the moving image (and of its one-hot labels), each through :class:`CachedGridWarp`.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch
from monai.networks import one_hot
from monai.networks.blocks import DVF2DDF, Warp
from torch import nn

from scripts.io.errors import InputError
from scripts.networks.rigid import RigidPrealign, compose_rigid, rigid_sampling_field

__all__ = ["RegistrationNet", "CachedGridWarp", "PrepareRegistrationBatch", "spacing_of"]


class CachedGridWarp(Warp):
    """MONAI's ``Warp`` whose reference grid is built once per field shape, device and dtype, on the field's device.

    MONAI 1.6.1's ``Warp.get_reference_grid`` compares the cached grid's ``shape[1:]`` with the field's ``shape[2:]``,
    which never match (MONAI pull request 9082), so it builds the grid again on the CPU at every call and copies it
    to the field's device: nine times per training step here (seven scaling-and-squaring steps, the image, the
    labels). On an H200 a training step of the GPU preset took 409 ms with MONAI's grid and 88 ms with this one
    (``python -m benchmarks.benchmark_training_step``, docs/benchmark_results/gpu_training/). The
    grid here is (1, D, *S), broadcast over the batch by ``Warp.forward``'s ``grid + ddf``; the values are MONAI's
    (voxel indices along each array axis). ``jitter`` keeps MONAI's own path.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._grid_key: tuple | None = None
        self._grid: torch.Tensor | None = None

    def get_reference_grid(self, ddf: torch.Tensor, jitter: bool = False, seed: int = 0) -> torch.Tensor:
        if jitter:
            return super().get_reference_grid(ddf, jitter=jitter, seed=seed)
        key = (tuple(ddf.shape[2:]), ddf.device, ddf.dtype)
        if self._grid is None or self._grid_key != key:
            axes = [torch.arange(size, device=ddf.device, dtype=ddf.dtype) for size in ddf.shape[2:]]
            self._grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)[None]
            self._grid_key = key
        return self._grid


class RegistrationNet(nn.Module):
    """Backbone + integration + warping.

    Args:
        backbone: module mapping (B, 2, *S) fixed+moving to (B, D, *S) velocity (or displacement).
        integration_steps: scaling-and-squaring steps (paper: 7); 0 takes the output as the displacement.
        padding_mode: ``Warp`` padding of the moving image (paper: ``"border"``).
        prealign: optional :class:`scripts.networks.rigid.RigidPrealign`: the moving image is first aligned rigidly
            on the bones, the backbone sees the aligned pair, and ``ddf`` is the composed field from fixed to the
            moving image as given (the CT model's inference; in training with ``--rigid_prealign true``).

    ``forward(pair, moving_label=None, spacing=None)`` takes pair (B, 2, *S) = [fixed, moving], optional one-hot
    moving labels (B, C, *S) and the grid's spacing (B, D) or (D,) mm (needed with ``prealign``); it returns a dict
    with ``velocity`` and ``ddf`` (B, D, *S, voxels), ``warped`` (B, 1, *S), with ``prealign`` ``rigid_ddf`` (B, D,
    *S, voxels: the rigid map alone, M(p) - p) and, with labels, ``warped_label`` (B, C, *S) warped bilinearly (soft).
    """

    def __init__(
        self,
        backbone: nn.Module,
        integration_steps: int = 7,
        padding_mode: str = "border",
        prealign: RigidPrealign | None = None,
    ):
        super().__init__()
        self.prealign = prealign
        if integration_steps < 0:
            raise ValueError(f"integration_steps must be >= 0, got {integration_steps}")
        self.backbone = backbone
        self.integrate = DVF2DDF(num_steps=integration_steps, mode="bilinear") if integration_steps > 0 else None
        if self.integrate is not None:  # DVF2DDF's own Warp (bilinear, zeros), with the grid built once
            self.integrate.warp_layer = CachedGridWarp(mode="bilinear", padding_mode="zeros")
        self.warp = CachedGridWarp(mode="bilinear", padding_mode=padding_mode)
        self.warp_label = CachedGridWarp(mode="bilinear", padding_mode="zeros")

    def forward(
        self,
        pair: torch.Tensor,
        moving_label: torch.Tensor | None = None,
        spacing: torch.Tensor | None = None,
        rigid: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        if pair.ndim not in (4, 5) or pair.shape[1] != 2:
            raise ValueError(f"expected a (B, 2, *S) fixed+moving pair, got shape {tuple(pair.shape)}")
        if self.prealign is not None or rigid is not None:
            if spacing is None:
                raise ValueError(
                    "the rigid pre-alignment needs the network grid's spacing (mm): forward(..., spacing=)"
                )
            spacing = torch.as_tensor(spacing, dtype=pair.dtype, device=pair.device).reshape(-1, pair.ndim - 2)
            spacing = spacing.expand(pair.shape[0], -1)
            if rigid is None:
                rigid = self.prealign(pair[:, :1], pair[:, 1:2], spacing)
            rigid_ddf = rigid_sampling_field(*rigid, pair.shape[2:], spacing)
            aligned = self.warp(pair[:, 1:2], rigid_ddf)
            velocity = self.backbone(torch.cat([pair[:, :1], aligned], dim=1))
        else:
            velocity = self.backbone(pair)
        ddf = self.integrate(velocity) if self.integrate is not None else velocity
        if rigid is not None:
            ddf = compose_rigid(*rigid, ddf, spacing)
        out = {"velocity": velocity, "ddf": ddf, "warped": self.warp(pair[:, 1:2], ddf)}
        if rigid is not None:
            out["rigid_ddf"] = rigid_ddf
        if moving_label is not None:
            out["warped_label"] = self.warp_label(moving_label.to(ddf.dtype), ddf)
        return out


def spacing_of(image: torch.Tensor) -> torch.Tensor | None:
    """Voxel spacing (B, D) in mm from a batched MetaTensor's affine, or None for a plain tensor."""
    if not isinstance(image, MetaTensor):
        return None
    affine = torch.as_tensor(image.affine, dtype=torch.float32, device=image.device)
    ndim = image.ndim - 2
    if affine.ndim == 2:
        affine = affine[None].expand(image.shape[0], -1, -1)
    return affine[:, :ndim, :ndim].norm(dim=1)


def _plain(data: Any) -> torch.Tensor:
    """A plain tensor (MetaTensor metadata dropped: the networks and losses need none of it)."""
    return data.as_tensor() if isinstance(data, MetaTensor) else torch.as_tensor(data)


class PrepareRegistrationBatch(PrepareBatch):
    """Batch dict -> (inputs, targets, args, kwargs) for MONAI's SupervisedTrainer/Evaluator.

    inputs: (B, 2, *S) fixed+moving; targets: dict with ``fixed``, ``moving`` and, when present,
    ``fixed_label``, ``moving_label``, ``reg_mask``, ``normals``, the known motion of the synthetic sets
    (``true_ddf`` (B, D, *S) voxels, ``object_mask`` and ``interface_mask`` (B, 1, *S), for
    :func:`scripts.evaluation.motion_metrics.known_motion_metrics`) and ``spacing`` (B, D) mm (from the
    fixed image's affine when ``physical_spacing``, else absent: voxel units); kwargs: the one-hot
    ``moving_label`` for the network when ``num_label_classes > 0``, and ``spacing`` when ``pass_spacing`` (a
    network with the rigid pre-alignment, ``--rigid_prealign true`` in training, needs the grid's spacing in mm).
    """

    target_keys = (
        "fixed",
        "moving",
        "fixed_label",
        "moving_label",
        "reg_mask",
        "normals",
        "true_ddf",
        "object_mask",
        "interface_mask",
    )

    def __init__(self, num_label_classes: int = 0, physical_spacing: bool = False, pass_spacing: bool = False):
        if pass_spacing and not physical_spacing:
            raise InputError(
                "option --rigid_prealign true: the rigid pre-alignment works in mm and needs --physical_spacing true; "
                "drop --physical_spacing false or --rigid_prealign true"
            )
        self.num_label_classes = num_label_classes
        self.physical_spacing = physical_spacing
        self.pass_spacing = pass_spacing

    def check(self) -> None:
        """Nothing left to do: the options were checked when this was built; a workflow calls it before any work,
        so that a bad combination stops the run before a run folder or a cache entry is written."""

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple, dict[str, torch.Tensor]]:
        missing = [key for key in ("fixed", "moving") if key not in batchdata]
        if missing:
            raise KeyError(f"a registration batch needs the keys 'fixed' and 'moving'; missing {missing}")
        targets = {
            key: _plain(batchdata[key]).to(device=device, non_blocking=non_blocking, **kwargs)
            for key in self.target_keys
            if key in batchdata
        }
        if self.physical_spacing and (spacing := spacing_of(batchdata["fixed"])) is not None:
            targets["spacing"] = spacing.to(device)
        inputs = torch.cat([targets["fixed"], targets["moving"]], dim=1).float()
        call_kwargs = {}
        if self.num_label_classes > 0:
            if "moving_label" not in targets:
                raise KeyError("num_label_classes > 0 needs 'moving_label' in the batch")
            call_kwargs["moving_label"] = one_hot(targets["moving_label"].long(), self.num_label_classes, dim=1)
        if self.pass_spacing:
            if "spacing" not in targets:
                raise KeyError("the rigid pre-alignment needs the fixed image's spacing: a MetaTensor with an affine")
            call_kwargs["spacing"] = targets["spacing"]
        return inputs, targets, (), call_kwargs
