"""Means of three cases (real CT / generated, seeds 0-2 / unseen 3-5, caudal / cranial) of one method in
``benchmarks.benchmark_ct_refine`` result folders, side by side: each argument ``LABEL=FOLDER:METHOD``.

    python docs/benchmark_results/motion_cavity_0927/compare.py \
        0.9.26=docs/benchmark_results/motion_cavity_0926/benchmark12:refine_image_cavity \
        0.9.27=docs/benchmark_results/motion_cavity_0927/grow2_ct:refine_image_cavity
"""

import json
import sys
from collections import defaultdict

import numpy as np

KEYS = ("slip", "epe_body", "epe_organs", "epe_band", "epe95_band", "epe95_body", "rigidity", "fold_pct_off_band")
KEYS += ("seconds",)


def main(specs: list[str]) -> None:
    rows = defaultdict(dict)
    for spec in specs:
        label, _, rest = spec.partition("=")
        folder, _, method = rest.rpartition(":")
        for case, methods in json.load(open(f"{folder}/results.json"))["results"].items():
            if method in methods:
                unseen = "unseen " if int(case.split("-")[0].lstrip("ctgen")) >= 3 else ""  # seeds 3-5: unseen
                group = unseen + ("real CT" if case.startswith("ct") else "generated")
                group += ", cranial" if "cranial" in case else ", caudal"
                rows[group].setdefault(label, []).append([methods[method][k] for k in KEYS])
    print("| cases | run | n | " + " | ".join(KEYS) + " |")
    print("|---|---|---|" + "---|" * len(KEYS))
    for group, by_label in rows.items():
        for label, values in by_label.items():
            mean = np.mean(values, axis=0)
            rest = [
                f"{v:.4f}" if k in ("rigidity", "fold_pct_off_band") else f"{v:.2f}" for k, v in zip(KEYS[1:], mean[1:])
            ]
            cells = [f"{100 * mean[0]:.1f} %"] + rest
            print(f"| {group} | {label} | {len(values)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
