"""The 13 cases where the overlay's run-off ran (refine_speed_0919/walls), one row each: slip %, band EPE, fold % off
the band, with the run-off's iterations 40 / 20 / 0 on this machine, and 0.9.19's logged 40 (another session's machine).
Usage, from this folder: python compare.py"""

import re
from pathlib import Path

LINE = re.compile(
    r"^(ct|phantom) (\S+) seed (\d+) (\S+): slip (\d+) %, band EPE ([\d.]+), body EPE ([\d.]+), rigidity ([\d.]+), "
    r"fold off band ([\d.]+) %"
)


def parse(paths, deep=lambda path, key: False):
    out = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            m = LINE.match(line)
            if m:
                key = m.groups()[:4]
                out[key + ("deep" if deep(path, key) else "",)] = (int(m[5]), float(m[6]), float(m[9]))
    return out


def here(path, key):  # this folder's runs: the only ct default seed 0 case is the deep one (queue A's last)
    return key[:3] == ("ct", "default", "0")


runs = {n: parse([f"{d}/a.log", f"{d}/b.log"], here) for n, d in (("40", "runoff40"), ("20", "."), ("0", "runoff0"))}
logged = parse(sorted(Path("../refine_speed_0919/walls").glob("*.log")), lambda path, key: "deep" in str(path))
print("| case | run-off 40 | 20 | 0 | 0.9.19's log (40) |")
print("|---|---|---|---|---|")
totals = {n: 0 for n in ("40", "20", "0", "log")}
for key in runs["40"]:
    cells = [runs[n][key] for n in ("40", "20", "0")] + [logged[key]]
    for n, c in zip(totals, cells):
        totals[n] += c[0]
    name = " ".join(key[:2]) + f" seed {key[2]} {key[3]}" + (" (deep)" if key[4] else "")
    print(f"| {name} | " + " | ".join(f"{s} %, {b:.2f}, {f:.3f}" for s, b, f in cells) + " |")
print("| sum of the slips | " + " | ".join(str(v) for v in totals.values()) + " |")
