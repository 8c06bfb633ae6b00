"""Registration metrics on fields and images with known answers."""

import math

import pytest
import torch

from scripts.evaluation.metrics import (
    FoldingMetric,
    LogJacobianStdMetric,
    NCCMetric,
    RigidityErrorMetric,
    dice,
    folding_percentage,
    mse,
    ncc,
    pair_metrics,
    rigidity_error,
    std_log_jacobian,
)


def stretch_field(factors, shape=(10, 10, 10)):
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")
    return torch.stack([(f - 1.0) * a for f, a in zip(factors, axes)])[None]


def test_folding_percentage_counts_inverted_voxels():
    assert folding_percentage(stretch_field((1.2, 1.0, 1.0))).item() == 0
    assert folding_percentage(stretch_field((-0.5, 1.0, 1.0))).item() == pytest.approx(100.0)
    half = torch.cat([stretch_field((1.0, 1.0, 1.0)), stretch_field((-0.5, 1.0, 1.0))])
    torch.testing.assert_close(folding_percentage(half), torch.tensor([0.0, 100.0]))


def test_std_log_jacobian_excludes_sliding_voxels():
    ddf = torch.zeros(1, 3, 12, 12, 12)
    ddf[0, 0, 6:] = torch.arange(6, dtype=torch.float32).reshape(6, 1, 1) * 0.5  # det 1.5 for x >= 6
    reg_mask = torch.zeros(1, 1, 12, 12, 12)
    assert std_log_jacobian(ddf).item() > 0.1
    reg_mask[:, :, 5:] = 2  # the stretched part and its border voxel are sliding: excluded
    assert std_log_jacobian(ddf, reg_mask).item() == pytest.approx(0.0, abs=1e-6)
    assert std_log_jacobian(stretch_field((2.0, 1.0, 1.0))).item() == pytest.approx(0.0, abs=1e-6)


def test_rigidity_error_over_rigid_voxels_only():
    ddf = stretch_field((1.1, 1.0, 1.0))
    rigid = torch.ones(1, 1, 10, 10, 10)
    assert rigidity_error(ddf, rigid).item() == pytest.approx(0.01, rel=1e-4)
    assert math.isnan(rigidity_error(ddf, torch.zeros_like(rigid)).item())
    metric = RigidityErrorMetric()
    metric(ddf, rigid)
    metric(ddf, torch.zeros_like(rigid))  # NaN pair skipped by the reduction
    assert metric.aggregate().item() == pytest.approx(0.01, rel=1e-4)


def test_image_metrics():
    a = torch.rand(2, 1, 8, 8, 8)
    torch.testing.assert_close(ncc(a, a), torch.ones(2))
    torch.testing.assert_close(ncc(-a, a), -torch.ones(2))
    torch.testing.assert_close(ncc(3 * a + 1, a), torch.ones(2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mse(a + 0.5, a), torch.full((2,), 0.25))
    metric = NCCMetric()
    metric(a, a)
    assert metric.aggregate().item() == pytest.approx(1.0, abs=1e-5)


def test_dice_skips_labels_absent_from_the_fixed_image():
    fixed = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    fixed[..., :4, :, :] = 1
    warped = torch.zeros_like(fixed)
    warped[..., :2, :, :] = 1
    warped[..., 6:, :, :] = 2  # label 2 is absent from the fixed image: skipped, not counted as 0 or 1
    assert dice(warped, fixed, num_classes=3).item() == pytest.approx(2 * 2 / (4 + 2))


def test_metric_classes_and_pair_metrics_agree():
    ddf = torch.cat([stretch_field((1.1, 1.0, 1.0)), stretch_field((0.9, 1.0, 1.0))])
    reg_mask = torch.ones(2, 1, 10, 10, 10)
    folding, std = FoldingMetric(), LogJacobianStdMetric()
    folding(ddf, reg_mask)
    std(ddf, reg_mask)
    assert folding.aggregate().item() == 0
    assert std.aggregate().item() == pytest.approx(0.0, abs=1e-6)
    fixed = torch.rand(2, 1, 10, 10, 10)
    labels = (fixed > 0.5).long()
    pred = {"ddf": ddf, "warped": fixed, "warped_label": torch.cat([1 - labels, labels], 1).float()}
    target = {
        "fixed": fixed,
        "moving": fixed.flip(2),
        "reg_mask": reg_mask,
        "fixed_label": labels,
        "moving_label": labels.flip(2),
    }
    values = pair_metrics(pred, target, num_label_classes=2)
    torch.testing.assert_close(values["mse"], torch.zeros(2))
    torch.testing.assert_close(values["dice"], torch.ones(2))
    assert (values["mse_before"] > 0.05).all() and (values["dice_before"] < 0.8).all()
    torch.testing.assert_close(values["rigidity_error"], torch.full((2,), 0.01), rtol=1e-4, atol=0)


def test_metric_classes_take_spacing_from_the_target_dict():
    ddf = stretch_field((1.1, 1.0, 1.0))  # voxel units: u_0 = 0.1 * i_0
    reg_mask = torch.ones(1, 1, 10, 10, 10)
    metric = RigidityErrorMetric()
    metric(ddf, {"reg_mask": reg_mask, "spacing": torch.tensor([[2.0, 1.0, 1.0]])})
    # in mm: u_0 = 0.1 * 2 * i_0 = 0.1 x_0, the same strain; anisotropic spacing enters only off-diagonal terms
    assert metric.aggregate().item() == pytest.approx(0.01, rel=1e-4)
    shear = torch.zeros(1, 3, 10, 10, 10)
    shear[0, 0] = 0.2 * torch.arange(10.0).reshape(1, 10, 1)  # u_0 = 0.2 i_1 voxels
    plain, physical = RigidityErrorMetric(), RigidityErrorMetric()
    plain(shear, reg_mask)
    physical(shear, {"reg_mask": reg_mask, "spacing": torch.tensor([[2.0, 1.0, 1.0]])})
    # E_01 = 0.1 in voxels; in mm du_0/dx_1 = 0.4 so E_01 = 0.2: ||E||^2 = 2 E_01^2
    assert plain.aggregate().item() == pytest.approx(0.02, rel=1e-4)
    assert physical.aggregate().item() == pytest.approx(0.08, rel=1e-4)
