"""Model weights: reading a checkpoint with one clear error, and checking that it fits the network before any work.

- :func:`read_checkpoint`: ``torch.load`` onto the CPU, one message for a missing, empty, truncated or foreign file;
- :func:`check_checkpoint`: the checkpoint's tensors fit the network (else one message saying what it holds:
  channels, depth, input channels, vs what the config expects);
- :func:`check_checkpoint_handlers`: the same for every enabled MONAI ``CheckpointLoader`` of a workflow.

Every failure is a :class:`scripts.io.errors.InputError` that names the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.handlers import CheckpointLoader

from scripts.io.errors import InputError

__all__ = ["read_checkpoint", "check_checkpoint", "check_checkpoint_handlers"]


def read_checkpoint(path: str | os.PathLike, what: str = "model weights", option: str = "--ckpt_path") -> Any:
    """``torch.load`` of a checkpoint onto the CPU (memory-mapped when possible), with one clear error for a missing,
    truncated or non-PyTorch file; the error names ``option``, the command-line option that gave the path."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path}: file not found; give {option} (a .pt file written by this bundle)")
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
            f"file: copy it again or give the right {option}"
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
                     what: str = "model weights", option: str = "--ckpt_path") -> None:  # fmt: skip
    """Check that the checkpoint at ``path`` loads into ``model`` (same tensor names and shapes), before any work.

    Raises:
        InputError: unreadable file (:func:`read_checkpoint`), no state dict in it, or tensors of another network;
            the message says what the checkpoint holds and what the config expects (channels, strides).
    """
    checkpoint = read_checkpoint(path, what, option)
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


def check_checkpoint_handlers(handlers: Sequence[Any]) -> None:
    """The checkpoint of every enabled MONAI ``CheckpointLoader`` in ``handlers`` (one model in its ``load_dict``)
    exists, is readable and fits the model (:func:`check_checkpoint`)."""
    for handler in handlers:
        if isinstance(handler, CheckpointLoader) and type(handler) is CheckpointLoader:
            keys = list(handler.load_dict)
            model = handler.load_dict[keys[0]]
            if len(keys) == 1 and isinstance(model, torch.nn.Module):
                check_checkpoint(handler.load_path, model, key=keys[0])
