"""The tables of the CT benchmark (:mod:`benchmarks.benchmark_ct_refine`): its columns and their formats, the means
over the cases of one kind, one markdown table per case with its field of view."""

from __future__ import annotations

import re

import numpy as np

COLUMNS = [
    ("epe_body", "EPE body"),
    ("epe95_body", "p95 body"),
    ("epe_organs", "EPE organs"),
    ("epe95_organs", "p95 organs"),
    ("motion_organs", "organ motion recovered"),
    ("epe_bones", "EPE bones"),
    ("epe95_bones", "p95 bones"),
    ("epe_band", "EPE band"),
    ("epe95_band", "p95 band"),
    ("epe_outside", "EPE outside cavity"),
    ("dice_organs", "Dice organs"),
    ("dice_bones", "Dice bones"),
    ("rigidity", "rigidity err"),
    ("slip", "slip recovered"),
    ("fold_pct", "fold %"),
    ("fold_pct_off_band", "fold % off true band"),
    ("fold_voxels_off_own_band", "folded voxels off own band"),
    ("seconds", "s"),
    ("cpu_seconds", "CPU s"),
]


def format_value(key: str, value: float) -> str:
    if value != value:
        return "n/a"
    if key == "rigidity":
        return f"{value:.2e}" if 0 < value < 1e-3 else f"{value:.4f}"
    if key in ("slip", "motion_organs"):
        return f"{100 * value:.0f} %"
    if key.startswith("fold_voxels"):
        return f"{value:.0f}"
    if key.startswith("fold"):
        return f"{value:.3f}"
    if key.endswith("seconds"):
        return f"{value:.1f}"
    return f"{value:.2f}"


def case_means(results: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """The mean of every metric over the cases of one kind (the name without its seed: ct0, ct1 -> ct), >= 2 cases."""
    kinds: dict[str, list] = {}
    for name, rows in results.items():
        kinds.setdefault(re.sub(r"\d+", "", name), []).append(rows)
    mean = lambda rows: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}  # noqa: E731
    return {
        f"mean of {len(cases)} {kind} cases": {
            m: mean([c[m] for c in cases]) for m in cases[0] if all(m in c for c in cases)
        }
        for kind, cases in kinds.items()
        if len(cases) > 1
    }


def field_of_view_mm(case: dict) -> list[float]:
    """The case's field of view in mm along each array axis (voxels x the case's own ``spacing``)."""
    return [float(n * s) for n, s in zip(case["fixed"].shape, case["spacing"])]


def markdown(results: dict[str, dict[str, dict[str, float]]], fov: dict[str, list[float]] | None = None) -> str:
    """One table per case: methods as rows, metrics as columns (EPE in mm); ``fov``: a case's field of view (mm)
    in its heading."""
    lines = []
    for case, rows in results.items():
        title = (
            f"{case} (field of view {' x '.join(f'{v:.0f}' for v in fov[case])} mm)" if case in (fov or {}) else case
        )
        lines += [f"### {title}", "", "| method | " + " | ".join(c[1] for c in COLUMNS) + " |"]
        lines.append("|---" * (len(COLUMNS) + 1) + "|")
        for method, r in rows.items():
            lines.append(
                f"| {method} | " + " | ".join(format_value(k, r.get(k, float("nan"))) for k, _ in COLUMNS) + " |"
            )
        lines.append("")
    return "\n".join(lines)
