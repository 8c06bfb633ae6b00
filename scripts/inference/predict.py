"""Inference on new scan pairs: load and preprocess (the model's own preprocessing), predict, hand over to the writer.

Run it through the bundle (``configs/inference.json``; a CT model: ``configs/ct.json`` merged after it)::

    python -m monai.bundle run --config_file configs/inference.json \\
        --fixed fixed.nii.gz --moving moving.nii.gz --output_dir out

or call the pieces from Python (:func:`load_pair`, :func:`predict`, :func:`scripts.inference.writer.finish_pair`).

The network input is built by the config's ``preprocessing``: the SAME MONAI transform chain (declared once, in the
config of the model) that the training and evaluation datasets apply to each image. It must start with
``LoadImaged`` on the key ``image``; :func:`load_pair` runs that first step alone to keep the native volumes (the
moving image is warped at its own resolution, the outputs are written on the fixed image's grid), then the rest of
the chain on each image. Geometry, exact up to interpolation:

1. Fixed and moving are each preprocessed on their own (e.g. reoriented, windowed, resized to the network grid);
   MONAI tracks each result's affine (network voxel -> world mm).
2. When the two network grids differ (images on different grids), the preprocessed moving image is resampled onto
   the fixed image's network grid through the affines (:func:`scripts.io.resampling.resample_to_grid`), the same pair
   step as the training datasets; voxels outside the moving image's field of view get its minimum.
3. The network predicts a displacement in network voxels; :mod:`scripts.inference.writer` brings it back to the fixed
  image's
   native grid (:func:`scripts.io.resampling.field_to_fixed_grid`), warps and writes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data.utils import affine_to_spacing
from monai.engines.utils import PrepareBatch
from monai.inferers import Inferer
from torch.utils.data import DataLoader, Dataset

from scripts.inference.pairs import check_pair_files, pair_name
from scripts.io.errors import InputError
from scripts.io.image_io import header_codes, output_dtype, read_label_on_grid
from scripts.io.resampling import resample_to_grid

__all__ = [
    "PairData",
    "load_pair",
    "preprocess_image",
    "InferencePairDataset",
    "pair_loader",
    "PreparePair",
    "RegistrationInferer",
    "predict",
    "predict_outputs",
    "require_checkpoint",
    "run_inference_workflow",
]

logger = logging.getLogger(__name__)


@dataclass
class PairData:
    """One pair loaded for inference (see :func:`load_pair`); its fields are what the writer needs."""

    name: str
    fixed_path: str
    moving_path: str
    moving_label_path: str | None
    fixed_label_path: str | None
    fixed_affine: np.ndarray  # (4, 4) world mm of the fixed image's native grid (as MONAI's reader gives it)
    fixed_shape: tuple[int, int, int]
    fixed_codes: tuple[int, int]  # qform, sform codes of the fixed header (for the outputs)
    net_affine: np.ndarray  # (4, 4) affine of the network grid (the fixed image after the preprocessing)
    net_shape: tuple[int, int, int]
    image: torch.Tensor  # (2, *net_shape) network input: preprocessed fixed, moving on the fixed network grid
    moving: torch.Tensor  # (X, Y, Z) moving image as read (float32, scaled)
    moving_affine: np.ndarray
    moving_dtype: np.dtype  # dtype for the warped image (the moving's integer type, else float32)
    moving_label: np.ndarray | None
    fixed_label: np.ndarray | None
    moving_coverage: float  # fraction of the fixed network grid that the moving image covers
    seconds_load: float = 0.0  # time of load_pair
    fixed_constant: bool = False  # every voxel has one value (empty image): nothing to register
    moving_constant: bool = False
    fixed: torch.Tensor | None = None  # (X, Y, Z) fixed image as read, when kept (``keep_fixed``: the refinement)
    fixed_seg: np.ndarray | None = None  # (X, Y, Z) segmentation of the fixed image (``fixed_seg``), when given
    report: dict = field(default_factory=dict)  # extra summary entries of the pair (e.g. the refinement's)


def _check_chain(preprocessing: Callable) -> None:
    from monai.transforms import Compose, LoadImaged

    first = preprocessing.transforms[0] if isinstance(preprocessing, Compose) and preprocessing.transforms else None
    if not isinstance(first, LoadImaged) or "image" not in first.keys:
        raise ValueError(
            "the preprocessing must be a monai Compose whose first transform is LoadImaged on the key 'image' "
            f"(got {type(first).__name__ if first is not None else type(preprocessing).__name__})"
        )


def _finite(volume: torch.Tensor, path: Any, role: str) -> None:
    finite = torch.isfinite(volume)
    if not bool(finite.all()):
        bad = int(volume.numel() - finite.sum())
        raise InputError(f"{role} image {path}: {bad} voxels are NaN or Inf; fix or mask them first")


def _constant(volume: torch.Tensor, path: Any, role: str) -> bool:
    """Whether every voxel has one value (an empty or blank image); warns, naming the image."""
    lo, hi = torch.aminmax(volume.as_tensor() if hasattr(volume, "as_tensor") else volume)
    if float(lo) != float(hi):
        return False
    logger.warning(
        "the %s image %s is constant (every voxel is %g): it holds nothing to register; check the file "
        "(an empty or blank export?)",
        role,
        path,
        float(lo),
    )
    return True


def preprocess_image(path: str | os.PathLike, preprocessing: Callable, role: str = "fixed") -> tuple[Any, Any]:
    """Read one image with the chain's ``LoadImaged`` and check its voxels, then run the rest of the chain.

    Returns ``(native, net)``: the (X, Y, Z) MetaTensor as read (float32, affine in world mm; singleton axes of a
    (X, Y, Z, 1) file dropped) and the (C, *net) MetaTensor the network sees (its ``affine`` is the network
    grid's)."""
    loaded = preprocessing({"image": str(path)}, end=1)
    native = loaded["image"]
    if native.ndim > 3:
        native = native.reshape([s for s in native.shape if s > 1])
    _finite(native, path, role)
    net = preprocessing(dict(loaded), start=1)["image"]
    return native, net


def _affine_of(tensor: Any) -> np.ndarray:
    return np.asarray(tensor.affine.detach().cpu(), dtype=np.float64)


def _plain(tensor: Any) -> torch.Tensor:
    """A plain float32 tensor (MetaTensors drop their metadata)."""
    return (tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)).float()


def load_pair(entry: Mapping[str, Any], preprocessing: Callable, keep_fixed: bool = False) -> PairData:
    """Load, check and preprocess one pair (steps 1-2 of the module docstring).

    Args:
        entry: ``fixed``, ``moving`` and optional ``moving_label``, ``fixed_label`` paths (integer label maps on
            their image's grid).
        preprocessing: the model's MONAI chain (config key ``preprocessing``), starting with ``LoadImaged``.
        keep_fixed: keep the fixed image as read (the refinement works on it).
    """
    _check_chain(preprocessing)
    start = time.perf_counter()
    headers = check_pair_files(entry)
    fixed_native, fixed_net = preprocess_image(entry["fixed"], preprocessing, "fixed")
    fixed_affine, fixed_shape = _affine_of(fixed_native), tuple(int(s) for s in fixed_native.shape)
    fixed_constant = _constant(fixed_native, entry["fixed"], "fixed")
    fixed_kept = _plain(fixed_native) if keep_fixed else None
    del fixed_native
    moving_native, moving_net = preprocess_image(entry["moving"], preprocessing, "moving")
    moving_constant = _constant(moving_native, entry["moving"], "moving")
    net_affine, net_shape = _affine_of(fixed_net), tuple(int(s) for s in fixed_net.shape[1:])
    moving_in, coverage = resample_to_grid(moving_net, _affine_of(moving_net), net_affine, net_shape)
    if coverage < 0.5:
        logger.warning(
            "the moving image %s covers only %.0f%% of the fixed image's field of view: check that both are in the "
            "same physical space (their affines)",
            entry["moving"],
            100 * coverage,
        )
    labels = {
        key: (
            read_label_on_grid(headers[key], headers[key.split("_")[0]], entry[key], key.replace("_", " "))
            if key in headers
            else None
        )
        for key in ("moving_label", "fixed_label", "fixed_seg")
    }
    image = torch.cat([_plain(fixed_net), _plain(moving_in)], dim=0)
    return PairData(
        name=pair_name(entry["fixed"], entry["moving"]),
        fixed_path=str(entry["fixed"]),
        moving_path=str(entry["moving"]),
        moving_label_path=str(entry["moving_label"]) if entry.get("moving_label") else None,
        fixed_label_path=str(entry["fixed_label"]) if entry.get("fixed_label") else None,
        fixed_affine=fixed_affine,
        fixed_shape=fixed_shape,
        fixed_codes=header_codes(headers["fixed"]),
        net_affine=net_affine,
        net_shape=net_shape,
        image=image.contiguous(),
        moving=_plain(moving_native),
        moving_affine=_affine_of(moving_native),
        moving_dtype=output_dtype(headers["moving"]),
        moving_label=labels["moving_label"],
        fixed_label=labels["fixed_label"],
        moving_coverage=coverage,
        seconds_load=time.perf_counter() - start,
        fixed_constant=fixed_constant,
        moving_constant=moving_constant,
        fixed=fixed_kept,
        fixed_seg=labels["fixed_seg"],
    )


class InferencePairDataset(Dataset):
    """The pairs of one inference run; item i is ``{"image": (2, *net) tensor, "pair": PairData}``.

    Every pair's files are checked (header level) when the dataset is built, so that a bad input fails the run
    before anything is written; voxel data are checked (NaN/Inf) when a pair is loaded.

    Args:
        data: list of dicts with ``fixed``, ``moving`` and optional ``moving_label``, ``fixed_label`` paths
            (:func:`scripts.inference.pairs.resolve_pairs`).
        preprocessing: the model's MONAI chain (see :func:`load_pair`).
        keep_fixed: keep each fixed image as read in the :class:`PairData` (the refinement works on it).
    """

    def __init__(self, data: Sequence[Mapping[str, str]], preprocessing: Callable, keep_fixed: bool = False):
        _check_chain(preprocessing)
        self.data = [dict(entry) for entry in data]
        self.preprocessing = preprocessing
        self.keep_fixed = bool(keep_fixed)
        names: dict[str, int] = {}
        for i, entry in enumerate(self.data):
            check_pair_files(entry)
            name = pair_name(entry["fixed"], entry["moving"])
            if name in names:
                raise InputError(
                    f"pairs {names[name]} and {i} would write the same outputs ({name}_*): rename the files"
                )
            names[name] = i

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = load_pair(self.data[index], self.preprocessing, self.keep_fixed)
        return {"image": pair.image, "pair": pair}


def _collate_one(batch: list[dict[str, Any]]) -> dict[str, Any]:
    item = batch[0]
    return {"image": item["image"][None], "pair": item["pair"]}


def pair_loader(dataset: InferencePairDataset, num_workers: int = 0) -> DataLoader:
    """One pair per iteration (pairs differ in size): ``{"image": (1, 2, *net), "pair": PairData}``."""
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers, collate_fn=_collate_one)


class PreparePair(PrepareBatch):
    """Batch -> (inputs (1, 2, *net) on the device, targets: the :class:`PairData`, (), kwargs): ``kwargs`` holds
    the network grid's ``spacing`` (1, 3) mm (the CT model's rigid pre-alignment needs it) and, with ``pass_pair``,
    the pair (``"pair"``: the refinement needs the native volumes)."""

    def __init__(self, pass_pair: bool = False):
        self.pass_pair = bool(pass_pair)

    def __call__(self, batchdata: Mapping[str, Any], device=None, non_blocking: bool = False, **kwargs: Any):
        pair = batchdata["pair"]
        inputs = batchdata["image"].to(device=device, non_blocking=non_blocking)
        call_kwargs = {"spacing": net_spacing(pair).to(inputs.device)}  # the network's rigid pre-alignment needs it
        if self.pass_pair:
            call_kwargs["pair"] = pair
        return inputs, pair, (), call_kwargs


def net_spacing(pair: PairData) -> torch.Tensor:
    """The network grid's voxel spacing (1, 3) mm, from the pair's network affine."""
    return affine_to_spacing(torch.as_tensor(pair.net_affine), r=3).float()[None]


class RegistrationInferer(Inferer):
    """Runs :class:`scripts.networks.registration.RegistrationNet` on a (B, 2, *net) pair, padding each spatial size
    up to a multiple of ``divisor`` (the product of the backbone's strides; replicate padding, centred) and cropping the
    outputs (``velocity``, ``ddf``, ``warped``) back, so that any network grid is accepted."""

    def __init__(self, divisor: int = 8):
        super().__init__()
        if int(divisor) < 1:
            raise ValueError(f"divisor must be >= 1, got {divisor}")
        self.divisor = int(divisor)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> dict:
        shape = inputs.shape[2:]
        total = [(-s) % self.divisor for s in shape]
        if not any(total):
            return network(inputs, *args, **kwargs)
        before = [t // 2 for t in total]
        pad = []
        for t, b in zip(reversed(total), reversed(before)):
            pad += [b, t - b]
        out = network(F.pad(inputs, pad, mode="replicate"), *args, **kwargs)
        crop = (Ellipsis, *(slice(b, b + s) for b, s in zip(before, shape)))
        return {key: value[crop] if torch.is_tensor(value) else value for key, value in out.items()}


@torch.no_grad()
def predict_outputs(
    pair: PairData, registration_net: torch.nn.Module, divisor: int = 8, rigid: tuple | None = None
) -> dict[str, torch.Tensor]:
    """The network's outputs on the network grid (:class:`scripts.networks.registration.RegistrationNet`: ``ddf``
    (1, 3, *net) in net voxels, ``rigid_ddf`` alike with the rigid pre-alignment, ``warped``, ``velocity``);
    ``rigid``: a rigid pre-alignment (rotation, translation mm) found elsewhere, instead of the network's own."""
    registration_net.eval()
    device = next(registration_net.parameters()).device
    spacing = net_spacing(pair).to(device)
    extra = {} if rigid is None else {"rigid": rigid}
    return RegistrationInferer(divisor)(pair.image[None].to(device), registration_net, spacing=spacing, **extra)


def predict(pair: PairData, registration_net: torch.nn.Module, divisor: int = 8) -> torch.Tensor:
    """The network's displacement on the network grid, (1, 3, *net) in net voxels."""
    return predict_outputs(pair, registration_net, divisor)["ddf"]


def require_checkpoint(handlers: Sequence[Any]) -> None:
    """Raise a clear error when an enabled ``CheckpointLoader`` among ``handlers`` points at a missing file
    (a disabled handler, ``--handlers#0#_disabled_ true``, is not in the list)."""
    from monai.handlers import CheckpointLoader

    for handler in handlers:
        if isinstance(handler, CheckpointLoader) and not Path(handler.load_path).is_file():
            raise InputError(
                f"model weights {handler.load_path}: file not found (give --ckpt_path, or --bundle_root when running "
                "from another folder; models/model.pt ships with the bundle, see large_files.yml)"
            )


def run_inference_workflow(
    bundle_root: str | os.PathLike | None = None, config_files: Sequence[str] = ("inference.json",), **overrides: Any
):
    """Run ``configs/inference.json`` (plus overrides such as ``ct.json``, merged in order) in this process, as the
    Model Zoo tests do, and return the finished workflow.

    Args:
        bundle_root: the bundle folder (default: the one holding this module).
        config_files: file names in ``configs/``, merged in order.
        overrides: config overrides, e.g. ``fixed``, ``moving``, ``output_dir``, ``ckpt_path``.
    """
    from monai.bundle import ConfigWorkflow

    root = Path(bundle_root) if bundle_root is not None else Path(__file__).resolve().parents[2]
    workflow = ConfigWorkflow(
        config_file=[str(root / "configs" / name) for name in config_files],
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        bundle_root=str(root),
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow
