"""Means over the real-CT and the generated cases of each variant in the logs of ``warm_start.py`` and
``first_pass.py`` (a line per case and variant: ``<case> <variant>: key value, ...``).

    python docs/benchmark_results/motion_cavity_0926/summarise.py first_pass_ct.log first_pass_gen.log
"""

import re
import sys
from collections import defaultdict

KEYS = ("slip", "epe_body", "epe_band", "rigidity", "fold_pct_off_band", "seconds")


def main(paths: list[str]) -> None:
    rows = defaultdict(list)
    for path in paths:
        for line in open(path):
            head, _, values = line.partition(": ")
            if not values or "slip" not in values:
                continue
            case, variant = head.split(" ", 1)
            group = "real CT" if case.startswith("ct") else "generated"
            numbers = dict(re.findall(r"(\w+) ([-0-9.e]+)", values))
            dice = re.search(r"Dice ([0-9.]+)", variant)
            variant = re.sub(r" \(.*\)", "", variant)
            row = {key: float(numbers[key]) for key in KEYS}
            row["dice"] = float(dice.group(1)) if dice else float("nan")
            rows[group, variant].append(row)
    print("| cases | variant | n | slip % | body EPE | band EPE | rigidity | fold % off band | s | Dice moved cavity |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (group, variant), items in rows.items():
        mean = {key: sum(r[key] for r in items) / len(items) for key in KEYS + ("dice",)}
        print(f"| {group} | {variant} | {len(items)} | {100 * mean['slip']:.1f} | {mean['epe_body']:.3f} | "
              f"{mean['epe_band']:.3f} | {mean['rigidity']:.4f} | {mean['fold_pct_off_band']:.4f} | "
              f"{mean['seconds']:.1f} | {mean['dice']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
