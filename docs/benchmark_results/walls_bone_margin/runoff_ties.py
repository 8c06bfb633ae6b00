"""The wall search's run-offs in benchmark_walls logs (``--log-search``): per case, the shift the local NCC chose
and the one the objective chose, their mean local NCC^2 over the zone after the run-off (the second decides), the
shares the search then took, and the case's slip. Usage, from this folder: python runoff_ties.py LOG ...
(``runoff_ties.txt``: the overlay's 96 cases and the new seeds, bundle 0.9.22)."""

import re
import sys

RUNOFF = re.compile(
    r"run-off: the local NCC chose (\S+), the objective (\S+); after \d+ iterations more, mean local NCC\^2 "
    r"([\d.]+) and ([\d.]+)"
)
SHARES = re.compile(r"chose the shifts (.*) of the zone")
CASE = re.compile(r"^((?:ct|phantom) \S+ seed \d+ \S+): slip (\d+) %")

for path in sys.argv[1:]:
    runoff = shares = None
    for line in open(path):
        if m := RUNOFF.search(line):
            runoff = m.groups()
        elif m := SHARES.search(line):
            shares = m[1]
        elif m := CASE.match(line):
            if runoff:
                by_ncc, by_objective, a, b = runoff[0], runoff[1], float(runoff[2]), float(runoff[3])
                print(f"{path}: {m[1]}: slip {m[2]} %; local NCC {by_ncc} {a:.4f}, objective {by_objective} {b:.4f}, "
                      f"difference {a - b:+.4f}; chosen {shares}")  # fmt: skip
            runoff = shares = None
