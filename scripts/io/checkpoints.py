"""Crash-safe checkpoints and resume (``configs/train.json``: ``resume``, ``train#handlers[0]``,
``train#save_dict``).

- :class:`AtomicDiskSaver`: Ignite's ``DiskSaver`` writing through a temporary file and a rename, deleting the
  superseded checkpoint only after the new one exists;
- :class:`TrainingCheckpointSaver`, :class:`AtomicCheckpointSaver`: MONAI's ``CheckpointSaver`` with that saver;
- :class:`ResumeCheckpointLoader`, :func:`latest_checkpoint`, :class:`BestMetricState`: resume a run;
- :func:`check_training_output`: before a training run builds anything, its folder is usable and holds what it resumes.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

from scripts.io.errors import InputError
from scripts.io.files import check_output_dir, remove_stale_temporaries, temp_prefix
from scripts.io.options import parse_flag
from scripts.io.weights import read_checkpoint

__all__ = [
    "TrainingCheckpointSaver",
    "AtomicDiskSaver",
    "AtomicCheckpointSaver",
    "BestMetricState",
    "ResumeCheckpointLoader",
    "latest_checkpoint",
    "resume_checkpoint",
    "use_atomic_saving",
    "check_training_output",
]

logger = logging.getLogger(__name__)


class TrainingCheckpointSaver(CheckpointSaver):
    """MONAI's CheckpointSaver that also saves the engine it is attached to (epoch, iteration).

    A config cannot name the trainer inside the trainer's own handlers (circular reference), so the
    engine joins ``save_dict`` as ``"trainer"`` when the handler is attached. Each checkpoint is
    written to a temporary file and renamed, and the superseded one is deleted only afterwards
    (:class:`AtomicDiskSaver`): a killed run never leaves a truncated file, nor no file at all.
    """

    def attach(self, engine: Engine) -> None:
        self.save_dict.setdefault("trainer", engine)
        use_atomic_saving(self, engine)  # MONAI's own DiskSaver is atomic=False and deletes before writing
        super().attach(engine)


class AtomicDiskSaver(DiskSaver):
    """Ignite ``DiskSaver`` that never leaves a truncated or missing checkpoint behind a killed process.

    MONAI's ``CheckpointSaver`` builds its ``DiskSaver`` with ``atomic=False`` (``torch.save`` straight into the
    final file), and Ignite's ``Checkpoint`` deletes the superseded file *before* writing the new one. A kill in
    that window leaves a truncated ``.pt`` and no complete one. This saver writes through a temporary file in the
    same folder (Ignite's ``atomic=True``: ``tmpXXXX`` then ``os.replace``) and only deletes superseded files once
    the new one is in place, so a complete newest checkpoint exists at every instant.

    Args:
        dirname: folder of the checkpoints.
        filename: fixed file name (MONAI's ``key_metric_filename`` / ``final_filename``), or None.
        save_on_rank: the distributed rank that writes (Ignite's default 0).
    """

    def __init__(self, dirname: str | Path, filename: str | None = None, save_on_rank: int = 0):
        super().__init__(dirname=dirname, atomic=True, require_empty=False, save_on_rank=save_on_rank)
        self.filename = filename
        self._to_remove: list[str] = []

    def __call__(self, checkpoint, filename: str, metadata=None) -> None:
        filename = self.filename or filename
        super().__call__(checkpoint, filename, metadata)
        pending, self._to_remove = self._to_remove, []
        for old in pending:
            if old != filename and (self.dirname / old).exists():
                super().remove(old)

    def _save_func(self, checkpoint, path: Path, func) -> None:
        """Ignite's atomic save, with a temporary name that records this process (``.<name>.<pid>@<host>.*.tmp``:
        :func:`scripts.io.files.remove_stale_temporaries` removes it after a kill) instead of ``tmpXXXXXXXX``."""
        fd, tmp = tempfile.mkstemp(dir=self.dirname, prefix=temp_prefix(Path(path).name), suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                func(checkpoint, handle, **self.kwargs)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        os.chmod(path, os.stat(path).st_mode | stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)

    def remove(self, filename: str) -> None:
        # deferred until the next checkpoint has been written (Ignite calls remove() before saving)
        self._to_remove.append(self.filename or filename)


def use_atomic_saving(saver: CheckpointSaver, engine: Engine | None = None) -> CheckpointSaver:
    """Swap the save handlers of a MONAI ``CheckpointSaver`` (final, key-metric, interval) for :class:`AtomicDiskSaver`.

    With ``engine`` (the one the saver is attached to), a resumed run also takes over the interval checkpoints already
    in the folder (on ``Events.STARTED``, after :class:`ResumeCheckpointLoader` has restored the epoch), so that
    ``n_saved`` still applies and the checkpoint resumed from is deleted once newer ones exist.
    """
    for checkpoint in (saver._final_checkpoint, saver._key_metric_checkpoint, saver._interval_checkpoint):
        if checkpoint is not None and not isinstance(checkpoint.save_handler, AtomicDiskSaver):
            old = checkpoint.save_handler
            checkpoint.save_handler = AtomicDiskSaver(old.dirname, getattr(old, "filename", None), old.save_on_rank)
    if engine is not None and saver._interval_checkpoint is not None:
        engine.add_event_handler(Events.STARTED, _adopt_interval_checkpoints, saver)
    return saver


def _adopt_interval_checkpoints(engine: Engine, saver: CheckpointSaver) -> None:
    checkpoint = saver._interval_checkpoint
    current = engine.state.epoch if saver.epoch_level else engine.state.iteration
    state = checkpoint.state_dict()  # {"_saved": [(priority, filename), ...]} (key name varies across Ignite versions)
    if not current or len(state) != 1 or next(iter(state.values())):
        return
    prefix = f"{checkpoint.filename_prefix}_" if checkpoint.filename_prefix else ""
    pattern = re.compile(rf"^{re.escape(prefix)}checkpoint_{checkpoint.score_name}=(\d+)\.{checkpoint.ext}$")
    found = sorted((int(m.group(1)), p.name) for p in Path(saver.save_dir).glob("*") if (m := pattern.match(p.name)))
    found = [(score, name) for score, name in found if score <= current]
    if found:
        checkpoint.load_state_dict({next(iter(state)): found})


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` with atomic writes (:class:`AtomicDiskSaver`) and a resume-proof best model.

    With ``save_key_metric=True`` and no explicit ``key_metric_name``, the key-metric file (``model.pt``) is only
    written when the engine itself has just recorded a new best (``engine.state.best_metric_epoch`` equals the current
    epoch). The engine's best value survives a resume (:class:`BestMetricState` in the training checkpoint), while
    Ignite's own list of saved scores does not: without this check the first validation after a resume would
    overwrite the best model with a possibly worse one.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._gate_on_engine_best = kwargs.get("key_metric_name") is None
        use_atomic_saving(self)

    def metrics_completed(self, engine: Engine) -> None:
        best_epoch = getattr(engine.state, "best_metric_epoch", None)
        if self._gate_on_engine_best and best_epoch is not None and best_epoch != engine.state.epoch:
            return
        super().metrics_completed(engine)


class BestMetricState:
    """An evaluator's best key metric (value and epoch) as a ``state_dict``-able object for the training checkpoint.

    Put it in the training checkpoint's ``save_dict`` (``train#save_dict`` in ``configs/train.json``): a resumed run
    then keeps comparing validations with the best one before the interruption (log line "Key metric ... best
    value", and the best-model file of :class:`AtomicCheckpointSaver`).
    """

    def __init__(self, evaluator: Engine):
        self.evaluator = evaluator

    def state_dict(self) -> dict:
        state = self.evaluator.state
        return {
            "best_metric": float(getattr(state, "best_metric", -1)),
            "best_metric_epoch": int(getattr(state, "best_metric_epoch", -1)),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.evaluator.state.best_metric = float(state_dict["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state_dict["best_metric_epoch"])


def latest_checkpoint(checkpoint_dir: str | Path, file_prefix: str = "last") -> Path | None:
    """The ``<file_prefix>_checkpoint_epoch=<N>.pt`` with the largest N in ``checkpoint_dir`` (None if none)."""
    prefix = f"{file_prefix}_" if file_prefix else ""
    pattern = re.compile(rf"^{re.escape(prefix)}checkpoint_epoch=(\d+)\.pt$")
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.glob("*.pt") if (m := pattern.match(p.name))]
    return max(found)[1] if found else None


def resume_checkpoint(checkpoint_dir: str | Path, file_prefix: str = "last", required: bool = True) -> Path | None:
    """The newest checkpoint to resume from (:func:`latest_checkpoint`); ``required``: an :class:`InputError` naming
    the folder when there is none."""
    path = latest_checkpoint(Path(checkpoint_dir), file_prefix)
    if path is None and required:
        prefix = f"{file_prefix}_" if file_prefix else ""
        raise InputError(
            f"--resume true: no '{prefix}checkpoint_epoch=*.pt' checkpoint in {checkpoint_dir} "
            "(check bundle_root / output_dir, or use resume 'auto' to start afresh when there is none)"
        )
    return path


class ResumeCheckpointLoader(CheckpointLoader):
    """Resume training from the newest ``<file_prefix>_checkpoint_epoch=N.pt`` of ``checkpoint_dir``.

    A MONAI ``CheckpointLoader`` (it runs on ``Events.STARTED``: put it first in the trainer's handlers) whose file is
    found when the run starts, and which adds the engine it is attached to as ``"trainer"`` to ``load_dict``, like
    :class:`TrainingCheckpointSaver` does when saving: epoch and iteration are restored with the model, optimizer,
    scheduler etc., and the run continues at the next epoch up to the (possibly new) ``max_epochs``.

    Args:
        checkpoint_dir: folder of the checkpoints (``@output_dir``).
        load_dict: the objects to restore, the ``save_dict`` of the saver (without the trainer).
        resume: False: do nothing (not even attach); True: resume, and raise ``FileNotFoundError`` naming the
            folder when it holds no checkpoint; ``"auto"``: resume when a checkpoint exists, else start afresh with
            a warning (for jobs restarted by a scheduler). The words true / false / auto of the command line are
            parsed (:func:`scripts.io.options.parse_flag`); anything else is an ``InputError`` naming ``--resume``.
        file_prefix: the saver's ``file_prefix``.
        map_location: ``torch.load`` map location (``@device``: each rank loads onto its own device).
        name, strict: as for MONAI's ``CheckpointLoader``.
    """

    def __init__(
        self,
        checkpoint_dir: str | Path,
        load_dict: dict,
        resume: bool | str = False,
        file_prefix: str = "last",
        map_location=None,
        name: str | None = None,
        strict: bool = True,
    ):
        self.resume = parse_flag(resume, "resume", ("auto",))
        self.checkpoint_dir = Path(checkpoint_dir)
        self.file_prefix = file_prefix
        if self.resume is True:  # fail before anything is built or written (event files, checkpoints)
            path = self._find()
            read_checkpoint(path, "checkpoint to resume from")  # a truncated / foreign file: one clear error
        remove_stale_temporaries(self.checkpoint_dir)  # of a run killed while writing a checkpoint
        super().__init__(
            load_path=str(self.checkpoint_dir),
            load_dict=dict(load_dict),
            name=name,
            map_location=map_location,
            strict=strict,
        )

    def _find(self) -> Path | None:
        return resume_checkpoint(self.checkpoint_dir, self.file_prefix, required=self.resume is True)

    def attach(self, engine: Engine) -> None:
        if not self.resume:
            return
        self._find()  # fail fast, before anything runs, when resume=True and there is nothing to resume from
        self.load_dict.setdefault("trainer", engine)
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        path = self._find()
        if path is None:
            self.logger.warning(f"resume='auto': no checkpoint in {self.checkpoint_dir}, training from scratch")
            return
        self.load_path = str(path)
        epoch_length = engine.state.epoch_length
        super().__call__(engine)
        if epoch_length and engine.state.epoch_length != epoch_length:
            # another number of processes, batch size or pairs: keep whole epochs (Ignite would skip the remainder of
            # iteration % epoch_length batches of the next epoch), renumbering iterations as epoch * epoch_length
            self.logger.warning(
                f"{path.name} was written with {engine.state.epoch_length} iterations per epoch, this run has "
                f"{epoch_length}: continuing after epoch {engine.state.epoch} at iteration "
                f"{engine.state.epoch * epoch_length}"
            )
            engine.state.epoch_length = epoch_length
            engine.state.iteration = engine.state.epoch * epoch_length
        self.logger.info(
            f"Resumed from {path.name}: epoch {engine.state.epoch}, iteration {engine.state.iteration}, "
            f"continuing to epoch {engine.state.max_epochs}"
        )


def check_training_output(output_dir: str | os.PathLike, resume: Any = False, file_prefix: str = "last") -> None:
    """Before a training run builds anything: the run folder is usable (:func:`check_output_dir`) and, with
    ``resume`` true, holds a readable checkpoint to resume from."""
    check_output_dir(output_dir, "output_dir")
    if parse_flag(resume, "resume", ("auto",)) is True:
        read_checkpoint(resume_checkpoint(output_dir, file_prefix), "checkpoint to resume from")
