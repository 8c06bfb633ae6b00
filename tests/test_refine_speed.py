"""The refinement's fast paths give the values of the general ones: finite differences with a one-allocation
backward (scripts/losses/differences.py), the warp with a kept grid and the LNCC with the fixed image's sums computed
once (scripts/refinement/similarity.py), the per-level weights of the diffusion and fold barrier
(scripts/refinement/terms.py), and the hand-written backward passes of bundle 0.9.17 (the fold barrier's sparse one,
the regulariser on fixed regions, the diffusion's band by index, the LNCC's), each against autograd over the whole
grid. Speed itself is measured by ``python -m benchmarks.profile_refine``."""

import math

import pytest
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss
from monai.networks.blocks import Warp
from torch.nn import functional as F

from scripts.losses.biomechanical import BiomechanicalLoss
from scripts.losses.differences import central_difference, forward_difference, weighted_squared_difference
from scripts.losses.fixed_regions import FixedRegionLoss
from scripts.refinement import similarity
from scripts.refinement.optimiser import BAND_FOLD_WEIGHT, level_terms
from scripts.refinement.pyramid import _gaussian_blur
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
    """GridWarp's hand-written trilinear sampler (one channel) gives MONAI Warp's values and
    gradients, border padding included (a 2.5-voxel random field throws many positions off the grid); an image that
    needs a gradient of its own goes through grid_sample, also as MONAI's."""
    image, ddf = _field_and_image()
    assert float(((ddf + torch.arange(9.0).reshape(9, 1, 1))[0, 0] > 8).float().mean()) > 0.05  # clamped voxels
    ddf_a, ddf_b = ddf.clone().requires_grad_(), ddf.clone().requires_grad_()
    ours = GridWarp()(image, ddf_a)
    monai = Warp(mode="bilinear", padding_mode="border")(image, ddf_b)
    assert torch.allclose(ours, monai, atol=1e-5)
    weight = torch.rand_like(ours)
    (ours * weight).sum().backward()
    (monai * weight).sum().backward()
    assert torch.allclose(ddf_a.grad, ddf_b.grad, atol=1e-5)
    with torch.no_grad():  # no gradient asked: the value alone, the same
        assert torch.equal(GridWarp()(image, ddf_a), ours.detach())
    warp = GridWarp()  # an image that needs a gradient: grid_sample, whose grid a second shape rebuilds
    image2, ddf2 = _field_and_image((6, 5, 4), seed=1)
    warp(image.clone().requires_grad_(), ddf)
    warped2 = warp(image2.clone().requires_grad_(), ddf2)
    assert warped2.requires_grad and torch.allclose(warped2, Warp("bilinear", "border")(image2, ddf2), atol=1e-5)
    with pytest.raises(ValueError, match=r"ddf must be \(1, 3, \*S\)"):
        warp(image, ddf2)


def test_several_channels_are_sampled_together_chunk_by_chunk(monkeypatch):
    """Several channels (the MIND descriptor's 12) go through the hand-written sampler too, channels last and a chunk of
    voxels at a time: MONAI Warp's values and gradients, with chunks that do not divide the grid (the last one
    short), and the gradient against finite differences (float64)."""
    monkeypatch.setattr(similarity, "CHUNK_VOXELS", 500)  # 1287 voxels: chunks of 500, 500, 287
    image, ddf = _field_and_image()
    gen = torch.Generator().manual_seed(2)
    image = torch.cat([image, 1.0 - image, torch.rand((1, 3, 9, 11, 13), generator=gen)], dim=1)  # 5 channels
    ddf_a, ddf_b = ddf.clone().requires_grad_(), ddf.clone().requires_grad_()
    ours = GridWarp()(image, ddf_a)
    monai = Warp(mode="bilinear", padding_mode="border")(image, ddf_b)
    assert ours.shape == (1, 5, 9, 11, 13) and torch.allclose(ours, monai, atol=1e-5)
    weight = torch.rand(ours.shape, generator=gen)
    (ours * weight).sum().backward()
    (monai * weight).sum().backward()
    assert torch.allclose(ddf_a.grad, ddf_b.grad, atol=1e-4) and float(ddf_a.grad.abs().max()) > 0.5
    with torch.no_grad():
        assert torch.equal(GridWarp()(image, ddf_a), ours.detach())
    small = torch.rand((1, 3, 5, 6, 4), generator=gen, dtype=torch.float64)
    field = (1.5 * torch.randn((1, 3, 5, 6, 4), generator=gen, dtype=torch.float64)).requires_grad_()
    monkeypatch.setattr(similarity, "CHUNK_VOXELS", 37)
    assert torch.autograd.gradcheck(lambda u: GridWarp()(small, u), (field,))


def test_trilinear_sampler_gradient_is_exact():
    """The sampler's hand-written backward pass against finite differences (float64), positions off the grid
    included (no gradient where the position was clamped, as grid_sample's), and on a field at rest a linear image's
    slope exactly."""
    gen = torch.Generator().manual_seed(4)
    image = torch.rand((1, 1, 5, 6, 4), generator=gen, dtype=torch.float64)
    ddf = (1.5 * torch.randn((1, 3, 5, 6, 4), generator=gen, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda u: GridWarp()(image, u), (ddf,))
    x, y, z = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in (5, 6, 4)), indexing="ij")
    ramp = (0.5 * x - 0.25 * y + 2.0 * z)[None, None]
    rest = torch.full((1, 3, 5, 6, 4), 0.3, dtype=torch.float64, requires_grad=True)
    warped = GridWarp()(ramp, rest)
    warped.sum().backward()
    inside = (x <= 3.7) & (y <= 4.7) & (z <= 2.7)  # x + 0.3 still on the grid: the slope; beyond: clamped, none
    for k, slope in enumerate((0.5, -0.25, 2.0)):
        near = (x, y, z)[k] <= (5, 6, 4)[k] - 1.3
        assert torch.allclose(rest.grad[0, k][near], torch.full_like(rest.grad[0, k][near], slope))
        assert float(rest.grad[0, k][~near].abs().max()) == 0.0
    assert torch.allclose(warped[0, 0][inside], (ramp[0, 0] + 0.3 * (0.5 - 0.25 + 2.0))[inside])


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
    assert float(weighted_diffusion(u_mm, weights)) == pytest.approx(float(plain), rel=1e-6)
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


def _dense_fold_barrier(u_vox, weights, tau=0.2):
    """The fold barrier by autograd over the whole grid (before bundle 0.9.17): the reference of the sparse backward."""
    cols = [torch.diff(u_vox, dim=2 + axis, append=u_vox.narrow(2 + axis, -1, 1)) for axis in range(3)]
    det = torch.linalg.det(
        torch.stack([torch.stack([cols[a][:, k] for a in range(3)], -1) for k in range(3)], -2)
        + torch.eye(3, dtype=u_vox.dtype)
    )
    return (torch.relu(tau - det).square() * weights[:, 0]).sum()


@pytest.mark.parametrize("batch, shape", [(1, (6, 7, 8)), (2, (5, 4, 9)), (1, (3, 3, 4))])
def test_the_fold_barrier_differentiates_only_the_cells_under_it_and_equals_autograd(batch, shape):
    """The barrier's backward pass visits only the cells where det J_f < tau; on a field with many folds its value and
    gradient are those of autograd over the whole grid (torch.linalg.det of J_f), with the weights of fold_weights
    and with weights on the last slices too (where the padded difference is a constant 0)."""
    gen = torch.Generator().manual_seed(batch)
    u_vox = (0.6 * torch.randn((batch, 3) + shape, generator=gen, dtype=torch.float64)).requires_grad_()
    kept = fold_weights(shape, torch.rand((1, 1) + shape, generator=gen) > 0.3).double()
    everywhere = torch.rand((1, 1) + shape, generator=gen, dtype=torch.float64)
    for weights in (kept, everywhere):
        ours = forward_fold_barrier(u_vox, None, weights=weights)
        reference = _dense_fold_barrier(u_vox, weights)
        assert 0.01 < float(reference) and float(ours) == pytest.approx(float(reference), rel=1e-12)
        (g_ours,), (g_ref,) = torch.autograd.grad(ours, u_vox), torch.autograd.grad(reference, u_vox)
        assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-12) and float(g_ref.abs().max()) > 0.01
    assert torch.autograd.gradcheck(lambda x: forward_fold_barrier(x, None, weights=kept), (u_vox,))
    with pytest.raises(ValueError, match="must not require grad"):
        forward_fold_barrier(u_vox, None, weights=kept.clone().requires_grad_())


@pytest.mark.parametrize("mode", ["jacobian", "rigidity_jacobian", "rigidity_shearing_jacobian"])
def test_the_fixed_region_loss_is_the_biomechanical_loss(mode):
    """FixedRegionLoss (regions indexed once, the rigid and sliding voxels' derivatives from one gather, the
    log-Jacobian's backward by cofactors) gives BiomechanicalLoss's terms and gradient, for every rigidity,
    weighting and an anisotropic spacing, on fields that fold (float64: to rounding)."""
    gen = torch.Generator().manual_seed(3)
    for batch, shape in ((1, (7, 8, 9)), (2, (5, 6, 4))):
        u = (0.3 * torch.randn((batch, 3) + shape, generator=gen, dtype=torch.float64)).requires_grad_()
        mask = torch.randint(0, 3, (batch, 1) + shape, generator=gen).double()
        normals = torch.randn((batch, 3) + shape, generator=gen, dtype=torch.float64)
        normals = normals / normals.norm(dim=1, keepdim=True)
        for rigidity, weighting, spacing in (("linear", "region", (1.0,) * 3), ("finite", "volume", (1.5, 2.0, 2.5))):
            loss = BiomechanicalLoss(mode=mode, rigidity=rigidity, weighting=weighting, fold_penalty=1.0)
            expected = loss.terms(u, mask, normals, spacing=spacing)
            ours = FixedRegionLoss(loss, mask, normals, spacing).terms(u)
            for name, value in expected.items():
                assert float(ours[name]) == pytest.approx(float(value), rel=1e-12, abs=1e-15), name
            (g_ours,) = torch.autograd.grad(ours["total"], u)
            (g_ref,) = torch.autograd.grad(expected["total"], u)
            assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-10 * float(g_ref.abs().max()))
    if mode != "jacobian":
        with pytest.raises(ValueError, match="needs the regularisation label map"):
            FixedRegionLoss(BiomechanicalLoss(mode=mode), None, None, (1.0,) * 3)


def _dense_diffusion(u_mm, spacing, sliding, normals, side):
    """D over the whole grid by autograd (before bundle 0.9.17), the charges of tests/test_refinement_terms.py."""
    total = u_mm.new_zeros(())
    un = (u_mm * normals).sum(dim=1, keepdim=True)
    ut = u_mm - un * normals
    for axis, s in enumerate(spacing):
        n = u_mm.shape[2 + axis] - 1
        a, b = sliding.narrow(2 + axis, 0, n), sliding.narrow(2 + axis, 1, n)
        sa, sb = side.narrow(2 + axis, 0, n), side.narrow(2 + axis, 1, n)
        known = a & b & (sa >= 0) & (sb >= 0)
        crossing, guessed, full = known & (sa != sb), a & b & ~known, (~a & ~b) | (known & (sa == sb))
        t_weight = (1 - normals[:, axis : axis + 1].narrow(2 + axis, 0, n).abs()).square()
        d_u, d_un, d_ut = (torch.diff(x, dim=2 + axis).square() for x in (u_mm, un, ut))
        pairs = (
            d_u.sum(1, keepdim=True) * full
            + d_un * (crossing | guessed)
            + d_ut.sum(1, keepdim=True) * guessed * t_weight
        )
        total = total + pairs.sum() / (s * s * pairs.numel())
    return total


def test_the_diffusion_charges_the_band_from_its_pairs_alone():
    """weighted_diffusion differences the band's pairs from one gather of the field (the dense part by
    weighted_squared_difference): value and gradient equal the dense computation, with the sides known, unknown
    (-1) and absent; weighted_squared_difference itself is the weighted sum of torch.diff's squares."""
    gen = torch.Generator().manual_seed(5)
    shape, spacing = (7, 8, 9), (1.5, 2.0, 2.5)
    u = torch.randn((1, 3) + shape, generator=gen, dtype=torch.float64).requires_grad_()
    sliding = torch.rand((1, 1) + shape, generator=gen) > 0.5
    normals = torch.randn((1, 3) + shape, generator=gen, dtype=torch.float64)
    normals = normals / normals.norm(dim=1, keepdim=True) * sliding
    spacing_t = torch.tensor(spacing, dtype=torch.float64).reshape(1, 3, 1, 1, 1)
    side = torch.randint(-1, 2, (1, 1) + shape, generator=gen)
    for sides, reference_sides in (
        (side, side),
        (side.clamp(min=0), side.clamp(min=0)),
        (None, -torch.ones_like(side)),
    ):
        ours = forward_diffusion(u, spacing_t, spacing, sliding, normals, sides)
        reference = _dense_diffusion(u * spacing_t, spacing, sliding, normals, reference_sides)
        # (the per-level weights are float32, the field float64 here: equal to float32 rounding)
        assert float(ours) == pytest.approx(float(reference), rel=1e-6)
        (g_ours,), (g_ref,) = torch.autograd.grad(ours, u), torch.autograd.grad(reference, u)
        assert torch.allclose(g_ours, g_ref, rtol=1e-6, atol=1e-9)
    weight = torch.rand((1, 1, 6) + shape[1:], generator=gen, dtype=torch.float64)
    plain = (torch.diff(u, dim=2).square() * weight).sum()
    assert float(weighted_squared_difference(u, 2, weight)) == pytest.approx(float(plain), rel=1e-12)
    assert torch.autograd.gradcheck(lambda x: weighted_squared_difference(x, 2, weight), (u,))
    with pytest.raises(ValueError, match="one field"):
        weighted_diffusion(torch.zeros((2, 3) + shape), diffusion_weights(spacing, shape, None, None))


@pytest.mark.parametrize("kernel", [3, 5])
def test_the_lncc_backward_by_hand_equals_autograd(kernel):
    """FixedLNCC's loss differentiates by hand (box sums of d cc / d(p, q, r)): its value and gradient equal
    autograd's through FixedLNCC.local, flat patches (where the variance is clamped) included; box_sum is a sum over
    the window (conv3d with a kernel of ones, zero padding)."""
    gen = torch.Generator().manual_seed(kernel)
    fixed = torch.rand(1, 1, 9, 10, 11, generator=gen, dtype=torch.float64)
    fixed[..., :4, :4, :4] = 0.3
    pred = torch.rand(1, 1, 9, 10, 11, generator=gen, dtype=torch.float64)
    pred[..., :5, :5, :5] = 0.7
    pred.requires_grad_()
    lncc = FixedLNCC(fixed, kernel)
    ours, reference = lncc(pred), lncc.local(pred).mean().neg()
    assert float(ours) == pytest.approx(float(reference), rel=1e-12)
    (g_ours,), (g_ref,) = torch.autograd.grad(ours, pred), torch.autograd.grad(reference, pred)
    assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradcheck(lncc, (pred,))
    x = torch.rand(1, 2, 5, 6, 7, generator=gen, dtype=torch.float64)
    ones = torch.ones(1, 1, kernel, kernel, kernel, dtype=torch.float64)
    by_conv = torch.cat([F.conv3d(x[:, c : c + 1], ones, padding=kernel // 2) for c in range(2)], dim=1)
    assert torch.allclose(box_sum(x, kernel), by_conv, rtol=1e-12)


def test_the_pyramid_blur_is_the_separable_gaussian_convolution():
    """The pyramid's anti-aliasing blur (shifted views of the padded image, one pass per tap) gives the values of the
    separable Gaussian by conv3d with the border replicated, per axis and sigma (0: the axis untouched)."""
    gen = torch.Generator().manual_seed(7)
    image = torch.rand(2, 2, 12, 9, 10, generator=gen, dtype=torch.float64)
    sigmas = (1.0, 0.0, 1.7)
    expected = image
    for axis, sigma in enumerate(sigmas):
        if sigma == 0.0:
            continue
        radius = int(math.ceil(2.5 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=torch.float64)
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        weights = (kernel / kernel.sum()).reshape(shape).repeat(2, 1, 1, 1, 1)
        expected = F.conv3d(F.pad(expected, pad, mode="replicate"), weights, groups=2)
    assert torch.allclose(_gaussian_blur(image, sigmas), expected, rtol=1e-12, atol=1e-14)
    assert torch.equal(_gaussian_blur(image, (0.0, 0.1, 0.2)), image)
