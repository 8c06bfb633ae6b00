"""The trained CT network as a method of the known-motion benchmark: the product's own inference path on one case.

:class:`NetworkMethod` builds the model and its preprocessing from the bundle's configs (``inference.json`` alone:
the shipped CT model, ``models/model_ct.pt``, or another checkpoint of its grid), writes the
case's fixed and moving images as NIfTI files, and runs what ``run inference`` runs on them:
:func:`scripts.inference.predict.load_pair` (the model's own preprocessing), :func:`scripts.inference.predict.predict`,
the rigid bones of the config's inferer (:class:`scripts.networks.bones.RigidBonesInferer`, on by default; off with
the override ``rigid_bones=false``) and :func:`scripts.io.resampling.field_to_fixed_grid`. The field comes back in
voxels of the fixed grid, the benchmark's convention. Seconds count the whole path (writing the two files excepted).
``alignment`` holds the last pair's :func:`scripts.inference.modality.alignment_change` (``mse_before``,
``mse_after``), ``rigid`` its rigid pre-alignment alone on the fixed grid (None for a model without one).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser

from scripts.inference.modality import alignment_change
from scripts.inference.predict import load_pair, net_spacing, predict_outputs
from scripts.io.errors import InputError
from scripts.io.resampling import field_to_fixed_grid
from scripts.io.weights import check_checkpoint, read_checkpoint
from scripts.networks.bones import RigidBonesInferer

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("inference.json",)


class NetworkMethod:
    """The CT model of ``configs`` with the weights of ``ckpt`` (default: the configs' ``ckpt_path``) on the grid
    ``image_size`` (default: the configs'; the network is fully convolutional, each size a multiple of 2^strides)."""

    def __init__(
        self,
        ckpt: str | Path | None = None,
        configs=CONFIGS,
        bundle_root: Path = BUNDLE_ROOT,
        image_size=None,
        prealign_image_size=None,
        overrides: dict | None = None,
    ):
        def configured(**values) -> ConfigParser:
            parser = ConfigParser()
            parser.read_config([str(bundle_root / "configs" / name) for name in configs])
            parser.update({"bundle_root": str(bundle_root), **(overrides or {}), **values})
            return parser

        parser = configured()
        if image_size is not None:
            factor = 2 ** len(parser.get_parsed_content("strides"))
            if len(image_size) != 3 or any(int(n) <= 0 or int(n) % factor for n in image_size):
                raise InputError(
                    f"--network-image-size {','.join(map(str, image_size))}: give X,Y,Z, each a positive multiple "
                    f"of {factor} (the network halves the grid {factor.bit_length() - 1} times)"
                )
            parser["image_size"] = [int(n) for n in image_size]
        self.ckpt = Path(ckpt) if ckpt else Path(parser.get_parsed_content("ckpt_path"))
        self.image_size = [int(n) for n in parser.get_parsed_content("image_size")]
        check_checkpoint(self.ckpt, parser.get_parsed_content("network_def"), option="--ckpt")
        self.preprocessing = parser.get_parsed_content("preprocessing")
        self.net = parser.get_parsed_content("registration_net")
        state = read_checkpoint(self.ckpt)
        self.net.backbone.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        self.net.eval()
        inferer = parser.get_parsed_content("inferer")
        self.bones = inferer if isinstance(inferer, RigidBonesInferer) and inferer.enabled else None
        self.prealign_preprocessing = None
        self._last: tuple = (None, None, None, None)  # the last pair's rigid map, network grid affine, pair, field
        if prealign_image_size is not None:  # the rigid pre-alignment on a finer grid of the same field of view
            fine = configured(image_size=[int(n) for n in prealign_image_size])
            self.prealign_preprocessing = fine.get_parsed_content("preprocessing")

    def __call__(self, fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, float]:
        """(ddf (3, X, Y, Z) voxels of the fixed grid, seconds) for a pair of HU volumes on one grid."""
        with tempfile.TemporaryDirectory() as tmp:
            paths = {}
            for role, volume in (("fixed", fixed), ("moving", moving)):
                paths[role] = str(Path(tmp) / f"{role}.nii.gz")
                nib.save(nib.Nifti1Image(np.round(volume).astype(np.int16), affine), paths[role])
            start = time.perf_counter()
            pair = load_pair(
                {"fixed": paths["fixed"], "moving": paths["moving"]}, self.preprocessing, self.bones is not None
            )
            with torch.no_grad():
                rigid = None
                if self.prealign_preprocessing is not None:
                    fine = load_pair({"fixed": paths["fixed"], "moving": paths["moving"]}, self.prealign_preprocessing)
                    image = fine.image[None]
                    rigid = self.net.prealign(image[:, :1], image[:, 1:2], net_spacing(fine))
                out = predict_outputs(pair, self.net, rigid=rigid)
                self.alignment = alignment_change(pair.image, out["ddf"])  # what run inference checks and reports
                self._last = (out.get("rigid_ddf"), pair.net_affine, pair, out["ddf"])  # to the fixed grid when asked
                if self.bones is not None:
                    out = self.bones.blend(out, pair)  # the field on the bones' grid, pair.net_affine set to it
            ddf = field_to_fixed_grid(out["ddf"], pair.net_affine, pair.fixed_affine, pair.fixed_shape)
            return ddf.numpy().astype(np.float32), time.perf_counter() - start

    @property
    def rigid(self) -> np.ndarray | None:
        """The last pair's rigid pre-alignment alone, (3, X, Y, Z) voxels of the fixed grid (None without one)."""
        rigid, net_affine, pair, _ = self._last
        if rigid is None:
            return None
        return field_to_fixed_grid(rigid, net_affine, pair.fixed_affine, pair.fixed_shape).numpy().astype(np.float32)

    @property
    def network_field(self) -> np.ndarray:
        """The last pair's network field without rigid bones, (3, X, Y, Z) voxels of the fixed grid: the start of
        ``configs/refine.json`` with ``--ckpt_path`` (its network inferer has no rigid bones)."""
        _, net_affine, pair, ddf = self._last
        return field_to_fixed_grid(ddf, net_affine, pair.fixed_affine, pair.fixed_shape).numpy().astype(np.float32)
