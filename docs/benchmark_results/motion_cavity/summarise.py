"""Means of each group of cases (three each) of ct.log / gen.log: the README's table (python summarise.py *.log)."""

import re
import sys
from collections import defaultdict

rows = defaultdict(list)
for path in sys.argv[1:]:
    for line in open(path):
        found = re.match(r"(\w+?)(\d)(-cranial)? (refine_image_band|motion_cavity [\d.]+): (.*)", line)
        if found:
            values = {k: float(v) for k, v in (item.split(" ") for item in found.group(5).split(", "))}
            rows[(found.group(1), found.group(3) or "", found.group(4))].append(values)
print("| cases | method | slip | body EPE | organs | band EPE | outside | bone rigidity | fold % off band | s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (kind, cranial, method), values in rows.items():
    mean = {k: sum(v[k] for v in values) / len(values) for k in values[0]}
    print(f"| {kind}{cranial} ({len(values)}) | {method} | {100 * mean['slip']:.0f} % | {mean['epe_body']:.2f} | "
          f"{mean['epe_organs']:.2f} | {mean['epe_band']:.2f} | {mean['epe_outside']:.2f} | {mean['rigidity']:.4f} | "
          f"{mean['fold_pct_off_band']:.4f} | {mean['seconds']:.1f} |")
