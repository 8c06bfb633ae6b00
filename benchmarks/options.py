"""The benchmarks' ``--refine-option KEY=VALUE``: any other keyword of ``refine_pair``, ``cavity_regions`` or the
passes around them, its value as JSON, so that a benchmark measures an option without a flag of its own."""

from __future__ import annotations

import json
from collections.abc import Sequence

from scripts.io.errors import InputError
from scripts.io.options import check_number

FLAG_HELP = "another refine_pair / cavity_regions keyword, VALUE as JSON (e.g. fold_barrier=0); repeatable"


# the passes' options that the benchmarks read themselves (not refine_pair's keywords, which refine_pair checks):
# the rules of the bundle's --refine_* options (scripts/refinement/inferer.py), so that a bad value stops the
# benchmark before any work instead of running silently (a negative run-off) or ending in a traceback
PASS_RULES = {
    "second_iterations": dict(integer=True),
    "second_snap_mm": dict(unit=" of mm"),
    "second_lr": dict(strict=True),
    "second_band_fold_weight": {},
    "second_wall_search": dict(integer=True, unit=" of voxels"),
    "first_wall_search": dict(integer=True, unit=" of voxels"),
    "first_wall_region_mm": dict(unit=" of mm"),
    "first_wall_search_iterations": dict(integer=True, minimum=1, note="or null: the second pass's iterations"),
    "first_wall_runoff_iterations": dict(integer=True),
}


def parse_refine_options(options: Sequence[str]) -> dict:
    """``["bone_trim_hu=0", "first_wall_search=1"]`` -> ``{"bone_trim_hu": 0, "first_wall_search": 1}``, the
    options of :data:`PASS_RULES` checked by their rules (``first_wall_search_iterations`` may be null).

    Raises:
        SystemExit: one ``error:`` line for an option without ``=`` or a key, whose value is no JSON, or that
        breaks its rule.
    """
    parsed = {}
    for option in options:
        key, sep, value = option.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError(option)
            parsed[key.strip()] = json.loads(value)
        except ValueError:  # json.JSONDecodeError is one
            raise SystemExit(f"error: --refine-option takes KEY=VALUE with a JSON value, got {option!r}") from None
    for key, rule in PASS_RULES.items():
        if key not in parsed or (key == "first_wall_search_iterations" and parsed[key] is None):
            continue
        try:
            check_number(parsed[key], f"--refine-option {key}", **rule)
        except InputError as err:
            raise SystemExit(f"error: {err}") from None
    return parsed
