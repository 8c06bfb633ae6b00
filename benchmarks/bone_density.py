"""The HU of bones and liver in the real CTs of ``../shared/data`` (TotalSegmentator labels), and in a generated phantom
with solid and with real-density bones: the figures behind ``--bone_hu`` (``scripts.synthesis.anatomy.real_bones``)::

    python -m benchmarks.bone_density

Each scan is read by MONAI (the DICOM series through ITK) and put in RAS with its segmentation, so that a voxel and
its label meet; prints the 10th, 50th and 90th percentile of each tissue's voxels. Then, for each real CT, how many
voxels of the CT model's network grid (its preprocessing, ``configs/inference.json``, on the shipped model's
80 x 64 x 48 grid and on the half-size 40 x 32 x 24 one) lie above the rigid pre-alignment's bone thresholds: the
bones it fits on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from monai.bundle import ConfigParser
from monai.transforms import Compose, LoadImage, Orientation

from scripts.regions.labels import TOTALSEG_V2_TOTAL
from scripts.synthesis.anatomy import generated_case

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "totalsegmentator_example"
SCANS = {
    "held-out CT (example_ct_sm, 3 mm)": ("example_ct_sm.nii.gz", "example_seg.nii.gz"),
    "DICOM series (another patient, 1 mm in-plane)": ("example_ct_dicom", "example_seg_dicom.nii.gz"),
}
TISSUES = {"vertebrae": ("vertebrae_",), "ribs": ("rib_",), "liver": ("liver",)}


def _ids(prefixes: tuple[str, ...]) -> list[int]:
    return [i for n, i in TOTALSEG_V2_TOTAL.items() if n.startswith(prefixes)]


def _row(name: str, image: np.ndarray, seg: np.ndarray) -> dict[str, list[float]]:
    """Print and return ``{tissue: [p10, p50, p90]}`` (HU) of the tissues that ``seg`` labels."""
    row = {}
    for tissue, prefixes in TISSUES.items():
        voxels = image[np.isin(seg, _ids(prefixes))]
        if voxels.size:
            row[tissue] = [float(v) for v in np.percentile(voxels, [10, 50, 90])]
    print(f"{name}: " + "; ".join(f"{t} " + "/".join(f"{v:.0f}" for v in p) for t, p in row.items()))
    return row


def grid_bone_voxels(
    grids=((80, 64, 48), (40, 32, 24)), thresholds_hu=(250.0, 120.0)
) -> dict[tuple[str, tuple[int, ...]], dict[float, int]]:
    """``{(scan, grid): {threshold HU: voxels of the network grid above it}}`` for the real CTs of :data:`SCANS`."""
    root = Path(__file__).resolve().parents[1]
    window = ConfigParser()
    window.read_config(str(root / "configs" / "ct.json"))
    low, high = (float(v) for v in window.get_parsed_content("hu_window"))  # the network input's scale
    counts = {}
    for grid in grids:
        parser = ConfigParser()
        parser.read_config(str(root / "configs" / "inference.json"))
        parser.update({"bundle_root": str(root), "image_size": list(grid)})
        chain = parser.get_parsed_content("preprocessing")
        for name, (ct, _) in SCANS.items():
            image = chain({"image": str(DATA / ct)})["image"]
            counts[name, grid] = {hu: int((image > (hu - low) / (high - low)).sum()) for hu in thresholds_hu}
            above = ", ".join(f"{n} above {hu:.0f} HU" for hu, n in counts[name, grid].items())
            print(f"{name} on the network grid {'x'.join(map(str, grid))}: {above}")
    return counts


def main() -> dict[str, dict[str, list[float]]]:
    """Every scan's row (see :func:`_row`), by name."""
    if not DATA.is_dir():
        sys.exit(f"error: {DATA}: the real CTs are not there (a clone beside ../shared/data); nothing to measure")
    print("HU percentiles 10/50/90 of each tissue's voxels")
    load = Compose(
        [LoadImage(image_only=True, ensure_channel_first=True),
         Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    )  # fmt: skip
    rows = {}
    for name, (ct, seg) in SCANS.items():
        rows[name] = _row(name, load(str(DATA / ct))[0].numpy(), load(str(DATA / seg))[0].numpy().astype(np.int32))
    for bone_hu in (None, (80.0, 280.0)):
        case = generated_case(3, "train", texture_hu=40.0, bone_hu=bone_hu)
        name = f"generated train case 3, bone_hu {bone_hu}"
        rows[name] = _row(name, case["fixed"], case["fixed_seg"])
    grid_bone_voxels()
    return rows


if __name__ == "__main__":
    main()
