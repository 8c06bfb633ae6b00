"""The outputs of a registered pair: the field back on the fixed image's grid, the warped images, det J, the files.

Outputs per pair, all on the fixed image's grid with its affine (``<fixed>`` and ``<moving>`` are the file names
without their suffix): ``<fixed>__<moving>_warped.nii.gz``, ``_ddf.nii.gz``, ``_jacdet.nii.gz``,
``_warped_label.nii.gz`` (when a moving label map is given), ``disp_FFFF_MMMM.nii.gz`` (Learn2Reg, optional),
and ``summary.json`` for the run.

The displacement field ``_ddf.nii.gz`` follows the ITK convention, so ITK/SimpleITK, ANTs and 3D Slicer read it as
a transform: a 5D NIfTI (X, Y, Z, 1, 3), float32, intent 1007 (NIFTI_INTENT_VECTOR), vectors in **millimetres in
LPS** physical space (ITK's world: x = -R, y = -A, z = S; nibabel's RAS vector (r, a, s) is stored as
(-r, -a, s)). It maps each fixed-space point p to the corresponding moving-space point p + u(p), i.e. it is the
*resampling* transform that ``sitk.Resample(moving, fixed, sitk.DisplacementFieldTransform(ddf))`` and
``antsApplyTransforms -i moving -r fixed -t ddf`` apply to the moving image.

The warped moving image at fixed voxel i is the moving image at index ``A_m^-1 A_f (i + d(i))``: one interpolation
of the original moving data (trilinear; nearest for label maps), in the moving image's intensity units. Points
outside the moving image's field of view get the moving image's minimum (labels: 0), with ITK's extent convention.

The Learn2Reg file ``disp_FFFF_MMMM.nii.gz`` is (X, Y, Z, 3) float32 in *voxels of the fixed grid*, channel k
along array axis k (the challenge's convention: moving is sampled at ``x + disp(x)``).

All of a pair's files are written together and atomically (:func:`scripts.io.image_io.write_niftis_atomically`);
then its summary entry, ``<fixed>__<moving>_summary.json``, which marks the pair complete for ``--resume true``
(:mod:`scripts.inference.batch`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.utils import CommonKeys as Keys

from scripts.evaluation.learn2reg import L2R_ABDOMEN_LABELS, grid_mismatch, score_field, submission_names
from scripts.evaluation.metrics import det_map_statistics, dice_per_label
from scripts.inference.batch import gather_rows, write_record
from scripts.inference.modality import check_alignment
from scripts.inference.pairs import output_paths, pair_name
from scripts.inference.predict import InferencePairDataset, PairData
from scripts.inference.streaming import finish_pair_in_slabs
from scripts.io.errors import InputError
from scripts.io.files import atomic_write_text
from scripts.io.image_io import (
    COMPRESSION_CHOICES,
    NIFTI_SUFFIXES,
    OUTPUT_SUFFIXES,
    nifti_on_grid,
    write_niftis_atomically,
)
from scripts.io.resampling import (
    field_to_fixed_grid,
    index_map,
    physical_displacement,
    sample_volume,
    warp_to_fixed,
)
from scripts.losses.mechanics import jacobian_map

__all__ = ["RAS_TO_LPS", "field_statistics", "finish_pair", "RegistrationWriter"]

logger = logging.getLogger(__name__)

RAS_TO_LPS = (-1.0, -1.0, 1.0)
STREAM_VOXELS = 2**25  # grids larger than this (32 Mi voxels, e.g. 512 x 512 x 128) are done in slabs


def field_statistics(det: torch.Tensor, disp_mm: torch.Tensor, eps: float = 1e-9) -> dict[str, Any]:
    """Summary of a det J map (X, Y, Z) and a displacement in mm (3, X, Y, Z): folding %, det J range and
    percentiles, std log J (:func:`scripts.evaluation.metrics.det_map_statistics`; ``det`` is left intact),
    displacement size."""
    mag = disp_mm.square().sum(dim=0).sqrt().reshape(-1)
    displacement = {"mean": float(mag.double().mean()), "max": float(mag.max())}
    del mag
    return {**det_map_statistics(det, eps), "displacement_mm": displacement}


def _nifti(data: np.ndarray, pair: PairData, intent: str | None = None) -> nib.Nifti1Image:
    return nifti_on_grid(data, pair.fixed_affine, pair.fixed_codes, intent)


def _dice(warped: np.ndarray, fixed: np.ndarray) -> dict[str, float]:
    """Dice per label present in the fixed label map (background 0 skipped), keyed by the label id."""
    try:
        values = dice_per_label(torch.from_numpy(np.asarray(warped)), torch.from_numpy(np.asarray(fixed)))
    except ValueError as err:
        raise InputError(str(err)) from None
    return {str(i + 1): float(v) for i, v in enumerate(values.tolist()) if not np.isnan(v)}


@torch.no_grad()
def finish_pair(
    pair: PairData,
    ddf_net: torch.Tensor,
    output_dir: str | os.PathLike,
    learn2reg: bool = False,
    save_jacobian: bool = True,
    output_ext: str = ".nii.gz",
    write_threads: int = 2,
    compression: str = "fast",
    learn2reg_naming: str = "official",
    learn2reg_labels: Sequence[int] | None = L2R_ABDOMEN_LABELS,
    slab: int | None = None,
) -> dict[str, Any]:
    """The field back on the fixed grid, warping, statistics and the writing: returns the pair's summary entry.

    Args:
        pair: from :func:`scripts.inference.predict.load_pair`.
        ddf_net: (1, 3, *net) displacement in net voxels (network output, or any field to apply).
        output_dir: folder of the outputs (created when the files are written).
        learn2reg: also write the Learn2Reg submission field (fixed-grid voxels, (X, Y, Z, 3)) under the name(s) of
            ``learn2reg_naming`` (:func:`scripts.evaluation.learn2reg.submission_names`: "official", "template" or
            "both"); with both label maps, the pair's Learn2Reg scores on the fixed image's full grid, as the
            challenge computes them (``learn2reg_labels``; None: every label of the fixed map), go to the entry's
            ``learn2reg``.
        save_jacobian: write the det J map.
        output_ext: ".nii.gz", ".nii", ".nrrd" or ".mha" (ITK formats: SimpleITK's files; the ddf as an ITK
            vector image in LPS mm, which ITK reads as a displacement field).
        write_threads, compression: see :func:`write_niftis_atomically`.
        slab: compute and write the outputs in slabs of this many slices (:mod:`scripts.inference.streaming`: bounded
            memory; NRRD / MHA streamed by :class:`scripts.inference.file_streams.ItkStream`); None: slabs for grids
            over ``STREAM_VOXELS`` voxels (outputs without Learn2Reg files), else the whole grid at once (NRRD / MHA
            written by SimpleITK).
    """
    clock = {"start": time.perf_counter()}

    def lap(name: str) -> None:
        now = time.perf_counter()
        clock[name] = now - clock.pop("last", clock["start"])
        clock["last"] = now

    output_dir = Path(output_dir)
    paths = output_paths(output_dir, pair.name, output_ext)
    entry: dict[str, Any] = {"name": pair.name, "fixed": pair.fixed_path, "moving": pair.moving_path}
    images: dict[Path, nib.Nifti1Image] = {}
    written: dict[str, str] = {}

    if pair.fixed_constant and pair.moving_constant:  # nothing to align: the identity, not what the network makes of it
        logger.warning("%s: both images are constant: writing the identity (zero displacement)", pair.name)
        ddf_net = torch.zeros_like(ddf_net)
        entry["identity_because_constant"] = True
    big = float(np.prod(pair.fixed_shape)) > STREAM_VOXELS
    if (slab or big) and not learn2reg:
        done = finish_pair_in_slabs(pair, ddf_net, paths, save_jacobian, compression, write_threads, slab, RAS_TO_LPS)
        lap("slabs")
        stats = det_map_statistics(done.pop("det"), overwrite=True)  # chunk by chunk: no full-size temporaries
        stats["displacement_mm"] = {"mean": done["disp_mean_mm"], "max": done["disp_max_mm"]}
        written.update(done["written"])
        entry["warped_inside_moving_percent"] = done["inside_percent"]
        if pair.moving_label is not None:
            entry["moving_label"] = pair.moving_label_path
            if pair.fixed_label is not None:
                entry.update(_dice_entry(pair, done["warped_label"]))
        return _complete(entry, stats, written, pair, clock, output_dir)
    ddf_vox = field_to_fixed_grid(ddf_net, pair.net_affine, pair.fixed_affine, pair.fixed_shape)
    disp_mm = physical_displacement(ddf_vox, pair.fixed_affine)
    lap("field_to_fixed_grid")
    lps = torch.tensor(RAS_TO_LPS, dtype=disp_mm.dtype, device=disp_mm.device).reshape(3, 1, 1, 1)
    ddf_file = (disp_mm * lps).permute(1, 2, 3, 0)[:, :, :, None, :].contiguous().cpu().numpy()
    images[paths["ddf"]] = _nifti(ddf_file, pair, intent="vector")
    written["ddf"] = str(paths["ddf"])
    det = jacobian_map(ddf_vox)
    lap("jacobian")
    stats = field_statistics(det, disp_mm)
    del disp_mm
    lap("statistics")
    if save_jacobian:
        images[paths["jacdet"]] = _nifti(det.cpu().numpy().astype(np.float32), pair)
        written["jacdet"] = str(paths["jacdet"])
    del det

    grids = (pair.moving_affine, pair.fixed_affine, pair.fixed_shape)
    warped, inside = warp_to_fixed(pair.moving, *grids, ddf_vox, fill=float(pair.moving.min()))
    warped = warped.cpu().numpy()
    if pair.moving_dtype.kind in "iu":
        info = np.iinfo(pair.moving_dtype)
        warped = np.clip(np.rint(warped), info.min, info.max).astype(pair.moving_dtype)
    images[paths["warped"]] = _nifti(warped, pair)
    written["warped"] = str(paths["warped"])
    entry["warped_inside_moving_percent"] = float(100.0 * inside.float().mean())
    del warped, inside
    if pair.moving_label is not None:
        label, _ = warp_to_fixed(pair.moving_label, *grids, ddf_vox, mode="nearest", fill=0.0)
        label = label.cpu().numpy().astype(pair.moving_label.dtype)
        images[paths["warped_label"]] = _nifti(label, pair)
        written["warped_label"] = str(paths["warped_label"])
        entry["moving_label"] = pair.moving_label_path
        if pair.fixed_label is not None:
            entry.update(_dice_entry(pair, label))
    stored = {path for key, path in paths.items() if key in ("ddf", "jacdet")}
    if learn2reg:
        disp = ddf_vox.permute(1, 2, 3, 0).contiguous().cpu().numpy()
        for i, name in enumerate(submission_names(pair.fixed_path, pair.moving_path, learn2reg_naming, output_ext)):
            images[output_dir / name] = _nifti(disp, pair)
            stored.add(output_dir / name)
            written["learn2reg" if i == 0 else "learn2reg_template"] = str(output_dir / name)
        if pair.fixed_label is not None and pair.moving_label is not None:
            labels = learn2reg_labels or [int(v) for v in np.unique(pair.fixed_label) if v > 0]
            scores = score_field(disp, pair.fixed_label, pair.moving_label, labels, before=True)
            entry["learn2reg"] = {k: scores[k] for k in ("dice", "dice_before", "hd95", "hd95_before", "sdlogj")}
            entry["learn2reg"]["hd95_units"] = "voxels of the fixed grid (the challenge's convention)"
        del disp
    del ddf_vox
    lap("warping")
    write_niftis_atomically(images, threads=write_threads, compression=compression, stored=stored)
    lap("writing")
    return _complete(entry, stats, written, pair, clock, output_dir)


def _dice_entry(pair: PairData, warped_label: np.ndarray) -> dict[str, Any]:
    """Dice before (the moving label map on the fixed grid, no displacement) and after registration."""
    dice_after = _dice(warped_label, pair.fixed_label)
    step = max(1, 2**22 // max(1, pair.fixed_shape[1] * pair.fixed_shape[2]))
    before = np.empty(pair.fixed_shape, dtype=pair.moving_label.dtype)
    to_moving = np.linalg.inv(np.asarray(pair.moving_affine)) @ np.asarray(pair.fixed_affine)
    data = torch.from_numpy(np.ascontiguousarray(pair.moving_label, dtype=np.float32))[None]
    for a in range(0, pair.fixed_shape[0], step):  # slabs along axis 0: bounded temporaries
        b = min(a + step, pair.fixed_shape[0])
        shift = np.eye(4)
        shift[0, 3] = a
        part = (b - a, *pair.fixed_shape[1:])
        out, _ = sample_volume(data, index_map(to_moving @ shift, part), part, mode="nearest", fill=0.0)
        before[a:b] = out[0].numpy().astype(before.dtype)
    dice_before = _dice(before, pair.fixed_label)
    del data
    return {
        "fixed_label": pair.fixed_label_path,
        "dice": {
            "mean_before": float(np.mean(list(dice_before.values()))) if dice_before else None,
            "mean_after": float(np.mean(list(dice_after.values()))) if dice_after else None,
            "before": dice_before,
            "after": dice_after,
        },
    }


def _complete(entry, stats, written, pair, clock, output_dir) -> dict[str, Any]:
    entry.update(stats)
    entry.update(pair.report)
    entry["moving_coverage"] = pair.moving_coverage
    entry["outputs"] = written
    entry["seconds"] = {"load": pair.seconds_load, **{k: v for k, v in clock.items() if k not in ("start", "last")}}
    entry["seconds_postprocess"] = time.perf_counter() - clock["start"]
    logger.info(
        "%s: folding %.4f%%, det J [%.3f, %.3f], |u| mean %.2f mm max %.2f mm -> %s",
        pair.name,
        stats["folding_percent"],
        stats["jacobian_det"]["min"],
        stats["jacobian_det"]["max"],
        stats["displacement_mm"]["mean"],
        stats["displacement_mm"]["max"],
        output_dir,
    )
    return entry


class RegistrationWriter:
    """Evaluator handler: after each iteration, brings the predicted field to the fixed grid, warps and writes the
    pair's files (:func:`finish_pair`), then its record (:mod:`scripts.inference.batch`); at the end, writes
    ``summary.json`` (one entry per pair: folding %, det J statistics, displacement size, Dice when both label maps are
    given, output paths), on rank 0 for every rank's pairs and those a resumed run skipped (:meth:`set_plan`).

    Args:
        output_dir: output folder (created on the first write).
        learn2reg: also write the Learn2Reg submission files (and score them when both label maps are given); the
            fixed and moving images of every pair must then lie on one grid (the challenge's evaluation works in
            array indices), checked before anything is written.
        learn2reg_naming: "official" (``disp_FFFF_ffff_MMMM_mmmm``, the maintained evaluation script), "template"
            (``disp_FFFF_MMMM``, the grand-challenge template) or "both".
        learn2reg_labels: label ids scored (default: AbdomenCTCT's 1..13; None: those of each fixed label map).
        save_jacobian: write the det J maps.
        output_ext: ".nii.gz" (default), ".nii", ".nrrd" or ".mha".
        summary_name: file name of the run summary.
        write_threads: threads compressing the output files.
        compression: "fast" (displacement and det J maps stored uncompressed inside the .gz, images and labels at
            zlib level 1) or "small" (zlib level 6 everywhere, slower); see :func:`write_niftis_atomically`.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        learn2reg: bool = False,
        save_jacobian: bool = True,
        output_ext: str = ".nii.gz",
        summary_name: str = "summary.json",
        write_threads: int = 2,
        compression: str = "fast",
        learn2reg_naming: str = "official",
        learn2reg_labels: Sequence[int] | None = L2R_ABDOMEN_LABELS,
    ):
        if output_ext not in OUTPUT_SUFFIXES:
            raise InputError(f"--output_ext {output_ext!r}: choose one of {OUTPUT_SUFFIXES}")
        if learn2reg and output_ext not in NIFTI_SUFFIXES:
            raise InputError(f"--learn2reg true writes NIfTI submissions: use --output_ext .nii.gz, not {output_ext}")
        if compression not in COMPRESSION_CHOICES:
            raise ValueError(f"compression must be one of {COMPRESSION_CHOICES}, got {compression!r}")
        self.compression = compression
        self.output_dir = Path(output_dir)
        self.learn2reg = bool(learn2reg)
        submission_names("x_0001_0000", "x_0002_0000", learn2reg_naming)  # a bad naming fails here, before any work
        self.learn2reg_naming = learn2reg_naming
        self.learn2reg_labels = None if learn2reg_labels is None else [int(v) for v in learn2reg_labels]
        self.save_jacobian = bool(save_jacobian)
        self.output_ext = output_ext
        self.summary_name = summary_name
        self.write_threads = write_threads
        self.rows: list[dict[str, Any]] = []
        self.order, self.entries, self.done, self._summarised = None, {}, {}, True  # see set_plan

    def set_plan(self, entries: Sequence[dict], done: dict[str, dict]) -> None:
        """The run's pairs (every rank's, in order: ``order``, ``entries`` by name) and the summary entries of those
        skipped as complete (``done``, by name)."""
        self.entries = {pair_name(entry["fixed"], entry["moving"]): dict(entry) for entry in entries}
        self.order, self.done = list(self.entries), dict(done)
        self.rows, self._summarised, self._started = [], False, time.perf_counter()

    def finish(self) -> None:
        """Write the summary unless the run's end already did (an empty loader never starts the engine)."""
        if not self._summarised:
            self._write_summary(None)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._mark, "batch")
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._mark, "loaded")
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_pair)
        engine.add_event_handler(Events.COMPLETED, self._write_summary)

    def _start(self, engine: Engine) -> None:
        self.rows = []
        self._marks: dict[str, float] = {}
        self._started = time.perf_counter()
        dataset = getattr(getattr(engine, "data_loader", None), "dataset", None)
        dataset = getattr(dataset, "source", dataset)  # batch.PendingPairs: check every pair of the run
        if self.learn2reg and isinstance(dataset, InferencePairDataset):  # checks before anything is written
            names = []
            for entry in dataset.data:
                try:
                    names += submission_names(entry["fixed"], entry["moving"], self.learn2reg_naming)
                except ValueError as err:
                    raise InputError(f"--learn2reg true: {err}") from None
                problem = grid_mismatch(entry["fixed"], entry["moving"])
                if problem is not None:
                    raise InputError(f"--learn2reg true: {problem}")
            if len(set(names)) != len(names):
                raise InputError(f"Learn2Reg file names are not unique: {names}")

    def _mark(self, engine: Engine, name: str) -> None:
        self._marks[name] = time.perf_counter()

    def _write_pair(self, engine: Engine) -> None:
        pair, pred = engine.state.output[Keys.LABEL], engine.state.output[Keys.PRED]
        ddf = pred["ddf"]
        predicted = time.perf_counter()
        row = finish_pair(
            pair,
            ddf,
            self.output_dir,
            learn2reg=self.learn2reg,
            save_jacobian=self.save_jacobian,
            output_ext=self.output_ext,
            write_threads=self.write_threads,
            compression=self.compression,
            learn2reg_naming=self.learn2reg_naming,
            learn2reg_labels=self.learn2reg_labels,
        )
        network_field = "refinement" not in pair.report  # the refinement's field lies on a grid of its own
        network_ddf = pred.get("network_ddf", ddf)  # with rigid bones (scripts/networks/bones.py) the network's own
        if network_field and (alignment := check_alignment(pair.name, pair.image, network_ddf)) is not None:
            row["alignment"] = alignment
        now = time.perf_counter()
        if "loaded" in self._marks:
            row["seconds"]["predict"] = predicted - self._marks["loaded"]
        if "batch" in self._marks:
            row["seconds"]["total"] = now - self._marks["batch"]
        write_record(self.output_dir, row, self.entries.get(pair.name))
        self.rows.append(row)

    def _write_summary(self, engine: Engine | None) -> None:
        self._summarised = True
        rows, seconds = gather_rows(self.rows, time.perf_counter() - self._started, self.order, self.done)
        if rows is None:
            return  # rank > 0: rank 0 writes the summary
        summary = {
            "pairs": rows,
            "num_pairs": len(rows),
            "seconds": seconds,
            "conventions": {
                "ddf": "mm, LPS (ITK), X x Y x Z x 1 x 3 NIfTI intent 1007, fixed grid; moving point = p + u(p)",
                "learn2reg": "voxels of the fixed grid, X x Y x Z x 3, channel k along array axis k; scores as the "
                "challenge's evaluation computes them (HD95 in voxels), on the full fixed grid",
                "jacdet": "det(I + grad u) on the fixed grid",
            },
        }
        folds = [row["folding_percent"] for row in rows]
        if folds:
            summary["mean_folding_percent"] = float(np.mean(folds))
            summary["mean_std_log_jacobian"] = float(np.mean([row["std_log_jacobian"] for row in rows]))
        atomic_write_text(self.output_dir / self.summary_name, json.dumps(summary, indent=2, allow_nan=True) + "\n")
        logger.info("%d pair(s) (%d skipped as complete), outputs in %s", len(rows), len(self.done), self.output_dir)
