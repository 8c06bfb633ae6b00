"""Continuum-mechanics quantities of a displacement field, batched and differentiable.

Conventions (shared by the losses and the metrics):

- A displacement field ``ddf`` has shape (B, D, *S) with D = 2 or 3 spatial dims, S the grid
  (X, Y[, Z]); channel k is the displacement along array axis k (MONAI ``Warp`` order).
- ``units="voxel"`` (default): ddf is in voxels, as MONAI ``DVF2DDF``/``Warp`` produce it.
  ``units="mm"``: ddf is already in millimetres.
- ``spacing``: voxel size in mm per array axis, given as ``None`` (1 mm), a float (isotropic),
  a sequence of D floats, or a tensor of shape (D,) or (B, D) (one spacing per batch item).
- Every derivative is physical: the gradient G has shape (B, D, D, *S) with
  ``G[:, k, l] = d u_k / d x_l`` (u and x in mm), by central differences inside the grid and
  one-sided differences at its border (``torch.gradient`` with ``edge_order=1``; computed by
  :func:`scripts.losses.differences.central_difference`, same values, a cheaper backward pass).
- Normal fields (B, D, *S) are unit vectors in physical (mm) space, channel k along array axis
  k, and zero outside the sliding region.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from scripts.losses.differences import central_difference

__all__ = [
    "as_spacing",
    "spatial_gradient",
    "gradient_components",
    "as_components",
    "gather_voxels",
    "jacobian_matrix",
    "jacobian_det",
    "det3",
    "cofactor_row",
    "jacobian_determinant",
    "jacobian_map",
    "linear_strain",
    "project_on_normals",
    "strain_energy",
    "finite_rigidity_energy",
    "sliding_strain_energy",
    "log_jacobian",
]

SpacingLike = None | float | Sequence[float] | torch.Tensor
Components = list[list[torch.Tensor]]


def check_field(ddf: torch.Tensor) -> int:
    """Validate a (B, D, *S) displacement field and return D (2 or 3)."""
    if not isinstance(ddf, torch.Tensor):
        raise TypeError(f"displacement field must be a torch.Tensor, got {type(ddf).__name__}")
    if ddf.ndim not in (4, 5):
        raise ValueError(f"displacement field must be (B, 2, X, Y) or (B, 3, X, Y, Z), got shape {tuple(ddf.shape)}")
    ndim = ddf.ndim - 2
    if ddf.shape[1] != ndim:
        raise ValueError(
            f"a {ndim}D displacement field needs {ndim} channels (one per array axis), got shape {tuple(ddf.shape)}"
        )
    if min(ddf.shape[2:]) < 2:
        raise ValueError(f"every spatial axis needs at least 2 voxels for finite differences, got {tuple(ddf.shape)}")
    return ndim


def as_spacing(spacing: SpacingLike, ndim: int, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Spacing (mm) as a (B, D) tensor with ``like``'s dtype and device."""
    if spacing is None:
        return torch.ones(batch, ndim, dtype=like.dtype, device=like.device)
    sp = torch.as_tensor(spacing, dtype=like.dtype, device=like.device)
    if sp.ndim == 0:
        sp = sp.repeat(ndim)
    if sp.ndim == 1:
        sp = sp.unsqueeze(0)
    if sp.ndim != 2 or sp.shape[-1] != ndim or sp.shape[0] not in (1, batch):
        raise ValueError(f"spacing must be a float, {ndim} floats or a ({batch}, {ndim}) tensor, got {spacing!r}")
    if not bool(torch.all(sp > 0)):
        raise ValueError(f"spacing must be positive, got {spacing!r}")
    return sp.expand(batch, ndim)


def gradient_components(ddf: torch.Tensor, spacing: SpacingLike = None, units: str = "voxel") -> Components:
    """Physical gradient of a displacement field as a D x D nested list of (B, *S) tensors.

    ``comps[k][l] = d u_k / d x_l`` (u and x in mm). Working on separate scalar fields instead of one
    (B, D, D, *S) tensor keeps every temporary small, which makes the losses faster and leaner.

    Args:
        ddf: (B, D, *S) displacement, in voxels (``units="voxel"``) or mm (``units="mm"``).
        spacing: voxel size in mm per array axis (see module docstring).
        units: ``"voxel"`` or ``"mm"``, the unit of ``ddf``.
    """
    ndim = check_field(ddf)
    if units not in ("voxel", "mm"):
        raise ValueError(f"units must be 'voxel' or 'mm', got {units!r}")
    sp = as_spacing(spacing, ndim, ddf.shape[0], ddf)
    unit_spacing = spacing is None or bool(torch.all(sp == 1))
    comps: Components = []
    # the channels by unbind, whose backward is one stack (indexing ddf[:, k] would fill a zeroed copy of the whole
    # field per channel and derivative in the backward pass)
    channels = ddf.unbind(1)
    for k in range(ndim):
        scales = [None] * ndim
        if not unit_spacing:
            # voxel units: d(u_k s_k)/d(i_l s_l) = (s_k / s_l) du_k/di_l; mm units: (1 / s_l) du_k/di_l
            numerator = sp[:, k] if units == "voxel" else torch.ones_like(sp[:, k])
            scales = [(numerator / sp[:, l]).reshape(-1, *([1] * ndim)) for l in range(ndim)]
        comps.append([central_difference(channels[k], 1 + l, scales[l]) for l in range(ndim)])
    return comps


def spatial_gradient(ddf: torch.Tensor, spacing: SpacingLike = None, units: str = "voxel") -> torch.Tensor:
    """Physical gradient of a displacement field: (B, D, D, *S), G[:, k, l] = d u_k / d x_l (mm / mm).

    Same arguments as :func:`gradient_components`; the per-voxel functions below accept either form.
    """
    return torch.stack([torch.stack(row, dim=1) for row in gradient_components(ddf, spacing, units)], dim=1)


def as_components(grad: torch.Tensor | Components) -> Components:
    """A (B, D, D, *S) gradient tensor as a nested list of (B, *S) views; lists pass through."""
    if isinstance(grad, torch.Tensor):
        return [[grad[:, k, l] for l in range(grad.shape[2])] for k in range(grad.shape[1])]
    return grad


def gather_voxels(comps: Components, index: torch.Tensor) -> Components:
    """The gradient at the flat voxel positions ``index`` (into B * prod(S)): a nested list of (N,) tensors."""
    return [[c.reshape(-1)[index] for c in row] for row in comps]


def jacobian_matrix(grad: torch.Tensor | Components) -> torch.Tensor:
    """J = I + grad, (B, D, D, *S)."""
    grad = grad if isinstance(grad, torch.Tensor) else torch.stack([torch.stack(r, dim=1) for r in grad], dim=1)
    ndim = grad.shape[1]
    eye = torch.eye(ndim, dtype=grad.dtype, device=grad.device).reshape(1, ndim, ndim, *([1] * (grad.ndim - 3)))
    return grad + eye


def jacobian_det(grad: torch.Tensor | Components) -> torch.Tensor:
    """det(I + grad) per voxel, closed form (D = 2 or 3): (B, *S)."""
    g = as_components(grad)
    if len(g) == 2:
        return (1 + g[0][0]) * (1 + g[1][1]) - g[0][1] * g[1][0]
    a, b, c = 1 + g[0][0], g[0][1], g[0][2]
    d, e, f = g[1][0], 1 + g[1][1], g[1][2]
    p, h, i = g[2][0], g[2][1], 1 + g[2][2]
    return a * (e * i - f * h) - b * (d * i - f * p) + c * (d * h - e * p)


def det3(m: Components) -> torch.Tensor:
    """det of the 3 x 3 matrices ``m[k][l]`` (tensors of one shape; J itself, not its gradient), expanded along the
    first row with in-place products: values only (no autograd graph; for hand-written backward passes), a new
    tensor."""
    minor = m[1][1] * m[2][2]
    det = minor.addcmul_(m[1][2], m[2][1], value=-1.0).mul_(m[0][0])
    minor = torch.mul(m[1][0], m[2][2])
    det.addcmul_(m[0][1], minor.addcmul_(m[1][2], m[2][0], value=-1.0), value=-1.0)
    minor = torch.mul(m[1][0], m[2][1], out=minor)
    return det.addcmul_(m[0][2], minor.addcmul_(m[1][1], m[2][0], value=-1.0))


def cofactor_row(m: Components, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row ``k`` of the cofactor matrix of the 3 x 3 matrices ``m[k][l]``, d det / d m[k][l] for l = 0, 1, 2: the
    cross product of the two other rows (values only)."""
    r1, r2 = m[(k + 1) % 3], m[(k + 2) % 3]
    return (
        torch.mul(r1[1], r2[2]).addcmul_(r1[2], r2[1], value=-1.0),
        torch.mul(r1[2], r2[0]).addcmul_(r1[0], r2[2], value=-1.0),
        torch.mul(r1[0], r2[1]).addcmul_(r1[1], r2[0], value=-1.0),
    )


def jacobian_determinant(ddf: torch.Tensor, spacing: SpacingLike = None, units: str = "voxel") -> torch.Tensor:
    """det(I + grad u) of a (B, D, *S) displacement field: (B, *S). Spacing-invariant for a voxel-unit field."""
    return jacobian_det(gradient_components(ddf, spacing, units))


def jacobian_map(ddf_vox: torch.Tensor, slab: int = 32) -> torch.Tensor:
    """det(I + grad u) of a (3, X, Y, Z) voxel-unit field, (X, Y, Z): :func:`jacobian_determinant` evaluated
    in slabs of ``slab`` slices along axis 0 with a one-slice halo (central differences inside, one-sided at
    the volume's border, exactly as on the whole volume), which keeps the temporaries in cache: faster and leaner."""
    size = ddf_vox.shape[1]
    out = torch.empty(ddf_vox.shape[1:], dtype=ddf_vox.dtype, device=ddf_vox.device)
    for start in range(0, size, slab):
        stop = min(start + slab, size)
        lo, hi = max(start - 1, 0), min(stop + 1, size)
        det = jacobian_determinant(ddf_vox[None, :, lo:hi])[0]
        out[start:stop] = det[start - lo : stop - lo]
    return out


def linear_strain(grad: torch.Tensor) -> torch.Tensor:
    """Small-strain tensor E = (grad + grad^T) / 2, (B, D, D, *S)."""
    return 0.5 * (grad + grad.transpose(1, 2))


def project_on_normals(ddf: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Normal component (u . n) n of a (B, D, *S) field on a (B, D, *S) normal field: (B, D, *S).

    Both are taken in the same (physical) units; a zero normal gives a zero projection.
    """
    if normals.shape != ddf.shape:
        raise ValueError(f"normals {tuple(normals.shape)} must have the field's shape {tuple(ddf.shape)}")
    return (ddf * normals).sum(dim=1, keepdim=True) * normals


def strain_energy(grad: torch.Tensor | Components) -> torch.Tensor:
    """||E||_F^2 = sum of squared eigenvalues of the linear strain, per voxel: grid shape of ``grad``.

    Exact closed form of the paper's sum of squared singular values of the symmetric E: no SVD,
    so the gradient is well defined also where E = 0.
    """
    g = as_components(grad)
    ndim = len(g)
    energy = sum(g[k][k].square() for k in range(ndim))
    for k in range(ndim):
        for l in range(k + 1, ndim):
            energy = energy + 0.5 * (g[k][l] + g[l][k]).square()
    return energy


def finite_rigidity_energy(grad: torch.Tensor | Components) -> torch.Tensor:
    """Staring et al. (2007) rigidity penalty per voxel: ||J^T J - I||_F^2 + (det J - 1)^2.

    Zero for any rotation, however large, unlike the linear strain (which grows as theta^2).
    """
    g = as_components(grad)
    ndim = len(g)
    jac = [[g[k][l] + (1.0 if k == l else 0.0) for l in range(ndim)] for k in range(ndim)]
    energy = (jacobian_det(g) - 1.0).square()
    for i in range(ndim):
        for j in range(i, ndim):
            gram = sum(jac[k][i] * jac[k][j] for k in range(ndim)) - (1.0 if i == j else 0.0)
            energy = energy + (1.0 if i == j else 2.0) * gram.square()
    return energy


def sliding_strain_energy(grad: torch.Tensor | Components, normals: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """||E_n||_F^2 of the field projected on each voxel's own normal n, per voxel.

    With n fixed at the voxel, grad(u_n) = n g^T with g = grad(u)^T n, E_n = (n g^T + g n^T) / 2 and
    ||E_n||_F^2 = (|n|^2 |g|^2 + (n . g)^2) / 2: the normal displacement must vary smoothly, the
    tangential displacement is free (sliding). Zero where the normal is zero.

    Args:
        grad: (B, D, D, *S) physical gradient (or its components, :func:`gradient_components`).
        normals: (B, D, *S) unit normals in mm space (zero outside the sliding region), or a list of
            D component tensors shaped like ``grad``'s components (e.g. gathered at N voxels).
    """
    g = as_components(grad)
    ndim = len(g)
    if isinstance(normals, torch.Tensor):
        if normals.ndim != g[0][0].ndim + 1 or normals.shape[1] != ndim or normals.shape[2:] != g[0][0].shape[1:]:
            raise ValueError(f"normals {tuple(normals.shape)} do not match the field's grid {tuple(g[0][0].shape)}")
        n = [normals[:, m] for m in range(ndim)]
    else:
        n = list(normals)
    proj = [sum(n[m] * g[m][l] for m in range(ndim)) for l in range(ndim)]
    n_sq = sum(c.square() for c in n)
    return 0.5 * (n_sq * sum(c.square() for c in proj) + sum(n[l] * proj[l] for l in range(ndim)).square())


def log_jacobian(det: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """log(max(det J, eps)), per voxel; same shape as ``det``."""
    return torch.log(torch.clamp(det, min=eps))
