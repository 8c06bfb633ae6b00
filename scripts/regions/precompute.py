"""Precompute the regularisation mask and the sliding normals of label maps on disk.

Command line::

    python -m scripts.regions.precompute --labels seg.nii.gz_or_folder --out_dir DIR [--spec configs/regions.json]
        [--k 40] [--method gaussian]

Writes ``<name>_reg_mask.nii.gz`` (uint8 0/1/2) and ``<name>_normals.nii.gz`` (float32 X, Y, Z, 3) beside nothing
else; up-to-date outputs are skipped. The training datasets read them with ``regions_dir``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from scripts.io.errors import run_cli
from scripts.io.image_io import image_stem
from scripts.io.options import parse_flag
from scripts.regions.labels import RIGID, SLIDING, label_table
from scripts.regions.masks import (
    BUNDLE_ROOT,
    DEFAULT_SPEC,
    as_label_array,
    load_region_spec,
    regions_from_labels,
    spacing_from_affine,
)

__all__ = ["output_names", "precompute"]

logger = logging.getLogger(__name__)


def output_names(label_path: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``(<out_dir>/<name>_reg_mask.nii.gz, <out_dir>/<name>_normals.nii.gz)``; ``<name>`` is the label map's file
    name without ``.nii.gz`` and without a trailing ``_seg`` (``case_seg.nii.gz`` -> ``case_reg_mask.nii.gz``)."""
    stem = image_stem(Path(label_path))
    stem = stem[: -len("_seg")] if stem.endswith("_seg") and len(stem) > 4 else stem
    out = Path(out_dir)
    return out / f"{stem}_reg_mask.nii.gz", out / f"{stem}_normals.nii.gz"


def _label_files(labels: str | os.PathLike) -> list[Path]:
    """One label map, or every ``*.nii.gz`` / ``*.nii`` in a folder (outputs of this tool excluded)."""
    path = Path(labels)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith((".nii.gz", ".nii")))
        files = [p for p in files if not image_stem(p).endswith(("_reg_mask", "_normals"))]
        if not files:
            raise FileNotFoundError(f"no *.nii.gz label maps in folder {path}")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"label map not found: {path}")
    return [path]


def _descrip(k: int, method: str, sigma_mm: float | None) -> str:
    """NIfTI ``descrip`` of a normals file: records the parameters, so that the cache notices a change."""
    return f"biomech-reg normals knn k={k}" if method == "knn" else f"biomech-reg normals gaussian sigma={sigma_mm}"


def _is_up_to_date(label_path: Path, outputs: tuple[Path, Path], spec_path: Path | None, descrip: str) -> bool:
    """Both outputs exist, are newer than the label map (and the spec file) and the normals' ``descrip`` (their
    parameters) matches."""
    import nibabel as nib

    if not all(p.is_file() for p in outputs):
        return False
    newest_input = max(label_path.stat().st_mtime, spec_path.stat().st_mtime if spec_path else 0.0)
    if min(p.stat().st_mtime for p in outputs) < newest_input:
        return False
    try:
        found = nib.load(str(outputs[1])).header["descrip"].tobytes().rstrip(b"\0").decode(errors="replace")
    except Exception:
        return False
    return found == descrip


def _save_nifti(data: np.ndarray, like: Any, path: Path, descrip: str = "") -> None:
    """Write ``data`` with the affine (and spatial header fields) of NIfTI image ``like``, atomically."""
    import nibabel as nib

    header = like.header.copy()
    header.set_data_dtype(data.dtype)
    img = nib.Nifti1Image(data, like.affine, header=header)
    img.header.set_slope_inter(1.0, 0.0)
    qcode, scode = int(like.header["qform_code"]), int(like.header["sform_code"])
    img.set_qform(like.affine, code=qcode)
    img.set_sform(like.affine, code=scode if (scode or qcode) else 2)  # keep the input's codes
    if descrip:
        img.header["descrip"] = descrip.encode()[:79]
    tmp = path.with_name(path.name.replace(".nii.gz", ".partial.nii.gz"))
    nib.save(img, str(tmp))
    os.replace(tmp, path)


def _progress(items: list, desc: str):
    """tqdm over items when installed, else plain logging."""
    try:
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, unit="file")
    except ImportError:
        for i, item in enumerate(items, 1):
            logger.info("%s [%d/%d] %s", desc, i, len(items), getattr(item, "name", item))
            yield item


def _resolve_spec_path(spec: str | os.PathLike | None) -> Path:
    """The spec file; a relative path missing from the working directory is looked up in the bundle root."""
    if spec is None:
        return DEFAULT_SPEC
    path = Path(spec)
    if not path.is_file() and not path.is_absolute() and (BUNDLE_ROOT / path).is_file():
        path = BUNDLE_ROOT / path
    if not path.is_file():
        raise FileNotFoundError(f"region spec not found: {spec}")
    return path


def precompute(
    labels: str,
    out_dir: str,
    spec: str | None = None,
    k: int = 40,
    label_table_path: str | None = None,
    overwrite: bool = False,
    method: str = "knn",
    sigma_mm: float | None = None,
) -> list[str]:
    """Write ``<name>_reg_mask.nii.gz`` (uint8 0/1/2) and ``<name>_normals.nii.gz`` (float32 X,Y,Z,3, mm frame,
    component k = array axis k) for one label map or every ``*.nii.gz`` in a folder, with the label map's affine.

    Up-to-date outputs (newer than the label map and the spec, same normals parameters) are skipped unless
    ``overwrite``. Errors (missing file, non-3D or non-integer label map, unknown label name) name the culprit.

    Args:
        labels: label map (NIfTI) or folder of label maps.
        out_dir: output folder (created).
        spec: region spec JSON (default: the bundle's configs/regions.json).
        k: neighbours for the ``knn`` normals.
        label_table_path: JSON names -> ids of the label maps (default: TotalSegmentator v2 ``total``).
        overwrite: recompute even when outputs are up to date (the command line's words true / false are parsed).
        method, sigma_mm: normals estimator (``knn`` or ``gaussian``), see ``compute_normals``.

    Returns:
        the written (or up-to-date) output paths.
    """
    import nibabel as nib

    overwrite = parse_flag(overwrite, "overwrite")
    files = _label_files(labels)
    spec_path = _resolve_spec_path(spec)
    region_spec = load_region_spec(spec_path, label_table(label_table_path or "totalsegmentator"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    descrip = _descrip(k, method, sigma_mm)
    written, skipped = [], 0
    for path in _progress(files, "regions"):
        outputs = output_names(path, out)
        written += [str(p) for p in outputs]
        if not overwrite and _is_up_to_date(path, outputs, spec_path, descrip):
            skipped += 1
            continue
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        arr = as_label_array(data, what=f"label map {path}")
        mask, normals = regions_from_labels(arr, region_spec, k, spacing_from_affine(img.affine), method, sigma_mm)
        _save_nifti(mask, img, outputs[0])
        _save_nifti(np.ascontiguousarray(np.moveaxis(normals, 0, -1)), img, outputs[1], descrip=descrip)
        logger.info(
            "%s: %d rigid, %d sliding voxels", path.name, int((mask == RIGID).sum()), int((mask == SLIDING).sum())
        )
    logger.info("%d file(s): %d computed, %d up to date", len(files), len(files) - skipped, skipped)
    return written


def main() -> None:
    """Entry point: ``python -m scripts.regions.precompute --labels ... --out_dir ...``."""
    import fire

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    run_cli(lambda: fire.Fire(precompute))  # user errors: one line, no traceback (BIOMECH_DEBUG=1: traceback)


if __name__ == "__main__":
    main()
