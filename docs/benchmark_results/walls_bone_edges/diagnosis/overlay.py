"""The overlay's refinement options (configs/refine_wall_search.json's ``refine_<key>``: the benchmarks' ``<key>``)
as ``benchmarks.benchmark_ct_refine.run_method`` takes them, for the scripts of this folder (run from the bundle's
root: the script's folder is on the path)."""

import json
from pathlib import Path

from benchmarks.options import parse_refine_options


def overlay_options(more=()):
    """{"similarity": "lncc"} with the overlay's options and ``more`` ("KEY=VALUE" strings) parsed in."""
    config = json.loads(Path("configs/refine_wall_search.json").read_text())
    overlay = [f"{k.removeprefix('refine_')}={json.dumps(v)}" for k, v in config.items() if k.startswith("refine_")]
    return {"similarity": "lncc", **parse_refine_options(overlay + list(more))}
