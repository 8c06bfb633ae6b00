"""Checks before any work: everything a run needs is usable before the first output is written or the first step runs.

- :func:`check_output_dir`: the output folder is a folder (or can be created) and is writable; stale temporary files
  of killed runs are removed (:func:`remove_stale_temporaries`; names from :func:`temp_prefix`);
- :func:`check_checkpoint`: a checkpoint is a readable PyTorch file whose tensors fit the network (else one message
  saying what it holds: channels, depth, vs what the config expects);
- :func:`check_voxels`: every image's voxels are finite (NaN/Inf), all pairs before the first is registered;
- :func:`check_inference_run`: all of it for an inference run (``configs/inference.json``'s ``run``).

Every failure is a :class:`scripts.errors.InputError` that names the file.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scripts.errors import InputError

__all__ = [
    "temp_prefix",
    "remove_stale_temporaries",
    "check_output_dir",
    "check_free_space",
    "read_checkpoint",
    "check_checkpoint",
    "check_voxels",
    "check_training_output",
    "check_checkpoint_handlers",
    "check_inference_run",
]

logger = logging.getLogger(__name__)

_HOST = socket.gethostname().split(".")[0].replace("@", "_") or "host"
# our temporary files: ".<target name>.<pid>@<host>.<random>.tmp" (pid and host tell whether the writer is alive)
_OURS = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[^.@/]*)\.[A-Za-z0-9_]+\.tmp(\.nrrd|\.mha)?$")
# left by earlier versions: ".<name>.<random>.tmp" (writer), ".<name>.<random>" (text) and Ignite's "tmpXXXXXXXX"
_LEGACY = re.compile(r"^(\..+\.(nii|nii\.gz|nrrd|mha|json|pt)\.[A-Za-z0-9_]{8}(\.tmp)?|tmp[A-Za-z0-9_]{8})$")
LEGACY_AGE_S = 600.0  # a legacy temporary (no pid in its name) untouched for this long is stale


def temp_prefix(name: str) -> str:
    """``mkstemp`` prefix of a temporary file for the target ``name`` (use ``suffix=".tmp"``): it records this process
    so that a later run can tell a stale file (its writer is dead) from one being written."""
    return f".{name}.{os.getpid()}@{_HOST}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files that killed runs of this bundle left in ``folder``: ours whose writing process (on
    this host) is gone, and legacy ones (no pid in the name) untouched for ``LEGACY_AGE_S``. Returns their names."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    now = time.time()
    for entry in os.scandir(folder):
        if not entry.is_file(follow_symlinks=False):
            continue
        ours = _OURS.match(entry.name)
        if ours:
            stale = ours["host"] == _HOST and int(ours["pid"]) != os.getpid() and not _alive(int(ours["pid"]))
        else:
            stale = bool(_LEGACY.match(entry.name)) and now - entry.stat().st_mtime > LEGACY_AGE_S
        if stale:
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except OSError:
                pass
    if removed:
        logger.warning("removed %d stale temporary file(s) of an interrupted run in %s", len(removed), folder)
    return removed


def check_output_dir(path: str | os.PathLike, what: str = "output folder", clean: bool = True) -> Path:
    """Check that ``path`` is a folder, or can be created, and that files can be written in it (nothing is left
    behind: a probe file is created and removed); with ``clean``, remove stale temporaries of killed runs.

    Raises:
        InputError: ``path`` (or a parent) is a file, or the folder is not writable (permissions, read-only file
            system).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path}: exists and is not a folder; give another folder or remove the file")
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{what} {path}: {probe} is a file, not a folder; give another folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=temp_prefix("write-check"), suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise InputError(
            f"{what} {path}: cannot write in {probe} ({err.strerror or err}); choose a writable folder"
        ) from None
    if clean:
        remove_stale_temporaries(path)
    return path


def check_free_space(path: str | os.PathLike, needed_bytes: float, what: str = "output folder") -> None:
    """Raise when the file system of ``path`` (or its nearest existing parent) has less than ``needed_bytes`` free."""
    probe = Path(path)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise InputError(
            f"{what} {path}: {free / 2**20:.0f} MiB free, the outputs need at least {needed_bytes / 2**20:.0f} MiB; "
            "free disk space or choose another folder"
        )


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints
def read_checkpoint(path: str | os.PathLike, what: str = "model weights") -> Any:
    """``torch.load`` of a checkpoint onto the CPU (memory-mapped when possible), with one clear error for a missing,
    truncated or non-PyTorch file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path}: file not found; give --ckpt_path (a .pt file written by this bundle)")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path}: the file is empty (an interrupted copy or save?); copy it again")
    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # mmap needs the zip format; legacy files load without it
            if "mmap" not in str(err):
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for damaged files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if len(reason) > 160:
            reason = reason[:157] + "..."
        raise InputError(
            f"{what} {path}: not a readable PyTorch checkpoint ({reason}); it may be truncated or another kind of "
            "file: copy it again or give the right --ckpt_path"
        ) from None


def _state_dict(checkpoint: Any, key: str | None) -> Mapping[str, Any] | None:
    """The model's tensors in a checkpoint: ``checkpoint[key]`` (MONAI's ``{"model": ...}``) or the whole dict (as
    MONAI's ``CheckpointLoader`` accepts a bare state dict for a single-entry ``load_dict``)."""
    if not isinstance(checkpoint, Mapping):
        return None
    if key is not None and isinstance(checkpoint.get(key), Mapping):
        return checkpoint[key]
    return checkpoint if all(torch.is_tensor(v) for v in checkpoint.values()) and checkpoint else None


_ENCODER = re.compile(r"(^|\.)conv\.0\.conv\.weight$")  # AttentionUnet / UNet encoder blocks, in depth order


def _architecture(state: Mapping[str, Any]) -> str:
    """A short description of an (Attention)UNet's tensors: the encoder channels (hence the depth)."""
    chans = [int(v.shape[0]) for k, v in state.items() if _ENCODER.search(k) and getattr(v, "ndim", 0) >= 3]
    first = next((v for v in state.values() if getattr(v, "ndim", 0) >= 3), None)
    parts = [f"channels {chans} (depth {len(chans)})"] if chans else [f"{len(state)} tensors"]
    if first is not None:
        parts.append(f"{int(first.shape[1])} input channels")
    return ", ".join(parts)


def check_checkpoint(path: str | os.PathLike, model: torch.nn.Module, key: str | None = "model",
                     what: str = "model weights") -> None:  # fmt: skip
    """Check that the checkpoint at ``path`` loads into ``model`` (same tensor names and shapes), before any work.

    Raises:
        InputError: unreadable file (:func:`read_checkpoint`), no state dict in it, or tensors of another network;
            the message says what the checkpoint holds and what the config expects (channels, strides).
    """
    checkpoint = read_checkpoint(path, what)
    state = _state_dict(checkpoint, key)
    if state is None:
        kind = type(checkpoint).__name__
        keys = sorted(checkpoint)[:5] if isinstance(checkpoint, Mapping) else []
        raise InputError(
            f"{what} {path}: holds no model weights (a {kind}{' with keys ' + str(keys) if keys else ''}); give a "
            "checkpoint written by this bundle's training (model.pt)"
        )
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        (k, tuple(state[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    config = [f"{name} {list(getattr(model, name))}" for name in ("channels", "strides") if hasattr(model, name)]
    wants = ", ".join(config) if config else _architecture(expected)
    detail = []
    if mismatched:
        k, got, want = mismatched[0]
        detail.append(f"{len(mismatched)} tensor(s) of other sizes, e.g. {k} {list(got)} vs {list(want)}")
    if missing or unexpected:
        detail.append(f"{len(missing)} tensor(s) of the network missing, {len(unexpected)} extra (another depth or "
                      "network)")  # fmt: skip
    raise InputError(
        f"{what} {path}: weights of another network: the checkpoint holds {_architecture(state)}, the config expects "
        f"{wants} and {_architecture(expected).split(', ')[-1]} ({'; '.join(detail)}); give the checkpoint that "
        "matches the config, or set --channels / --strides (or merge the config, e.g. configs/ct.json) it was "
        "trained with"
    )


# ----------------------------------------------------------------------------------------------------------------------
# voxels
def _nifti_finite(path: Path, role: str, slab_bytes: int = 64 * 2**20) -> None:
    import nibabel as nib

    img = nib.load(str(path))
    dtype = np.dtype(img.get_data_dtype())
    slope, inter = img.dataobj.slope, img.dataobj.inter
    scaled_finite = all(v is None or np.isfinite(v) for v in (slope, inter))
    if dtype.kind in "iub" and scaled_finite:
        return  # integers (CT's int16) cannot be NaN/Inf: nothing to read
    shape = img.shape
    nz = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    per_slice = max(1, int(np.prod(shape[:2])) * 4)
    step = max(1, slab_bytes // per_slice)
    proxy = img.dataobj
    flat = shape[:2] + (nz,)
    bad = 0
    for start in range(0, nz, step):  # slabs along the last (slowest) axis: a sequential read of the file
        stop = min(start + step, nz)
        if len(shape) > 3:
            block = np.asarray(proxy[..., 0] if shape[3:] == (1,) * (len(shape) - 3) else proxy, dtype=np.float32)
            block = block.reshape(flat)[:, :, start:stop]
        else:
            block = np.asarray(proxy[:, :, start:stop], dtype=np.float32)
        bad += int(block.size - np.count_nonzero(np.isfinite(block)))
    if bad:
        raise InputError(f"{role} image {path}: {bad} voxels are NaN or Inf; fix or mask them first")


def check_voxels(entries: Iterable[Mapping[str, Any]], roles: Sequence[str] = ("fixed", "moving")) -> None:
    """Check every image of every pair for NaN/Inf voxels (streamed, slab by slab; integer files are skipped), so
    that a bad second pair fails the run before the first pair's outputs are written."""
    seen = set()
    for entry in entries:
        for role in roles:
            path = entry.get(role)
            if not path or path in seen:
                continue
            seen.add(path)
            path = Path(path)
            if path.is_file() and path.name.lower().endswith((".nii", ".nii.gz")):
                try:
                    _nifti_finite(path, role)
                except InputError:
                    raise
                except Exception as err:
                    raise InputError(f"{role} image {path}: cannot read the voxel data ({err})") from None
            else:
                from scripts.image_formats import read_finite_check

                read_finite_check(path, role)


def _output_bytes(entries: Iterable[Mapping[str, Any]], save_jacobian: bool, ext: str) -> float:
    """A lower bound of the bytes a run writes: the float32 ddf (3 values per fixed voxel) and det J maps, which the
    writer stores uncompressed."""
    from scripts.image_formats import image_shape

    total = 0.0
    for entry in entries:
        voxels = float(np.prod(image_shape(entry["fixed"])))
        total += voxels * 4 * (3 + (1 if save_jacobian else 0))
    return total if ext != ".nii" else total * 1.5


def check_training_output(output_dir: str | os.PathLike, resume: Any = False, file_prefix: str = "last") -> None:
    """Before a training run builds anything: the run folder is usable (:func:`check_output_dir`) and, with
    ``resume`` true, holds a readable checkpoint to resume from."""
    from scripts.checkpoints import resume_checkpoint

    check_output_dir(output_dir, "output_dir")
    if str(resume).strip().lower() == "true" or resume is True:
        read_checkpoint(resume_checkpoint(output_dir, file_prefix), "checkpoint to resume from")


def check_checkpoint_handlers(handlers: Sequence[Any]) -> None:
    """The checkpoint of every enabled MONAI ``CheckpointLoader`` in ``handlers`` (one model in its ``load_dict``)
    exists, is readable and fits the model (:func:`check_checkpoint`)."""
    from monai.handlers import CheckpointLoader

    for handler in handlers:
        if isinstance(handler, CheckpointLoader) and type(handler) is CheckpointLoader:
            keys = list(handler.load_dict)
            model = handler.load_dict[keys[0]]
            if len(keys) == 1 and isinstance(model, torch.nn.Module):
                check_checkpoint(handler.load_path, model, key=keys[0])


def check_inference_run(dataset: Any, handlers: Sequence[Any]) -> None:
    """Everything an inference run needs, checked before the first pair is loaded: the checkpoint of an enabled
    ``CheckpointLoader`` fits the network, the writer's output folder is writable (and has room for the fields),
    every pair's voxels are finite."""
    from scripts.writer import RegistrationWriter

    check_checkpoint_handlers(handlers)
    for handler in handlers:
        if isinstance(handler, RegistrationWriter):
            check_output_dir(handler.output_dir)
            try:
                needed = _output_bytes(dataset.data, handler.save_jacobian, handler.output_ext)
            except Exception:  # the size is only a guard; the headers were already checked
                needed = 0.0
            check_free_space(handler.output_dir, needed)
    check_voxels(getattr(dataset, "data", []))
