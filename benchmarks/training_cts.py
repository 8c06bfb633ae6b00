"""A ``--ct_dir`` for the CT preset from ../shared/data's DICOM series: real anatomy among the generated pairs.

The generator (``scripts/data/generated.py``, ``GeneratedCTDataset``) mixes in real CTs given as ``<name>.nii.gz``
with their TotalSegmentator labels ``<name>_seg.nii.gz`` on the same grid. ../shared/data holds one real CT that is
not the held-out subject: the DICOM series ``example_ct_dicom`` (512×512×20, 0.98×0.98×2 mm, upper abdomen) with
its segmentation ``example_seg_dicom.nii.gz``, stored in another orientation (LAS against the series' LPS). This
reads both with the bundle's loader (``LoadImageSeriesd``, as inference reads a series), puts them in RAS, checks
that they share a grid, resamples both to ``--spacing`` (the image linearly, the labels by nearest neighbour; the
held-out CT has 3 mm voxels) and writes the pair. The held-out abdomen CT ``example_ct`` is never written: it is
the test subject of every table.

    python -m benchmarks.training_cts --data ../shared/data/totalsegmentator_example --out cache/training_cts
    python -m monai.bundle run training --config_file "['configs/train.json','configs/ct.json',
        'configs/ct_generated.json']" --ct_dir cache/training_cts ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.transforms import Compose, EnsureChannelFirstd, Orientationd, Spacingd

from scripts.data.transforms import LoadImageSeriesd

SERIES, SEGMENTATION = "example_ct_dicom", "example_seg_dicom.nii.gz"


def dicom_pair(data_dir: Path, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(HU float32, labels uint8, RAS affine) of the DICOM series and its segmentation at ``spacing`` mm."""
    series, seg = data_dir / SERIES, data_dir / SEGMENTATION
    for path in (series, seg):
        if not path.exists():
            raise SystemExit(f"error: {path} not found; give --data the folder of ../shared/data that holds {SERIES}/")
    load = Compose(  # the bundle's own loader, as inference reads a series (scripts.data.transforms)
        [
            LoadImageSeriesd(("image", "seg"), image_only=True),
            EnsureChannelFirstd(("image", "seg")),
            Orientationd(("image", "seg"), axcodes="RAS"),
        ]
    )
    data = load({"image": str(series), "seg": str(seg)})
    image, labels = data["image"], data["seg"]
    if image.shape != labels.shape or not np.allclose(image.affine, labels.affine, atol=1e-2):
        raise SystemExit(f"error: {seg} {tuple(labels.shape[1:])} is not on the grid of {series} "
                         f"{tuple(image.shape[1:])} once both are in RAS")  # fmt: skip
    data = Spacingd(("image", "seg"), pixdim=spacing, mode=("bilinear", "nearest"))(data)
    affine = np.asarray(data["image"].affine, dtype=np.float64)
    hu = data["image"][0].numpy().astype(np.float32)
    return hu, np.rint(data["seg"][0].numpy()).astype(np.uint8), affine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/totalsegmentator_example", type=Path)
    parser.add_argument("--out", default="cache/training_cts", type=Path)
    parser.add_argument("--spacing", default="3,3,2", help="voxel size in mm, x,y,z (default 3,3,2)")
    args = parser.parse_args(argv)
    try:
        spacing = tuple(float(v) for v in args.spacing.split(","))
    except ValueError:
        spacing = ()
    if len(spacing) != 3 or min(spacing) <= 0:
        raise SystemExit(f"error: --spacing {args.spacing!r}: give three positive numbers in mm, e.g. 3,3,2")
    hu, labels, affine = dicom_pair(args.data, spacing)
    args.out.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(hu, affine), str(args.out / "dicom_abdomen.nii.gz"))
    nib.save(nib.Nifti1Image(labels, affine), str(args.out / "dicom_abdomen_seg.nii.gz"))
    print(f"{args.out}/dicom_abdomen.nii.gz {hu.shape} at {spacing} mm, {len(np.unique(labels)) - 1} labels")


if __name__ == "__main__":
    main()
