"""Batch registration: the pairs a run still has to register (resume), shared among the processes of a ``torchrun``
(sharding), and the run summary gathered from them.

- **Records.** The writer writes each pair's summary entry LAST, after the pair's images, to
  ``<fixed>__<moving>_summary.json`` (:func:`write_record`: the entry and the pair's input files). A pair is
  **complete** (:func:`complete_entry`) when its record names the same input files, lists every output the run's
  options expect (:func:`expected_outputs`: ddf, warped, det J, warped labels, Learn2Reg files) and all of them are
  present, and no input file is newer than the record. Every output is renamed into place only when complete, so a
  killed run leaves complete files, temporaries of a dead writer (removed by the next run's output-folder check,
  :func:`scripts.io.files.remove_stale_temporaries`) and no record for the pair it was writing.
- **Resume and sharding** (:class:`PendingPairs`, the config's ``pending``). With ``resume`` the complete pairs are
  skipped, their records giving their summary entries; the rest is split among the processes of a
  ``torch.distributed`` group: pair i of the remaining list to rank i mod world size, the split of MONAI's
  ``DistributedSampler(shuffle=False, even_divisible=False)`` (no pair twice, none padded in). MONAI's sampler and
  ``partition_dataset`` refuse a list shorter than the number of processes, which a resumed run can have, so the
  split is done here. Rank 0 decides which pairs are complete and broadcasts it: every rank works from one plan.
- **Summary.** :func:`gather_rows` brings every rank's entries to rank 0, which writes ``summary.json`` (the
  skipped pairs' entries included, in the order of the pair list).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch.utils.data import Dataset

from scripts.evaluation.learn2reg import submission_names
from scripts.inference.pairs import output_paths, pair_name
from scripts.io.files import atomic_write_text

__all__ = [
    "RECORD_SUFFIX",
    "INPUT_KEYS",
    "process_group",
    "record_path",
    "expected_outputs",
    "write_record",
    "complete_entry",
    "gather_rows",
    "PendingPairs",
]

logger = logging.getLogger(__name__)

RECORD_SUFFIX = "_summary.json"
INPUT_KEYS = ("fixed", "moving", "moving_label", "fixed_label", "fixed_seg")


def process_group() -> tuple[int, int]:
    """``(rank, world size)`` of the ``torch.distributed`` group, ``(0, 1)`` in a single process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def record_path(output_dir: str | os.PathLike, name: str) -> Path:
    """The record of the pair ``name`` (:func:`scripts.inference.pairs.pair_name`): its summary entry."""
    return Path(output_dir) / f"{name}{RECORD_SUFFIX}"


def expected_outputs(
    entry: Mapping[str, Any],
    output_dir: str | os.PathLike,
    output_ext: str = ".nii.gz",
    save_jacobian: bool = True,
    learn2reg: bool = False,
    learn2reg_naming: str = "official",
) -> dict[str, str]:
    """``{kind: path}`` of the files the writer makes for the pair ``entry`` with these options (the keys of a summary
    entry's ``outputs``)."""
    paths = output_paths(output_dir, pair_name(entry["fixed"], entry["moving"]), output_ext)
    kinds = ["ddf"] + (["jacdet"] if save_jacobian else []) + ["warped"]
    kinds += ["warped_label"] if entry.get("moving_label") else []
    out = {kind: str(paths[kind]) for kind in kinds}
    if learn2reg:
        for i, name in enumerate(submission_names(entry["fixed"], entry["moving"], learn2reg_naming, output_ext)):
            out["learn2reg" if i == 0 else "learn2reg_template"] = str(Path(output_dir) / name)
    return out


def _inputs(entry: Mapping[str, Any]) -> dict[str, str]:
    """The pair's input files, resolved (a rerun from another folder names the same files)."""
    return {key: os.path.realpath(str(entry[key])) for key in INPUT_KEYS if entry.get(key)}


def write_record(output_dir: str | os.PathLike, row: Mapping[str, Any], entry: Mapping[str, Any] | None = None) -> Path:
    """Write the record of a pair whose outputs are all in place: ``{"pair": its input files (``entry``; None: the
    entry's fixed and moving images), "entry": its summary entry ``row``}``, atomically (a kill leaves the old record
    or none)."""
    path = record_path(output_dir, row["name"])
    record = {"pair": _inputs(entry if entry is not None else row), "entry": dict(row)}
    atomic_write_text(path, json.dumps(record, indent=2, allow_nan=True) + "\n")
    return path


def complete_entry(entry: Mapping[str, Any], expected: Mapping[str, str], output_dir: str | os.PathLike):
    """The summary entry of a complete pair (see the module docstring), else None."""
    path = record_path(output_dir, pair_name(entry["fixed"], entry["moving"]))
    try:
        record = json.loads(path.read_text())
        written = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    row = record.get("entry") if isinstance(record, dict) else None
    if not isinstance(row, dict) or record.get("pair") != _inputs(entry):
        return None
    outputs = row.get("outputs") or {}
    if any(Path(outputs.get(kind) or "").name != Path(p).name or not os.path.isfile(p) for kind, p in expected.items()):
        return None
    try:
        if any(os.stat(p).st_mtime > written for p in _inputs(entry).values()):
            return None  # an input changed after the pair was registered
    except OSError:
        return None
    return row


def gather_rows(
    rows: Sequence[dict], seconds: float, order: Sequence[str] | None = None, done: Mapping[str, dict] | None = None
) -> tuple[list[dict] | None, float]:
    """Every process's summary entries on rank 0, with the ``done`` ones (name -> entry: the pairs a resumed run
    skipped), in the ``order`` of the pair names (None: as they come), and the longest of the processes' run times;
    ``(None, seconds)`` on the other ranks."""
    rank, world = process_group()
    parts: list | None = [None] * world if rank == 0 else None
    if world == 1:
        parts = [(list(rows), float(seconds))]
    else:
        dist.gather_object((list(rows), float(seconds)), parts, dst=0)
    if rank != 0:
        return None, seconds
    rows, seconds = [row for part, _ in parts for row in part], max(s for _, s in parts)
    if order is not None:
        by_name = {**(done or {}), **{row["name"]: row for row in rows}}
        rows = [by_name[name] for name in order if name in by_name]
    return rows, seconds


class PendingPairs(Dataset):
    """The pairs this process registers: those of ``dataset`` (an
    :class:`scripts.inference.predict.InferencePairDataset`), without the complete ones when ``resume``, split among
    the processes of the ``torch.distributed`` group (see the module docstring). Item i is ``dataset[indices[i]]``.

    It hands the plan to the run's writer (the handler of ``handlers`` with ``set_plan``: the pair order and the
    entries of the skipped pairs for ``summary.json``).

    Attributes:
        source: ``dataset``; data: the entries of this process's pairs (what the checks before the run read);
        indices: their positions in ``dataset``; skipped: the names of the complete pairs skipped (every rank).
    """

    def __init__(self, dataset: Any, handlers: Sequence[Any] = (), resume: bool = False):
        if not isinstance(resume, bool):  # "false" would be true: the config parses --resume (@flags.resume)
            raise TypeError(f"resume must be a bool, got {resume!r}")
        self.source = dataset
        self._writer = next((h for h in handlers if hasattr(h, "set_plan")), None)
        rank, world = process_group()
        if not isinstance(getattr(dataset, "data", None), list):
            raise TypeError(f"PendingPairs needs a dataset with a 'data' list of pairs, got {type(dataset).__name__}")
        entries = list(dataset.data)
        names = [pair_name(entry["fixed"], entry["moving"]) for entry in entries]
        done: dict[int, dict] = {}
        if resume and self._writer is not None:
            if rank == 0:
                for i, entry in enumerate(entries):
                    row = complete_entry(entry, self._expected(entry), self._writer.output_dir)
                    if row is not None:
                        done[i] = row
            if world > 1:  # one plan for every rank (only rank 0 keeps the skipped entries: it writes the summary)
                shared = [sorted(done)]
                dist.broadcast_object_list(shared, src=0)
                done = done if rank == 0 else dict.fromkeys(shared[0], {})
        todo = [i for i in range(len(entries)) if i not in done]
        self.indices = todo[rank::world]
        self.data = [entries[i] for i in self.indices]
        self.skipped = [names[i] for i in sorted(done)]
        if self._writer is not None:
            self._writer.set_plan(entries, {names[i]: row for i, row in done.items() if rank == 0})
        if resume:
            logger.info(
                "resume: %d of %d pair(s) complete in %s, skipped; %d left",
                len(done),
                len(entries),
                getattr(self._writer, "output_dir", "?"),
                len(todo),
            )
        if world > 1:
            logger.info("rank %d of %d: %d pair(s) to register", rank, world, len(self.indices))

    def _expected(self, entry: Mapping[str, Any]) -> dict[str, str]:
        w = self._writer
        return expected_outputs(entry, w.output_dir, w.output_ext, w.save_jacobian, w.learn2reg, w.learn2reg_naming)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.source[self.indices[index]]

    def __getstate__(self) -> dict:  # DataLoader workers get the pairs, not the writer
        return {**self.__dict__, "_writer": None}

    def wait_for_all(self) -> None:
        """A barrier of the process group (none in a single process): no rank writes before every rank has passed
        its checks."""
        if process_group()[1] > 1:
            dist.barrier()

    def finish(self) -> None:
        """Write the summary when the workflow had nothing to run in this process (MONAI skips an empty loader, and
        with it the writer's end-of-run event): every pair complete, or none left for this rank."""
        if self._writer is not None:
            self._writer.finish()
