"""Where the folds off the true band lie: per benchmark_walls folder, the cases and the voxels that fold (det J <= 0)
off the method's OWN sliding band (``fold_voxels_off_own_band`` of each ``*/results.json``), against the cases that
fold off the true band. Usage, from this folder: python own_band_folds.py FOLDER ... (``own_band_folds.txt``:
``../walls_bone_edges/walls``, the overlay's 96 cases of bundle 0.9.22)."""

import json
import sys
from pathlib import Path

for folder in sys.argv[1:]:
    rows = [
        {**row, "run": path.parent.name}
        for path in sorted(Path(folder).glob("*/results.json"))
        for row in json.loads(path.read_text())["cases"]
    ]
    off_true = [row for row in rows if row["fold_pct_off_band"] > 0]
    off_own = [row for row in rows if row["fold_voxels_off_own_band"] > 0]
    print(f"{folder}: {len(rows)} cases, {len(off_true)} fold off the true band, {len(off_own)} off their own band")
    for row in off_own:
        print(f"  {row['run']}: {row['anatomy']} {row['wall']} seed {row['seed']} {row['perturbation']}: "
              f"{row['fold_voxels_off_own_band']:.0f} voxels off its own band")  # fmt: skip
