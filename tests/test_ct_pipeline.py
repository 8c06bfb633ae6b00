"""The real-CT pipeline: Learn2Reg / plain-pair reading, preprocessing transforms, regions through the pipeline on a
CT-like phantom with a non-identity affine, Learn2Reg metrics, and the bundle commands on the phantom and on a real CT.
"""

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_cli import bundle, epoch_metric
from monai.bundle import ConfigParser
from monai.data import MetaTensor, list_data_collate
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Resized

from scripts.data.datasets import FilePairDataset, registration_dataset
from scripts.data.lists import learn2reg_pairs, read_pairs
from scripts.data.transforms import ReorientVectorsd, ResampleRegionsd
from scripts.evaluation.learn2reg import l2r_jacobian_determinant, l2r_sdlogj, learn2reg_metrics
from scripts.io.errors import InputError
from scripts.networks.registration import PrepareRegistrationBatch
from scripts.regions.labels import learn2reg_labels_from_totalsegmentator, vertebrae_ids
from scripts.synthesis.phantom import diaphragm_normal, phantom_affine, write_deformed_ct_pair, write_learn2reg_phantom
from scripts.synthesis.synthetic import SyntheticRegistrationDataset

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = BUNDLE_ROOT / "configs"
# phantom: array axes towards posterior, left, superior (a flipped + permuted affine), anisotropic voxels; in RAS the
# grid is (64, 80, 64) voxels of (2.0, 1.5, 2.5) mm
PHANTOM = {"shape": (80, 64, 64), "spacing": (1.5, 2.0, 2.5), "axcodes": "PLS"}
NAME = "AbdomenCTCT_{:04d}_0000"
TINY = ["--channels", "[4,8,16]", "--strides", "[2,2]", "--batch_size", "2", "--val_interval", "1"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    """5 phantoms in the Learn2Reg layout: 3 training images (6 ordered pairs), 2 validation images (1 pair)."""
    out = tmp_path_factory.mktemp("AbdomenCTCT")
    write_learn2reg_phantom(str(out), num_images=5, num_val_images=2, seed=1, **PHANTOM)
    return out


def parse(*overrides: tuple[str, object], configs=("train.json", "ct.json", "abdomenctct.json")) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / c) for c in configs])
    for key, value in overrides:
        parser[key] = value
    return parser


def image_item(root: Path, i: int, regions_dir: Path | None = None) -> dict:
    name = NAME.format(i)
    item = {"image": str(root / "imagesTr" / f"{name}.nii.gz"), "label": str(root / "labelsTr" / f"{name}.nii.gz")}
    if regions_dir is None:
        item["seg"] = str(root / "totalsegmentator" / f"{name}_seg.nii.gz")
    else:
        item["reg_mask"] = str(regions_dir / f"{name}_reg_mask.nii.gz")
        item["normals"] = str(regions_dir / f"{name}_normals.nii.gz")
    return item


def world_coordinates(affine: np.ndarray, shape) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    return np.einsum("ij,j...->i...", affine[:3, :3], grid) + affine[:3, 3, None, None, None]


def diaphragm_patch(out: dict) -> np.ndarray:
    """Sliding voxels of the flat liver / right-lung interface, away from the spine, the ribs and the patch's rim."""
    affine = np.asarray(out["image"].affine)
    mask = out["reg_mask"][0].numpy()
    x, y, _ = world_coordinates(affine, mask.shape)
    hx, hy, _ = np.abs(affine[:3, :3]) @ np.asarray(mask.shape) / 2
    return (mask == 2) & (x > 0.3 * hx) & (x < 0.6 * hx) & (np.abs(y) < 0.4 * hy)


def angles_deg(normals: np.ndarray, sel: np.ndarray, reference: np.ndarray) -> np.ndarray:
    cos = np.abs(np.einsum("c...,c->...", normals, reference)[sel])
    return np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))


# ---------------------------------------------------------------------------------------------------- reading
def test_learn2reg_layout_splits(phantom):
    meta = json.loads((phantom / "AbdomenCTCT_dataset.json").read_text())
    assert meta["training"][0] == {
        "image": "./imagesTr/AbdomenCTCT_0001_0000.nii.gz",
        "label": "./labelsTr/AbdomenCTCT_0001_0000.nii.gz",
    }
    train, val = learn2reg_pairs(phantom, "train"), learn2reg_pairs(phantom, "val")
    val_images = {p[k] for p in val for k in ("fixed", "moving")}
    assert len(val) == 1 and len(val_images) == 2
    ordered = {(p["fixed"].name, p["moving"].name) for p in train}
    assert len(train) == 6 == len(ordered)  # 3 images, both directions
    assert all((b, a) in ordered for a, b in ordered)
    assert not val_images & {p[k] for p in train for k in ("fixed", "moving")}
    assert all(p["fixed_label"].parent.name == "labelsTr" and p["fixed_label"].is_file() for p in train + val)
    assert learn2reg_pairs(phantom, "test") == val


def test_plain_pair_lists_json_and_csv(phantom, tmp_path):
    a, b, c = (f"{phantom}/imagesTr/{NAME.format(i)}.nii.gz" for i in (1, 2, 3))
    (tmp_path / "pairs.json").write_text(json.dumps([[a, b], {"fixed": b, "moving": c}]))
    pairs = read_pairs(tmp_path, "val")  # a plain list serves every split
    assert [(p["fixed"].name, p["moving"].name) for p in pairs] == [
        (Path(a).name, Path(b).name),
        (Path(b).name, Path(c).name),
    ]
    with open(tmp_path / "list.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fixed", "moving", "split"])
        writer.writerows([[a, b, "train"], [b, a, "train"], [a, c, "val"], [c, a, ""]])
    assert len(read_pairs(tmp_path / "list.csv", "train")) == 3 and len(read_pairs(tmp_path / "list.csv", "val")) == 2
    (tmp_path / "bad.json").write_text(json.dumps({"train": [[a, str(tmp_path / "missing.nii.gz")]]}))
    with pytest.raises(InputError, match="missing.nii.gz"):
        read_pairs(tmp_path / "bad.json", "train")


def test_missing_segmentation_is_a_clear_error(phantom, tmp_path):
    pairs = learn2reg_pairs(phantom, "val")
    with pytest.raises(InputError) as err:
        FilePairDataset(pairs, transform=lambda d: d, seg_dir=str(tmp_path), cache="none")
    message = str(err.value)
    assert f"{NAME.format(4)}_seg.nii.gz" in message and "python -m scripts.regions.segment run" in message
    with pytest.raises(InputError, match="python -m scripts.regions.precompute"):
        FilePairDataset(pairs, transform=lambda d: d, regions_dir=str(tmp_path), cache="none")


def test_dataset_names_and_synthetic_unchanged(phantom):
    with pytest.raises(ValueError, match="configs/ct.json"):
        registration_dataset("abdomenctct", "train", options={"data_dir": str(phantom)})
    with pytest.raises(ValueError, match="unknown dataset"):
        registration_dataset("abdomen", "train")
    synthetic = registration_dataset("synthetic_rigid", "val", num_pairs=2, shape=(16, 16, 16))
    assert isinstance(synthetic, SyntheticRegistrationDataset) and len(synthetic) == 2


# ---------------------------------------------------------------------------------------------------- transforms
def test_reorient_vectors_keeps_world_directions(tmp_path):
    shape, spacing = (6, 5, 4), (1.5, 2.0, 2.5)
    affine = phantom_affine(shape, spacing, "PLS")
    world = np.array([0.2, -0.5, 0.8]) / np.linalg.norm([0.2, -0.5, 0.8])
    file_components = (affine[:3, :3] / np.asarray(spacing)).T @ world  # components along the file's axes
    nib.save(
        nib.Nifti1Image(np.broadcast_to(file_components, (*shape, 3)).astype(np.float32), affine), tmp_path / "v.nii.gz"
    )
    load = Compose([LoadImaged("v", image_only=True), EnsureChannelFirstd("v"), Orientationd("v", axcodes="RAS")])
    d = load({"v": str(tmp_path / "v.nii.gz")})
    assert not np.allclose(d["v"][:, 0, 0, 0].numpy(), world, atol=1e-3)  # Orientationd alone leaves them stale
    d = ReorientVectorsd("v")(d)
    np.testing.assert_allclose(d["v"][:, 2, 3, 1].numpy(), world, atol=1e-6)  # RAS array axes = world axes
    assert isinstance(d["v"], MetaTensor)


def test_preprocessing_regions_on_the_phantom(phantom, tmp_path):
    """Through the config's MONAI transforms (LPS-like flipped+permuted affine, anisotropic spacing): the mask has
    the bones rigid and the liver/lung interface sliding; normals there equal the (oblique) plane normal within 1 deg
    (median; measured 0.74), computed from the segmentation or precomputed by the CLI, at full size and downsampled."""
    from scripts.regions.precompute import precompute

    regions_dir = tmp_path / "regions"
    precompute(str(phantom / "totalsegmentator"), str(regions_dir), method="gaussian")
    plane = diaphragm_normal()
    for size in ([64, 80, 64], [32, 40, 32]):
        transform = parse(("image_size", size)).get_parsed_content("preprocessing")
        out = transform(image_item(phantom, 1))
        assert out["image"].shape == (1, *size) and out["normals"].shape == (3, *size) and "seg" not in out
        affine = np.asarray(out["image"].affine)
        assert np.all(np.diag(affine)[:3] > 0) and np.allclose(affine[:3, :3], np.diag(np.diag(affine)[:3]))  # RAS
        np.testing.assert_allclose(np.asarray(out["reg_mask"].affine), affine, atol=1e-6)  # same grid as the image
        image, mask, label = out["image"][0].numpy(), out["reg_mask"][0].numpy(), out["label"][0].numpy()
        assert 0.0 <= image.min() and image.max() <= 1.0  # HU window [-1200, 400] -> [0, 1]
        assert (mask == 1).sum() > 100 and image[mask == 1].mean() > 0.9  # rigid: bone (700 HU, clipped at 400)
        assert ((mask == 2) & (label == 6)).sum() > 50  # sliding on the liver side (Learn2Reg label 6) ...
        assert ((mask == 2) & (image < 0.3)).sum() > 30  # ... and on the lung side (-850 HU)
        normals = out["normals"].numpy()
        norm = np.linalg.norm(normals, axis=0)
        np.testing.assert_allclose(norm[mask == 2], 1.0, atol=1e-5)
        assert np.all(norm[mask != 2] == 0)
        sel = diaphragm_patch(out)
        assert sel.sum() > 100
        angle = angles_deg(normals, sel, plane)
        assert np.median(angle) < 1.0 and np.percentile(angle, 95) < 5.0, (np.median(angle), np.percentile(angle, 95))
        # the same from the regions precomputed in the file's own (PLS) array frame, re-oriented
        pre = transform(image_item(phantom, 1, regions_dir))
        np.testing.assert_array_equal(pre["reg_mask"].numpy(), out["reg_mask"].numpy())
        dots = np.abs((pre["normals"].numpy() * normals).sum(axis=0))[mask == 2]
        assert dots.min() > 0.9999


def test_resample_regions_matches_resize_geometry(phantom):
    transform = parse(("image_size", [64, 80, 64])).get_parsed_content("preprocessing")
    full = transform(image_item(phantom, 2))
    small = ResampleRegionsd(spatial_size=(20, 30, 16))({"reg_mask": full["reg_mask"], "normals": full["normals"]})
    resized = Resized("x", spatial_size=(20, 30, 16), mode="nearest-exact")({"x": full["reg_mask"].float()})["x"]
    np.testing.assert_allclose(np.asarray(small["reg_mask"].affine), np.asarray(resized.affine), atol=1e-9)
    np.testing.assert_array_equal(small["reg_mask"].numpy(), resized.numpy().astype(np.uint8))
    norm = np.linalg.norm(small["normals"].numpy(), axis=0)
    np.testing.assert_allclose(norm[small["reg_mask"][0].numpy() == 2], 1.0, atol=1e-5)


def test_dataset_items_spacing_and_cache(phantom, tmp_path):
    size = [24, 24, 24]
    parser = parse(("bundle_root", str(tmp_path)), ("dataset_dir", str(phantom)), ("image_size", size))
    train = parser.get_parsed_content("train#dataset")
    assert len(train) == 6
    item = train[0]
    assert {k: tuple(v.shape) for k, v in item.items()} == {
        "fixed": (1, *size),
        "moving": (1, *size),
        "fixed_label": (1, *size),
        "moving_label": (1, *size),
        "reg_mask": (1, *size),
        "normals": (3, *size),
    }
    assert item["reg_mask"].dtype == torch.uint8 and item["fixed_label"].dtype == torch.uint8
    assert set(np.unique(item["fixed_label"].numpy())) >= {0, 1, 2, 3, 6, 7, 8}
    cache = tmp_path / "cache" / "ct"
    for i in range(len(train)):
        train[i]
    assert len(list(cache.glob("*.pt"))) == 3  # one entry per IMAGE (3 training images), not per pair
    batch = list_data_collate([train[0], train[1]])
    inputs, targets, _, kwargs = PrepareRegistrationBatch(num_label_classes=14, physical_spacing=True)(batch)
    expected = [64 * 2.0 / 24, 80 * 1.5 / 24, 64 * 2.5 / 24]  # RAS field of view (mm) / network grid
    np.testing.assert_allclose(targets["spacing"].numpy(), [expected, expected], rtol=1e-5)
    assert inputs.shape == (2, 2, *size) and kwargs["moving_label"].shape == (2, 14, *size)
    # a second dataset reuses the cache; another grid gets its own entries
    parser.get_parsed_content("train#dataset")[0]
    assert len(list(cache.glob("*.pt"))) == 3
    parse(
        ("bundle_root", str(tmp_path)), ("dataset_dir", str(phantom)), ("image_size", [16, 16, 16])
    ).get_parsed_content("validate#dataset")[0]
    assert len(list(cache.glob("*.pt"))) == 5


# ---------------------------------------------------------------------------------------------------- metrics
def _reference_l2r_sdlogj(disp: np.ndarray) -> float:
    """Independent numpy version of the challenge's convention: zero-padded central differences, 2-voxel crop,
    std of log((det + 3).clip(1e-9, 1e9))."""
    from scipy import ndimage

    kernel = np.array([-0.5, 0.0, 0.5])
    grad = np.stack(
        [np.stack([ndimage.correlate1d(disp[c], kernel, axis=a, mode="constant") for a in range(3)]) for c in range(3)]
    )  # (component, axis, X, Y, Z)
    jac = (grad + np.eye(3)[:, :, None, None, None])[:, :, 2:-2, 2:-2, 2:-2]
    det = np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))
    return float(np.log(np.clip(det + 3, 1e-9, 1e9)).std())


def test_learn2reg_metric_conventions():
    from scipy import ndimage

    disp = ndimage.gaussian_filter(np.random.default_rng(0).normal(0, 4, (3, 20, 18, 16)), (0, 1.5, 1.5, 1.5))
    ddf = torch.from_numpy(disp)[None]
    assert l2r_jacobian_determinant(ddf).shape == (1, 16, 14, 12)
    assert abs(float(l2r_sdlogj(ddf)[0]) - _reference_l2r_sdlogj(disp)) < 1e-9
    assert float(l2r_sdlogj(torch.zeros(1, 3, 9, 9, 9))[0]) == 0.0
    fixed = torch.zeros(2, 1, 20, 18, 16, dtype=torch.long)
    fixed[:, :, 4:12, 4:12, 4:12] = 6  # liver
    fixed[:, :, 14:18, 3:8, 3:9] = 2  # right kidney
    moving = torch.roll(fixed, 2, dims=2)
    moving[1][moving[1] == 2] = 0  # pair 1: the kidney is absent from the moving image -> skipped
    shift = torch.zeros(2, 3, 20, 18, 16)
    shift[:, 0] = 2.0  # warped(x) = moving(x + 2 e0) = fixed(x): a perfect registration
    spacing = torch.tensor([[2.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    before = learn2reg_metrics(torch.zeros_like(shift), fixed, moving, spacing=spacing)
    after = learn2reg_metrics(shift, fixed, moving, spacing=spacing)
    assert torch.allclose(after["l2r_dice"], torch.ones(2, dtype=torch.float64)) and after["l2r_hd95"].abs().max() == 0
    liver = 2 * 6 * 64 / (2 * 8 * 64)  # 8-voxel cube shifted by 2 along axis 0
    assert float(before["l2r_dice_06"][0]) == pytest.approx(liver) and torch.isnan(before["l2r_dice_02"][1])
    assert float(before["l2r_hd95"][0]) == pytest.approx(4.0)  # 2 voxels of 2 mm
    assert float(before["l2r_hd95"][1]) == pytest.approx(2.0)  # 2 voxels of 1 mm, liver only
    assert torch.all(torch.isnan(after["l2r_dice_01"]))  # spleen in neither image


# ---------------------------------------------------------------------------------------------------- bundle commands
@pytest.mark.slow
def test_phantom_training_and_learn2reg_evaluation(phantom, tmp_path):
    """The documented commands on the phantom (Learn2Reg layout, TotalSegmentator folder), from another folder."""
    common = ["--bundle_root", str(tmp_path), "--dataset_dir", str(phantom), "--image_size", "[16,16,16]", *TINY]
    log = bundle(
        "training",
        ["train.json", "ct.json", "abdomenctct.json"],
        *common,
        "--epochs",
        "2",
        "--val_interval",
        "2",
        "--num_train_pairs",
        "2",
        cwd=tmp_path,
    )
    totals = epoch_metric(log, "train_total")
    assert len(totals) == 2 and all(np.isfinite(totals)), log[-3000:]
    assert epoch_metric(log, "train_shearing")[0] > 0 and epoch_metric(log, "train_rigidity")[0] > 0
    assert epoch_metric(log, "train_dice") and epoch_metric(log, "val_rigidity_error")
    run_dir = tmp_path / "runs" / "abdomenctct_rigidity_shearing_jacobian"
    assert (run_dir / "model.pt").is_file()
    bundle(
        "evaluating",
        ["train.json", "ct.json", "abdomenctct.json", "evaluate.json"],
        *common,
        "--num_figures",
        "0",
        cwd=tmp_path,
    )
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert summary["pairs"] == 1
    for key in (
        "mse",
        "dice",
        "rigidity_error",
        "std_log_jacobian",
        "l2r_dice",
        "l2r_dice_before",
        "l2r_hd95",
        "l2r_sdlogj",
    ):
        assert summary[key]["mean"] is not None and np.isfinite(summary[key]["mean"]), key
    assert 0 < summary["l2r_dice"]["mean"] <= 1 and summary["l2r_hd95"]["mean"] >= 0
    header = (run_dir / "eval" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "l2r_dice_06" in header and "l2r_sdlogj" in header


@pytest.mark.slow
def test_real_ct_pair_training(ct_example_dir, tmp_path):
    """The real CT (3 mm, 122x101x30) and a copy deformed by a known smooth field with the vertebrae moved rigidly,
    with the real TotalSegmentator segmentation, as a plain pair list: regions, then the bundle command."""
    pairs_file = write_deformed_ct_pair(
        str(ct_example_dir / "example_ct_sm.nii.gz"), str(ct_example_dir / "example_seg.nii.gz"), str(tmp_path / "pair")
    )
    truth = nib.load(tmp_path / "pair" / "ddf_true.nii.gz").get_fdata()
    seg = np.asarray(nib.load(ct_example_dir / "example_seg.nii.gz").dataobj)
    vertebrae = np.isin(seg, vertebrae_ids())
    assert vertebrae.sum() > 500 and 0.3 < np.abs(truth).max() < 10
    size = [40, 32, 12]
    overrides = [
        ("bundle_root", str(tmp_path)),
        ("dataset", "pairs"),
        ("dataset_dir", pairs_file),
        ("image_size", size),
    ]
    item = parse(*overrides).get_parsed_content("train#dataset")[0]
    mask, image = item["reg_mask"][0].numpy(), item["fixed"][0].numpy()
    assert (mask == 1).sum() > 50 and image[mask == 1].mean() > 0.7  # bones (HU window [-1200, 400])
    assert (mask == 2).sum() > 50 and set(np.unique(item["fixed_label"].numpy())) >= {0, 1, 2, 3, 6}
    assert learn2reg_labels_from_totalsegmentator(seg).max() <= 13
    common = [
        "--bundle_root",
        str(tmp_path),
        "--dataset",
        "pairs",
        "--dataset_dir",
        pairs_file,
        "--label_classes",
        "14",
    ]
    common += ["--image_size", str(size).replace(" ", ""), *TINY]
    log = bundle("training", ["train.json", "ct.json", "abdomenctct.json"], *common, "--epochs", "1", cwd=tmp_path)
    totals = epoch_metric(log, "train_total")
    assert len(totals) == 1 and np.isfinite(totals[0]) and epoch_metric(log, "train_rigidity")[0] > 0, log[-3000:]
    assert (tmp_path / "runs" / "pairs_rigidity_shearing_jacobian" / "model.pt").is_file()
