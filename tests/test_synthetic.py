"""Tests of the synthetic rigid-bar and sliding-box pairs (scripts/synthesis/synthetic.py)."""

from functools import partial

import numpy as np
import pytest
import torch

from scripts.synthesis.synthetic import SyntheticRegistrationDataset, make_rigid_pair, make_shearing_pair, write

SHAPES = [(64, 64, 64), (16, 16, 16), (24, 20, 16)]
KEYS = ("fixed", "moving", "fixed_label", "moving_label", "reg_mask", "normals", "true_ddf", "object_mask")
TRUTH_KEYS = {"rigid": (), "shearing": ("true_jump", "interface_mask")}  # keys of one kind only


def _rng(seed):
    return np.random.default_rng(seed)


def _label_cov(label):
    """(3,) centroid and (3, 3) covariance of the voxel coordinates of a binary mask (X, Y, Z)."""
    idx = np.argwhere(label).astype(float)
    return idx.mean(0), np.cov(idx.T)


# ---------------------------------------------------------------- shapes, dtypes, ranges
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["rigid", "shearing"])
def test_keys_shapes_dtypes_ranges(kind, shape):
    pair = (make_rigid_pair if kind == "rigid" else make_shearing_pair)(_rng(3), shape)
    assert set(pair) == set(KEYS) | set(TRUTH_KEYS[kind])
    for key in ("fixed", "moving"):
        assert pair[key].shape == (1, *shape) and pair[key].dtype == np.float32
        assert pair[key].min() >= 0.0 and pair[key].max() <= 1.0
        assert pair[key].max() > 0.95  # the objects reach their full intensity
    for key in ("fixed_label", "moving_label", "reg_mask"):
        assert pair[key].shape == (1, *shape) and pair[key].dtype == np.uint8
    labels = {0, 1} if kind == "rigid" else {0, 1, 2}
    assert set(np.unique(pair["fixed_label"])) == labels and set(np.unique(pair["moving_label"])) == labels
    assert set(np.unique(pair["reg_mask"])) == ({0, 1} if kind == "rigid" else {0, 1, 2})
    assert pair["normals"].shape == (3, *shape) and pair["normals"].dtype == np.float32
    # the image is bright on the object and dark away from it
    for image, label in ((pair["fixed"], pair["fixed_label"]), (pair["moving"], pair["moving_label"])):
        assert image[label == 0].mean() < 0.1 and image[label > 0].mean() > 0.6


@pytest.mark.parametrize("kind", ["rigid", "shearing"])
def test_dataset_tensors(kind):
    data = SyntheticRegistrationDataset(kind, "train", 3, shape=(16, 20, 24))
    assert len(data) == 3
    item = data[2]
    assert set(item) == set(KEYS) | set(TRUTH_KEYS[kind])
    for key in ("fixed", "moving", "normals"):
        assert isinstance(item[key], torch.Tensor) and item[key].dtype == torch.float32
    for key in ("fixed_label", "moving_label", "reg_mask"):
        assert item[key].dtype == torch.uint8 and item[key].shape == (1, 16, 20, 24)
    assert torch.equal(data[-1]["fixed"], item["fixed"])
    with pytest.raises(IndexError):
        data[3]
    assert len(list(iter(data))) == 3  # the iteration protocol stops at IndexError
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    assert batch["fixed"].shape == (2, 1, 16, 20, 24) and batch["normals"].shape == (2, 3, 16, 20, 24)


def test_transform_is_applied():
    def flip(item):
        return {key: torch.flip(value, dims=[1]) for key, value in item.items()}

    plain = SyntheticRegistrationDataset("rigid", "val", 1, shape=(16, 16, 16))[0]
    flipped = SyntheticRegistrationDataset("rigid", "val", 1, shape=(16, 16, 16), transform=flip)[0]
    assert not torch.equal(plain["fixed"], flipped["fixed"])
    assert torch.equal(torch.flip(plain["fixed"], dims=[1]), flipped["fixed"])


# ---------------------------------------------------------------- determinism and split independence
@pytest.mark.parametrize("kind", ["rigid", "shearing"])
def test_determinism_and_distinct_streams(kind):
    def item(split="train", seed=0, index=1):
        return SyntheticRegistrationDataset(kind, split, 4, seed=seed, shape=(24, 20, 16))[index]

    a, b = item(), item()
    for key in KEYS:
        assert torch.equal(a[key], b[key]), key
    # a dataset of another length gives the same item i
    c = SyntheticRegistrationDataset(kind, "train", 50, seed=0, shape=(24, 20, 16))[1]
    assert torch.equal(a["moving"], c["moving"])
    for other in (item(split="val"), item(split="test"), item(seed=1), item(index=2)):
        assert not torch.equal(a["fixed"], other["fixed"])
        assert not torch.equal(a["moving"], other["moving"])


def test_test_split_repeats_no_training_pair():
    shape = (16, 16, 16)
    train = SyntheticRegistrationDataset("rigid", "train", 30, shape=shape)
    test = SyntheticRegistrationDataset("rigid", "test", 10, shape=shape)
    train_images = [train.pair(i)["fixed"] for i in range(len(train))]
    for j in range(len(test)):
        fixed = test.pair(j)["fixed"]
        assert all(not np.array_equal(fixed, image) for image in train_images)


# ---------------------------------------------------------------- rigid set
def test_rigid_mask_label_and_volume():
    for seed in range(4):
        pair = make_rigid_pair(_rng(seed))
        assert np.array_equal(pair["reg_mask"] == 1, pair["fixed_label"] > 0)
        assert np.array_equal(pair["reg_mask"] > 0, pair["reg_mask"] == 1)  # no sliding region
        assert not np.any(pair["normals"])
        for key in ("fixed_label", "moving_label"):
            assert abs(int(pair[key].sum()) - 8 * 30 * 20) < 0.15 * 8 * 30 * 20
        assert np.abs(pair["fixed"] - pair["moving"]).max() > 0.5
        assert not np.array_equal(pair["fixed_label"], pair["moving_label"])


def test_rigid_bar_scales_with_shape():
    """The same draw on a coarser grid is the same bar: volume fraction and centroid (in field-of-view units)."""
    fine, coarse = make_rigid_pair(_rng(7), (64, 64, 64)), make_rigid_pair(_rng(7), (32, 48, 16))
    scale = np.array([64 / 32, 64 / 48, 64 / 16])
    for key in ("fixed_label", "moving_label"):
        frac_fine, frac_coarse = fine[key].mean(), coarse[key].mean()
        assert abs(frac_coarse - frac_fine) < 0.1 * frac_fine
        c_fine, _ = _label_cov(fine[key][0])
        c_coarse, _ = _label_cov(coarse[key][0])
        # centroids agree up to the coarse voxel size (the bar's edges are rounded to coarse voxels)
        assert np.all(np.abs((c_coarse + 0.5) * scale - 0.5 - c_fine) <= scale / 2 + 0.5)


def test_rigid_draw_statistics():
    """In-plane rotation about axis 2 with θ ~ N(0, 0.2); centre jitter ~N(0, 4) per axis (at 64³)."""
    angles, centres = [], []
    for seed in range(40):
        label = make_rigid_pair(_rng(seed), (32, 32, 32))["fixed_label"][0]
        centre, cov = _label_cov(label)
        centres.append((centre + 0.5) * 2 - 32)  # in 64³ voxels from the image centre
        assert abs(cov[0, 2]) < 0.05 * cov[1, 1] and abs(cov[1, 2]) < 0.05 * cov[1, 1]  # axis 2 stays put
        evals, evecs = np.linalg.eigh(cov)
        long_axis = evecs[:, 2] * np.sign(evecs[1, 2])  # the 30-voxel side, initially along axis 1
        angles.append(np.arctan2(-long_axis[0], long_axis[1]))
    angles, centres = np.array(angles), np.array(centres)
    assert 0.12 < angles.std() < 0.3 and abs(angles.mean()) < 0.12
    assert np.all((2.5 < centres.std(0)) & (centres.std(0) < 5.5))
    assert np.all(np.abs(centres.mean(0)) < 2.0)


def test_rigid_3d_rotation():
    inplane = make_rigid_pair(_rng(5), (32, 32, 32), rotation="inplane")
    rot3d = make_rigid_pair(_rng(5), (32, 32, 32), rotation="3d")
    assert not np.array_equal(inplane["fixed"], rot3d["fixed"])
    off_plane = []
    for seed in range(10):
        pair = make_rigid_pair(_rng(seed), (32, 32, 32), rotation="3d")
        assert np.array_equal(pair["reg_mask"] == 1, pair["fixed_label"] > 0)
        assert abs(int(pair["fixed_label"].sum()) - 8 * 30 * 20 / 8) < 0.15 * 8 * 30 * 20 / 8
        _, cov = _label_cov(pair["fixed_label"][0])
        off_plane.append((abs(cov[0, 2]) + abs(cov[1, 2])) / cov[1, 1])
    assert max(off_plane) > 0.1  # the bar tilts out of the (0, 1) plane


# ---------------------------------------------------------------- shearing set
@pytest.mark.parametrize("shape", SHAPES + [(21, 33, 19)])
def test_shearing_masks_and_normals(shape):
    for seed in range(3):
        pair = make_shearing_pair(_rng(seed), shape)
        label, reg, normals = pair["fixed_label"][0], pair["reg_mask"][0], pair["normals"]
        sliding = reg == 2
        assert sliding.any()
        # a 2-voxel slab: axis-1 indices of sliding voxels are two adjacent values, one in each box
        rows = np.unique(np.nonzero(sliding)[1])
        assert len(rows) == 2 and rows[1] == rows[0] + 1
        assert np.all(label[:, rows[0]][sliding[:, rows[0]]] != 2) and np.all(
            label[:, rows[1]][sliding[:, rows[1]]] != 1
        )
        assert (label[:, rows[0]] == 1).any() and (label[:, rows[1]] == 2).any()
        # the contact plane: box A / box B neighbours only across axis 1, between exactly those rows
        a, b = label == 1, label == 2
        assert not (a[1:] & b[:-1]).any() and not (a[:-1] & b[1:]).any()
        assert not (a[:, :, 1:] & b[:, :, :-1]).any() and not (a[:, :, :-1] & b[:, :, 1:]).any()
        contact = a[:, :-1] & b[:, 1:]
        assert set(np.unique(np.nonzero(contact)[1])) == {rows[0]}
        # every contact voxel pair is sliding, on both sides
        assert np.all(sliding[:, rows[0]][contact[:, rows[0]]]) and np.all(sliding[:, rows[1]][contact[:, rows[0]]])
        # rigid = the boxes minus the slab; background elsewhere
        assert np.array_equal(reg == 1, (label > 0) & ~sliding)
        assert np.array_equal(reg == 0, (label == 0) & ~sliding)
        # normals: exactly (0, 1, 0) on sliding voxels, exactly 0 elsewhere, perpendicular to the interface
        assert np.all(normals[:, sliding] == np.array([[0.0], [1.0], [0.0]], dtype=np.float32))
        assert not np.any(normals[:, ~sliding])
        assert np.allclose(np.linalg.norm(normals[:, sliding], axis=0), 1.0)
        tangents = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        assert np.all(tangents @ normals[:, sliding] == 0.0)


def test_shearing_geometry_and_intensities():
    pair = make_shearing_pair(_rng(11))
    for image, label in ((pair["fixed"][0], pair["fixed_label"][0]), (pair["moving"][0], pair["moving_label"][0])):
        for value, intensity in ((1, 0.8), (2, 1.0)):
            box = np.argwhere(label == value)
            assert (label == value).sum() == 20 * 10 * 20
            assert np.array_equal(box.max(0) - box.min(0) + 1, [20, 10, 20])
            centre = tuple(np.round(box.mean(0)).astype(int))
            assert abs(image[centre] - intensity) < 1e-3
        assert np.argwhere(label == 1)[:, 1].max() + 1 == np.argwhere(label == 2)[:, 1].min()  # A below B
        assert np.argwhere(label == 1)[:, 1].max() == 31  # touching at the image centre plane
    assert np.abs(pair["fixed"] - pair["moving"]).max() > 0.5


def test_shearing_boxes_shift_in_opposite_directions():
    offsets = []  # axis-0 offsets of the box centroids from the image centre
    for seed in range(40):
        pair = make_shearing_pair(_rng(seed))
        for key in ("fixed_label", "moving_label"):
            label = pair[key][0]
            oa = np.argwhere(label == 1)[:, 0].mean() - 31.5
            ob = np.argwhere(label == 2)[:, 0].mean() - 31.5
            assert abs(oa + ob) <= 1.0  # opposite shifts of equal size, up to voxel rounding
            offsets.append((oa, ob))
        # fixed → moving: box A moves one way, box B the other way
        fa = (
            np.argwhere(pair["fixed_label"][0] == 1)[:, 0].mean()
            - np.argwhere(pair["moving_label"][0] == 1)[:, 0].mean()
        )
        fb = (
            np.argwhere(pair["fixed_label"][0] == 2)[:, 0].mean()
            - np.argwhere(pair["moving_label"][0] == 2)[:, 0].mean()
        )
        assert fa * fb <= 0
    offsets = np.array(offsets)
    assert np.corrcoef(offsets.T)[0, 1] < -0.95
    assert 2.0 < offsets[:, 0].std() < 4.0  # s ~ N(0, 3)


# ---------------------------------------------------------------- arguments and NIfTI output
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="affine"), "kind"),
        (dict(split="training"), "split"),
        (dict(num_pairs=0), "num_pairs"),
        (dict(num_pairs=2.5), "num_pairs"),
        (dict(seed=-1), "seed"),
        (dict(shape=(64, 64)), "3D"),
        (dict(shape=(64, 64, 64, 1)), "3D"),
        (dict(shape=(64, 4, 64)), "at least"),
        (dict(rotation="2d"), "rotation"),
        (dict(transform=3), "transform"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = dict(kind="rigid", split="train", num_pairs=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SyntheticRegistrationDataset(**args)


def test_bad_arguments_functions():
    with pytest.raises(ValueError, match="3D"):
        make_rigid_pair(_rng(0), (32, 32))
    with pytest.raises(ValueError, match="at least"):
        make_shearing_pair(_rng(0), (32, 7, 32))
    with pytest.raises(ValueError, match="rotation"):
        make_rigid_pair(_rng(0), (32, 32, 32), rotation="xy")


def test_write_nifti(tmp_path):
    nib = pytest.importorskip("nibabel")
    paths = write(kind="shearing", split="test", num_pairs=1, out_dir=str(tmp_path), shape=(16, 20, 24))
    assert len(paths) == 9  # 6 volumes + true_ddf, object_mask, interface_mask
    pair = SyntheticRegistrationDataset("shearing", "test", 1, shape=(16, 20, 24)).pair(0)
    fixed = nib.load(str(tmp_path / "shearing_test_pair_000_fixed.nii.gz"))
    assert np.array_equal(fixed.affine, np.eye(4)) and fixed.shape == (16, 20, 24)
    assert np.array_equal(np.asanyarray(fixed.dataobj), pair["fixed"][0])
    normals = np.asanyarray(nib.load(str(tmp_path / "shearing_test_pair_000_normals.nii.gz")).dataobj)
    assert np.array_equal(np.moveaxis(normals, -1, 0), pair["normals"])


# ---------------------------------------------------------------- the true motion (known-motion metrics)
@pytest.mark.parametrize("shape", [(64, 64, 64), (40, 48, 56)])
@pytest.mark.parametrize("kind", ["rigid", "rigid3d", "shearing"])
def test_true_field_warps_the_moving_onto_the_fixed(kind, shape):
    """warped(x) = moving(x + u(x)) with the true field reproduces the fixed image inside the objects (up to the
    bilinear interpolation of the blurred edges), and the opposite sign convention does not."""
    from monai.networks.blocks import Warp

    warp = Warp(mode="bilinear", padding_mode="border")
    error, before, flipped = 0.0, 0.0, 0.0
    for seed in range(3):
        rng = _rng(seed)
        make = make_shearing_pair if kind == "shearing" else partial(make_rigid_pair, rotation=kind[5:] or "inplane")
        pair = make(rng, shape)
        ddf = torch.from_numpy(pair["true_ddf"])[None]
        assert ddf.shape == (1, 3, *shape) and ddf.dtype == torch.float32
        inside = pair["object_mask"][0] > 0
        moving, fixed = torch.from_numpy(pair["moving"])[None], pair["fixed"][0]
        error += np.abs(warp(moving, ddf)[0, 0].numpy() - fixed)[inside].mean()
        before += np.abs(pair["moving"][0] - fixed)[inside].mean()
        flipped += np.abs(warp(moving, -ddf)[0, 0].numpy() - fixed)[inside].mean()
    # the shearing images are not exactly piecewise-moved near the contact plane (the blur mixes the two boxes)
    assert error < (0.25 if kind == "shearing" else 0.1) * before and flipped > 1.2 * before, (error, before, flipped)


def test_true_shearing_jump_and_interface():
    from scripts.evaluation.motion_metrics import sliding_jump_ratio

    pair = make_shearing_pair(_rng(5), (32, 32, 32))
    u, jump = pair["true_ddf"], pair["true_jump"]
    assert jump.shape == (3,) and jump[1] == 0 and jump[2] == 0 and abs(jump[0]) > 0.1
    # piecewise constant: box A's half (rows < 16) moves by -jump / 2 along axis 0, box B's by +jump / 2
    assert np.allclose(u[0][:, :16], -jump[0] / 2) and np.allclose(u[0][:, 16:], jump[0] / 2)
    assert not u[1:].any()
    assert np.array_equal(pair["interface_mask"], (pair["reg_mask"] == 2).astype(np.uint8))
    assert np.array_equal(pair["object_mask"], (pair["fixed_label"] > 0).astype(np.uint8))
    true = torch.from_numpy(u)[None]
    out = sliding_jump_ratio(
        true, true, torch.from_numpy(pair["interface_mask"])[None], torch.from_numpy(pair["normals"])[None]
    )
    assert abs(float(out["true_jump_mm"]) - abs(jump[0])) < 1e-4 and abs(float(out["slip_ratio"]) - 1) < 1e-5
