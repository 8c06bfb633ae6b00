"""Inference on new scan pairs (scripts/inference/predict.py, scripts/inference/writer.py, scripts/io/resampling.py,
scripts/inference/pairs.py, configs/inference.json, configs/ct.json).

- the written displacement field is the transform ITK applies (SimpleITK DisplacementFieldTransform reproduces our
  warped image on real CTs with different grids and orientations; the RAS reading of the same file does not);
- exact geometry: a known translation / linear field injected on the network grid comes back in mm on the fixed
  grid with the per-axis resampling factors, warps the moving image onto the fixed one, and gives the Learn2Reg
  voxel field; a preprocessing that reorients (configs/ct.json) is consistent;
- a model trained here for a few seconds registers held-out synthetic pairs better than no registration;
- bad inputs fail with one clear message and write nothing; TorchScript export; the bundle command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.inference import predict as inf
from scripts.inference import writer
from scripts.inference.pairs import require_pairs, resolve_pairs
from scripts.io import resampling
from scripts.io.errors import InputError, find_input_error
from scripts.io.image_io import write_niftis_atomically
from scripts.losses.mechanics import jacobian_map

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
CONFIG = BUNDLE_ROOT / "configs" / "inference.json"
SYNTHETIC = ("inference.json", "synthetic.json")  # the paper's synthetic-bars model, which these tests register with
META = BUNDLE_ROOT / "configs" / "metadata.json"
NET = {"spatial_dims": 3, "in_channels": 2, "out_channels": 3, "channels": (8, 16, 32, 64), "strides": (2, 2, 2)}


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def backbone(seed: int = 0) -> torch.nn.Module:
    from monai.networks.nets import AttentionUnet

    torch.manual_seed(seed)
    return AttentionUnet(**NET).eval()


def registration_net(net: torch.nn.Module) -> torch.nn.Module:
    from scripts.networks.registration import RegistrationNet

    return RegistrationNet(net, integration_steps=7).eval()


def run_workflow(config_files=SYNTHETIC, **overrides):
    """The bundle's inference workflow, in process (as the Model Zoo tests run it)."""
    from scripts.inference.predict import run_inference_workflow

    return run_inference_workflow(BUNDLE_ROOT, config_files, **overrides)


def preprocessing(image_size, configs=SYNTHETIC):
    """The ``preprocessing`` chain declared in the configs (the model's own), for a network grid ``image_size``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE_ROOT / "configs" / name) for name in configs])
    parser["bundle_root"] = str(BUNDLE_ROOT)
    parser["image_size"] = list(image_size)
    return parser.get_parsed_content("preprocessing")


def load(fixed, moving, image_size, configs=SYNTHETIC, **labels) -> inf.PairData:
    return inf.load_pair({"fixed": fixed, "moving": moving, **labels}, preprocessing(image_size, configs))


def subprocess_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(BUNDLE_ROOT), os.environ.get("PYTHONPATH", "")])}


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def grid_points(shape, affine) -> np.ndarray:
    """(X, Y, Z, 3) RAS mm of every voxel centre."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    return idx @ affine[:3, :3].T + affine[:3, 3]


BLOBS = [((0.0, 0.0, 0.0), (9.0, 7.0, 8.0), 1.0), ((12.0, -8.0, 6.0), (6.0, 8.0, 5.0), 0.7),
         ((-10.0, 9.0, -7.0), (7.0, 5.0, 9.0), 0.5)]  # fmt: skip


def blobs(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """A smooth test image (sum of anisotropic Gaussians, mm) evaluated at RAS points."""
    out = np.zeros(points.shape[:-1])
    for offset, sigma, weight in BLOBS:
        d = (points - centre - np.array(offset)) / np.array(sigma)
        out += weight * np.exp(-0.5 * (d**2).sum(-1))
    return out.astype(np.float32)


FIXED_SHAPE = (40, 36, 30)
MOVING_SHAPE = (48, 50, 52)
CENTRE = np.array([10.0, -20.0, 30.0])


def fixed_affine() -> np.ndarray:
    """Oblique, flipped (LPS-like), anisotropic: 1.5 x 2.0 x 2.5 mm, rotated 0.3 rad about z."""
    a = np.eye(4)
    a[:3, :3] = rotation_z(0.3) @ np.diag([-1.0, -1.0, 1.0]) @ np.diag([1.5, 2.0, 2.5])
    a[:3, 3] = CENTRE - a[:3, :3] @ ((np.array(FIXED_SHAPE) - 1) / 2)
    return a


def moving_affine() -> np.ndarray:
    """RAS 1.8 mm iso, centred near the fixed image's centre."""
    a = np.diag([1.8, 1.8, 1.8, 1.0])
    a[:3, 3] = CENTRE + np.array([2.0, -1.0, 1.5]) - 1.8 * (np.array(MOVING_SHAPE) - 1) / 2
    return a


def write_blob_pair(folder: Path, shift_mm: np.ndarray, names=("blob_fixed", "blob_moving")) -> tuple[str, str]:
    """Fixed f(p) and moving f(q - shift) on different grids: the true displacement is u(p) = shift."""
    folder.mkdir(parents=True, exist_ok=True)
    fa, ma = fixed_affine(), moving_affine()
    fixed = blobs(grid_points(FIXED_SHAPE, fa), CENTRE)
    moving = blobs(grid_points(MOVING_SHAPE, ma) - shift_mm, CENTRE)
    paths = (str(folder / f"{names[0]}.nii.gz"), str(folder / f"{names[1]}.nii.gz"))
    nib.save(nib.Nifti1Image(fixed, fa), paths[0])
    nib.save(nib.Nifti1Image(moving, ma), paths[1])
    return paths


def net_displacement_for(pair: inf.PairData, field_mm) -> torch.Tensor:
    """The (1, 3, *net) net-voxel displacement whose physical value at each net voxel is ``field_mm(points)``,
    computed independently of the module: net grid = same box as the fixed grid, voxel edges aligned."""
    scale = np.array(pair.fixed_shape) / np.array(pair.net_shape)
    net_affine = pair.fixed_affine.copy()
    net_affine[:3, :3] = pair.fixed_affine[:3, :3] @ np.diag(scale)
    net_affine[:3, 3] = pair.fixed_affine[:3, :3] @ ((scale - 1) / 2) + pair.fixed_affine[:3, 3]
    np.testing.assert_allclose(pair.net_affine, net_affine, atol=1e-6)  # MONAI's Resized tracks the same grid
    u_mm = field_mm(grid_points(pair.net_shape, net_affine))  # (*net, 3)
    d = u_mm @ np.linalg.inv(net_affine[:3, :3]).T
    return torch.from_numpy(np.moveaxis(d, -1, 0)[None].astype(np.float32))


def empty_or_absent(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


# ----------------------------------------------------------------------------------------------------------------
# exact geometry on analytic images (no data needed)
# ----------------------------------------------------------------------------------------------------------------


def test_known_translation_round_trip(tmp_path):
    """A translation injected on the coarse, anisotropically scaled network grid comes back exactly (mm, LPS in the
    file; fixed voxels in the Learn2Reg file), det J = 1, and warps the moving image onto the fixed one."""
    shift = np.array([4.0, -3.0, 5.0])  # RAS mm
    fixed, moving = write_blob_pair(tmp_path / "in", shift, names=("Case_0011_0000", "Case_0012_0000"))
    pair = load(fixed, moving, (16, 12, 8))  # scale factors 2.5, 3, 3.75
    ddf_net = net_displacement_for(pair, lambda p: np.broadcast_to(shift, p.shape))
    entry = writer.finish_pair(pair, ddf_net, tmp_path / "out", learn2reg=True)

    ddf_img = nib.load(entry["outputs"]["ddf"])
    assert ddf_img.shape == (*FIXED_SHAPE, 1, 3)
    assert ddf_img.header.get_intent()[0] == "vector" and int(ddf_img.header["intent_code"]) == 1007
    assert ddf_img.get_data_dtype() == np.float32
    np.testing.assert_allclose(ddf_img.affine, fixed_affine(), atol=1e-5)
    np.testing.assert_allclose(ddf_img.get_fdata()[..., 0, :], np.broadcast_to(shift * [-1, -1, 1], (*FIXED_SHAPE, 3)),
                               atol=1e-4)  # fmt: skip
    assert Path(entry["outputs"]["learn2reg"]).name == "disp_0011_0000_0012_0000.nii.gz"  # the official name
    l2r = nib.load(entry["outputs"]["learn2reg"])
    assert l2r.shape == (*FIXED_SHAPE, 3)
    voxels = np.linalg.inv(fixed_affine()[:3, :3]) @ shift
    np.testing.assert_allclose(l2r.get_fdata(), np.broadcast_to(voxels, (*FIXED_SHAPE, 3)), atol=1e-4)
    np.testing.assert_allclose(nib.load(entry["outputs"]["jacdet"]).get_fdata(), 1.0, atol=1e-5)
    assert entry["folding_percent"] == 0.0

    warped = nib.load(entry["outputs"]["warped"]).get_fdata()
    target = nib.load(fixed).get_fdata()
    before, _ = resampling.warp_to_fixed(pair.moving, pair.moving_affine, pair.fixed_affine, pair.fixed_shape, None)
    err_after = np.abs(warped - target).mean()
    err_before = np.abs(before.numpy() - target).mean()
    assert np.corrcoef(warped.ravel(), target.ravel())[0, 1] > 0.999
    assert err_after < 0.05 * err_before


def test_linear_field_upsampling_is_scaled_per_axis(tmp_path):
    """A linear displacement u(p) = B (p - c) given on the network grid is reproduced on the native grid away from
    the border (trilinear interpolation of a linear field is exact): checks the edge-aligned grid map and the
    per-axis scaling of voxel-unit vectors."""
    fixed, moving = write_blob_pair(tmp_path / "in", np.zeros(3))
    pair = load(fixed, moving, (16, 12, 8))
    b = np.array([[0.02, -0.03, 0.01], [0.015, 0.01, -0.02], [-0.01, 0.025, 0.03]])

    def field(p):
        return (p - CENTRE) @ b.T

    ddf_net = net_displacement_for(pair, field)
    ddf_vox = resampling.field_to_fixed_grid(ddf_net, pair.net_affine, pair.fixed_affine, pair.fixed_shape)
    u = resampling.physical_displacement(ddf_vox, pair.fixed_affine).permute(1, 2, 3, 0).numpy()
    expected = field(grid_points(FIXED_SHAPE, fixed_affine()))
    scale = np.array(FIXED_SHAPE) / np.array(pair.net_shape)
    interior = tuple(slice(int(np.ceil(s / 2)), n - int(np.ceil(s / 2))) for s, n in zip(scale, FIXED_SHAPE))
    np.testing.assert_allclose(u[interior], expected[interior], atol=2e-4)
    # without the per-axis factor the field would be off by up to (s_k - 1) times
    assert np.abs(expected).max() > 0.5


def test_reorienting_preprocessing_is_consistent(tmp_path):
    """The CT preprocessing (configs/ct.json: Orientationd RAS) on an oblique LPS-like file gives the network exactly
    the input of the same image stored in RAS order, and the same physical outputs, written back in the file's own
    array order (the field comes back through the tracked network-grid affine)."""
    fixed, moving = write_blob_pair(tmp_path / "in", np.array([2.0, 1.0, -1.5]))
    canonical = nib.as_closest_canonical(nib.load(fixed))
    fixed_ras = str(tmp_path / "in" / "blobras_fixed.nii.gz")
    nib.save(canonical, fixed_ras)
    net = registration_net(backbone(1))
    ct = ("inference.json", "ct.json")
    a = load(fixed, moving, (16, 16, 16), ct)
    b = load(fixed_ras, moving, (16, 16, 16), ct)
    assert not np.allclose(a.fixed_affine, b.fixed_affine)  # two storage orders of one image
    torch.testing.assert_close(a.image, b.image)
    np.testing.assert_allclose(a.net_affine, b.net_affine, atol=1e-6)
    ea = writer.finish_pair(a, inf.predict(a, net), tmp_path / "a")
    eb = writer.finish_pair(b, inf.predict(b, net), tmp_path / "b")
    for kind in ("ddf", "warped", "jacdet"):
        img_a = nib.as_closest_canonical(nib.load(ea["outputs"][kind]))
        img_b = nib.load(eb["outputs"][kind])
        np.testing.assert_allclose(img_a.affine, img_b.affine, atol=1e-5)
        np.testing.assert_allclose(img_a.get_fdata(), img_b.get_fdata(), atol=1e-4)
    assert ea["displacement_mm"]["max"] > 0.5  # a real (random-model) field


def test_network_grid_not_divisible_is_padded(tmp_path):
    fixed, moving = write_blob_pair(tmp_path / "in", np.zeros(3))
    pair = load(fixed, moving, (13, 18, 10))
    ddf = inf.predict(pair, registration_net(backbone()), divisor=8)
    assert ddf.shape == (1, 3, 13, 18, 10)
    entry = writer.finish_pair(pair, ddf, tmp_path / "out", save_jacobian=False)
    assert nib.load(entry["outputs"]["warped"]).shape == FIXED_SHAPE
    assert "jacdet" not in entry["outputs"]


# ----------------------------------------------------------------------------------------------------------------
# ITK / SimpleITK reads our displacement field as the transform we applied (real CTs)
# ----------------------------------------------------------------------------------------------------------------


def centred_copy(src: Path, like: Path, dst: Path) -> str:
    """``src`` with its affine translated so that its centre is ``like``'s centre (same orientation, spacing)."""
    img, ref = nib.load(str(src)), nib.load(str(like))

    def centre(im):
        return im.affine @ np.r_[(np.array(im.shape[:3]) - 1) / 2, 1.0]

    affine = img.affine.copy()
    affine[:3, 3] += (centre(ref) - centre(img))[:3]
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), affine, img.header), str(dst))
    return str(dst)


def sitk_resample(moving: str, fixed: str, ddf: str, fill: float, nearest: bool = False) -> np.ndarray:
    sitk = pytest.importorskip("SimpleITK")
    field = sitk.ReadImage(ddf, sitk.sitkVectorFloat64)
    transform = sitk.DisplacementFieldTransform(field)
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    out = sitk.Resample(sitk.ReadImage(moving), sitk.ReadImage(fixed), transform, interp, fill, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)  # ITK (z, y, x) -> array axes (x, y, z)


def test_simpleitk_applies_our_ddf_like_us(ct_example_dir, tmp_path):
    """Known smooth field of several mm on real CTs: fixed RAS 3 mm, moving LPS 1.5 mm (another grid)."""
    sitk = pytest.importorskip("SimpleITK")
    fixed = str(ct_example_dir / "example_ct.nii.gz")
    moving = centred_copy(ct_example_dir / "pulmonary_ct_cropped_lps.nii.gz", Path(fixed), tmp_path / "moving.nii.gz")
    pair = load(fixed, moving, (32, 32, 32), ("inference.json", "ct.json"))
    j0, j1, j2 = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in pair.net_shape], indexing="ij")
    n = pair.net_shape
    ddf_net = torch.stack(
        [0.6 * torch.sin(2 * np.pi * j1 / n[1]), 0.5 * torch.cos(2 * np.pi * j2 / n[2]), 0.4 * torch.sin(j0 / 5.0)]
    )[None]
    entry = writer.finish_pair(pair, ddf_net, tmp_path / "out")
    assert entry["displacement_mm"]["mean"] > 3.0

    ours = nib.load(entry["outputs"]["warped"]).get_fdata()
    fill = float(np.asanyarray(nib.load(moving).dataobj).min())
    ref = sitk_resample(moving, fixed, entry["outputs"]["ddf"], fill)
    body = (nib.load(fixed).get_fdata() > -500) & (ref != fill) & (ours != fill)
    assert body.sum() > 50_000
    assert np.corrcoef(ours[body], ref[body])[0, 1] >= 0.99
    assert np.abs(ours[body] - ref[body]).mean() < 2.0  # HU (ours is rounded to the moving's int16)

    # the same vectors read as RAS (the wrong convention) do not reproduce it: the check has teeth
    data = nib.load(entry["outputs"]["ddf"]).get_fdata().astype(np.float32)
    data[..., 0, :2] *= -1
    wrong = nib.Nifti1Image(data, nib.load(fixed).affine)
    wrong.header.set_intent("vector")
    nib.save(wrong, str(tmp_path / "ras.nii.gz"))
    bad = sitk_resample(moving, fixed, str(tmp_path / "ras.nii.gz"), fill)
    assert np.corrcoef(ours[body], bad[body])[0, 1] < 0.95
    # ITK reads the header as we wrote it: the fixed image's geometry, 3 components
    field = sitk.ReadImage(entry["outputs"]["ddf"], sitk.sitkVectorFloat64)
    ref_img = sitk.ReadImage(fixed)
    assert field.GetSize() == ref_img.GetSize() and field.GetNumberOfComponentsPerPixel() == 3
    np.testing.assert_allclose(field.GetOrigin(), ref_img.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(field.GetDirection(), ref_img.GetDirection(), atol=1e-6)


def test_full_pipeline_on_ct_matches_simpleitk(ct_example_dir, tmp_path):
    """The bundle workflow (model field) with an LPS fixed image and a RAS moving image + label map: SimpleITK
    with our ddf reproduces the warped image and the warped label map."""
    ckpt = tmp_path / "model.pt"
    torch.save(backbone(3).state_dict(), ckpt)
    moving = str(ct_example_dir / "example_ct_sm.nii.gz")
    label = str(ct_example_dir / "example_seg.nii.gz")
    fixed = centred_copy(ct_example_dir / "pulmonary_ct_cropped_lps.nii.gz", Path(moving), tmp_path / "fixed.nii.gz")
    out = tmp_path / "out"
    run_workflow(fixed=fixed, moving=moving, moving_label=label, output_dir=str(out), ckpt_path=str(ckpt),
                 image_size=[32, 32, 32], channels=list(NET["channels"]), strides=list(NET["strides"]),
                 config_files=("inference.json", "ct.json"))  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["pairs"][0]
    assert entry["displacement_mm"]["max"] > 3.0  # a random model's field is far from zero
    ours = nib.load(entry["outputs"]["warped"]).get_fdata()
    fill = float(np.asanyarray(nib.load(moving).dataobj).min())
    ref = sitk_resample(moving, fixed, entry["outputs"]["ddf"], fill)
    body = (nib.load(fixed).get_fdata() > -500) & (ref != fill) & (ours != fill)
    assert body.sum() > 20_000
    assert np.corrcoef(ours[body], ref[body])[0, 1] >= 0.99
    warped_label = nib.load(entry["outputs"]["warped_label"])
    assert warped_label.get_data_dtype() == nib.load(label).get_data_dtype()
    ref_label = sitk_resample(label, fixed, entry["outputs"]["ddf"], 0, nearest=True)
    labelled = (ref_label > 0) | (np.asanyarray(warped_label.dataobj) > 0)
    assert labelled.sum() > 1000
    assert (np.asanyarray(warped_label.dataobj)[labelled] == ref_label[labelled]).mean() > 0.97


# ----------------------------------------------------------------------------------------------------------------
# a trained model registers better than no registration
# ----------------------------------------------------------------------------------------------------------------


def mse_pairs(out: Path, pair_dir: Path) -> tuple[float, float]:
    summary = json.loads((out / "summary.json").read_text())
    before, after = [], []
    for entry in summary["pairs"]:
        fixed = nib.load(entry["fixed"]).get_fdata()
        before.append(((nib.load(entry["moving"]).get_fdata() - fixed) ** 2).mean())
        after.append(((nib.load(entry["outputs"]["warped"]).get_fdata() - fixed) ** 2).mean())
        assert entry["folding_percent"] < 1.0
    return float(np.mean(before)), float(np.mean(after))


@pytest.mark.slow
def test_model_trained_here_beats_no_registration(tmp_path):
    """Train a small model for ~60 steps on 16^3 rigid pairs, then register held-out 32^3 test pairs through the
    bundle (the network sees them resized to 16^3): MSE after registration well below MSE before."""
    from scripts.losses.biomechanical import BiomechanicalLoss, RegistrationLoss
    from scripts.synthesis.synthetic import SyntheticRegistrationDataset, write

    torch.manual_seed(0)
    train = SyntheticRegistrationDataset("rigid", "train", 64, seed=0, shape=(16, 16, 16))
    data = {k: torch.stack([train[i][k] for i in range(len(train))]).float() for k in ("fixed", "moving", "reg_mask")}
    net = backbone(0).train()
    model = registration_net(net).train()
    loss_fn = RegistrationLoss("mse", alpha=1.0, gamma=0.01, regulariser=BiomechanicalLoss(mode="rigidity_jacobian"))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randint(0, len(train), (8,), generator=generator)
        fixed, moving = data["fixed"][idx], data["moving"][idx]
        loss = loss_fn(model(torch.cat([fixed, moving], 1)), {"fixed": fixed, "reg_mask": data["reg_mask"][idx]})
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)

    pair_dir = tmp_path / "pairs"
    write(kind="rigid", split="test", num_pairs=4, out_dir=str(pair_dir), shape=(32, 32, 32))
    out = tmp_path / "out"
    run_workflow(dataset_dir=str(pair_dir), output_dir=str(out), ckpt_path=str(ckpt), image_size=[16, 16, 16])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_pairs"] == 4
    assert all("dice" in entry for entry in summary["pairs"])  # fixed and moving labels found beside the images
    before, after = mse_pairs(out, pair_dir)
    print(f"trained here: MSE before {before:.5f}, after {after:.5f}")
    assert after < 0.8 * before, (before, after)
    dice_before = np.mean([e["dice"]["mean_before"] for e in summary["pairs"]])
    dice_after = np.mean([e["dice"]["mean_after"] for e in summary["pairs"]])
    print(f"trained here: Dice before {dice_before:.3f}, after {dice_after:.3f}")
    assert dice_after > dice_before


def test_shipped_model_beats_no_registration(tmp_path):
    if not (BUNDLE_ROOT / "models" / "model.pt").is_file():
        pytest.skip("models/model.pt is not there (the trained synthetic model ships with the bundle)")
    from scripts.synthesis.synthetic import write

    pair_dir = tmp_path / "pairs"
    write(kind="rigid", split="test", num_pairs=3, out_dir=str(pair_dir), shape=(64, 64, 64))
    out = tmp_path / "out"
    run_workflow(dataset_dir=str(pair_dir), output_dir=str(out))
    before, after = mse_pairs(out, pair_dir)
    assert after < 0.7 * before, (before, after)


# ----------------------------------------------------------------------------------------------------------------
# bad inputs: one clear error, nothing written
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_pair(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("good")
    fixed, moving = write_blob_pair(folder, np.zeros(3))
    label = np.zeros(MOVING_SHAPE, dtype=np.uint8)
    label[10:20, 10:20, 10:20] = 1
    nib.save(nib.Nifti1Image(label, moving_affine()), str(folder / "blob_moving_label.nii.gz"))
    return {"fixed": fixed, "moving": moving, "moving_label": str(folder / "blob_moving_label.nii.gz")}


def _bad_file(folder: Path, kind: str) -> tuple[str, str]:
    """(path, expected message part) of a bad input of the given kind."""
    path = folder / f"bad_{kind}.nii.gz"
    affine = moving_affine()
    if kind == "missing":
        return str(folder / "nope.nii.gz"), "file not found"
    if kind == "not_nifti":
        path.write_text("this is not an image\n")
        return str(path), "not a readable NIfTI"
    if kind == "2d":
        nib.save(nib.Nifti1Image(np.zeros((20, 20), np.float32), affine), str(path))
        return str(path), "3D volume is needed"
    if kind == "4d":
        nib.save(nib.Nifti1Image(np.zeros((*MOVING_SHAPE, 2), np.float32), affine), str(path))
        return str(path), "single 3D volume"
    data = np.zeros(MOVING_SHAPE, np.float32)
    data[3, 4, 5] = np.nan if kind == "nan" else np.inf
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path), "NaN or Inf"


@pytest.mark.parametrize("kind", ["missing", "not_nifti", "2d", "4d", "nan", "inf"])
def test_bad_moving_image(kind, good_pair, tmp_path):
    path, message = _bad_file(tmp_path, kind)
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:
        run_workflow(fixed=good_pair["fixed"], moving=path, output_dir=str(out), **{"handlers#0#_disabled_": True})
    err = find_input_error(info.value)
    assert err is not None, info.value
    assert message in str(err) and Path(path).name in str(err) and "moving" in str(err)
    assert empty_or_absent(out)


@pytest.mark.parametrize("kind", ["shape", "affine"])
def test_label_off_grid(kind, good_pair, tmp_path):
    affine = moving_affine()
    shape = MOVING_SHAPE
    if kind == "shape":
        shape = (MOVING_SHAPE[0], MOVING_SHAPE[1], MOVING_SHAPE[2] - 1)
    else:
        affine = affine.copy()
        affine[0, 3] += 2.0
    path = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), affine), str(path))
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:
        run_workflow(fixed=good_pair["fixed"], moving=good_pair["moving"], moving_label=str(path),
                     output_dir=str(out), **{"handlers#0#_disabled_": True})  # fmt: skip
    err = find_input_error(info.value)
    assert err is not None and "not on its image's grid" in str(err)
    assert empty_or_absent(out)


def test_bad_second_pair_writes_nothing_for_the_first(good_pair, tmp_path):
    out = tmp_path / "out"
    pairs = [good_pair, {"fixed": good_pair["fixed"], "moving": str(tmp_path / "missing.nii.gz")}]
    with pytest.raises(Exception) as info:
        run_workflow(pairs=pairs, output_dir=str(out), **{"handlers#0#_disabled_": True})
    assert "file not found" in str(find_input_error(info.value))
    assert empty_or_absent(out)


def test_missing_model_weights(good_pair, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:
        run_workflow(fixed=good_pair["fixed"], moving=good_pair["moving"], output_dir=str(out),
                     ckpt_path=str(tmp_path / "none.pt"))  # fmt: skip
    assert "model weights" in str(find_input_error(info.value))
    assert empty_or_absent(out)


def test_failed_write_leaves_no_file(tmp_path):
    class Broken(nib.Nifti1Image):
        def to_bytes(self, **kwargs):
            raise OSError("disk full")

    good = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    bad = Broken(np.zeros((4, 4, 4), np.float32), np.eye(4))
    with pytest.raises(OSError):
        write_niftis_atomically({tmp_path / "a.nii.gz": good, tmp_path / "b.nii.gz": bad})
    assert empty_or_absent(tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# export and the command line
# ----------------------------------------------------------------------------------------------------------------


def test_bundle_command_line(tmp_path, good_pair):
    """``python -m monai.bundle run inference`` from another folder writes every expected file and nothing else."""
    ckpt = tmp_path / "model.pt"
    torch.save(backbone(2).state_dict(), ckpt)
    out = tmp_path / "out"
    base = [sys.executable, "-W", "ignore", "-m", "monai.bundle", "run", "inference", "--config_file", str(CONFIG),
            "--bundle_root", str(BUNDLE_ROOT), "--ckpt_path", str(ckpt), "--output_dir", str(out)]  # fmt: skip
    cmd = base + ["--fixed", good_pair["fixed"], "--moving", good_pair["moving"]]
    cmd += ["--moving_label", good_pair["moving_label"]]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = "blob_fixed__blob_moving"
    expected = {f"{name}_{kind}.nii.gz" for kind in ("warped", "ddf", "jacdet", "warped_label")}
    expected |= {"summary.json", f"{name}_summary.json"}  # the pair's record: its entry, written last (--resume)
    assert set(os.listdir(out)) == expected
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["pairs"][0]
    assert set(entry["jacobian_det"]) >= {"min", "max", "mean", "std"} and "folding_percent" in entry
    for kind in ("warped", "jacdet", "warped_label"):
        img = nib.load(str(out / f"{name}_{kind}.nii.gz"))
        assert img.shape == FIXED_SHAPE
        np.testing.assert_allclose(img.affine, fixed_affine(), atol=1e-5)


def test_command_line_input_error_is_one_line(tmp_path, good_pair, capsys):
    """The config's ``initialize`` installs the hook that prints an uncaught input error as one ``error:`` line
    (what ``python -m monai.bundle run`` shows) instead of MONAI's chain of wrapped tracebacks."""
    out = tmp_path / "out"
    missing = tmp_path / "nope.nii.gz"
    with pytest.raises(Exception) as info:
        run_workflow(fixed=str(missing), moving=good_pair["moving"], output_dir=str(out))
    assert isinstance(info.value, RuntimeError)  # MONAI's wrapper around the component's error
    assert getattr(sys.excepthook, "_biomech_input_errors", False)
    capsys.readouterr()
    sys.excepthook(type(info.value), info.value, info.value.__traceback__)
    assert capsys.readouterr().err == f"error: fixed image {missing}: file not found\n"
    assert empty_or_absent(out)


def test_pair_lists(tmp_path, good_pair):
    """Pairs from a JSON file (Learn2Reg layout, paths relative to the file) or a list (relative to dataset_dir),
    and Learn2Reg names."""
    listing = {"registration_val": [{"fixed": "./a/X_0001_0000.nii.gz", "moving": "./a/X_0002_0000.nii.gz"}]}
    (tmp_path / "dataset.json").write_text(json.dumps(listing))
    pairs = resolve_pairs(pairs=str(tmp_path / "dataset.json"), dataset_dir="/elsewhere")
    assert pairs == [
        {"fixed": str(tmp_path / "a/X_0001_0000.nii.gz"), "moving": str(tmp_path / "a/X_0002_0000.nii.gz")}
    ]
    listed = resolve_pairs(pairs=[{"fixed": "f.nii.gz", "moving": "/abs/m.nii.gz"}], dataset_dir=str(tmp_path))
    assert listed == [{"fixed": str(tmp_path / "f.nii.gz"), "moving": "/abs/m.nii.gz"}]
    assert resolve_pairs(fixed="f.nii.gz", moving="m.nii.gz") == [{"fixed": "f.nii.gz", "moving": "m.nii.gz"}]
    assert resolve_pairs(dataset_dir=str(tmp_path / "empty")) == []
    with pytest.raises(InputError, match="no pairs to register"):
        require_pairs([], str(tmp_path / "empty"))
    with pytest.raises(InputError, match="both a fixed and a moving"):
        resolve_pairs(fixed="f.nii.gz")


def test_ct_preprocessing_window_and_grid(ct_example_dir):
    """The CT chain (configs/ct.json) maps the HU window [-1200, 400] to [0, 1], clipped, on a RAS network grid."""
    chain = preprocessing((24, 20, 8), ("inference.json", "ct.json"))
    native, net = inf.preprocess_image(ct_example_dir / "example_ct_sm.nii.gz", chain)
    assert tuple(net.shape) == (1, 24, 20, 8) and float(net.min()) >= 0.0 and float(net.max()) <= 1.0
    hu = native.numpy()
    assert hu.max() > 400  # the top of the window is clipped
    windowed = np.clip((hu + 1200.0) / 1600.0, 0.0, 1.0)
    assert abs(float(net.mean()) - float(windowed.mean())) < 0.03  # resizing keeps the mean (anti-aliasing: ~0.016)
    assert nib.aff2axcodes(net.affine.numpy()) == ("R", "A", "S")


def test_jacobian_map_in_slabs_is_exact():
    from scripts.losses.mechanics import jacobian_determinant

    ddf = torch.randn(3, 37, 9, 11, generator=torch.Generator().manual_seed(0))
    for slab in (1, 4, 16, 64):
        torch.testing.assert_close(jacobian_map(ddf, slab=slab), jacobian_determinant(ddf[None])[0])


# ----------------------------------------------------------------------------------------------------------------
# Learn2Reg submissions through the writer (names, full-grid scores, grid check)
# ----------------------------------------------------------------------------------------------------------------


def write_same_grid_case(folder: Path, shift_vox=(3, -2, 2)) -> dict:
    """Fixed and moving on ONE grid (Learn2Reg names), the moving image and labels the fixed ones moved by an
    integer voxel shift: the exact field is the constant ``shift_vox`` in fixed voxels."""
    folder.mkdir(parents=True, exist_ok=True)
    fa = fixed_affine()
    image = blobs(grid_points(FIXED_SHAPE, fa), CENTRE)
    labels = np.zeros(FIXED_SHAPE, np.uint8)
    labels[10:20, 8:18, 8:16], labels[22:30, 20:28, 12:20] = 1, 2
    moved = [np.roll(a, shift_vox, axis=(0, 1, 2)) for a in (image, labels)]
    paths = {}
    for key, data in (("fixed", image), ("moving", moved[0]), ("fixed_label", labels), ("moving_label", moved[1])):
        case = "0001" if key.startswith("fixed") else "0002"
        sub = "labelsTr" if key.endswith("label") else "imagesTr"
        paths[key] = str(folder / sub / f"Case_{case}_0000.nii.gz")
        Path(paths[key]).parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(data, fa), paths[key])
    return paths


def test_learn2reg_exact_field_scores_dice_1_and_hd95_0(tmp_path):
    case = write_same_grid_case(tmp_path / "in")
    pair = load(case["fixed"], case["moving"], (16, 12, 8), fixed_label=case["fixed_label"],
                moving_label=case["moving_label"])  # fmt: skip
    shift_mm = fixed_affine()[:3, :3] @ np.array([3.0, -2.0, 2.0])
    exact = net_displacement_for(pair, lambda p: np.broadcast_to(shift_mm, p.shape))
    entry = writer.finish_pair(pair, exact, tmp_path / "out", learn2reg=True, learn2reg_naming="both",
                               learn2reg_labels=[1, 2])  # fmt: skip
    scores = entry["learn2reg"]
    assert scores["dice"] == pytest.approx(1.0, abs=1e-9) and scores["hd95"] == pytest.approx(0.0, abs=1e-9)
    assert scores["dice_before"] < 0.7  # the unregistered pair
    names = {Path(entry["outputs"][k]).name for k in ("learn2reg", "learn2reg_template")}
    assert names == {"disp_0001_0000_0002_0000.nii.gz", "disp_0001_0002.nii.gz"}  # maintained script, template
    zero = writer.finish_pair(pair, torch.zeros_like(exact), tmp_path / "zero", learn2reg=True, learn2reg_labels=[1, 2])
    assert zero["learn2reg"]["dice"] == pytest.approx(scores["dice_before"], abs=1e-9)
    assert zero["learn2reg"]["dice"] == pytest.approx(zero["learn2reg"]["dice_before"], abs=1e-9)


def test_learn2reg_pair_on_different_grids_is_an_error_before_writing(tmp_path):
    fixed, moving = write_blob_pair(tmp_path / "in", np.zeros(3), names=("Case_0011_0000", "Case_0012_0000"))
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:
        run_workflow(fixed=fixed, moving=moving, output_dir=str(out), learn2reg=True,
                     **{"handlers#0#_disabled_": True})  # fmt: skip
    err = find_input_error(info.value)
    assert err is not None and "not on the same grid" in str(err) and "--learn2reg" in str(err)
    assert empty_or_absent(out)
