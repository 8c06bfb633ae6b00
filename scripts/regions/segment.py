"""Segment CT volumes with TotalSegmentator (task ``total``, multilabel output) without ever downloading.

TotalSegmentator is an optional extra of the bundle (``pip install totalsegmentator`` after installing torch, or pip
pulls a CUDA build of torch). It downloads its weights when they are absent; this wrapper checks first and fails at
once, offline-safe, with one sentence saying how to provide them. Weights are looked up like TotalSegmentator does:
``$TOTALSEG_WEIGHTS_PATH``, else ``$TOTALSEG_HOME_DIR/nnunet/results``, else ``~/.totalsegmentator/nnunet/results``.

    python -m scripts.regions.segment run --input CT_or_folder --output_dir DIR [--fast true] [--device cpu]

The input may be a CT file in any format the bundle reads (NIfTI, NRRD, MHA/MHD), a folder of ``*.nii.gz`` CTs, or a
DICOM series folder. What is not NIfTI is converted to a temporary NIfTI first, read as the bundle reads it (a DICOM
folder: :func:`scripts.io.image_formats.series_files`, the same series as the header checks), so the segmentation lies
on the image's grid. :func:`segment_fixed` is the refinement's segmentation on the fly (``configs/refine.json`` without
``--fixed_seg``): the fixed image's label map on its array, or None with the reason logged.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import numpy as np

from scripts.io.errors import InputError, run_cli
from scripts.io.image_formats import is_dicom_folder, is_nifti
from scripts.io.image_io import image_stem, inspect_image, read_label_on_grid
from scripts.io.options import parse_flag

logger = logging.getLogger(__name__)

# Weight folders (unzipped nnU-Net results) of TotalSegmentator v2 task "total": the 3 mm model (--fast), or the five
# 1.5 mm part models. TotalSegmentator downloads a folder when its exact name is absent from the weights folder.
TOTAL_DATASETS = {
    True: ("Dataset297_TotalSegmentator_total_3mm_1559subj",),
    False: (
        "Dataset291_TotalSegmentator_part1_organs_1559subj",
        "Dataset292_TotalSegmentator_part2_vertebrae_1532subj",
        "Dataset293_TotalSegmentator_part3_cardiac_1559subj",
        "Dataset294_TotalSegmentator_part4_muscles_1559subj",
        "Dataset295_TotalSegmentator_part5_ribs_1559subj",
    ),
}
DOWNLOAD_TASK = {True: "total_fast", False: "total"}
_OUTPUT_SUFFIXES = ("_seg", "_reg_mask", "_normals")


class SegmentationSetupError(RuntimeError):
    """TotalSegmentator cannot run here (package or weights missing, bad input); the message is one sentence."""


def totalseg_home() -> Path:
    """TotalSegmentator's home folder (config.json, default weights): ``$TOTALSEG_HOME_DIR`` or ``~/.totalsegmentator``
    (``/tmp/.totalsegmentator`` when the home folder is ``/``, as TotalSegmentator does in containers)."""
    if "TOTALSEG_HOME_DIR" in os.environ:
        return Path(os.environ["TOTALSEG_HOME_DIR"])
    home = Path("/tmp") if str(Path.home()) == "/" else Path.home()
    return home / ".totalsegmentator"


def weights_dir() -> Path:
    """Folder holding the unzipped ``DatasetNNN_*`` weight folders (TotalSegmentator's own lookup order)."""
    if "TOTALSEG_WEIGHTS_PATH" in os.environ:
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    return totalseg_home() / "nnunet" / "results"


def missing_weights(fast: bool = True) -> list[str]:
    """Weight folders of task ``total`` absent from ``weights_dir()`` (or holding no ``*.pth`` checkpoint)."""
    root = weights_dir()
    return [name for name in TOTAL_DATASETS[bool(fast)] if next((root / name).rglob("*.pth"), None) is None]


def check_weights(fast: bool = True) -> Path:
    """Return ``weights_dir()`` or raise ``SegmentationSetupError`` (one sentence) when weights are missing."""
    missing = missing_weights(fast)
    if missing:
        ids = ", ".join(missing)
        raise SegmentationSetupError(
            f"TotalSegmentator weights for task 'total'{' (--fast)' if fast else ''} ({ids}) are not in "
            f"{weights_dir()} and will not be downloaded here: on a machine with internet run "
            f"`totalseg_download_weights -t {DOWNLOAD_TASK[bool(fast)]}`, copy the unzipped Dataset* folders from its "
            "~/.totalsegmentator/nnunet/results into a folder here and set TOTALSEG_WEIGHTS_PATH to that folder "
            '(and set "send_usage_stats": false in $TOTALSEG_HOME_DIR/config.json to avoid any network call).'
        )
    return weights_dir()


def _import_totalsegmentator() -> Callable[..., Any]:
    """``totalsegmentator.python_api.totalsegmentator``, or ``SegmentationSetupError`` when not installed."""
    try:
        from totalsegmentator.python_api import totalsegmentator
    except ImportError as err:
        raise SegmentationSetupError(
            "TotalSegmentator is not installed: install torch first (e.g. `pip install torch==2.13.0` for CPU), then "
            f"`pip install totalsegmentator` ({err})."
        ) from None
    return totalsegmentator


def _warn_usage_stats() -> None:
    """Advise disabling TotalSegmentator's usage statistics (a network call per run) unless already disabled."""
    config = totalseg_home() / "config.json"
    try:
        enabled = json.loads(config.read_text()).get("send_usage_stats", True)
    except (OSError, ValueError):
        enabled = True
    if enabled:
        logger.warning(
            'TotalSegmentator sends usage statistics (a network call) unless "send_usage_stats": false is set in %s',
            config,
        )


def ct_files(input: str | os.PathLike) -> list[Path]:
    """One CT file, every ``*.nii.gz`` in a folder except this bundle's outputs (``*_seg``, ``*_reg_mask``,
    ``*_normals``), or a DICOM series folder (one CT: the folder)."""
    path = Path(input)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.nii.gz") if not image_stem(p).endswith(_OUTPUT_SUFFIXES))
        if not files and is_dicom_folder(path):
            return [path]
        if not files:
            raise SegmentationSetupError(f"no *.nii.gz CT volumes and no DICOM series in folder {path}.")
        return files
    if not path.is_file():
        raise SegmentationSetupError(f"CT input not found: {path}.")
    return [path]


def nifti_input(ct: Path, folder: str | os.PathLike) -> Path:
    """``ct`` itself when it is NIfTI, else (NRRD, MHA, a DICOM series folder) a NIfTI copy in ``folder``, read as the
    bundle reads that format (array axes and RAS affine of :mod:`scripts.io.image_formats`)."""
    if ct.is_file() and is_nifti(ct):
        return ct
    header = inspect_image(ct, "CT")
    out = Path(folder) / f"{image_stem(ct)}.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(header.dataobj), header.affine), str(out))
    return out


def output_path(ct: Path, output_dir: str | os.PathLike | None) -> Path:
    """``<output_dir or the CT's folder>/<name>_seg.nii.gz``."""
    return Path(output_dir or ct.parent) / f"{image_stem(ct)}_seg.nii.gz"


def run(
    input: str,
    output_dir: str | None = None,
    fast: bool = True,
    device: str = "cpu",
    overwrite: bool = False,
    quiet: bool = True,
) -> list[str]:
    """Segment one CT, every ``*.nii.gz`` in a folder or a DICOM series folder with TotalSegmentator (task ``total``,
    ``ml=True``).

    Args:
        input: CT file (NIfTI, NRRD, MHA/MHD), folder of NIfTI CTs, or DICOM series folder.
        output_dir: where ``<name>_seg.nii.gz`` go (default: beside each CT).
        fast: the 3 mm model (Dataset297; much faster on CPU) instead of the 1.5 mm models (Dataset291-295).
        device: ``cpu``, ``gpu``, ``gpu:N`` or ``mps`` (TotalSegmentator's names).
        overwrite: redo existing segmentations (otherwise skipped).
        quiet: silence TotalSegmentator's own printing.
        (``fast``, ``overwrite``, ``quiet``: the command line's words true / false are parsed.)

    Returns:
        the segmentation paths (written or already present).

    Raises:
        SegmentationSetupError: missing input, TotalSegmentator not installed, or weights absent (checked before
            anything runs, so it never tries to download).
    """
    fast, overwrite, quiet = (parse_flag(v, k) for k, v in (("fast", fast), ("overwrite", overwrite), ("quiet", quiet)))
    files = ct_files(input)
    todo = [ct for ct in files if overwrite or not output_path(ct, output_dir).is_file()]
    if todo:
        segment_fn = _import_totalsegmentator()
        check_weights(fast)
        _warn_usage_stats()
    for i, ct in enumerate(todo, 1):
        out = output_path(ct, output_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        logger.info("[%d/%d] TotalSegmentator %s -> %s", i, len(todo), ct.name, out)
        partial = out.with_name(out.name.replace(".nii.gz", ".partial.nii.gz"))
        with tempfile.TemporaryDirectory(prefix="biomech_ct_") as folder:
            source = nifti_input(ct, folder)  # TotalSegmentator reads NIfTI (and DICOM its own way: not used)
            image = segment_fn(str(source), str(partial), task="total", fast=fast, device=device, ml=True, quiet=quiet)
        if not partial.is_file():  # some versions only return the image
            nib.save(image, str(partial))
        os.replace(partial, out)
    logger.info("%d CT(s): %d segmented, %d already done", len(files), len(todo), len(files) - len(todo))
    return [str(output_path(ct, output_dir)) for ct in files]


def segment_fixed(
    fixed_path: str, shape: tuple[int, ...], mode: str = "if_available", name: str = ""
) -> np.ndarray | None:
    """The ``total`` label map of the fixed image ``fixed_path`` (:func:`run`, fast model, in a temporary folder; a
    DICOM series or NRRD / MHA image through a temporary NIfTI) on that image's array of ``shape``, for the refinement
    without ``--fixed_seg``; None (the reason logged, e.g. the package or its weights not installed) when it cannot
    run and ``mode`` is not "always" (then one :class:`InputError`), or when ``mode`` is "never"."""
    if mode == "never":
        return None
    what = "TotalSegmentator's label map of the fixed image"
    try:
        with tempfile.TemporaryDirectory(prefix="biomech_seg_") as folder:
            path = run(fixed_path, output_dir=folder)[0]
            seg = read_label_on_grid(inspect_image(path, what), inspect_image(fixed_path, "fixed"), path, what)
    except SegmentationSetupError as err:
        if mode == "always":
            raise InputError(f"segmentation of the fixed image {fixed_path}: {err}") from None
        logger.warning("%s: no TotalSegmentator on the fly: %s", name, err)
        return None
    logger.info("%s: fixed image segmented with TotalSegmentator", name)
    return seg.reshape(shape)


def main() -> None:
    """Entry point: ``python -m scripts.regions.segment run ...``; setup problems print one line, no traceback."""
    import fire

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    def command():
        try:
            return fire.Fire({"run": run})
        except SegmentationSetupError as err:
            raise InputError(str(err)) from None

    run_cli(command)  # user errors: one line, no traceback (BIOMECH_DEBUG=1: traceback)


if __name__ == "__main__":
    main()
