"""The overlay with and without its run-off on seeds 6-8 (run.sh): one row per case where the run-off ran (slip %,
band EPE, fold % off the band; the run-off's log line: each judge's shift and the final mean local NCC^2), the
cases where it did not (the same computation in both folders) checked equal, and the sums.
Usage, from this folder: python compare.py"""

import re
from pathlib import Path

LINE = re.compile(
    r"^(ct|phantom) (\S+) seed (\d+) (\S+): slip (\d+) %, band EPE ([\d.]+), body EPE ([\d.]+), rigidity ([\d.]+), "
    r"fold off band ([\d.]+) %"
)
RUNOFF = re.compile(r"run-off: the local NCC chose (\S+), the objective (\S+); .* NCC\^2 ([\d.]+) and ([\d.]+)")


def parse(path):
    """{case: (slip, band EPE, fold %, run-off log or None)} in the log's order."""
    out, runoff = {}, None
    for line in Path(path).read_text().splitlines():
        r = RUNOFF.search(line)
        if r:
            runoff = r.groups()
        m = LINE.match(line)
        if m:
            out[m.groups()[:4]] = (int(m[5]), float(m[6]), float(m[9]), runoff)
            runoff = None
    return out


with_, without = parse("runoff40/run.log"), parse("runoff0/run.log")
print("| case | run-off 40 | none | NCC's shift, objective's; final NCC^2 of each |")
print("|---|---|---|---|")
same, differ, sums = 0, [], [0, 0]
for key, (slip, band, fold, runoff) in with_.items():
    if key not in without:
        continue
    other = without[key]
    sums[0] += slip
    sums[1] += other[0]
    name = " ".join(key[:2]) + f" seed {key[2]} {key[3]}"
    if runoff is None:
        same += (slip, band, fold) == other[:3]
        differ += [name] if (slip, band, fold) != other[:3] else []
        continue
    ncc, obj, s_ncc, s_obj = runoff
    print(
        f"| {name} | {slip} %, {band:.2f}, {fold:.3f} | {other[0]} %, {other[1]:.2f}, {other[2]:.3f} | "
        f"{ncc}, {obj}; {s_ncc} / {s_obj} |"
    )
cases = len([k for k in with_ if k in without])
ran = sum(v[3] is not None for k, v in with_.items() if k in without)
print(
    f"\n{cases} cases in both; the run-off ran on {ran}; of the others {same} identical in every figure"
    + (f", differing: {differ}" if differ else "")
)
print(f"sum of the slips: run-off 40 {sums[0]}, none {sums[1]}")
