"""The overlay's 96 held-out cases with the labels' cavity alone (walls_labels/: ``unlabelled_air_hu=null``) and with
the unlabelled air as cavity content (walls/), the same code on the same machine: per row (mean over its seeds) the
slip %, band EPE, body EPE (mm) and bone rigidity, then the cases whose slip moved 2 points or more, and the sums.
Usage, from this folder: python compare.py [OLD_FOLDER [NEW_FOLDER]] (e.g. ../refine_speed_0920/walls: 0.9.20, stop 53's
machine; two folders, as ../walls_bone_edges/ does: the columns are headed by their paths)"""

import collections
import re
import sys
from pathlib import Path

LINE = re.compile(
    r"^(ct|phantom) (\S+) seed (\d+) (\S+): slip (\d+) %, band EPE ([\d.]+), body EPE ([\d.]+), rigidity ([\d.]+), "
    r"fold off band ([\d.]+) %"
)


def load(folder):
    out = {}
    for path in sorted(Path(folder).glob("*.log")):
        for line in path.read_text().splitlines():
            m = LINE.match(line)
            if m:
                deep = "deep " if "deep" in path.name else ""
                out[(deep + m[1], m[2], m[4], int(m[3]))] = tuple(float(x) for x in m.groups()[4:])
    return out


paths = (sys.argv[1:] + ["walls_labels", "walls"][len(sys.argv) - 1 :])[:2]
old, new = load(paths[0]), load(paths[1])
names = ("labels alone", "air as content") if len(sys.argv) < 3 else paths
rows = collections.defaultdict(list)
for key in sorted(new):
    rows[key[:3] + (f"seeds {key[3] // 3 * 3}-{key[3] // 3 * 3 + 2}",)].append(key)  # seeds in threes: 0-2, 3-5, ...
print(f"{'row':44} {names[0] + ': slip (seeds), band, body, rigidity':>50}   {names[1]:>44}")
for row, keys in sorted(rows.items()):
    cells = []
    for run in (old, new):
        vals = [run[k] for k in keys]
        mean = [sum(v[i] for v in vals) / len(vals) for i in range(4)]
        seeds = "/".join(str(int(v[0])) for v in vals)
        cells.append(f"{mean[0]:5.1f} ({seeds}) {mean[1]:.2f} {mean[2]:.2f} {mean[3]:.4f}")
    print(f"{' '.join(row):44} {cells[0]:>50}   {cells[1]:>44}")
moved = [(k, old[k], new[k]) for k in sorted(new) if abs(new[k][0] - old[k][0]) >= 2]
print(f"\n{len(new)} cases; identical in every figure: {sum(old[k] == new[k] for k in new)}; slip moved >= 2 points:")
for k, a, b in moved:
    print(
        f"  {' '.join(map(str, k))}: slip {a[0]:.0f} -> {b[0]:.0f}, band {a[1]} -> {b[1]}, body {a[2]} -> {b[2]}, "
        f"rigidity {a[3]} -> {b[3]}"
    )
for name, run in zip(names, (old, new)):
    print(f"sum of the slips, {name}: {sum(run[k][0] for k in new):.0f}")
