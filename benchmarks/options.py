"""The benchmarks' ``--refine-option KEY=VALUE``: any other keyword of ``refine_pair``, ``cavity_regions`` or the
passes around them, its value as JSON, so that a benchmark measures an option without a flag of its own; and the
other repeatable ``KEY=JSON`` flags (``--network-override``, ``benchmark_inference --override``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from scripts.io.errors import InputError
from scripts.refinement.second_pass import check_pass_options

FLAG_HELP = "another refine_pair / cavity_regions keyword, VALUE as JSON (e.g. fold_barrier=0); repeatable"


def parse_refine_options(options: Sequence[str]) -> dict:
    """``["bone_trim_hu=0", "first_wall_search=1"]`` -> ``{"bone_trim_hu": 0, "first_wall_search": 1}``. The passes'
    options that the benchmarks read themselves (not ``refine_pair``'s keywords, which it checks) are checked by the
    bundle's own rules (:func:`scripts.refinement.second_pass.check_pass_options`; ``first_wall_search_iterations``
    may be null), so that a bad value stops the benchmark before any work instead of running silently (a negative
    run-off) or ending in a traceback.

    Raises:
        SystemExit: one ``error:`` line for an option without ``=`` or a key, whose value is no JSON, or that
        breaks its rule.
    """
    parsed = parse_key_json(options, "--refine-option", "KEY=VALUE with a JSON value")
    try:
        check_pass_options(parsed, "--refine-option ")
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    return parsed


def parse_key_json(options: Sequence[str], flag: str, form: str = "KEY=JSON") -> dict:
    """``["a=1", "b=[2]"]`` -> ``{"a": 1, "b": [2]}``: the values of a repeatable ``flag KEY=JSON``. Raises
    SystemExit, one ``error:`` line naming the flag and ``form``, for an option without ``=`` or a key, or whose value
    is no JSON."""
    parsed = {}
    for option in options:
        key, sep, value = option.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError(option)
            parsed[key.strip()] = json.loads(value)
        except ValueError:  # json.JSONDecodeError is one
            raise SystemExit(f"error: {flag} takes {form}, got {option!r}") from None
    return parsed
