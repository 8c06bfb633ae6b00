"""Label tables and the region constants: one home for every name -> id mapping the bundle uses.

- ``JACOBIAN``, ``RIGID``, ``SLIDING``: the values of the regularisation mask (0 log-Jacobian, 1 rigid, 2 sliding);
- ``TOTALSEG_V2_TOTAL``: TotalSegmentator v2 task ``total``, label name -> id (1-based, 0 is background);
- :func:`label_table`: names -> ids from TotalSegmentator itself, a dict or a JSON file;
- ``LEARN2REG_ABDOMEN_LABELS``: the 13 Learn2Reg AbdomenCTCT organ ids and their TotalSegmentator names;
- :func:`vertebrae_ids`, :func:`learn2reg_labels_from_totalsegmentator`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "JACOBIAN",
    "RIGID",
    "SLIDING",
    "TOTALSEG_V2_TOTAL",
    "TOTALSEG_V2_TOTAL_NAMES",
    "LEARN2REG_ABDOMEN_LABELS",
    "label_table",
    "learn2reg_labels_from_totalsegmentator",
    "vertebrae_ids",
]

# values of the regularisation mask
JACOBIAN, RIGID, SLIDING = 0, 1, 2

# TotalSegmentator v2 task "total": name of label id i + 1 (ids are 1-based, 0 is background).
TOTALSEG_V2_TOTAL_NAMES = (
    ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas"]
    + ["adrenal_gland_right", "adrenal_gland_left"]
    + ["lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right"]
    + ["lung_lower_lobe_right", "esophagus", "trachea", "thyroid_gland", "small_bowel", "duodenum", "colon"]
    + ["urinary_bladder", "prostate", "kidney_cyst_left", "kidney_cyst_right", "sacrum", "vertebrae_S1"]
    + [f"vertebrae_L{i}" for i in range(5, 0, -1)]
    + [f"vertebrae_T{i}" for i in range(12, 0, -1)]
    + [f"vertebrae_C{i}" for i in range(7, 0, -1)]
    + ["heart", "aorta", "pulmonary_vein", "brachiocephalic_trunk", "subclavian_artery_right"]
    + ["subclavian_artery_left", "common_carotid_artery_right", "common_carotid_artery_left"]
    + ["brachiocephalic_vein_left", "brachiocephalic_vein_right", "atrial_appendage_left", "superior_vena_cava"]
    + ["inferior_vena_cava", "portal_vein_and_splenic_vein", "iliac_artery_left", "iliac_artery_right"]
    + ["iliac_vena_left", "iliac_vena_right", "humerus_left", "humerus_right", "scapula_left", "scapula_right"]
    + ["clavicula_left", "clavicula_right", "femur_left", "femur_right", "hip_left", "hip_right", "spinal_cord"]
    + [f"gluteus_{m}_{s}" for m in ("maximus", "medius", "minimus") for s in ("left", "right")]
    + ["autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain", "skull"]
    + [f"rib_{s}_{i}" for s in ("left", "right") for i in range(1, 13)]
    + ["sternum", "costal_cartilages"]
)
TOTALSEG_V2_TOTAL: dict[str, int] = {name: i + 1 for i, name in enumerate(TOTALSEG_V2_TOTAL_NAMES)}


def _normalise_table(table: Mapping) -> dict[str, int]:
    """Return a names -> ids dict from a names -> ids or ids -> names mapping (JSON keys may be strings)."""
    if "labels" in table and isinstance(table["labels"], Mapping):  # nnU-Net / MSD dataset.json style
        table = table["labels"]
    out: dict[str, int] = {}
    for key, value in table.items():
        name, idx = (value, key) if isinstance(value, str) else (str(key), value)  # ids -> names, or names -> ids
        if isinstance(idx, str) and idx.strip().isdigit():  # JSON object keys are strings
            idx = int(idx)
        if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or idx < 0:
            raise ValueError(f"label table entry {key!r}: {value!r} is not a name -> non-negative integer id pair")
        out[name] = int(idx)
    return out


def label_table(source: str | os.PathLike | Mapping = "totalsegmentator") -> dict[str, int]:
    """Label names -> integer ids.

    Args:
        source: ``"totalsegmentator"`` (``totalsegmentator.map_to_binary.class_map["total"]`` when that package
            imports, else the built-in TotalSegmentator v2 table), a dict (names -> ids, or ids -> names), or the
            path of a JSON file holding such a dict (a ``{"labels": {...}}`` dataset.json also works).
    """
    if isinstance(source, Mapping):
        return _normalise_table(source)
    if str(source).lower() in ("totalsegmentator", "total", "totalsegmentator_v2"):
        try:
            from totalsegmentator.map_to_binary import class_map  # optional dependency

            return _normalise_table(class_map["total"])
        except Exception:  # not installed, or an unexpected layout: the built-in table is the same v2 table
            return dict(TOTALSEG_V2_TOTAL)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"label table {str(source)!r} is neither 'totalsegmentator' nor an existing JSON file")
    with open(path) as f:
        return _normalise_table(json.load(f))


# Learn2Reg AbdomenCTCT labels (the 13 BTCV organs), id -> the TotalSegmentator v2 name of the same organ
LEARN2REG_ABDOMEN_LABELS = {
    1: "spleen",
    2: "kidney_right",
    3: "kidney_left",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior_vena_cava",
    10: "portal_vein_and_splenic_vein",
    11: "pancreas",
    12: "adrenal_gland_right",
    13: "adrenal_gland_left",
}


def learn2reg_labels_from_totalsegmentator(seg: Any, table: Mapping[str, int] | None = None) -> np.ndarray:
    """Learn2Reg AbdomenCTCT label map (uint8, 0..13) from a TotalSegmentator v2 ``total`` label map (same shape)."""
    table = TOTALSEG_V2_TOTAL if table is None else table
    seg = np.asarray(seg)
    lut = np.zeros(max(int(seg.max(initial=0)), max(table.values())) + 1, dtype=np.uint8)
    for l2r_id, name in LEARN2REG_ABDOMEN_LABELS.items():
        lut[table[name]] = l2r_id
    return lut[seg.astype(np.int64)]


def vertebrae_ids() -> list[int]:
    """TotalSegmentator v2 ids of the vertebrae and the sacrum."""
    return [i for name, i in TOTALSEG_V2_TOTAL.items() if name.startswith("vertebrae_") or name == "sacrum"]
