"""Ignite handlers that report: loss-term logging, per-pair metric reports and figures."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.utils import CommonKeys as Keys

from scripts.evaluation.learn2reg import learn2reg_metrics
from scripts.evaluation.metrics import pair_metrics
from scripts.evaluation.motion_metrics import known_motion_metrics
from scripts.io.files import atomic_write_text

__all__ = ["LossTermsLogger", "PairMetricsWriter"]

logger = logging.getLogger(__name__)


class LossTermsLogger:
    """Averages the loss terms (similarity, Dice, Jacobian, rigidity, shearing) over each training epoch.

    Reads ``engine.loss_function.last_terms`` (:class:`scripts.losses.biomechanical.RegistrationLoss`) after every
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
    :class:`scripts.networks.registration.RegistrationNet`, ``label`` the targets of
    :class:`scripts.networks.registration.PrepareRegistrationBatch`. The summary has the mean, std and median
    of every metric of :func:`scripts.evaluation.metrics.pair_metrics` and, when the batch holds the true field
    (synthetic sets), of :func:`scripts.evaluation.motion_metrics.known_motion_metrics`; the means also go to
    ``engine.state.metrics``. With ``figures > 0`` the first pairs are drawn as PNGs
    (:func:`scripts.evaluation.figures.save_registration_figure`).

    Args:
        output_dir: folder of the reports (created).
        num_label_classes: label classes with background for Dice (0: none).
        figures: number of pairs to draw.
        learn2reg_metrics: also report the Learn2Reg metrics with the challenge's conventions
            (:func:`scripts.evaluation.learn2reg.learn2reg_metrics`: ``l2r_dice``, ``l2r_hd95`` (mm), ``l2r_sdlogj``,
            per-label ``l2r_dice_<id>``); needs ``fixed_label`` and ``moving_label`` in the batch.
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
        values.update(known_motion_metrics(pred, target))  # epe_*, slip_ratio: when the batch holds the true field
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
                # deferred: figures imports matplotlib, loaded only when a figure is drawn
                from scripts.evaluation.figures import save_registration_figure

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
