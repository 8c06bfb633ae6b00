"""The options of the workflows that need parsing: the true/false flags, parsed once, a typed null, and the thread
count.

``python -m monai.bundle run ... --learn2reg false`` hands the config the STRING "false" (the command line's parser
turns only ``True`` / ``False`` into booleans), and a non-empty string is true in Python. Every config therefore lists
its boolean options once, in its ``flags`` component (:class:`Flags`), and its components read them from there
(``"$@flags.learn2reg"``); a config merged later adds its own (``"flags#organ_pairs": "@organ_pairs"``). The values
are parsed when the workflow starts, and a value that is neither true nor false is one :class:`InputError` naming
the option and the accepted values. Likewise ``--refine_smooth null`` hands over the string "null": :func:`parse_null`
turns it (and "None") into None where an option's default is null. The refinement's numbers are checked here too
(:func:`is_number`, :func:`check_optional_numbers`, :func:`check_schedule`), before any work.

``torch_threads`` (:func:`apply_threads`): on a machine where other jobs run, torch's default of one thread per core
is the slowest choice. Each parallel op waits at a barrier for its slowest thread, and a thread that shares its core
with another job's is descheduled for whole time slices, so the op waits too (measured: the refinement of the CT
phantom beside two single-threaded jobs on 2 cores took 25.5 s with 2 threads, 10.7 s with 1). ``"auto"`` (the
default) counts the cores that are free when the workflow starts (the idle share of the cores this process may run
on, sampled from ``/proc/stat`` over a quarter of a second, within the cgroup's CPU quota) and uses that many
threads, at least one (the processes of one ``torchrun`` share them: ``LOCAL_WORLD_SIZE``); on an idle machine
that is every core, as before.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from scripts.io.errors import InputError

__all__ = [
    "parse_flag",
    "parse_null",
    "is_number",
    "check_number",
    "check_schedule",
    "Flags",
    "usable_cores",
    "free_cores",
    "choose_threads",
    "apply_threads",
]

logger = logging.getLogger(__name__)

TRUE, FALSE = "true", "false"


def parse_flag(value: Any, name: str, extra: Sequence[str] = ()) -> bool | str:
    """``value`` of the option ``name`` as a bool: True / False, or the words true / false in any case (as the
    command line gives them); a word of ``extra`` (e.g. "auto") is returned as that word, lower case.

    Raises:
        InputError: any other value, naming the option and the accepted values.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy's bool too
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in (TRUE, FALSE):
            return word == TRUE
        if word in extra:
            return word
    accepted = [TRUE, FALSE, *extra]
    listed = ", ".join(f"--{name} {word}" for word in accepted[:-1]) + f" or --{name} {accepted[-1]}"
    raise InputError(f"option --{name}: {value!r} is not one of {', '.join(accepted)}; give {listed}")


class Flags:
    """The boolean options of a workflow (the config's ``flags``): each keyword becomes an attribute holding its
    parsed value (:func:`parse_flag`).

    Args:
        auto: the options that also accept "auto" (``resume``).
        options: option name -> value as the config holds it (``"@learn2reg"``).
    """

    def __init__(self, auto: Sequence[str] = (), **options: Any):
        self._names = tuple(options)
        for name, value in options.items():
            setattr(self, name, parse_flag(value, name, ("auto",) if name in auto else ()))

    def check(self) -> None:
        """Nothing left to do: the values were parsed when the flags were built; a config calls it first (in
        ``initialize`` or ``run``) so that a bad value stops the workflow before anything else."""

    def __repr__(self) -> str:
        return "Flags(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self._names) + ")"


def parse_null(value: Any) -> Any:
    """None for the command line's spellings of a config's ``null`` (``--refine_smooth null``: the parser turns only
    ``None`` into None and leaves ``null`` a string, which the option's check would then refuse); any other value as
    it is."""
    return None if isinstance(value, str) and value.strip().lower() in ("null", "none") else value


def is_number(value: Any, integer: bool = False) -> bool:
    """``value`` is an int (``integer``) or an int or float, not a bool (the command line gives true/false as bools)."""
    return not isinstance(value, bool) and isinstance(value, int if integer else (int, float))


def check_number(
    value: Any,
    flag: str,
    minimum: float = 0,
    strict: bool = False,
    integer: bool = False,
    unit: str = "",
    note: str = "",
) -> int | float:
    """``value`` of the option ``flag`` as an int (``integer``) or float at least ``minimum`` (above it: ``strict``),
    checked before any work. Raises :class:`InputError` in the bundle's words, e.g. ``--refine_second_wall_search must
    be a whole number of voxels >= 0 (0: no search), got -1`` (``unit`` " of voxels", ``note`` "0: no search")."""
    if is_number(value, integer) and (value > minimum if strict else value >= minimum):
        return int(value) if integer else float(value)
    what = ("a whole number" if integer else "a number") + unit + (" > " if strict else " >= ") + f"{minimum:g}"
    raise InputError(f"{flag} must be {what}{f' ({note})' if note else ''}, got {value!r}")


def check_optional_numbers(options: Mapping[str, Any], note: str) -> dict[str, float | None]:
    """Options (the flag without its dashes -> the value) that take a number or null (:func:`parse_null`), as floats
    or None, checked before any work. Raises :class:`InputError` naming the first that is neither, e.g. ``--bone_hu
    must be a number or null (HU; null turns that rule off), got 'dim'`` (``note`` "HU; null turns that rule off")."""
    out = {}
    for key, value in options.items():
        value = parse_null(value)
        if value is not None and not is_number(value):
            raise InputError(f"--{key} must be a number or null ({note}), got {value!r}")
        out[key] = None if value is None else float(value)
    return out


def check_schedule(levels: Any, iterations: Any, lr: Any, default_levels: int) -> None:
    """--refine_levels / --refine_iterations / --refine_lr as the refinement takes them (``default_levels`` when
    levels is None), checked before any work: a bad value there would stop the first pair with a ValueError
    traceback, after the network and the regions ran. Raises :class:`InputError` naming the option."""
    if levels is not None:
        check_number(levels, "--refine_levels", minimum=1, integer=True, note=f"or null: {default_levels}")
    n = default_levels if levels is None else levels
    for name, value, integer, low in (("iterations", iterations, True, 0), ("lr", lr, False, 0)):
        if value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        bad = any(not is_number(v, integer) or (v < low if integer else v <= low) for v in values)
        if bad or (isinstance(value, (list, tuple)) and len(values) != n):
            what = "a whole number >= 0" if integer else "a number > 0"
            raise InputError(
                f"--refine_{name} must be {what}, or a list of {n} (one per level, coarsest first), got {value!r}"
            )


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, within the cgroup v2 CPU quota (``cpu.max``) when set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _cpu_times(cpus: set[int] | None) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over ``cpus`` (None: all) from /proc/stat, or None where it cannot be read."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or (cpus is not None and int(name[3:]) not in cpus):
            continue
        values = [float(v) for v in fields[:8]]
        idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
        total += sum(values)
        busy += sum(values) - idle
    return (busy, total) if total > 0 else None


def free_cores(interval: float = 0.25) -> float:
    """How many of :func:`usable_cores` were idle over ``interval`` seconds (all of them where /proc/stat is absent)."""
    cores = usable_cores()
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    first = _cpu_times(cpus)
    if first is None:
        return float(cores)
    time.sleep(interval)
    second = _cpu_times(cpus)
    if second is None or second[1] <= first[1]:
        return float(cores)
    busy_share = (second[0] - first[0]) / (second[1] - first[1])
    seen = len(cpus) if cpus is not None else (os.cpu_count() or cores)
    return max(0.0, min(float(cores), seen * (1.0 - busy_share)))


def choose_threads(setting: Any, free: float | None = None) -> int:
    """The torch thread count for the option ``torch_threads``: "auto" -> the free cores (``free``, else measured by
    :func:`free_cores`) rounded, at least 1; a positive integer -> itself; 0 -> torch's own default (one per core).
    Raises :class:`InputError` on anything else."""
    word = str(setting).strip().lower()
    if word == "auto":  # the processes of one torchrun share the free cores (they start, and measure, together)
        free = free_cores() if free is None else free
        share = free / max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        return max(1, min(usable_cores(), int(share + 0.5)))
    try:
        count = int(word)
    except ValueError:
        count = -1
    if count < 0:
        raise InputError(
            f"option --torch_threads: {setting!r} is not auto or a number of threads; "
            "give --torch_threads auto or e.g. 2"
        )
    return count if count > 0 else torch.get_num_threads()


def apply_threads(setting: Any) -> int:
    """Set torch's intra-op threads from the option ``torch_threads`` (:func:`choose_threads`) and log the choice."""
    auto = str(setting).strip().lower() == "auto"
    free = free_cores() if auto else None
    threads = choose_threads(setting, free)
    torch.set_num_threads(threads)
    if auto:
        logger.info("torch threads: %d (--torch_threads auto: %.1f of %d cores free)", threads, free, usable_cores())
    return threads
