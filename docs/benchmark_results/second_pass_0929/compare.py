"""Rows of ``benchmarks.benchmark_walls`` runs side by side: slip, band EPE, body EPE, bone rigidity, fold % off the
true band and seconds of each run's summary (a run: NAME=FOLDER[,FOLDER...], the folders' summaries merged), and the
sum of each run's slips over the rows they share, as a markdown table.

    python docs/benchmark_results/second_pass_0929/compare.py 30=$D/phantom_base 120=$D/phantom_second
"""

import json
import sys


def summary(folders: str) -> dict:
    merged = {}
    for folder in folders.split(","):
        with open(f"{folder}/results.json") as f:
            merged.update(json.load(f)["summary"])
    return merged


def main(args: list[str]) -> None:
    runs = [(name, summary(folders)) for name, folders in (arg.split("=", 1) for arg in args)]
    rows = [row for row in runs[0][1] if all(row in s for _, s in runs)]
    print("| row | " + " | ".join(name for name, _ in runs) + " |")
    print("|---" * (len(runs) + 1) + "|")
    for row in rows:
        cells = []
        for _, s in runs:
            r = s[row]
            cells.append(
                f"{100 * r['slip']:.1f} %, {r['epe_band']:.2f}, {r['epe_body']:.2f}, {r['rigidity']:.4f}, "
                f"{r['fold_pct_off_band']:.3f}, {r['seconds']:.1f}"
            )
        print(f"| {row} | " + " | ".join(cells) + " |")
    sums = ", ".join(f"{name} {sum(100 * s[row]['slip'] for row in rows):.1f}" for name, s in runs)
    print(
        f"\n(slip %, band EPE mm, body EPE mm, bone rigidity, fold % off the true band, s.) Slip summed over the "
        f"{len(rows)} rows: {sums}."
    )


if __name__ == "__main__":
    main(sys.argv[1:])
