"""Per-pair refinement (scripts/refinement/optimiser.py): known motion recovered, sliding allowed only with the
shearing term, bones kept rigid by the rigidity term, regions resampled to coarse levels, input checks."""

import numpy as np
import pytest
import torch
from monai.networks.blocks import Warp
from scipy import ndimage

from scripts.evaluation.metrics import folding_percentage, rigidity_error
from scripts.losses.biomechanical import REGULARISERS
from scripts.refinement.optimiser import DEFAULT_SMOOTH, refine_pair
from scripts.refinement.pyramid import resize_field, resize_field_sided, resize_regions, working_shape
from scripts.regions.labels import RIGID, SLIDING

N = 32  # small volumes: the whole file runs in a few seconds on one core


def _texture(seed: int, shape=(N, N, N), sigma: float = 1.5) -> torch.Tensor:
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return torch.from_numpy(noise).float()[None, None]


def _pair(v_true: torch.Tensor, seed: int = 0, blank: int = 0):
    """fixed = moving o (id + v_true): the exact answer of refine_pair is v_true. ``blank``: no texture within that
    many voxels of the plane x0 = N/2 - 1/2 (the images say nothing there; the regulariser decides)."""
    moving = _texture(seed)
    if blank:
        moving[:, :, N // 2 - blank : N // 2 + blank] = 0.5
    fixed = Warp(mode="bilinear", padding_mode="border")(moving, v_true)
    return fixed, moving


def _epe(u: torch.Tensor, v: torch.Tensor, margin: int = 3) -> float:
    inner = (slice(None), slice(None)) + (slice(margin, -margin),) * 3
    return float((u - v)[inner].norm(dim=1).mean())


def test_known_smooth_motion_is_recovered():
    coarse = np.random.default_rng(1).normal(0.0, 1.5, size=(3, 4, 4, 4))
    v_true = torch.from_numpy(np.stack([ndimage.zoom(c, N / 4, order=3) for c in coarse])).float()[None]
    fixed, moving = _pair(v_true)
    ddf, curve = refine_pair(fixed, moving, (2.0, 2.0, 2.0), regulariser="jacobian", levels=2, iterations=(60, 60))
    before, after = _epe(torch.zeros_like(v_true), v_true), _epe(ddf, v_true)
    assert before > 1.5
    assert after < 0.35 * before, (before, after)
    assert ddf.shape == (1, 3, N, N, N) and torch.isfinite(ddf).all()
    assert len(curve) == 120 and curve[-1]["similarity"] < curve[0]["similarity"]
    assert float(folding_percentage(ddf)) < 0.05


def _sliding_case():
    """Two halves sliding along the plane x0 = 15.5 (+2 / -2 voxels along axis 1); a rigid block in the lower half
    that the true motion shears (so the rigidity term has something to prevent)."""
    x0 = torch.arange(N).reshape(N, 1, 1).float().expand(N, N, N)
    x2 = torch.arange(N).reshape(1, 1, N).float().expand(N, N, N)
    v = torch.zeros(1, 3, N, N, N)
    v[0, 1] = torch.where(x0 < N / 2, 2.0, -2.0)
    v[0, 2] = torch.where(x0 >= N / 2, 0.08 * (x0 - 24).clamp(-8, 8) * torch.sin(x2 / 5), 0.0)
    mask = torch.zeros(1, 1, N, N, N)
    mask[0, 0, 20:28, 8:24, 8:24] = RIGID
    band = (x0 - (N / 2 - 0.5)).abs() <= 1.5
    mask[0, 0][band] = SLIDING
    normals = torch.zeros(1, 3, N, N, N)
    normals[0, 0][band] = 1.0
    return v, mask, normals


@pytest.fixture(scope="module")
def sliding_results():
    v_true, mask, normals = _sliding_case()
    fixed, moving = _pair(v_true, seed=2, blank=2)
    out = {}
    for mode in ("rigidity_shearing_jacobian", "jacobian"):
        ddf, _ = refine_pair(
            fixed,
            moving,
            (2.0, 2.0, 2.0),
            reg_mask=mask,
            normals=normals,
            regulariser=mode,
            levels=2,
            iterations=(60, 80),
        )
        out[mode] = ddf
    return v_true, mask, out


def _jump(ddf: torch.Tensor, d: int = 1) -> float:
    """Mean tangential displacement d voxels above the interface minus d voxels below it."""
    c = N // 2
    return float(ddf[0, 1, c - 1 - d, 4:-4, 4:-4].mean() - ddf[0, 1, c + d, 4:-4, 4:-4].mean())


def test_shearing_lets_the_field_slide_and_jacobian_only_does_not(sliding_results):
    v_true, _, out = sliding_results
    assert _jump(v_true) == pytest.approx(4.0)
    slide, jac = _jump(out["rigidity_shearing_jacobian"]), _jump(out["jacobian"])
    assert slide > 3.2, slide
    assert jac < slide - 1.0, (slide, jac)


def test_rigidity_term_keeps_the_block_rigid(sliding_results):
    v_true, mask, out = sliding_results
    rig = float(rigidity_error(out["rigidity_shearing_jacobian"], mask, 2.0))
    jac = float(rigidity_error(out["jacobian"], mask, 2.0))
    assert rig < 0.3 * jac, (rig, jac)


@pytest.mark.parametrize("regulariser, expected", [("rigidity_shearing_jacobian", 1.0), ("jacobian", 0.5)])
def test_the_diffusion_weight_defaults_to_the_value_of_the_prior(regulariser, expected):
    """smooth=None is DEFAULT_SMOOTH of the regulariser (1.0 with the sliding band, 0.5 without): the same field bit
    for bit as that weight given, another field than the other weight."""
    assert set(DEFAULT_SMOOTH) == set(REGULARISERS) and DEFAULT_SMOOTH[regulariser] == expected
    v_true, mask, normals = _sliding_case()
    fixed, moving = _pair(v_true, seed=2, blank=2)
    kwargs = dict(reg_mask=mask, normals=normals, regulariser=regulariser, levels=1, iterations=15)
    fields = {w: refine_pair(fixed, moving, (2.0, 2.0, 2.0), smooth=w, **kwargs)[0] for w in (None, 0.5, 1.0)}
    assert torch.equal(fields[None], fields[expected])
    assert not torch.allclose(fields[None], fields[1.5 - expected], atol=1e-4)


def test_regions_survive_coarse_levels():
    _, mask, normals = _sliding_case()
    small, n_small = resize_regions(mask, normals, (16, 16, 16))
    assert small.shape == (1, 1, 16, 16, 16) and n_small.shape == (1, 3, 16, 16, 16)
    sliding = small[0, 0] == SLIDING
    assert sliding.any() and (small[0, 0] == RIGID).any()
    assert torch.allclose(n_small[0, 0][sliding], torch.ones(())) and (n_small[:, :, ~sliding] == 0).all()


def test_field_resize_keeps_the_physical_displacement():
    ddf = torch.ones(1, 3, 9, 17, 33)
    out = resize_field(ddf, (5, 9, 17))  # every axis shrunk by 2: one voxel becomes half a voxel
    assert torch.allclose(out, torch.full_like(out, 0.5))
    assert working_shape((192, 160, 256), (1.0, 1.0, 1.0), 2.0) == (97, 81, 129)
    assert working_shape((50, 60, 70), (3.0, 3.0, 3.0), 2.0) == (50, 60, 70)


def test_sided_resize_keeps_a_step_at_the_wall():
    """Each side of the wall interpolates its own side only: a step at the wall stays a step on the finer grid
    (plain trilinear upsampling puts half of it on the voxel between); unknown sides (-1) take plain values."""
    side_c = torch.zeros(1, 1, 5, 4, 4)
    side_c[:, :, :3] = 1
    ddf = torch.zeros(1, 3, 5, 4, 4)
    ddf[:, 1, :3] = 2.0
    side_f = torch.zeros(1, 1, 9, 7, 7)
    side_f[:, :, :5] = 1
    plain, sided = resize_field(ddf, (9, 7, 7)), resize_field_sided(ddf, (9, 7, 7), side_c, side_f)
    assert plain[0, 1, :, 3, 3].tolist() == [4.0] * 5 + [2.0, 0.0, 0.0, 0.0]
    assert sided[0, 1, :, 3, 3].tolist() == [4.0] * 5 + [0.0] * 4
    assert torch.equal(resize_field_sided(ddf, (9, 7, 7), side_c, torch.full_like(side_f, -1.0)), plain)
    assert torch.equal(resize_field_sided(ddf, (9, 7, 7), None, side_f), plain)


def test_the_slip_survives_the_levels_with_sided_upsampling():
    """Two halves sliding, no texture within 3 voxels of the wall: with plain upsampling the coarse levels' field
    reaches the finest grid as a ramp across the wall that the images cannot sharpen (half the jump at the wall after
    20 finest iterations); carried side by side it arrives as a step."""
    v_true, mask, normals = _sliding_case()
    fixed, moving = _pair(v_true, seed=2, blank=3)
    side = (torch.arange(N).reshape(N, 1, 1).expand(N, N, N) < N / 2).float()[None, None]
    kwargs = dict(reg_mask=mask, normals=normals, wall_side=side, levels=3, iterations=(60, 40, 20))
    sided, _ = refine_pair(fixed, moving, (2.0, 2.0, 2.0), sided_upsampling=True, **kwargs)
    plain, _ = refine_pair(fixed, moving, (2.0, 2.0, 2.0), **kwargs)  # the default
    assert _jump(sided, 0) > 3.8 and _jump(plain, 0) < 3.0, (_jump(sided, 0), _jump(plain, 0))
    assert _epe(sided, v_true) < 0.7 * _epe(plain, v_true)


def test_bad_inputs_are_named():
    img = torch.zeros(1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="moving"):
        refine_pair(img, torch.zeros(1, 1, 8, 8, 9), (1, 1, 1))
    with pytest.raises(ValueError, match="reg_mask"):
        refine_pair(img, img, (1, 1, 1))
    with pytest.raises(ValueError, match="similarity"):
        refine_pair(img, img, (1, 1, 1), regulariser="jacobian", similarity="ssim")
    with pytest.raises(ValueError, match="spacing"):
        refine_pair(img, img, (1, 1), regulariser="jacobian")


@pytest.mark.parametrize("similarity", ["lncc", "mind"])
def test_identical_images_give_an_almost_zero_field(similarity):
    img = _texture(5, shape=(24, 24, 24))
    ddf, curve = refine_pair(img, img, (2.0, 2.0, 2.0), regulariser="jacobian", similarity=similarity, iterations=30)
    assert float(ddf.norm(dim=1).mean()) < 0.1 and len(curve) == 90  # Adam drifts a few hundredths


def test_a_refinement_prints_no_torch_warning():
    """Every term of the loss curve is read from a detached tensor: torch warns ("Converting a tensor with
    requires_grad=True to a scalar") on stderr for each float() of a tensor that requires grad."""
    import warnings

    v_true, mask, normals = _sliding_case()
    fixed, moving = _pair(v_true, seed=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*requires_grad=True to a scalar", category=UserWarning)
        ddf, curve = refine_pair(fixed, moving, (2.0, 2.0, 2.0), reg_mask=mask, normals=normals, levels=2,
                                 iterations=(3, 3))  # fmt: skip
    assert len(curve) == 6 and all(isinstance(row["total"], float) for row in curve)


@pytest.mark.parametrize(
    "regulariser, similarity",
    [("rigidity_shearing_jacobian", "lncc"), ("rigidity_jacobian", "lncc"), ("jacobian", "lncc"),
     ("rigidity_shearing_jacobian", "mind"), ("rigidity_shearing_jacobian", "mse")],
)  # fmt: skip
def test_terms_back_propagated_one_at_a_time_give_the_gradient_of_their_sum(regulariser, similarity):
    """backward_terms frees each term's graph before building the next (memory); the gradient must be that of one
    backward pass of the sum (similarity, regulariser, diffusion, fold barrier), to float rounding."""
    from scripts.losses.biomechanical import BiomechanicalLoss
    from scripts.refinement.optimiser import backward_terms, level_terms
    from scripts.refinement.similarity import GridWarp, Similarity

    v_true, mask, normals = _sliding_case()
    fixed, moving = _pair(v_true, seed=4)
    sim = Similarity(similarity, 3, 1, 2)
    source, target = sim.prepare(fixed, moving, [2.0, 2.0, 2.0])
    losses = (sim, GridWarp(), BiomechanicalLoss(mode=regulariser, fold_penalty=1.0))
    sliding = (mask == SLIDING) if regulariser == "rigidity_shearing_jacobian" else None
    param = (v_true + 0.3 * torch.randn(v_true.shape, generator=torch.Generator().manual_seed(0))).requires_grad_()
    weights = (1.0, 0.5, 0.5, 10.0)
    terms = level_terms(param, weights, losses, source, target, [2.0] * 3, mask, normals, sliding, normals)
    values = backward_terms(terms)
    one_at_a_time, param.grad = param.grad.clone(), None
    built = {key: terms[key][1]() for key in ("similarity", "regulariser", "smooth", "fold")}  # the former order
    alpha, gamma, smooth, fold = weights
    total = alpha * built["similarity"] + gamma * built["regulariser"] + smooth * built["smooth"] + fold * built["fold"]
    total.backward()
    # the same gradient to float rounding: the engine adds the contributions of the differences' own backward nodes
    # (scripts/losses/differences.py) in another order than a single pass does (measured: <= 6e-8 of the largest)
    assert float((one_at_a_time - param.grad).abs().max()) <= 1e-6 * float(param.grad.abs().max())
    assert all(torch.equal(values[key], built[key].detach()) for key in built)
    assert all(float(value) != 0.0 for value in values.values())
