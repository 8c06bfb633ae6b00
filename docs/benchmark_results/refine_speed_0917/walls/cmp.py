import re, sys, collections
pat = re.compile(r"^(\w+) (\w+) seed (\d+) (\w+): slip (\d+) %, band EPE ([\d.]+), body EPE ([\d.]+), rigidity ([\d.]+), fold off band ([\d.]+) %")
def load(paths):
    d = {}
    for p in paths.split(","):
        for line in open(p):
            m = pat.match(line.strip())
            if m:
                a, w, s, pt = m.group(1), m.group(2), int(m.group(3)), m.group(4)
                d[(a, w, pt, s)] = tuple(float(x) for x in m.groups()[4:])
    return d
names = sys.argv[1::2]; runs = [load(p) for p in sys.argv[2::2]]
keys = sorted(set(k for k in runs[-1]))
groups = collections.defaultdict(list)
for k in keys:
    groups[k[:3] + ('seeds 0-2' if k[3] < 3 else 'seeds 3-5',)].append(k[3])
print("row".ljust(38), *[n.rjust(22) for n in names])
for g, seeds in sorted(groups.items()):
    cells = []
    for r in runs:
        vals = [r.get(g[:3] + (s,)) for s in seeds]
        if any(v is None for v in vals):
            cells.append("-".rjust(22)); continue
        slip = sum(v[0] for v in vals) / len(vals); band = sum(v[1] for v in vals) / len(vals)
        rig = sum(v[3] for v in vals) / len(vals)
        cells.append(f"{slip:5.1f} ({'/'.join(str(int(v[0])) for v in vals)}) {band:.2f}".rjust(22))
    print(" ".join(g).ljust(38), *cells)
