"""MIND-SSC descriptor and loss (scripts/losses/mind.py): intensity invariance, shift behaviour, gradients, shapes."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from scripts.losses.mind import SSC_PAIRS, MINDSSCLoss, mind_ssc


def _volume(seed: int = 0, shape=(28, 28, 28)) -> torch.Tensor:
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 2.0)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return torch.from_numpy(noise).float()[None, None]


def _shift(image: torch.Tensor, s: int, axis: int = 2) -> torch.Tensor:
    return torch.roll(image, s, dims=axis)


def _inner(t: torch.Tensor, m: int = 6) -> torch.Tensor:
    return t[..., m:-m, m:-m, m:-m]


def test_twelve_non_opposite_pairs():
    assert len(SSC_PAIRS) == 12 and all(i // 2 != j // 2 for i, j in SSC_PAIRS)


def test_descriptor_shape_and_range():
    d = mind_ssc(torch.rand(2, 1, 10, 12, 14))
    assert d.shape == (2, 12, 10, 12, 14)
    assert float(d.min()) > 0 and float(d.max()) == pytest.approx(1.0)
    assert torch.allclose(d.max(dim=1).values, torch.ones(()))


def test_invariant_to_affine_intensity_change():
    img = _volume().double()  # exact in float64; float32 loses ~1e-4 to the offset's round-off
    assert torch.allclose(mind_ssc(img), mind_ssc(3.7 * img - 250.0), atol=1e-10)
    assert torch.allclose(mind_ssc(img.float()), mind_ssc(3.7 * img.float() - 0.5), atol=1e-5)


def test_nearly_invariant_to_monotone_intensity_map():
    img = _volume()
    ref = mind_ssc(img)
    monotone = (mind_ssc(torch.sqrt(img + 0.1)) - ref).abs().mean()
    other = (mind_ssc(_shift(img, 2)) - ref).abs().mean()
    assert float(monotone) < 0.25 * float(other), (float(monotone), float(other))


def test_loss_zero_for_identical_grows_with_shift_and_is_minimal_at_true_shift():
    img = _volume(1)
    loss = MINDSSCLoss()
    assert float(loss(img, img)) == 0.0
    grows = [float(loss(_inner(_shift(img, s)), _inner(img))) for s in range(4)]
    assert grows[0] == 0.0 and all(a < b for a, b in zip(grows, grows[1:])), grows
    moving = _shift(img, 2)
    scores = {s: float(loss(_inner(_shift(moving, -s)), _inner(img))) for s in range(-4, 5)}
    assert min(scores, key=scores.get) == 2, scores


def test_gradients_are_finite_including_flat_images():
    pred = _volume(2).requires_grad_(True)
    target = _volume(3)
    MINDSSCLoss()(pred, target).backward()
    assert torch.isfinite(pred.grad).all() and float(pred.grad.abs().sum()) > 0
    flat = torch.zeros(1, 1, 8, 8, 8, requires_grad=True)
    MINDSSCLoss()(flat, torch.zeros(1, 1, 8, 8, 8)).backward()
    assert torch.isfinite(flat.grad).all()


def test_reductions_and_bad_shapes():
    a, b = torch.rand(2, 1, 9, 9, 9), torch.rand(2, 1, 9, 9, 9)
    none = MINDSSCLoss(reduction="none")(a, b)
    assert none.shape == (2, 1, 9, 9, 9)
    assert float(MINDSSCLoss(reduction="sum")(a, b)) == pytest.approx(float(none.sum()), rel=1e-5)
    assert float(MINDSSCLoss()(a, b)) == pytest.approx(float(none.mean()), rel=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        MINDSSCLoss()(a, b[:, :, :8])
    with pytest.raises(ValueError, match=r"\(B, 1, X, Y, Z\)"):
        mind_ssc(torch.rand(1, 2, 9, 9, 9))


def test_spacing_sets_offsets_per_axis():
    img = _volume(4)
    assert torch.equal(mind_ssc(img, spacing=(1.5, 1.5, 1.5)), mind_ssc(img))
    # axis 2 twice as coarse: dilation 2 becomes 1 voxel along it; the same as resampling the isotropic case
    aniso = mind_ssc(img, spacing=(1.0, 1.0, 2.0))
    assert not torch.allclose(aniso, mind_ssc(img))
    assert torch.isfinite(aniso).all()
