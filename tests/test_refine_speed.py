"""The refinement's fast paths give the values of the general ones: finite differences with a one-allocation
backward (scripts/losses/differences.py), the warp with a kept grid and the LNCC with the fixed image's sums computed
once (scripts/refinement/similarity.py), the per-level weights of the diffusion and fold barrier
(scripts/refinement/terms.py). Speed itself is measured by ``python -m benchmarks.profile_refine``."""

import pytest
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss
from monai.networks.blocks import Warp

from scripts.losses.biomechanical import BiomechanicalLoss
from scripts.losses.differences import central_difference, forward_difference
from scripts.refinement.optimiser import BAND_FOLD_WEIGHT, level_terms
from scripts.refinement.similarity import FixedLNCC, GridWarp, Similarity, box_sum
from scripts.refinement.terms import (
    diffusion_weights,
    fold_weights,
    forward_diffusion,
    forward_fold_barrier,
    weighted_diffusion,
)


@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 2, 3, 4), (1, 7, 2, 3)])
def test_differences_equal_torch_and_their_backward_is_the_adjoint(shape):
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    for dim in range(len(shape)):
        if shape[dim] < 2:
            continue
        assert torch.equal(central_difference(x, dim), torch.gradient(x, dim=dim, edge_order=1)[0])
        assert torch.equal(forward_difference(x, dim), torch.diff(x, dim=dim))
        padded = forward_difference(x, dim, pad=True)
        assert torch.equal(padded.narrow(dim, 0, shape[dim] - 1), torch.diff(x, dim=dim))
        assert float(padded.narrow(dim, shape[dim] - 1, 1).abs().max()) == 0.0
        scale = torch.tensor(1.7, dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda y, d=dim: central_difference(y, d, scale), (x,))
        assert torch.autograd.gradcheck(lambda y, d=dim: forward_difference(y, d), (x,))
        assert torch.autograd.gradcheck(lambda y, d=dim: forward_difference(y, d, pad=True), (x,))
    with pytest.raises(ValueError, match="at least 2 entries"):
        central_difference(torch.zeros(3, 1), 1)


def _field_and_image(shape=(9, 11, 13), seed=0):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand((1, 1) + shape, generator=gen)
    ddf = 2.5 * torch.randn((1, 3) + shape, generator=gen)
    return image, ddf


def test_grid_warp_samples_as_monai_warp_and_keeps_the_gradient():
    image, ddf = _field_and_image()
    ddf_a, ddf_b = ddf.clone().requires_grad_(), ddf.clone().requires_grad_()
    ours = GridWarp()(image, ddf_a)
    monai = Warp(mode="bilinear", padding_mode="border")(image, ddf_b)
    assert torch.allclose(ours, monai, atol=1e-5)
    ours.square().sum().backward()
    monai.square().sum().backward()
    assert torch.allclose(ddf_a.grad, ddf_b.grad, rtol=1e-3, atol=1e-4)
    warp = GridWarp()  # a second shape rebuilds the grid
    image2, ddf2 = _field_and_image((6, 5, 4), seed=1)
    warp(image, ddf)
    assert torch.allclose(warp(image2, ddf2), Warp("bilinear", "border")(image2, ddf2), atol=1e-5)
    with pytest.raises(ValueError, match=r"ddf must be \(B, 3, \*S\)"):
        warp(image, ddf2)


@pytest.mark.parametrize("kernel", [3, 5])
def test_fixed_lncc_equals_monai_lncc_value_and_gradient(kernel):
    fixed, _ = _field_and_image(seed=2)
    moving, _ = _field_and_image(seed=3)
    pred_a = (0.5 * fixed + 0.5 * moving).requires_grad_()
    pred_b = pred_a.detach().clone().requires_grad_()
    ours = FixedLNCC(fixed, kernel)(pred_a)
    monai = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=kernel)(pred_b, fixed)
    assert -1.0 < float(ours) < -0.05
    assert float(ours) == pytest.approx(float(monai), rel=1e-5)
    ours.backward()
    monai.backward()
    assert torch.allclose(pred_a.grad, pred_b.grad, rtol=1e-4, atol=1e-9)
    # the box filter is its own adjoint: <box(x), y> = <x, box(y)>
    x, y = torch.rand(1, 2, 5, 6, 7, dtype=torch.float64), torch.rand(1, 2, 5, 6, 7, dtype=torch.float64)
    assert float((box_sum(x, kernel) * y).sum()) == pytest.approx(float((x * box_sum(y, kernel)).sum()), rel=1e-12)
    with pytest.raises(ValueError, match="odd number of voxels"):
        box_sum(x, 4)
    with pytest.raises(ValueError, match="similarity must be one of"):
        Similarity("ncc")


def test_per_level_weights_give_the_diffusion_of_the_masks():
    """The weights computed once per level give D as computed from the band, normals and sides: zero for a slip
    across the wall given the side (tests/test_refinement_terms.py), and here the plain diffusion where no voxel
    slides: the mean squared forward difference in mm / mm."""
    _, ddf = _field_and_image()
    spacing = (1.5, 2.0, 2.5)
    spacing_t = torch.tensor(spacing).reshape(1, 3, 1, 1, 1)
    u_mm = ddf * spacing_t
    plain = sum(torch.diff(u_mm, dim=2 + a).div(s).square().sum(dim=1).mean() for a, s in enumerate(spacing))
    nothing = torch.zeros((1, 1) + tuple(ddf.shape[2:]), dtype=torch.bool)
    weights = diffusion_weights(spacing, ddf.shape[2:], nothing, torch.zeros_like(ddf))
    assert float(weighted_diffusion(u_mm, weights, None)) == pytest.approx(float(plain), rel=1e-6)
    assert float(forward_diffusion(ddf, spacing_t, spacing, None, None)) == pytest.approx(float(plain), rel=1e-6)


def test_fold_barrier_is_the_mean_over_the_kept_cells():
    """A field compressing axis 0 to det J = 0.1 on the cells x0 < 5 of 8 (and not at all beyond): the barrier
    relu(0.2 - det)^2 = 0.01 there, 0 elsewhere, averaged over the cells whose base voxel is kept."""
    n = 9
    x0 = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1).expand(n, n, n)
    u_vox = torch.zeros(1, 3, n, n, n)
    u_vox[0, 0] = -0.9 * x0.clamp(max=5)
    assert float(forward_fold_barrier(u_vox, None)) == pytest.approx(5 / 8 * 0.01, rel=1e-5)
    keep = (x0 >= 5)[None, None]
    assert float(forward_fold_barrier(u_vox, keep)) == pytest.approx(0.0, abs=1e-12)
    assert float(forward_fold_barrier(u_vox, ~keep)) == pytest.approx(0.01, rel=1e-5)
    weights = fold_weights((n, n, n), ~keep)
    assert float(forward_fold_barrier(u_vox, None, weights=weights)) == pytest.approx(0.01, rel=1e-5)
    # a weight per voxel: the 5 folding slices of cells weigh 0.1 each, the 3 others 1 -> 0.5 * 0.01 / (0.5 + 3)
    weights = fold_weights((n, n, n), torch.where(~keep, 0.1, 1.0))
    assert float(forward_fold_barrier(u_vox, None, weights=weights)) == pytest.approx(0.005 / 3.5, rel=1e-5)


def test_the_refinement_charges_a_fold_on_the_band_a_tenth():
    """level_terms weighs the fold barrier's cells on the sliding band BAND_FOLD_WEIGHT (0.1) of those off it: a
    field folding only on the band costs a tenth of the same fold off it, and nothing with band_fold_weight=0."""
    assert BAND_FOLD_WEIGHT == 0.1
    n = 9
    x0 = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1).expand(n, n, n)
    u_vox = torch.zeros(1, 3, n, n, n)
    u_vox[0, 0] = -0.9 * x0.clamp(max=5)  # det J = 0.1 on the cells x0 < 5
    band = (x0 < 5)[None, None]
    sim, reg = Similarity("lncc"), BiomechanicalLoss(mode="jacobian")
    image = torch.rand(1, 1, n, n, n)
    args = ((1.0, 0.0, 0.0, 1.0), (sim, GridWarp(), reg), image, image, [1.0] * 3, None, None)
    folds = {}
    for weight in (0.0, 0.1, 1.0):
        fold = level_terms(u_vox, *args, band, torch.zeros(1, 3, n, n, n), band_fold_weight=weight)["fold"][1]
        folds[weight] = float(fold())
    assert folds[0.0] == 0.0 and folds[1.0] == pytest.approx(5 / 8 * 0.01, rel=1e-5)
    assert folds[0.1] == pytest.approx(0.005 / 3.5, rel=1e-5)
    default = level_terms(u_vox, *args, band, torch.zeros(1, 3, n, n, n))["fold"][1]
    assert float(default()) == pytest.approx(folds[0.1], rel=1e-6)
