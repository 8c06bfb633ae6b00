"""The mechanics core and the biomechanical losses, checked against analytic values and an SVD formulation."""

import math

import pytest
import torch
from reference_losses import make_inputs, svd_biomechanical_loss
from torch.nn import functional as F

from scripts.losses.biomechanical import BiomechanicalLoss, JacobianLoss, RegistrationLoss, RigidityLoss, ShearingLoss
from scripts.losses.mechanics import jacobian_determinant, linear_strain, project_on_normals, spatial_gradient


@pytest.fixture(autouse=True)
def float64_default():
    """Exact comparisons in double precision, restored afterwards so that other test modules see float32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def grid(shape, spacing=(1.0, 1.0, 1.0)):
    """Physical coordinates (1, D, *shape) in mm."""
    axes = [torch.arange(n, dtype=torch.float64) * s for n, s in zip(shape, spacing)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def affine_field(matrix, shape=(12, 12, 12), centre=(0.0, 0.0, 0.0)):
    """u(x) = (A - I)(x - c) in voxels on a 1 mm grid: (1, 3, *shape)."""
    x = grid(shape) - torch.tensor(centre).reshape(1, 3, 1, 1, 1)
    a = torch.as_tensor(matrix) - torch.eye(3)
    return torch.einsum("kl,blxyz->bkxyz", a, x)


def rotation(theta, axis=(0.0, 0.0, 1.0)):
    a = torch.tensor(axis) / torch.tensor(axis).norm()
    k = torch.tensor([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return torch.eye(3) + math.sin(theta) * k + (1 - math.cos(theta)) * k @ k


def smooth_field(shape=(16, 14, 12), seed=0, amplitude=1.5):
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(2, 3, 4, 4, 4, generator=gen, dtype=torch.float64)
    return amplitude * F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)


def test_gradient_of_affine_field_is_exact_with_anisotropic_spacing():
    matrix = torch.tensor([[1.1, 0.2, 0.0], [0.0, 0.9, 0.3], [0.1, 0.0, 1.2]])
    spacing = (1.0, 2.0, 2.5)
    u_mm = torch.einsum("kl,blxyz->bkxyz", matrix - torch.eye(3), grid((6, 7, 8), spacing))
    u_vox = u_mm / torch.tensor(spacing).reshape(1, 3, 1, 1, 1)
    grad = spatial_gradient(u_vox, spacing)  # central differences are exact on a linear field, borders too
    assert grad.shape == (1, 3, 3, 6, 7, 8)
    torch.testing.assert_close(grad[0, :, :, 3, 3, 3], matrix - torch.eye(3))
    torch.testing.assert_close(grad[0, :, :, 0, -1, 0], matrix - torch.eye(3))
    torch.testing.assert_close(spatial_gradient(u_mm, spacing, units="mm"), grad)
    det = jacobian_determinant(u_vox, spacing)
    torch.testing.assert_close(det, torch.full_like(det, float(torch.linalg.det(matrix))))


def test_closed_form_equals_svd_formulation_and_gradients():
    ddf, reg_mask, normals = (t.double() for t in make_inputs((24, 20, 28), seed=3))
    spacing = (1.0, 1.5, 2.0)
    field = ddf.clone().requires_grad_(True)
    ours = BiomechanicalLoss("rigidity_shearing_jacobian")(field, reg_mask, normals, spacing=spacing)
    (grad_ours,) = torch.autograd.grad(ours, field)
    field_svd = ddf.clone().requires_grad_(True)
    reference = svd_biomechanical_loss(field_svd, reg_mask, normals, spacing=spacing)
    (grad_ref,) = torch.autograd.grad(reference, field_svd)
    assert ours.item() > 0.01
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-5, atol=1e-9)
    strain = linear_strain(spatial_gradient(ddf, spacing)).movedim((1, 2), (-2, -1))
    rigid = RigidityLoss()(ddf, reg_mask == 1, spacing=spacing)
    rigid_svd = torch.linalg.svdvals(strain).square().sum(-1)[reg_mask[:, 0] == 1].mean()
    assert rigid.item() == pytest.approx(rigid_svd.item(), rel=1e-5)


@pytest.mark.parametrize("mode", ["jacobian", "rigidity_jacobian", "rigidity_shearing_jacobian"])
def test_pure_translation_gives_zero_losses_and_finite_gradients(mode):
    ddf = torch.zeros(1, 3, 10, 11, 12)
    ddf[:, 0], ddf[:, 1], ddf[:, 2] = 2.5, -1.0, 0.3
    _, reg_mask, normals = (t.double() for t in make_inputs((10, 11, 12)))
    field = ddf.clone().requires_grad_(True)
    loss = BiomechanicalLoss(mode)(field, reg_mask, normals)
    loss = loss + RigidityLoss()(field) + ShearingLoss()(field, normals) + JacobianLoss()(field)
    (grad,) = torch.autograd.grad(loss, field)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.isfinite(grad).all() and grad.abs().max() < 1e-12


def test_small_rotation_about_far_centre_gives_theta_squared_strain():
    centre = (-300.0, 450.0, 200.0)  # far away: displacements of hundreds of voxels, still a rotation
    values = []
    for theta in (0.02, 0.01):
        ddf = affine_field(rotation(theta), centre=centre)
        assert ddf.abs().max() > 4 * theta / 0.02  # several voxels of motion
        values.append(RigidityLoss()(ddf).item())
        # E = (cos theta - 1)(I - a a^T): ||E||^2 = 2 (1 - cos theta)^2, so E = O(theta^2), loss = O(theta^4)
        assert values[-1] == pytest.approx(2 * (1 - math.cos(theta)) ** 2, rel=1e-6)
    assert values[0] / values[1] == pytest.approx(16.0, rel=1e-3)  # halving theta divides E by 4
    stretch = RigidityLoss()(affine_field(torch.diag(torch.tensor([1.02, 1.0, 1.0])))).item()
    assert stretch > 1000 * values[0]


def test_uniform_stretch_gives_analytic_values():
    s = 1.1
    ddf = affine_field(s * torch.eye(3))
    assert RigidityLoss()(ddf).item() == pytest.approx(3 * (s - 1) ** 2, rel=1e-9)
    assert JacobianLoss()(ddf).item() == pytest.approx((3 * math.log(s)) ** 2, rel=1e-9)
    normals = torch.zeros_like(ddf)
    normals[:, 1] = 1.0
    # normal component u_1 = (s - 1) x_1: E_n = (s - 1) e1 e1^T
    assert ShearingLoss()(ddf, normals).item() == pytest.approx((s - 1) ** 2, rel=1e-9)


def test_tangential_sliding_field_has_no_shearing_loss_but_has_strain():
    x = grid((16, 20, 12))
    ddf = torch.zeros_like(x)
    ddf[:, 0] = 2.0 * torch.tanh(x[:, 1] - 9.5)  # axis-0 displacement flips across the plane x1 = 9.5
    ddf[:, 2] = 0.5 * torch.sin(x[:, 1] / 3.0)
    normals = torch.zeros_like(ddf)
    normals[:, 1] = 1.0
    slab = (x[:, 1:2] >= 8) & (x[:, 1:2] <= 11)
    assert ShearingLoss()(ddf, normals * slab, slab).item() == pytest.approx(0.0, abs=1e-12)
    assert RigidityLoss()(ddf, slab).item() > 0.1
    # a normal (opening/compressing) motion at the interface is penalised
    ddf[:, 1] = 0.5 * torch.tanh(x[:, 1] - 9.5)
    assert ShearingLoss()(ddf, normals * slab, slab).item() > 0.01


def test_shearing_loss_follows_the_papers_projection_definition():
    ddf = smooth_field()
    normals = F.normalize(smooth_field(seed=5) + torch.tensor([0.0, 2.0, 0.0]).reshape(1, 3, 1, 1, 1), dim=1)
    # with a constant normal, the paper's E_n is the strain of the projected field itself
    n_const = torch.zeros_like(ddf) + normals[:1, :, 4, 4, 4].reshape(1, 3, 1, 1, 1)
    expected = linear_strain(spatial_gradient(project_on_normals(ddf, n_const))).square().sum(dim=(1, 2)).mean()
    assert ShearingLoss()(ddf, n_const).item() == pytest.approx(expected.item(), rel=1e-9)


def test_same_physical_field_on_anisotropic_grid_gives_same_losses():
    def physical(x):  # mm -> mm, smooth
        return torch.stack(
            [
                1.5 * torch.sin(x[:, 0] / 9.0) * torch.cos(x[:, 2] / 11.0),
                0.8 * torch.cos(x[:, 1] / 7.0 + x[:, 2] / 13.0),
                1.2 * torch.sin(x[:, 2] / 10.0) + 0.3 * torch.sin(x[:, 0] / 8.0),
            ],
            dim=1,
        )

    values = {}
    for spacing, shape in (((1.0, 1.0, 1.0), (31, 31, 51)), ((1.0, 1.0, 2.5), (31, 31, 21))):
        u_vox = physical(grid(shape, spacing)) / torch.tensor(spacing).reshape(1, 3, 1, 1, 1)
        n = F.normalize(torch.ones_like(u_vox) * torch.tensor([0.3, 1.0, 0.5]).reshape(1, 3, 1, 1, 1), dim=1)
        values[spacing] = torch.tensor(
            [
                RigidityLoss(spacing=spacing)(u_vox).item(),
                JacobianLoss(spacing=spacing)(u_vox).item(),
                ShearingLoss(spacing=spacing)(u_vox, n).item(),
            ]
        )
        unit_spacing = RigidityLoss()(u_vox).item()
    torch.testing.assert_close(values[(1.0, 1.0, 1.0)], values[(1.0, 1.0, 2.5)], rtol=0.03, atol=0)
    assert abs(unit_spacing - values[(1.0, 1.0, 2.5)][0].item()) > 0.2 * values[(1.0, 1.0, 2.5)][0].item()


def test_log_jacobian_loss_is_symmetric_in_expansion_and_compression():
    expand = JacobianLoss()(affine_field(torch.diag(torch.tensor([2.0, 1.0, 1.0])))).item()
    compress = JacobianLoss()(affine_field(torch.diag(torch.tensor([0.5, 1.0, 1.0])))).item()
    assert expand == pytest.approx(math.log(2) ** 2, rel=1e-9)
    assert compress == pytest.approx(expand, rel=1e-9)


def test_folding_field_is_counted_and_loss_stays_finite():
    from scripts.evaluation.metrics import folding_percentage

    x = grid((12, 12, 12))
    ddf = torch.zeros_like(x)
    ddf[:, 0] = -3.0 * torch.exp(-((x[:, 0] - 6) ** 2) / 4.0) * (x[:, 0] - 6)  # pulls voxels past each other
    assert folding_percentage(ddf).item() > 5
    field = ddf.clone().requires_grad_(True)
    loss = JacobianLoss()(field) + BiomechanicalLoss("jacobian")(field)
    (grad,) = torch.autograd.grad(loss, field)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    # with the fold penalty the folded voxels get a gradient that unfolds them
    field = ddf.clone().requires_grad_(True)
    (grad_pen,) = torch.autograd.grad(JacobianLoss(fold_penalty=1.0)(field), field)
    assert (grad_pen - grad / 2).abs().max() > 1e-4


def test_finite_rotation_exact_rigidity_variant():
    ddf = affine_field(rotation(math.radians(30), axis=(1.0, 2.0, 0.5)), centre=(5.0, 6.0, 7.0))
    linear = RigidityLoss("linear")(ddf).item()
    exact = RigidityLoss("finite")(ddf).item()
    assert linear == pytest.approx(2 * (1 - math.cos(math.radians(30))) ** 2, rel=1e-9)
    assert linear > 0.03
    assert exact == pytest.approx(0.0, abs=1e-12)
    assert RigidityLoss("finite")(affine_field(1.05 * torch.eye(3))).item() > 0.05


def test_biomechanical_loss_regions_and_empty_regions():
    ddf = smooth_field()
    normals = torch.zeros_like(ddf)
    normals[:, 1] = 1.0
    empty = torch.zeros(2, 1, *ddf.shape[2:])
    loss = BiomechanicalLoss("rigidity_shearing_jacobian")
    terms = loss.terms(ddf, empty, normals)
    assert torch.isfinite(terms["total"])
    assert terms["rigidity"].item() == 0 and terms["shearing"].item() == 0
    assert terms["jacobian"].item() == pytest.approx(JacobianLoss()(ddf).item(), rel=1e-9)
    all_rigid = torch.ones_like(empty)
    terms = loss.terms(ddf, all_rigid, normals)
    assert terms["jacobian"].item() == 0
    assert terms["rigidity"].item() == pytest.approx(RigidityLoss()(ddf).item(), rel=1e-9)
    assert BiomechanicalLoss("jacobian")(ddf).item() == pytest.approx(JacobianLoss()(ddf).item(), rel=1e-9)
    sliding = 2 * torch.ones_like(empty)
    assert BiomechanicalLoss("rigidity_jacobian")(ddf, sliding).item() == pytest.approx(
        JacobianLoss()(ddf).item(), rel=1e-9
    )


def test_volume_weighting_weighs_every_voxel_the_same():
    ddf, reg_mask, normals = make_inputs((12, 10, 14), seed=5)
    labels = reg_mask[:, 0].round()
    by_region = BiomechanicalLoss(weighting="region").terms(ddf, reg_mask, normals)
    by_volume = BiomechanicalLoss(weighting="volume").terms(ddf, reg_mask, normals)
    for name, label in (("jacobian", 0), ("rigidity", 1), ("shearing", 2)):
        fraction = float((labels == label).float().mean())
        assert 0.05 < fraction < 0.95
        assert by_volume[name].item() == pytest.approx(by_region[name].item() * fraction, rel=1e-6)
    # the per-voxel terms summed over the grid, divided by its voxel count: the mean per-voxel regulariser
    assert by_volume["total"].item() == pytest.approx(
        sum(by_volume[n].item() for n in ("jacobian", "rigidity", "shearing")), rel=1e-9
    )
    assert BiomechanicalLoss("jacobian", weighting="volume")(ddf).item() == pytest.approx(JacobianLoss()(ddf).item())
    with pytest.raises(ValueError, match="weighting"):
        BiomechanicalLoss(weighting="voxel")


def test_two_dimensional_fields():
    theta = 0.3
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    axes = torch.stack(torch.meshgrid(torch.arange(9.0), torch.arange(10.0), indexing="ij"))[None]
    ddf = torch.einsum("kl,blxy->bkxy", rot - torch.eye(2), axes)
    assert RigidityLoss("finite")(ddf).item() == pytest.approx(0.0, abs=1e-12)
    assert RigidityLoss()(ddf).item() == pytest.approx(2 * (1 - math.cos(theta)) ** 2, rel=1e-9)
    assert JacobianLoss()(ddf).item() == pytest.approx(0.0, abs=1e-12)
    normals = torch.zeros_like(ddf)
    normals[:, 0] = 1.0
    # the normal displacement of a rotation varies along the tangent: (1 - cos)^2 + sin^2 / 2
    expected = (1 - math.cos(theta)) ** 2 + math.sin(theta) ** 2 / 2
    assert ShearingLoss()(ddf, normals).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    "ddf, message",
    [
        (torch.zeros(1, 3, 8, 8), "channels"),
        (torch.zeros(3, 8, 8, 8), "shape"),
        (torch.zeros(1, 3, 8, 1, 8), "at least 2"),
    ],
)
def test_bad_fields_are_rejected(ddf, message):
    with pytest.raises(ValueError, match=message):
        RigidityLoss()(ddf)


def test_bad_arguments_are_rejected():
    ddf = smooth_field()
    with pytest.raises(ValueError, match="spacing"):
        RigidityLoss()(ddf, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        RigidityLoss()(ddf, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="mask shape"):
        RigidityLoss()(ddf, torch.ones(2, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="reg_mask"):
        BiomechanicalLoss("rigidity_jacobian")(ddf)
    with pytest.raises(ValueError, match="normals"):
        BiomechanicalLoss()(ddf, 2 * torch.ones(2, 1, *ddf.shape[2:]))
    with pytest.raises(ValueError, match="mode"):
        BiomechanicalLoss("elastic")
    with pytest.raises(ValueError, match="Dice"):
        RegistrationLoss(beta=0.5, regulariser=BiomechanicalLoss("jacobian")).terms(
            torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 3, 8, 8, 8)
        )


def test_registration_loss_combines_weighted_terms():
    fixed = torch.rand(2, 1, 12, 12, 12)
    warped = torch.rand(2, 1, 12, 12, 12)
    ddf = smooth_field((12, 12, 12))
    fixed_label = (fixed > 0.5).long()
    warped_label = torch.cat([1 - (warped > 0.5).double(), (warped > 0.5).double()], dim=1)
    reg_mask = (fixed > 0.8).double()
    loss = RegistrationLoss("mse", alpha=0.7, beta=0.2, gamma=0.1, regulariser=BiomechanicalLoss("rigidity_jacobian"))
    terms = loss.terms(fixed, warped, ddf, reg_mask=reg_mask, fixed_label=fixed_label, warped_label=warped_label)
    assert terms["similarity"].item() == pytest.approx(F.mse_loss(warped, fixed).item())
    assert 0.3 < terms["dice"].item() < 0.7  # two independent random masks: Dice about 0.5
    expected = 0.7 * terms["similarity"] + 0.2 * terms["dice"] + 0.1 * terms["regulariser"]
    assert terms["total"].item() == pytest.approx(expected.item())
    perfect = RegistrationLoss("lncc", gamma=0.0)({"warped": fixed, "ddf": torch.zeros_like(ddf)}, {"fixed": fixed})
    assert perfect.item() == pytest.approx(-1.0, abs=1e-3)


def test_field_term_weighs_the_bones_as_the_rest_with_region_weighting():
    """The supervised field term: the mean endpoint error in mm over the grid (``voxel``), or the mean of the
    regions' means (``region``), where an error on the few bone voxels counts as much as one everywhere else."""
    fixed = torch.zeros(1, 1, 10, 10, 10)
    reg_mask = torch.zeros(1, 1, 10, 10, 10)
    reg_mask[..., :2, :, :] = 2.0  # sliding: 200 voxels
    reg_mask[..., 5, 5, 5:7] = 1.0  # bone: 2 voxels, 0.2 % of the grid
    true_ddf = torch.zeros(1, 3, 10, 10, 10)
    true_ddf[:, 0][reg_mask[:, 0] == 1] = 1.5  # the bones moved 1.5 voxels = 3 mm along x; the field missed it
    ddf = torch.zeros_like(true_ddf)
    spacing = (2.0, 1.0, 1.0)

    def field(weighting):
        loss = RegistrationLoss(gamma=0.0, delta=0.5, field_weighting=weighting)
        return loss.terms(fixed, fixed, ddf, reg_mask=reg_mask, spacing=spacing, true_ddf=true_ddf)

    voxel, region = field("voxel"), field("region")
    assert voxel["field"].item() == pytest.approx(3.0 * 2 / 1000, abs=1e-3)
    assert region["field"].item() == pytest.approx(3.0 / 3, abs=1e-3)  # bone 3 mm, sliding 0, elsewhere 0
    assert region["total"].item() == pytest.approx(0.5 * region["field"].item(), abs=1e-9)
    with pytest.raises(ValueError, match="reg_mask"):
        RegistrationLoss(delta=0.5, field_weighting="region").terms(fixed, fixed, ddf, true_ddf=true_ddf)
    with pytest.raises(ValueError, match="field_weighting"):
        RegistrationLoss(delta=0.5, field_weighting="bones")
