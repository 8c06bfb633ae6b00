import re, sys
pat = re.compile(r"^(\w+) (\w+) seed (\d+) (\w+): slip (\d+) %, band EPE ([\d.]+), body EPE ([\d.]+), rigidity ([\d.]+), fold off band ([\d.]+) %")
def load(paths):
    d = {}
    for p in paths.split(","):
        tag = "deep " if "deep" in p else ""
        for line in open(p):
            m = pat.match(line.strip())
            if m:
                d[tag + " ".join(m.groups()[:4])] = tuple(float(x) for x in m.groups()[4:])
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
same = up = down = 0; diffs = []
maxd = [0]*5
for k in sorted(b):
    x, y = a[k], b[k]
    for i in range(5): maxd[i] = max(maxd[i], abs(y[i]-x[i]))
    if y[0] > x[0]: up += 1
    elif y[0] < x[0]: down += 1
    else: same += 1
    if x != y: diffs.append((k, x, y))
print(f"{len(b)} cases: slip level {same}, higher {up}, lower {down}; identical in every figure: {len(b)-len(diffs)}")
print("largest change: slip %d points, band EPE %.2f mm, body EPE %.2f mm, rigidity %.4f, fold off band %.3f %%" % tuple(maxd))
worse_fold = [(k, x[4], y[4]) for k, x, y in diffs if y[4] > x[4]]
print("fold off band higher:", worse_fold)
print("slip changes of 2 points or more:")
for k, x, y in diffs:
    if abs(y[0]-x[0]) >= 2:
        print(" ", k, "slip", int(x[0]), "->", int(y[0]), "band", x[1], "->", y[1], "body", x[2], "->", y[2], "rigidity", x[3], "->", y[3])
