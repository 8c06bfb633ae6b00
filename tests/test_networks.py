"""The registration model's warps (scripts/networks/registration.py): CachedGridWarp gives MONAI's Warp values and
gradients and builds its grid once per shape (MONAI 1.6.1's Warp builds it at every call)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import DVF2DDF, Warp
from monai.networks.nets import AttentionUnet

from scripts.networks.registration import CachedGridWarp, RegistrationNet


@pytest.mark.parametrize("shape", [(2, 1, 9, 7), (2, 3, 9, 7, 5)])
@pytest.mark.parametrize("padding_mode", ["border", "zeros"])
def test_cached_grid_warp_equals_monai_warp(shape, padding_mode):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(shape, generator=gen)
    ddf = (3 * torch.rand((shape[0], len(shape) - 2, *shape[2:]), generator=gen) - 1.5).requires_grad_(True)
    ours, theirs = CachedGridWarp("bilinear", padding_mode), Warp("bilinear", padding_mode)
    out = ours(image, ddf)
    (grad,) = torch.autograd.grad(out.square().sum(), ddf)
    ref = theirs(image, ddf)
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), ddf)
    assert (ref - image).abs().max() > 0.1  # the field moves the image
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-5)


def test_grid_built_once_per_shape():
    warp = CachedGridWarp("bilinear", "border")
    image, ddf = torch.rand(2, 1, 6, 5, 4), torch.zeros(2, 3, 6, 5, 4)
    first = warp.get_reference_grid(ddf)
    assert warp.get_reference_grid(ddf) is first
    assert first.shape == (1, 3, 6, 5, 4) and first[0, 0, 5, 0, 0] == 5 and first[0, 2, 0, 0, 3] == 3
    torch.testing.assert_close(warp(image, ddf), image)  # zero field: identity
    other = warp.get_reference_grid(torch.zeros(1, 3, 4, 4, 4))
    assert other is not first and other.shape == (1, 3, 4, 4, 4)
    assert warp.get_reference_grid(torch.zeros(2, 3, 4, 4, 4, dtype=torch.float64)).dtype == torch.float64


def test_registration_net_equals_monai_warps():
    torch.manual_seed(0)
    net = RegistrationNet(AttentionUnet(3, 2, 3, (4, 8), (2,)), integration_steps=7).eval()
    assert isinstance(net.integrate.warp_layer, CachedGridWarp)
    pair, labels = torch.rand(2, 2, 16, 12, 8), torch.rand(2, 3, 16, 12, 8)
    with torch.no_grad():
        net.backbone.model[-1].conv.weight.mul_(50.0)  # a field of a few voxels
        ours = net(pair, labels)
        velocity = net.backbone(pair)
        ddf = DVF2DDF(7, mode="bilinear")(velocity)
        warped = Warp("bilinear", "border")(pair[:, 1:2], ddf)
        warped_label = Warp("bilinear", "zeros")(labels, ddf)
    assert ddf.abs().max() > 1.0
    for key, ref in (("ddf", ddf), ("warped", warped), ("warped_label", warped_label)):
        torch.testing.assert_close(ours[key], ref, rtol=0, atol=1e-5)
