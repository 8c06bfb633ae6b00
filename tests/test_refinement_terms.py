"""The refinement's diffusion given the wall's side (scripts/refinement/terms.py): a step across an oblique wall is
free, a side that is not known charges as before, and the refinement slides further across an oblique wall with it."""

import numpy as np
import pytest
import torch
from monai.networks.blocks import Warp
from scipy import ndimage

from scripts.refinement.optimiser import refine_pair
from scripts.refinement.pyramid import resize_side
from scripts.refinement.terms import forward_diffusion
from scripts.regions.cavity import wall_layers
from scripts.regions.labels import SLIDING

N = 24
SP = (2.0, 2.0, 2.0)


def _oblique_wall(n: int = N):
    """A wall at 45 degrees (x0 + x1 = n - 1/2): inside below it; the band = the voxels touching it on both sides;
    outward normal (1, 1, 0)/sqrt 2; tangent (1, -1, 0)/sqrt 2."""
    x0, x1 = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    inside2d = x0 + x1 < n
    inside = np.repeat(inside2d[:, :, None], n, axis=2)
    band = wall_layers(inside)
    normal = np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0)
    tangent = np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0)
    normals = np.zeros((3, n, n, n), np.float32)
    normals[:, band] = normal[:, None]
    return inside, band, normals, tangent


def _t(a, channel=True):
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t[None, None].float() if not channel else t[None].float()


def test_a_step_across_an_oblique_wall_is_free_given_the_side_and_charged_without():
    inside, band, normals, tangent = _oblique_wall()
    step = np.where(inside[None], 1.5 * tangent[:, None, None, None], 0.0).astype(np.float32)  # mm: a pure slip
    sp_t = torch.tensor(SP).reshape(1, 3, 1, 1, 1)
    u_vox, sliding, n = _t(step) / sp_t, _t(band, channel=False) > 0, _t(normals)
    side = _t(inside.astype(np.int8), channel=False)
    free = float(forward_diffusion(u_vox, sp_t, SP, sliding, n, side))
    guessed = float(forward_diffusion(u_vox, sp_t, SP, sliding, n, None))
    assert free == pytest.approx(0.0, abs=1e-9)
    # the guess charges each crossing pair (1 - 1/sqrt 2)^2 of its jump squared, (1.5 mm / 2 mm)^2; along x0 and along
    # x1, (N - 1) N of the (N - 1) N N pairs cross
    assert guessed == pytest.approx(2 * (1 - 2**-0.5) ** 2 * 0.5625 / N, rel=1e-4)
    # a gap opening across the wall (the normal part jumps) is charged with the side as well
    gap = np.where(inside[None], 0.5 * np.array([1.0, 1.0, 0.0])[:, None, None, None], 0.0).astype(np.float32)
    assert float(forward_diffusion(_t(gap) / sp_t, sp_t, SP, sliding, n, side)) > 1e-3


def test_an_unknown_side_charges_as_the_guess_and_the_side_survives_coarse_levels():
    inside, band, normals, tangent = _oblique_wall()
    field = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, N, N, N))).float()
    sp_t = torch.tensor(SP).reshape(1, 3, 1, 1, 1)
    sliding, n = _t(band, channel=False) > 0, _t(normals)
    unknown = -torch.ones(1, 1, N, N, N)
    a = forward_diffusion(field, sp_t, SP, sliding, n, unknown)
    b = forward_diffusion(field, sp_t, SP, sliding, n, None)
    assert torch.allclose(a, b, rtol=1e-6)
    side = _t(inside.astype(np.int8), channel=False)
    side[0, 0, 0, 0, 0] = -1
    coarse = resize_side(side, (12, 12, 12))
    assert set(torch.unique(coarse).tolist()) <= {-1.0, 0.0, 1.0}
    assert coarse[0, 0, 0, 0, 0] == -1 and coarse[0, 0, 2, 2, 5] == 1 and coarse[0, 0, 11, 11, 5] == 0
    with pytest.raises(ValueError, match="wall_side holds 1"):
        refine_pair(
            torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 8, 8, 8), SP, wall_side=torch.full((1, 1, 8, 8, 8), 2.0)
        )
    with pytest.raises(ValueError, match=r"wall_side must be \(1, 1, \*S\)"):
        refine_pair(torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 8, 8, 8), SP, wall_side=torch.zeros(1, 1, 4, 8, 8))


def test_the_refinement_slides_further_across_an_oblique_wall_given_its_side():
    n = 32
    inside, band, normals, tangent = _oblique_wall(n)
    slip_vox = 1.5  # each side moves 1.5 voxels along the wall, in opposite directions: a 3-voxel jump
    v = np.where(inside[None], slip_vox, -slip_vox) * tangent[:, None, None, None]
    v_true = torch.from_numpy(v).float()[None]
    noise = ndimage.gaussian_filter(np.random.default_rng(3).normal(size=(n, n, n)), 1.5)
    moving = torch.from_numpy((noise - noise.min()) / (noise.max() - noise.min())).float()[None, None]
    fixed = Warp(mode="bilinear", padding_mode="border")(moving, v_true)
    mask = np.where(band, SLIDING, 0).astype(np.float32)
    kwargs = dict(reg_mask=_t(mask, channel=False), normals=_t(normals), levels=2, iterations=(60, 80))
    with_side, _ = refine_pair(fixed, moving, SP, wall_side=_t(inside.astype(np.int8), channel=False), **kwargs)
    guessed, _ = refine_pair(fixed, moving, SP, **kwargs)

    def jump(ddf):  # tangential displacement of each inner wall voxel minus its outer neighbour along x0
        u = ddf[0].numpy()
        vals = [
            (u[:, i, n - 1 - i, k] - u[:, i + 1, n - 1 - i, k]) @ tangent
            for i in range(8, n - 8)
            for k in range(6, n - 6)
        ]
        return float(np.mean(vals))

    true = jump(v_true)
    assert true == pytest.approx(2 * slip_vox)
    # with the side the whole jump lies across the wall; guessed, the crossing pair carried a third of it (1.09 of 3)
    assert jump(with_side) > 0.9 * true, (jump(with_side), jump(guessed), true)
    assert jump(guessed) < 0.5 * true, (jump(with_side), jump(guessed), true)
