"""Tests of the known-motion breathing generator (scripts/synthesis/breathing.py) on the CT phantom and the real CT."""

import numpy as np
import pytest
import torch

from scripts.synthesis.breathing import jacobian_det_np, make_breathing_case, phantom_case, real_ct_case


@pytest.fixture(scope="module")
def phantom():
    return phantom_case(seed=3)


@pytest.fixture(scope="module")
def real_ct(ct_example_dir):
    return real_ct_case(ct_example_dir, seed=5)


CASES = ["phantom", "real_ct"]


@pytest.mark.parametrize("name", CASES)
def test_bones_move_rigidly(name, request):
    from scripts.evaluation.metrics import rigidity_error

    case = request.getfixturevalue(name)
    bones = case["bones"]
    assert bones.sum() > 500
    ddf = torch.from_numpy(case["ddf"])[None].double()
    mask = torch.from_numpy(bones.astype(np.float64))[None, None]
    err = float(rigidity_error(ddf, mask, spacing=list(case["spacing"]))[0])
    assert err < 1e-5  # a small rotation: ||E||^2 = O(theta^4)
    # and the bones do move (<= 2 mm), each group differently
    mag = np.sqrt((case["ddf_mm"] ** 2).sum(0))[bones]
    assert 0.05 < mag.mean() and mag.max() <= 2.0 + 1e-6


@pytest.mark.parametrize("name", CASES)
def test_jump_is_tangential_and_of_the_requested_size(name, request):
    case = request.getfixturevalue(name)
    cav, wall, n, jump = case["cavity"], case["wall"], case["normals"], case["jump"]
    inner = wall & cav
    size = np.sqrt((jump**2).sum(0))[inner]
    normal_part = np.abs((n * jump).sum(0))[inner]
    assert np.allclose(np.sqrt((n**2).sum(0))[wall], 1.0, atol=1e-5)
    assert np.percentile(normal_part / size, 99) < 1e-3
    # where the wall is parallel to the patient's S axis the whole breathing motion is tangential: 6-10 mm
    direction = case["affine"][:3, :3] / case["spacing"]
    e_s = direction.T @ np.array([0.0, 0.0, 1.0])
    lateral = np.abs(np.einsum("i,i...->...", e_s, n))[inner] < 0.2
    lo, hi = case["info"]["amplitude_mm"]
    assert 6.0 <= lo < hi <= 10.0
    assert lo - 1.0 < np.median(size[lateral]) < hi + 1.0
    # the field itself jumps by that vector between an inner wall voxel and its outer neighbour along the normal
    idx = np.argwhere(inner)
    step = np.rint(n[:, inner].T / case["spacing"] * case["spacing"].min()).astype(int)
    nb = idx + step
    ok = (np.abs(step).sum(1) > 0) & np.all((nb >= 0) & (nb < np.array(cav.shape)), axis=1)
    ok &= ~cav[tuple(np.clip(nb, 0, np.array(cav.shape) - 1).T)]
    u = case["ddf_mm"]
    du = u[:, idx[ok, 0], idx[ok, 1], idx[ok, 2]] - u[:, nb[ok, 0], nb[ok, 1], nb[ok, 2]]
    true = jump[:, idx[ok, 0], idx[ok, 1], idx[ok, 2]]
    assert ok.sum() > 100
    assert np.median(np.sqrt(((du - true) ** 2).sum(0))) < 1.0


@pytest.mark.parametrize("name", CASES)
def test_magnitudes_in_range(name, request):
    case = request.getfixturevalue(name)
    cav, wall = case["cavity"], case["wall"]
    mag = np.sqrt((case["ddf_mm"] ** 2).sum(0))
    assert mag[~cav].max() <= 2.0 + 1e-6
    from scipy.ndimage import distance_transform_edt

    deep = cav & (distance_transform_edt(cav, sampling=case["spacing"]) > 15.0)
    assert deep.sum() > 200
    p5, p95 = np.percentile(mag[deep], [5, 95])
    assert 5.0 < p5 and p95 < 11.0
    assert not np.any(wall & ~cav & (mag > 2.0 + 1e-6))


@pytest.mark.parametrize("name", CASES)
def test_no_folding_off_the_wall(name, request):
    from scipy.ndimage import binary_dilation

    case = request.getfixturevalue(name)
    cav = case["cavity"]
    assert case["det_in"][cav].min() > 0.0 and case["det_out"][~cav].min() > 0.5
    det = jacobian_det_np(case["ddf"])
    off_band = ~binary_dilation(case["wall"])  # central differences straddle the wall one voxel further
    assert det[off_band].min() > 0.0
    assert np.percentile(det[off_band], 1) > 0.5


@pytest.mark.parametrize("name", CASES)
def test_organs_slide_whole(name, request):
    """The organ voxels that the opening cut off the wall are put back in the cavity: the organs there slide whole.
    Outside stay only those beside a bone (the bones keep a one-voxel shell outside the cavity, so that they move
    rigidly) and islands well away from the cavity (the phantom's kidneys)."""
    from scipy.ndimage import binary_dilation, distance_transform_edt

    from scripts.synthesis.breathing import _cavity_parts, cavity_ids

    case = request.getfixturevalue(name)
    organs = np.isin(case["fixed_seg"], cavity_ids())
    smooth, cavity = _cavity_parts(case["fixed_seg"], case["affine"])
    assert (cavity == case["cavity"]).all() and (smooth & ~cavity).sum() == 0
    put_back = cavity & ~smooth
    assert put_back.sum() > 100 and (organs[put_back]).all()
    beside_bone = binary_dilation(case["bones"], iterations=2)
    near_wall = distance_transform_edt(~smooth, sampling=case["spacing"]) <= 9.0
    assert not (organs & ~case["cavity"] & ~beside_bone & near_wall).any()
    assert (organs & ~case["cavity"]).mean() < 0.05 * organs.mean()
    # without putting them back (the earlier generator) more of each organ stays with the wall
    from scripts.synthesis.breathing import cavity_mask

    opened = cavity_mask(case["fixed_seg"], case["affine"], whole_organs=False)
    assert (opened == smooth).all() and (organs & ~opened).sum() > (organs & ~cavity).sum() + 0.5 * put_back.sum()


def test_warping_the_moving_image_with_the_true_field_gives_the_fixed_one():
    """fixed(x) = moving(x + u(x)) with MONAI Warp (the bundle's convention), on a smooth image."""
    from monai.networks.blocks import Warp

    from scripts.synthesis.phantom import make_ct_phantom

    rng = np.random.default_rng(1)
    ph = make_ct_phantom((40, 36, 48), (3.0, 3.5, 3.5), "PLS", rng)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in ph["seg"].shape], indexing="ij")).astype(float)
    image = (100 * (np.sin(grid[0] / 5) + np.cos(grid[1] / 4) + np.sin(grid[2] / 6 + 1))).astype(np.float32)
    case = make_breathing_case(image, ph["seg"], ph["affine"], rng)
    warp = Warp(mode="bilinear", padding_mode="border")
    warped = warp(torch.from_numpy(case["moving"])[None, None], torch.from_numpy(case["ddf"])[None])[0, 0].numpy()
    keep = np.zeros(image.shape, bool)
    keep[3:-3, 3:-3, 3:-3] = True
    keep &= ~case["wall"]
    err = np.abs(warped - image)[keep]
    raw = np.abs(case["moving"] - image)[keep]
    assert np.median(err) < 1.0 and np.median(raw) > 3.0
    assert np.percentile(err, 95) < 0.1 * np.percentile(raw, 95)
    # the opposite convention (moving(x) = fixed(x + u(x))) does not hold
    wrong = warp(torch.from_numpy(image)[None, None], torch.from_numpy(case["ddf"])[None])[0, 0].numpy()
    assert np.median(np.abs(wrong - case["moving"])[keep]) > 3 * np.median(err)


def test_rejects_mismatched_grids():
    with pytest.raises(ValueError, match="share one 3D grid"):
        make_breathing_case(np.zeros((8, 8, 8)), np.zeros((8, 8, 9), np.uint8), np.eye(4), np.random.default_rng(0))


def test_deep_breathing_as_a_flow_does_not_fold_and_its_true_field_warps_moving_onto_fixed(ct_example_dir):
    """Contents moving 15-30 mm: the additive field folds where the normal part of the motion is removed (the
    generator refuses it); with ``flow_steps`` the contents follow the flow of the tangential velocity, fold-free, and
    the true field still maps the moving image onto the fixed one."""
    from monai.networks.blocks import Warp
    from scipy.ndimage import binary_dilation, distance_transform_edt

    from scripts.synthesis.breathing import load_real_ct

    _, seg, affine = load_real_ct(ct_example_dir)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in seg.shape], indexing="ij")).astype(float)
    image = (100 * (np.sin(grid[0] / 5) + np.cos(grid[1] / 4) + np.sin(grid[2] / 3 + 1))).astype(np.float32)
    with pytest.raises(RuntimeError, match="folds"):
        make_breathing_case(image, seg, affine, np.random.default_rng(0), amplitude_mm=(15, 30))
    case = make_breathing_case(image, seg, affine, np.random.default_rng(0), amplitude_mm=(15, 30), flow_steps=7)
    cav, wall = case["cavity"], case["wall"]
    assert case["det_in"][cav].min() > 0.0 and case["det_out"][~cav].min() > 0.5
    squeezed = float((case["det_in"][cav] < 0.5).mean())  # 16 % when the flow's points stopped at the grid's faces
    assert squeezed < 0.08, squeezed
    det = jacobian_det_np(case["ddf"])
    assert det[~binary_dilation(wall)].min() > 0.0  # no fold off the wall
    mag = np.sqrt((case["ddf_mm"] ** 2).sum(0))
    deep = cav & (distance_transform_edt(cav, sampling=case["spacing"]) > 15.0)
    assert 15.0 <= np.percentile(mag[deep], 50) <= 30.0 and mag[~cav].max() <= 2.0 + 1e-6  # seed 0: 23 mm
    n, jump = case["normals"], case["jump"]
    size, normal_part = np.sqrt((jump**2).sum(0))[wall & cav], np.abs((n * jump).sum(0))[wall & cav]
    assert np.median(size) > 12.0 and np.median(normal_part / size) < 0.1  # a slide along the curved wall

    warp = Warp(mode="bilinear", padding_mode="border")
    warped = warp(torch.from_numpy(case["moving"])[None, None], torch.from_numpy(case["ddf"])[None])[0, 0].numpy()
    keep = np.zeros(image.shape, bool)
    keep[3:-3, 3:-3, 3:-3] = True
    keep &= ~wall & (det > 0.2)
    err, raw = np.abs(warped - image)[keep], np.abs(case["moving"] - image)[keep]
    # resampling twice costs about 1 (the ordinary additive case here: median 0.91, p95 3.1 of raw 92)
    assert np.median(err) < 1.5 and np.percentile(err, 95) < 0.05 * np.percentile(raw, 95)  # 0.96; 4.1 of 188


def test_smooth_random_field_is_scipys_cubic_zoom():
    """phantom.smooth_random_field zooms one axis at a time: the values of one 3-D ``scipy.ndimage.zoom``."""
    from scipy import ndimage

    from scripts.synthesis.phantom import smooth_random_field

    for shape in ((31, 24, 17), (3, 9, 40)):
        field = smooth_random_field(np.random.default_rng(3), shape, 2.0)
        coarse = np.random.default_rng(3).normal(0.0, 2.0, size=(3, *[max(3, min(5, n // 4 + 2)) for n in shape]))
        zoom = [np.asarray(shape) / np.asarray(c.shape) for c in coarse]
        ref = np.stack([ndimage.zoom(c, z, order=3, mode="nearest") for c, z in zip(coarse, zoom)])
        assert field.shape == (3, *shape) and np.abs(field).max() > 0.5
        np.testing.assert_allclose(field, ref, rtol=0, atol=1e-10)


def test_inverse_ddf_stops_once_converged():
    """phantom.inverse_ddf: v(x) = -u(x + v(x)) to 1e-4 voxel on a smooth field, in fewer iterations than allowed."""
    from scipy import ndimage as ndi

    from scripts.synthesis import phantom

    u = 0.4 * phantom.smooth_random_field(np.random.default_rng(0), (24, 20, 16), 1.0).astype(np.float32)
    calls = []
    original = torch.nn.functional.grid_sample

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    torch.nn.functional.grid_sample = counted
    try:
        v = phantom.inverse_ddf(u, iterations=60)
    finally:
        torch.nn.functional.grid_sample = original
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in u.shape[1:]], indexing="ij")).astype(np.float64)
    u_at = np.stack([ndi.map_coordinates(c, grid + v, order=1, mode="nearest") for c in u])
    inner = (slice(None),) + (slice(3, -3),) * 3
    assert np.abs(v + u_at)[inner].max() < 1e-4 and np.abs(v).max() > 0.5
    assert 3 <= len(calls) < 60, len(calls)
