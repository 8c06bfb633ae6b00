"""Tests of the known-motion metrics (scripts/evaluation/motion_metrics.py) on analytic fields."""

import math

import pytest
import torch

from scripts.evaluation.motion_metrics import (
    _quantile,
    endpoint_error,
    known_motion_metrics,
    sample_field,
    sliding_jump_ratio,
)

SHAPE = (24, 20, 16)


def _grid(shape=SHAPE):
    """(3, *S) voxel coordinates, channel k = index along array axis k."""
    return torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))


def _rotation(axis, theta):
    axis = torch.tensor(axis, dtype=torch.float64)
    axis = axis / axis.norm()
    k = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return (torch.eye(3, dtype=torch.float64) + math.sin(theta) * k + (1 - math.cos(theta)) * (k @ k)).float()


def _rigid_field(spacing, theta=0.15, shift=(2.0, -1.0, 0.5), shape=SHAPE):
    """(1, 3, *S) voxel field of a rigid motion in mm: u = (R - I)(x - c) + t, x in mm."""
    sp = torch.tensor(spacing).view(3, 1, 1, 1)
    x_mm = _grid(shape) * sp
    centre = x_mm.mean(dim=(1, 2, 3), keepdim=True)
    rot = _rotation((0.3, -0.5, 1.0), theta)
    u_mm = torch.einsum("ij,j...->i...", rot - torch.eye(3), x_mm - centre) + torch.tensor(shift).view(3, 1, 1, 1)
    return (u_mm / sp)[None]


# ---------------------------------------------------------------- endpoint error
def test_rigid_motion_predicted_exactly_has_zero_error():
    true = _rigid_field((1.0, 1.0, 1.0))
    out = endpoint_error(true.clone(), true)
    assert out["epe_mean"].shape == (1,)
    assert float(out["epe_mean"]) < 1e-6 and float(out["epe_p95"]) < 1e-6
    identity = endpoint_error(torch.zeros_like(true), true)
    assert float(identity["epe_mean"]) > 1.0  # the motion itself is not small


def test_endpoint_error_in_mm_with_anisotropic_spacing_and_mask():
    spacing = (2.0, 1.0, 0.5)
    true = _rigid_field(spacing).repeat(2, 1, 1, 1, 1)
    pred = true.clone()
    pred[:, 0] += 1.0  # one voxel along axis 0 = 2 mm
    pred[1, 2, :12] += 4.0  # pair 1: 4 voxels along axis 2 (2 mm) on half the grid: error sqrt(8) mm there
    mask = torch.zeros(2, 1, *SHAPE)
    mask[:, :, :12] = 1  # only that half is measured
    out = endpoint_error(pred, true, mask, spacing=spacing)
    assert torch.allclose(out["epe_mean"], torch.tensor([2.0, math.sqrt(8.0)]), atol=1e-4)
    assert torch.allclose(out["epe_p95"], torch.tensor([2.0, math.sqrt(8.0)]), atol=1e-4)
    sp = torch.tensor(spacing).view(1, 3, 1, 1, 1)
    mm = endpoint_error(pred * sp, true * sp, mask, units="mm")
    assert torch.allclose(mm["epe_mean"], out["epe_mean"], atol=1e-4)
    empty = endpoint_error(pred, true, torch.zeros_like(mask))
    assert bool(empty["epe_mean"].isnan().all())
    ramp = torch.arange(1000.0).view(1, 1, 10, 10, 10).repeat(1, 3, 1, 1, 1) / math.sqrt(3.0)  # |error| = 0 .. 999
    p95 = endpoint_error(torch.zeros(1, 3, 10, 10, 10), ramp)
    assert abs(float(p95["epe_p95"]) - 0.95 * 999) < 1e-2 and abs(float(p95["epe_mean"]) - 499.5) < 1e-2
    values = torch.rand(1001, generator=torch.Generator().manual_seed(0))
    assert abs(float(_quantile(values, 0.95) - torch.quantile(values, 0.95))) < 1e-6  # torch's fails above 2^24 values


# ---------------------------------------------------------------- sliding jump ratio, plane normal to axis 1
PLANE = 9.5  # between rows 9 and 10 of axis 1


def _slip(s=1.5, tangent=(0.6, 0.0, 0.8)):
    """(1, 3, *S) voxel field: +s t below the plane (axis 1), -s t above; tangential jump (above - below) = -2 s t."""
    side = torch.where(_grid()[1] < PLANE, 1.0, -1.0)
    return (s * side * torch.tensor(tangent).view(3, 1, 1, 1))[None]


def _band():
    """(1, 1, *S) the 2-voxel band on the plane (rows 9 and 10), (1, 3, *S) normals (0, 1, 0) there."""
    mask = torch.zeros(1, 1, *SHAPE)
    mask[:, :, :, 9:11] = 1
    normals = torch.zeros(1, 3, *SHAPE)
    normals[:, 1] = mask[:, 0]
    return mask, normals


def test_pure_slip_gives_ratio_one_and_the_true_jump():
    true = _slip()
    mask, normals = _band()
    rigid = _rigid_field((1.0, 1.0, 1.0), theta=0.1)  # a smooth motion on top changes neither jump
    out = sliding_jump_ratio(true + 0.5 * rigid, true + rigid, mask, normals)
    assert abs(float(out["slip_ratio"]) - 1.0) < 1e-4
    assert abs(float(out["true_jump_mm"]) - 3.0) < 1e-4  # 2 s
    half = sliding_jump_ratio(0.5 * true, true, mask, -normals)  # normals' sign is free
    assert abs(float(half["slip_ratio"]) - 0.5) < 1e-4
    wrong = sliding_jump_ratio(-true, true, mask, normals)
    assert abs(float(wrong["slip_ratio"]) + 1.0) < 1e-4
    normal_only = sliding_jump_ratio(true + _slip(tangent=(0.0, 1.0, 0.0)), true, mask, normals)
    assert abs(float(normal_only["slip_ratio"]) - 1.0) < 1e-4  # a normal jump (gap) is not slip


def test_smooth_field_across_the_plane_gives_ratio_near_zero():
    true = _slip()
    mask, normals = _band()
    y = _grid()[1] - PLANE
    t = torch.tensor([0.6, 0.0, 0.8]).view(3, 1, 1, 1)
    linear = (-0.3 * y * t)[None]  # a uniform shear: the same displacement difference over 10 voxels as the slip
    assert abs(float(sliding_jump_ratio(linear, true, mask, normals)["slip_ratio"])) < 1e-4
    smooth = (-1.5 * torch.tanh(y / 6.0) * t)[None]  # a smooth transition 6 voxels wide
    assert abs(float(sliding_jump_ratio(smooth, true, mask, normals)["slip_ratio"])) < 0.1
    # the plain difference counts a uniform shear as slip: 2 h du/dn / 2 s = 2 * 2 * 0.3 / 3
    plain = sliding_jump_ratio(linear, true, mask, normals, extrapolate=False)["slip_ratio"]
    assert abs(float(plain) - 0.4) < 1e-4
    assert abs(float(sliding_jump_ratio(torch.zeros_like(true), true, mask, normals)["slip_ratio"])) < 1e-6


def test_no_true_jump_gives_nan():
    mask, normals = _band()
    rigid = _rigid_field((1.0, 1.0, 1.0), theta=0.0)  # a translation: no jump anywhere
    out = sliding_jump_ratio(_slip(), rigid, mask, normals)
    assert bool(out["slip_ratio"].isnan().all()) and bool(out["true_jump_mm"].isnan().all())


def test_oblique_interface_with_anisotropic_spacing():
    spacing = torch.tensor([1.0, 1.5, 2.0])
    sp = spacing.view(3, 1, 1, 1)
    x_mm = _grid() * sp
    centre = x_mm.mean(dim=(1, 2, 3), keepdim=True)
    n = torch.tensor([1.0, 2.0, 0.5])
    n = n / n.norm()
    t = torch.linalg.cross(n, torch.tensor([0.0, 0.0, 1.0]))
    t = t / t.norm()
    dist = torch.einsum("i,i...->...", n, x_mm - centre)  # signed distance to the plane, mm
    s = 1.2
    true_mm = s * torch.where(dist < 0, 1.0, -1.0) * t.view(3, 1, 1, 1)
    rigid = _rigid_field(tuple(spacing.tolist()), theta=0.1)
    true = (true_mm / sp)[None] + rigid  # voxels
    far = (x_mm - centre).abs().div(torch.tensor([12.0, 15.0, 16.0]).view(3, 1, 1, 1)).amax(0) < 0.5
    mask = ((dist.abs() < 1.0) & far)[None, None].float()  # interface band in the interior
    normals = (n.view(3, 1, 1, 1) * mask[0]).expand(1, 3, *SHAPE)
    out = sliding_jump_ratio(true, true, mask, normals, spacing=spacing, h_mm=4.0)
    assert int(mask.sum()) > 20
    assert abs(float(out["slip_ratio"]) - 1.0) < 1e-4
    assert abs(float(out["true_jump_mm"]) - 2 * s) < 1e-3  # the jump in mm, not in voxels
    pure = (true_mm / sp)[None]
    half = sliding_jump_ratio(0.5 * pure - rigid, true, mask, normals, spacing=spacing, h_mm=4.0)
    assert abs(float(half["slip_ratio"]) - 0.5) < 1e-3
    in_mm = sliding_jump_ratio(true * sp, true * sp, mask, normals, spacing=spacing, h_mm=4.0, units="mm")
    assert abs(float(in_mm["true_jump_mm"]) - 2 * s) < 1e-3


# ---------------------------------------------------------------- helpers and the batch function
def test_sample_field_is_trilinear_at_voxel_coordinates():
    field = _grid()  # the field is its own coordinate
    points = torch.tensor([[3.25, 7.5, 1.0], [0.0, 0.0, 0.0], [22.9, 18.1, 14.5]])
    assert torch.allclose(sample_field(field, points), points, atol=1e-5)


def test_known_motion_metrics_on_a_batch():
    true = torch.cat([_slip(), 2 * _slip()])
    mask, normals = _band()
    target = {
        "true_ddf": true,
        "object_mask": torch.ones(2, 1, *SHAPE),
        "interface_mask": mask.expand(2, -1, -1, -1, -1),
        "normals": normals.expand(2, -1, -1, -1, -1),
        "spacing": torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]),
    }
    out = known_motion_metrics({"ddf": true.clone()}, target, h_mm=2.0)
    assert set(out) == {"epe_mean", "epe_p95", "epe_mean_before", "slip_ratio", "true_jump_mm"}
    assert torch.allclose(out["slip_ratio"], torch.ones(2), atol=1e-4)
    assert torch.allclose(out["true_jump_mm"], torch.tensor([3.0, 12.0]), atol=1e-4)  # 2 s, in mm
    assert torch.allclose(out["epe_mean_before"], torch.tensor([1.5, 6.0]), atol=1e-4)
    assert float(out["epe_mean"].abs().max()) < 1e-6
    assert known_motion_metrics({"ddf": true}, {"fixed": true[:, :1]}) == {}
    with pytest.raises(KeyError, match="normals"):
        known_motion_metrics({"ddf": true}, {"true_ddf": true, "interface_mask": mask})
    with pytest.raises(ValueError, match="shape"):
        endpoint_error(true, true[:, :, :-1])


@pytest.mark.parametrize("kind", ["rigid", "shearing"])
def test_synthetic_batch_through_prepare_batch(kind):
    """The synthetic items carry the truth; PrepareRegistrationBatch passes it into the targets."""
    from scripts.networks.registration import PrepareRegistrationBatch
    from scripts.synthesis.synthetic import SyntheticRegistrationDataset

    data = SyntheticRegistrationDataset(kind, "test", 2, shape=(32, 32, 32))
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    _, targets, _, _ = PrepareRegistrationBatch()(batch)
    assert {"true_ddf", "object_mask"} <= set(targets) and ("interface_mask" in targets) == (kind == "shearing")
    exact = known_motion_metrics({"ddf": targets["true_ddf"]}, targets)
    none = known_motion_metrics({"ddf": torch.zeros_like(targets["true_ddf"])}, targets)
    assert float(exact["epe_mean"].max()) < 1e-6 and bool((none["epe_mean_before"] > 0.3).all())
    assert torch.allclose(none["epe_mean"], none["epe_mean_before"])
    if kind == "shearing":
        assert torch.allclose(exact["slip_ratio"], torch.ones(2), atol=1e-5)
        assert torch.allclose(none["slip_ratio"], torch.zeros(2), atol=1e-6)
        assert torch.allclose(exact["true_jump_mm"], batch["true_jump"][:, 0].abs(), atol=1e-4)
    else:
        assert "slip_ratio" not in exact


def test_ct_style_thick_band_with_computed_normals():
    """The CT use: a 4-voxel sliding band on an oblique plane, normals from scripts.regions.masks.compute_normals."""
    from scripts.regions.normals import compute_normals

    spacing = torch.tensor([1.5, 1.0, 2.0])
    shape = (40, 48, 28)
    sp = spacing.view(3, 1, 1, 1)
    x_mm = _grid(shape) * sp
    centre = x_mm.mean(dim=(1, 2, 3), keepdim=True)
    n = torch.tensor([0.3, 1.0, 0.4])
    n = n / n.norm()
    dist = torch.einsum("i,i...->...", n, x_mm - centre)
    band = dist.abs() < 2.0  # ~2 voxels on either side
    normals = torch.from_numpy(compute_normals(band.numpy(), spacing=spacing.tolist(), method="gaussian"))
    assert float((normals[:, band] * n.view(3, 1)).sum(0).abs().min()) > 0.99  # accurate normals
    t = torch.linalg.cross(n, torch.tensor([1.0, 0.0, 0.0]))
    t = t / t.norm()
    slip = (1.5 * torch.where(dist < 0, 1.0, -1.0) * t.view(3, 1, 1, 1) / sp)[None]  # voxels
    rigid = _rigid_field(tuple(spacing.tolist()), theta=0.1, shape=shape)
    interior = (x_mm - centre).abs().div(centre.view(3, 1, 1, 1)).amax(0) < 0.5  # samples stay inside the volume
    mask = (band & interior)[None, None]
    # h: the band's half-thickness (2 mm) + a trilinear stencil's extent along n (sum |n_k| spacing_k = 2 mm) + margin
    args = dict(interface_mask=mask, normals=normals, spacing=spacing, h_mm=5.0)
    out = sliding_jump_ratio(0.5 * slip - rigid, slip + rigid, **args)
    assert int(mask.sum()) > 500 and abs(float(out["slip_ratio"]) - 0.5) < 1e-3
    assert abs(float(out["true_jump_mm"]) - 3.0) < 1e-3
    smooth = sliding_jump_ratio(3 * rigid, slip + rigid, **args)
    assert abs(float(smooth["slip_ratio"])) < 0.05
