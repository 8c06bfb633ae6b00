"""The ``ct_generated`` dataset: CT pairs generated on the fly with a known biomechanical motion (no download).

Each item is one case of :func:`scripts.synthesis.anatomy.generated_case` (random phantom anatomy, breathing with
sliding at the cavity wall, rigid bones, a rigid offset, a random slab), put through the CT model's OWN
preprocessing (``configs/ct.json``'s ``preprocessing`` after its loader, the chain inference runs on the
user's files), so training sees exactly what inference will feed the network:

- ``fixed``, ``moving`` (1, *S) on the fixed image's network grid (the two share the native grid, hence the network
  grid); ``fixed_label``, ``moving_label`` (1, *S) Learn2Reg ids (Dice); ``reg_mask`` (1, *S), ``normals`` (3, *S)
  built by the chain from the fixed TotalSegmentator-id segmentation (the segmentation feeds only the losses);
- ``true_ddf`` (3, *S): the true field on the network grid in network voxels (channel k along array axis k, the
  network's own convention): the native field in world mm resampled through the affines, then expressed in the
  network grid's axes. It feeds the optional supervised term (``delta`` of
  :class:`scripts.losses.biomechanical.RegistrationLoss`) and the known-motion metrics.

Generation is deterministic per (seed, split, index) and cached (``cache``: ``"disk"``, ``"memory"``, ``"none"``,
:func:`scripts.data.cache.cached_dataset`), so each case is generated once; ``augment`` adds, on every read,
independent intensity changes of the fixed and moving image (contrast gamma, scale and shift, blur, noise) after the
cache. Several real CTs with TotalSegmentator labels can be mixed in (``ct_dir``: ``<name>.nii.gz`` beside
``<name>_seg.nii.gz``), moved by the same breathing motion carried along its flow (``REAL_FLOW_STEPS``: on a thin
slab, such as the 40 mm DICOM series of ../shared/data, the additive field folds in 4 of 6 draws, the flow in none);
keep the held-out test subject out of that folder.
``cranial_fraction`` of the pairs breathe the other way (the contents move cranially: the fixed image is the deeper
breath): with every pair breathing one way, the direction and much of the field can be read off the fixed image
alone, and a network learns that mean motion instead of comparing the two images. ``texture_hu`` gives the
phantom's organs a texture (:func:`scripts.synthesis.anatomy.tissue_texture`) of up to that amplitude; ``bone_hu``
(low, high) gives its bones a real CT's density (:func:`scripts.synthesis.anatomy.real_bones`: marrow in that HU
range and a brighter cortex, instead of a solid 700 HU that no real abdomen's bones reach). With
``augment``, ``offset_mm`` / ``offset_deg`` move the moving image by a fresh random rigid offset at every read, the true
field composed with it (:class:`RandMovingOffsetd`): a motion that neither image predicts, learnt only by comparing
the two.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.networks.blocks import Warp
from monai.transforms import (
    Compose,
    LoadImaged,
    RandAdjustContrastd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Transform,
)
from monai.utils import convert_to_tensor
from torch.utils.data import Dataset

from scripts.data.cache import cached_dataset
from scripts.io.errors import InputError
from scripts.io.resampling import resample_to_grid
from scripts.networks.rigid import compose_rigid, inverse_rigid, rigid_sampling_field
from scripts.synthesis.anatomy import MIN_SLAB_MM, SPLIT_IDS, draw_cranial, generated_case, rigid_offset, with_labels
from scripts.synthesis.breathing import make_breathing_case

REAL_FLOW_STEPS = 7  # a real CT's breathing as a flow (scaling and squaring steps; module docstring)

__all__ = ["GeneratedCTDataset", "GenerateCase", "RandMovingOffsetd", "intensity_augmentation", "field_on_network_grid"]


def _meta_tensor(array: np.ndarray, affine: np.ndarray, name: str) -> MetaTensor:
    """A volume as ``LoadImaged`` gives it (no channel yet, its affine), for the chain after ``LoadImaged``."""
    meta = {"original_channel_dim": "no_channel", "filename_or_obj": name, "original_affine": affine}
    return MetaTensor(torch.as_tensor(np.ascontiguousarray(array)), affine=torch.as_tensor(affine), meta=meta)


def field_on_network_grid(ddf_vox: np.ndarray, affine: np.ndarray, grid: MetaTensor) -> torch.Tensor:
    """A (3, X, Y, Z) field in voxels of the native grid (``affine``) -> (3, *net) in voxels of the network grid
    ``grid`` (a preprocessed MetaTensor): to world mm, resampled through the affines (zero outside), to the network
    grid's axes."""
    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    world = torch.as_tensor(np.einsum("ij,j...->i...", lin, ddf_vox), dtype=torch.float32)
    net_affine = np.asarray(grid.affine, dtype=np.float64)
    on_grid, _ = resample_to_grid(world, affine, net_affine, grid.shape[1:], fill=0.0)
    to_net = torch.as_tensor(np.linalg.inv(net_affine[:3, :3]), dtype=torch.float32)
    return torch.einsum("ij,j...->i...", to_net, on_grid)


class GenerateCase(Transform):
    """Item ``{"index", "split", "seed"[, "ct", "seg"]}`` -> a preprocessed training pair (module docstring).

    A deterministic MONAI ``Transform``, so that a ``PersistentDataset`` caches its output (the random augmentation
    after it runs on every read).

    Args:
        preprocessing: the CT model's per-image chain, starting with its loader (a ``LoadImaged``, skipped: the
            volumes are generated in memory).
    """

    def __init__(self, preprocessing: Callable):
        transforms = getattr(preprocessing, "transforms", None)
        if not transforms or not isinstance(transforms[0], LoadImaged):
            raise ValueError("the preprocessing must be a Compose starting with LoadImaged (configs/ct.json)")
        # the steps as a plain list: a Compose holds a random state of its own, which would change the disk cache's
        # hash of this transform from process to process (every process would keep a cache of its own)
        self.steps = list(transforms[1:])

    def __call__(self, item: dict[str, Any]) -> dict[str, torch.Tensor]:
        case = self._case(item)
        name = f"generated_{item['split']}_{item['index']}"
        affine = case["affine"]
        chain = Compose(self.steps)
        fixed = chain(
            {
                "image": _meta_tensor(case["fixed"], affine, name + "_fixed"),
                "label": _meta_tensor(case["fixed_label"], affine, name + "_fixed_label"),
                "seg": _meta_tensor(case["fixed_seg"], affine, name + "_fixed_seg"),
            }
        )
        moving = chain(
            {
                "image": _meta_tensor(case["moving"], affine, name + "_moving"),
                "label": _meta_tensor(case["moving_label"], affine, name + "_moving_label"),
            }
        )
        out = {"fixed": fixed["image"], "moving": moving["image"], "fixed_label": fixed["label"]}
        out["moving_label"] = moving["label"]
        out.update(reg_mask=fixed["reg_mask"], normals=fixed["normals"])
        # a MetaTensor on the fixed network grid, as every other key: a batch mixes cached and fresh items
        out["true_ddf"] = MetaTensor(
            field_on_network_grid(case["ddf"], affine, fixed["image"]), meta=fixed["image"].meta
        )
        return out

    @staticmethod
    def _case(item: dict[str, Any]) -> dict:
        fraction = item.get("cranial_fraction", 0.0)
        if "ct" not in item:
            texture, slab = item.get("texture_hu", 0.0), item.get("min_slab_mm", MIN_SLAB_MM)
            return generated_case(item["index"], item["split"], item["seed"], cranial_fraction=fraction,
                                  texture_hu=texture, min_slab_mm=slab, bone_hu=item.get("bone_hu"))  # fmt: skip
        ct, seg = nib.load(item["ct"]), nib.load(item["seg"])
        cranial = draw_cranial(item["index"], item["split"], item["seed"], fraction)
        rng = np.random.default_rng(np.random.SeedSequence([item["seed"], SPLIT_IDS[item["split"]], item["index"], 7]))
        case = make_breathing_case(
            np.asanyarray(ct.dataobj).astype(np.float32), np.asanyarray(seg.dataobj).astype(np.uint8), ct.affine, rng,
            amplitude_mm=tuple(sorted(rng.uniform(3.0, 14.0, size=2))), cranial=cranial, flow_steps=REAL_FLOW_STEPS,
        )  # fmt: skip
        return with_labels(case)


class RandMovingOffsetd(RandomizableTransform):
    """A random rigid offset of the moving image on every read, with the true field composed with it exactly.

    The cached case's own offset is one draw per pair (:func:`scripts.synthesis.anatomy.rigid_offset`); seen epoch
    after epoch, 240 draws average to no motion, and a network can lower its loss by predicting that mean instead of
    comparing the two images. A fresh draw at each read makes the offset unpredictable from either image alone.

    The moving scan is moved by M(p) = R (p - c) + c + t (p in mm on the network grid, c its centre; R a rotation
    of at most ``max_deg`` about a random axis, t at most ``max_mm`` per axis): ``moving'(p) = moving(M^-1(p))``, and
    since ``fixed(x) = moving(x + d(x))``, the new field is ``d'(x) = M(x + d(x)) - x``. ``moving_label`` moves
    alike (nearest); the fixed side is untouched. Keys: ``moving`` (1, *S), ``true_ddf`` (3, *S) network voxels
    (with the fixed image's affine for the spacing), ``moving_label`` (1, *S) if present.
    """

    def __init__(self, max_mm: float, max_deg: float, prob: float = 1.0):
        super().__init__(prob)
        for name, value, example in (("offset_mm", max_mm, 8), ("offset_deg", max_deg, 3)):
            if float(value) < 0:
                raise InputError(f"{name} {value!r}: the largest random offset of the moving image at each training "
                                 f"read; give a number >= 0 (--{name} {example}, or 0 for none)")  # fmt: skip
        self.max_mm, self.max_deg = float(max_mm), float(max_deg)
        self.warp = Warp(mode="bilinear", padding_mode="border")
        self.warp_label = Warp(mode="nearest", padding_mode="zeros")

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        rotation, shift = rigid_offset(self.R, self.max_deg, self.max_mm)  # the cached cases' own draw
        self._rotation = torch.as_tensor(rotation, dtype=torch.float32)[None]
        self._shift = torch.as_tensor(shift, dtype=torch.float32)[None]

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        self.randomize()
        if not self._do_transform or (self.max_mm == 0 and self.max_deg == 0):
            return data
        out = dict(data)
        ddf = out["true_ddf"]
        # the grid's spacing (1, 3) mm: MONAI's, from the affine
        spacing = (ddf if isinstance(ddf, MetaTensor) else out["fixed"]).pixdim.float()[None]
        # moving'(p) = moving(M^-1(p))
        sampling = rigid_sampling_field(*inverse_rigid(self._rotation, self._shift), ddf.shape[1:], spacing)
        for key, warp in (("moving", self.warp), ("moving_label", self.warp_label)):
            if key in out:
                value = convert_to_tensor(out[key], track_meta=False)
                warped = warp(value[None].float(), sampling)[0].to(value.dtype)
                out[key] = MetaTensor(warped, meta=out[key].meta) if isinstance(out[key], MetaTensor) else warped
        field = compose_rigid(
            self._rotation, self._shift, convert_to_tensor(ddf, track_meta=False)[None].float(), spacing
        )
        out["true_ddf"] = MetaTensor(field[0], meta=ddf.meta) if isinstance(ddf, MetaTensor) else field[0]
        return out


def intensity_augmentation(keys: Sequence[str] = ("fixed", "moving"), prob: float = 0.5) -> Compose:
    """Independent random intensity changes of each image (windowed to [0, 1]): gamma, scale, shift, blur, noise."""
    steps = []
    for key in keys:  # one instance per key: the fixed and the moving image get their own draws
        steps += [
            RandAdjustContrastd(key, prob=prob, gamma=(0.7, 1.4)),
            RandScaleIntensityd(key, factors=0.1, prob=prob),
            RandShiftIntensityd(key, offsets=0.05, prob=prob),
            RandGaussianSmoothd(key, sigma_x=(0.0, 0.8), sigma_y=(0.0, 0.8), sigma_z=(0.0, 0.8), prob=prob / 2),
            RandGaussianNoised(key, std=0.02, prob=prob),
        ]
    return Compose(steps)


class GeneratedCTDataset(Dataset):
    """``num_pairs`` generated pairs of ``split`` (see the module docstring).

    Args:
        split: "train", "val" or "test" (independent random streams).
        num_pairs: number of pairs.
        preprocessing: the CT model's per-image chain (``configs/ct.json``'s ``preprocessing``).
        seed: base seed.
        ct_dir: optional folder of real CTs ``<name>.nii.gz`` with ``<name>_seg.nii.gz`` (TotalSegmentator v2 ids on
            the CT's grid); every ``real_every``-th pair is a breathing motion of one of them.
        augment: random intensity augmentation on every read (training).
        cranial_fraction: the probability that a pair breathes cranially (module docstring); 0: all caudally.
        texture_hu: the phantoms' largest texture amplitude (HU std; 0: none).
        min_slab_mm: the thinnest slab of a phantom case along the body axis (mm; 90: the generator's default).
        bone_hu: (low, high), the range of the phantoms' bone marrow HU (None: the phantom's solid 700 HU bones).
        offset_mm, offset_deg: with ``augment``, a fresh random rigid offset of the moving image at every read, of at
            most that translation per axis (mm) and rotation (degrees) (:class:`RandMovingOffsetd`; 0, 0: none).
        cache, cache_dir: see :func:`scripts.data.cache.cached_dataset`.
    """

    def __init__(
        self,
        split: str,
        num_pairs: int,
        preprocessing: Callable,
        seed: int = 0,
        ct_dir: str | os.PathLike | None = None,
        real_every: int = 4,
        augment: bool = False,
        cranial_fraction: float = 0.0,
        texture_hu: float = 0.0,
        min_slab_mm: float = MIN_SLAB_MM,
        bone_hu: Sequence[float] | None = None,
        offset_mm: float = 0.0,
        offset_deg: float = 0.0,
        cache: str = "disk",
        cache_dir: str | os.PathLike | None = None,
    ):
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {tuple(SPLIT_IDS)}, got {split!r}")
        if int(num_pairs) < 1:
            raise ValueError(f"num_pairs must be >= 1, got {num_pairs!r}")
        if not 0.0 <= float(cranial_fraction) <= 1.0:
            raise InputError(f"cranial_fraction {cranial_fraction!r}: the share of pairs breathing cranially; give a "
                             "number from 0 to 1 (--cranial_fraction 0.5)")  # fmt: skip
        items = [{"index": i, "split": split, "seed": int(seed)} for i in range(int(num_pairs))]
        if float(texture_hu) < 0:
            raise InputError(f"texture_hu {texture_hu!r}: the phantoms' largest texture amplitude in HU; give a number "
                             ">= 0 (--texture_hu 40, or 0 for none)")  # fmt: skip
        if float(min_slab_mm) < 16.0:
            raise InputError(f"min_slab_mm {min_slab_mm!r}: the thinnest generated slab along the body axis in mm; "
                             "give a number >= 16 (--min_slab_mm 90, the default)")  # fmt: skip
        bone_hu = self._bone_range(bone_hu)
        for item in items:  # in the item, hence in the disk cache's key (0: left out, the keys of before 0.8.2)
            for key, value in (("cranial_fraction", cranial_fraction), ("texture_hu", texture_hu)):
                if float(value) > 0:
                    item[key] = float(value)
            # the default stays out of the key, as the caches written before 0.9.1 have it
            if float(min_slab_mm) != MIN_SLAB_MM:
                item["min_slab_mm"] = float(min_slab_mm)
            if bone_hu is not None:
                item["bone_hu"] = bone_hu
        cts = self._real_cts(ct_dir)
        for j, item in enumerate(items[:: max(1, int(real_every))] if cts else []):
            ct, seg = cts[j % len(cts)]
            item.update(ct=str(ct), seg=str(seg))
        transform = GenerateCase(preprocessing)
        offset = RandMovingOffsetd(offset_mm, offset_deg)  # checks the two values even when not augmenting
        if augment:
            steps = [transform] + ([offset] if offset.max_mm or offset.max_deg else []) + [intensity_augmentation()]
            transform = Compose(steps)
        self.items = items
        self.data = cached_dataset(items, transform, cache, cache_dir)

    @staticmethod
    def _bone_range(bone_hu: Sequence[float] | None) -> list[float] | None:
        if bone_hu is None:
            return None
        try:
            low, high = (float(v) for v in bone_hu)
        except (TypeError, ValueError):
            low = high = float("nan")
        if not -200.0 <= low <= high <= 2000.0:
            raise InputError(f"bone_hu {bone_hu!r}: the range of the phantoms' bone marrow HU; give two numbers "
                             "low <= high within -200..2000 (--bone_hu \"[100, 300]\"), or null for solid 700 HU "
                             "bones")  # fmt: skip
        return [low, high]

    @staticmethod
    def _real_cts(ct_dir: str | os.PathLike | None) -> list[tuple[Path, Path]]:
        if not ct_dir:
            return []
        folder = Path(ct_dir)
        if not folder.is_dir():
            raise InputError(f"ct_dir {folder}: not a folder; give a folder of <name>.nii.gz with <name>_seg.nii.gz")
        found = []
        for ct in sorted(folder.glob("*.nii.gz")):
            seg = ct.with_name(ct.name[: -len(".nii.gz")] + "_seg.nii.gz")
            if not ct.name.endswith("_seg.nii.gz") and seg.is_file():
                found.append((ct, seg))
                image, labels = nib.load(str(ct)), nib.load(str(seg))  # headers only: the voxels load per case
                if image.shape != labels.shape or not np.allclose(image.affine, labels.affine, atol=1e-3):
                    raise InputError(f"ct_dir {seg}: {labels.shape} is not on the grid of {ct.name} {image.shape}; "
                                     "resample the labels onto the CT (nearest neighbour), as python -m benchmarks."
                                     "training_cts does for a DICOM series and its segmentation")  # fmt: skip
        if not found:
            raise InputError(f"ct_dir {folder}: no <name>.nii.gz with a <name>_seg.nii.gz beside it")
        return found

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.data[index]
