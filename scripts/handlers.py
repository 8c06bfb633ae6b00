"""Ignite handlers of the workflows: loss-term logging, per-pair metric reports, figures."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import CommonKeys as Keys

from scripts.learn2reg import learn2reg_metrics
from scripts.metrics import pair_metrics

__all__ = [
    "LossTermsLogger",
    "PairMetricsWriter",
    "TrainingCheckpointSaver",
    "atomic_write_text",
    "AtomicDiskSaver",
    "AtomicCheckpointSaver",
    "BestMetricState",
    "ResumeCheckpointLoader",
    "latest_checkpoint",
    "use_atomic_saving",
]

logger = logging.getLogger(__name__)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file through a temporary file and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600: give the report the permissions of an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


class LossTermsLogger:
    """Averages the loss terms (similarity, Dice, Jacobian, rigidity, shearing) over each training epoch.

    Reads ``engine.loss_function.last_terms`` (:class:`scripts.losses.RegistrationLoss`) after every
    iteration and stores the epoch means as ``engine.state.metrics["train_<term>"]``, where MONAI's
    StatsHandler and TensorBoardStatsHandler log them.
    """

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._publish)

    def _reset(self, engine: Engine) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def _accumulate(self, engine: Engine) -> None:
        terms = getattr(engine.loss_function, "last_terms", {})
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1 if terms else 0
        if terms and not math.isfinite(terms.get("total", 0.0)):
            raise FloatingPointError(f"non-finite training loss at iteration {engine.state.iteration}: {terms}")

    def _publish(self, engine: Engine) -> None:
        for key, value in self.sums.items():
            engine.state.metrics[f"train_{key}"] = value / max(self.count, 1)


class PairMetricsWriter:
    """Per-pair metrics of an evaluator run, written as ``metrics.csv`` and ``summary.json``.

    The evaluator's output must hold the batch dicts (``decollate=False``): ``pred`` from
    :class:`scripts.registration.RegistrationNet`, ``label`` the targets of
    :class:`scripts.registration.PrepareRegistrationBatch`. The summary has the mean, std and median
    of every metric of :func:`scripts.metrics.pair_metrics`; the means also go to
    ``engine.state.metrics``. With ``figures > 0`` the first pairs are drawn as PNGs
    (:func:`scripts.figures.save_registration_figure`).

    Args:
        output_dir: folder of the reports (created).
        num_label_classes: label classes with background for Dice (0: none).
        figures: number of pairs to draw.
        learn2reg_metrics: also report the Learn2Reg metrics with the challenge's conventions
            (:func:`scripts.metrics.learn2reg_metrics`: ``l2r_dice``, ``l2r_hd95`` (mm), ``l2r_sdlogj``, per-label
            ``l2r_dice_<id>``); needs ``fixed_label`` and ``moving_label`` in the batch.
        learn2reg_labels: label ids for those metrics (default: 1 .. num_label_classes - 1).
    """

    def __init__(
        self,
        output_dir: str | Path,
        num_label_classes: int = 0,
        figures: int = 0,
        learn2reg_metrics: bool = False,
        learn2reg_labels: list[int] | None = None,
    ):
        self.output_dir = Path(output_dir)
        self.num_label_classes = num_label_classes
        self.figures = figures
        self.learn2reg_metrics = bool(learn2reg_metrics)
        self.learn2reg_labels = list(learn2reg_labels) if learn2reg_labels else list(range(1, num_label_classes))
        if self.learn2reg_metrics and not self.learn2reg_labels:
            raise ValueError("learn2reg_metrics needs label ids: set num_label_classes (or learn2reg_labels)")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.rows: list[dict[str, float]] = []

    def _collect(self, engine: Engine) -> None:
        pred, target = engine.state.output[Keys.PRED], engine.state.output[Keys.LABEL]
        values = pair_metrics(pred, target, self.num_label_classes)
        if self.learn2reg_metrics:
            if "fixed_label" not in target or "moving_label" not in target:
                raise KeyError("learn2reg_metrics needs fixed_label and moving_label in the evaluation batches")
            values.update(
                learn2reg_metrics(
                    pred["ddf"].float(),
                    target["fixed_label"],
                    target["moving_label"],
                    self.learn2reg_labels,
                    spacing=target.get("spacing"),
                )
            )
        for b in range(target["fixed"].shape[0]):
            pair = len(self.rows)
            self.rows.append({"pair": pair, **{key: float(v[b]) for key, v in values.items()}})
            if pair < self.figures:
                from scripts.figures import save_registration_figure

                save_registration_figure(
                    target["fixed"][b, 0],
                    target["moving"][b, 0],
                    pred["warped"][b, 0],
                    pred["ddf"][b],
                    self.output_dir / f"pair_{pair:03d}.png",
                )

    def _write(self, engine: Engine) -> None:
        if not self.rows:
            raise RuntimeError("the evaluation saw no pairs: is the dataset empty?")
        names = [key for key in self.rows[0] if key != "pair"]
        summary = {"pairs": len(self.rows)}
        for name in names:
            values = torch.tensor([row[name] for row in self.rows], dtype=torch.float64)
            values = values[~values.isnan()]
            summary[name] = {
                "mean": float(values.mean()) if len(values) else None,
                "std": float(values.std()) if len(values) > 1 else 0.0,
                "median": float(values.median()) if len(values) else None,
            }
            if len(values):
                engine.state.metrics[name] = summary[name]["mean"]
        lines = [",".join(["pair", *names])]
        lines += [",".join([str(row["pair"]), *(f"{row[n]:.6g}" for n in names)]) for row in self.rows]
        atomic_write_text(self.output_dir / "metrics.csv", "\n".join(lines) + "\n")
        atomic_write_text(self.output_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        logger.info("evaluation of %d pairs written to %s", len(self.rows), self.output_dir)
        for name in names:
            if summary[name]["mean"] is not None:
                logger.info("  %-18s %.6g +- %.3g", name, summary[name]["mean"], summary[name]["std"])


# ----------------------------------------------------------------------------------------------------------------------
# Crash-safe checkpoints and resume (configs/train.json: "resume", train#handlers[0], train#save_dict)


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
            a warning (for jobs restarted by a scheduler). Strings "true"/"false" are accepted (command line).
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
        if isinstance(resume, str):
            resume = {"true": True, "false": False, "auto": "auto"}.get(resume.strip().lower(), resume)
        if resume not in (True, False, "auto"):
            raise ValueError(f"resume must be true, false or 'auto', got {resume!r}")
        self.resume = resume
        self.checkpoint_dir = Path(checkpoint_dir)
        self.file_prefix = file_prefix
        super().__init__(
            load_path=str(self.checkpoint_dir),
            load_dict=dict(load_dict),
            name=name,
            map_location=map_location,
            strict=strict,
        )

    def _find(self) -> Path | None:
        path = latest_checkpoint(self.checkpoint_dir, self.file_prefix)
        if path is None and self.resume is True:
            prefix = f"{self.file_prefix}_" if self.file_prefix else ""
            raise FileNotFoundError(
                f"resume requested but no '{prefix}checkpoint_epoch=*.pt' checkpoint in {self.checkpoint_dir} "
                "(check bundle_root / output_dir, or use resume 'auto' to start afresh when there is none)"
            )
        return path

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
