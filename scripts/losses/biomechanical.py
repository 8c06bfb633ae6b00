"""Biomechanical regularisers and the full registration loss.

All losses take a displacement field ``ddf`` of shape (B, D, *S) (D = 2 or 3; channel k along
array axis k) in voxel units by default, with the voxel ``spacing`` in mm, and evaluate the
mechanics in millimetres (see :mod:`scripts.losses.mechanics`). Region masks are (B, 1, *S) or (B, *S),
boolean or float weights; a loss is the (weighted) mean of its per-voxel term over its region,
and 0 (never NaN) when the region is empty.

- :class:`RigidityLoss`   bones: ||E||_F^2 (paper, default) or the finite-rotation-exact
  ||J^T J - I||_F^2 + (det J - 1)^2 (Staring et al. 2007, ``mode="finite"``).
- :class:`ShearingLoss`   sliding interfaces: ||E_n||_F^2 of the field projected on the normal.
- :class:`JacobianLoss`   everything else: (log max(det J, eps))^2.
- :class:`BiomechanicalLoss` the three on a regularisation label map (0 Jacobian, 1 rigid,
  2 sliding), or the paper's "Jacobian only" baseline.
- :class:`RegistrationLoss` alpha * similarity + beta * Dice + gamma * regulariser.
"""

from __future__ import annotations

import torch
from monai.losses import DiceLoss, LocalNormalizedCrossCorrelationLoss
from torch import nn
from torch.nn import functional as F

from scripts.io.errors import InputError
from scripts.losses.mechanics import (
    Components,
    SpacingLike,
    as_spacing,
    finite_rigidity_energy,
    gather_voxels,
    gradient_components,
    jacobian_det,
    log_jacobian,
    sliding_strain_energy,
    strain_energy,
)
from scripts.regions.labels import JACOBIAN, RIGID, SLIDING

__all__ = [
    "JACOBIAN",
    "RIGID",
    "SLIDING",
    "REGULARISERS",
    "region_mean",
    "RigidityLoss",
    "ShearingLoss",
    "JacobianLoss",
    "BiomechanicalLoss",
    "RegistrationLoss",
]

# the regulariser choices, from the paper's baseline to the full model
REGULARISERS = ("jacobian", "rigidity_jacobian", "rigidity_shearing_jacobian")


def _as_weights(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """A (B, 1, *S) or (B, *S) mask as float weights of shape ``like`` (B, *S)."""
    if mask is None:
        return None
    if mask.ndim == like.ndim + 1 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.shape != like.shape:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match the field's grid (B, *S) = {tuple(like.shape)}"
        )
    return mask.to(like.dtype)


def region_mean(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean of per-voxel ``values`` (B, *S) over ``weights`` (B, *S); 0 for an empty region."""
    if weights is None:
        return values.mean()
    total = weights.sum()
    weighted = torch.where(weights > 0, values, torch.zeros_like(values)) * weights
    return weighted.sum() / total.clamp_min(torch.finfo(values.dtype).tiny)


def jacobian_term(det: torch.Tensor, eps: float, fold_penalty: float) -> torch.Tensor:
    """(log max(det, eps))^2 per voxel, plus ``fold_penalty * relu(eps - det)`` so folds keep a gradient."""
    term = log_jacobian(det, eps).square()
    if fold_penalty > 0:
        term = term + fold_penalty * F.relu(eps - det)
    return term


def rigidity_term(grad: Components, mode: str) -> torch.Tensor:
    return strain_energy(grad) if mode == "linear" else finite_rigidity_energy(grad)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; else an :class:`InputError` (a config option: one ``error:`` line)."""
    if value not in choices:
        raise InputError(f"{name} must be one of {choices}, got {value!r}")
    return value


class _FieldLoss(nn.Module):
    """Holds the default spacing and units of the fields a loss receives."""

    def __init__(self, spacing: SpacingLike = None, units: str = "voxel"):
        super().__init__()
        self.spacing = spacing
        self.units = _check_choice("units", units, ("voxel", "mm"))

    def gradient(self, ddf: torch.Tensor, spacing: SpacingLike) -> Components:
        return gradient_components(ddf, self.spacing if spacing is None else spacing, self.units)


class RigidityLoss(_FieldLoss):
    """Mean over the rigid region of ||E||_F^2 (``mode="linear"``, the paper) or of the exact
    rigidity penalty ||J^T J - I||_F^2 + (det J - 1)^2 (``mode="finite"``).

    The linear strain of a rotation by theta is O(theta^2): it opposes large rigid rotations of a
    bone; the finite variant is zero for every rotation.
    """

    def __init__(self, mode: str = "linear", spacing: SpacingLike = None, units: str = "voxel"):
        super().__init__(spacing, units)
        self.mode = _check_choice("mode", mode, ("linear", "finite"))

    def forward(self, ddf: torch.Tensor, mask: torch.Tensor | None = None, spacing: SpacingLike = None) -> torch.Tensor:
        """ddf (B, D, *S); mask (B, 1, *S) or (B, *S) rigid region (all voxels if None): scalar."""
        term = rigidity_term(self.gradient(ddf, spacing), self.mode)
        return region_mean(term, _as_weights(mask, term))


class ShearingLoss(_FieldLoss):
    """Mean over the sliding region of ||E_n||_F^2, the strain of the field projected on the
    per-voxel interface normal n: the normal displacement must be smooth, sliding is free."""

    def forward(
        self,
        ddf: torch.Tensor,
        normals: torch.Tensor,
        mask: torch.Tensor | None = None,
        spacing: SpacingLike = None,
    ) -> torch.Tensor:
        """ddf (B, D, *S); normals (B, D, *S) unit in mm space; mask (default: where n != 0): scalar."""
        term = sliding_strain_energy(self.gradient(ddf, spacing), normals)
        weights = _as_weights(mask, term) if mask is not None else (normals.abs().sum(dim=1) > 0).to(term.dtype)
        return region_mean(term, weights)


class JacobianLoss(_FieldLoss):
    """Mean of (log max(det J, eps))^2: symmetric in compression and expansion.

    With the hard threshold a folded voxel (det J <= 0) adds the constant (log eps)^2 with no
    gradient; ``fold_penalty > 0`` adds ``fold_penalty * relu(eps - det J)`` so that folds are
    pushed back.
    """

    def __init__(self, eps: float = 1e-9, fold_penalty: float = 0.0, spacing: SpacingLike = None, units: str = "voxel"):
        super().__init__(spacing, units)
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.eps, self.fold_penalty = eps, fold_penalty

    def forward(self, ddf: torch.Tensor, mask: torch.Tensor | None = None, spacing: SpacingLike = None) -> torch.Tensor:
        """ddf (B, D, *S); mask (B, 1, *S) or (B, *S) (all voxels if None): scalar."""
        det = jacobian_det(self.gradient(ddf, spacing))
        term = jacobian_term(det, self.eps, self.fold_penalty)
        return region_mean(term, _as_weights(mask, term))


class BiomechanicalLoss(_FieldLoss):
    """Tissue-specific regulariser on a regularisation label map.

    ``reg_mask`` (B, 1, *S) holds 0 (Jacobian), 1 (rigid), 2 (sliding) per voxel of the fixed grid.
    Modes (:data:`REGULARISERS`):

    - ``"jacobian"``: the paper's baseline, log-Jacobian on every voxel (``reg_mask`` unused);
    - ``"rigidity_jacobian"``: rigidity on 1, log-Jacobian on 0 and 2;
    - ``"rigidity_shearing_jacobian"``: rigidity on 1, shearing on 2, log-Jacobian on 0.

    The result is the sum of the three terms (an empty region adds 0). The gradient of the field is computed once
    and shared by the three terms. ``weighting``:

    - ``"region"`` (the paper's reference code): each term is the mean over its own region, so a voxel of a small
      region weighs more: on the synthetic shearing set at 32³ a box voxel weighs ~16x and a contact-slab voxel
      ~150x a background voxel, and the same ``gamma`` is a much stronger prior for the full model than for the
      Jacobian-only baseline;
    - ``"volume"``: each term is the sum over its region divided by the number of voxels of the grid, so every voxel
      weighs the same in every region and the total is the mean per-voxel regulariser. For the baseline
      (``"jacobian"``) both weightings are the same.
    """

    def __init__(
        self,
        mode: str = "rigidity_shearing_jacobian",
        rigidity: str = "linear",
        eps: float = 1e-9,
        fold_penalty: float = 0.0,
        spacing: SpacingLike = None,
        units: str = "voxel",
        weighting: str = "region",
    ):
        super().__init__(spacing, units)
        self.mode = _check_choice("mode", mode, REGULARISERS)
        self.rigidity = _check_choice("rigidity", rigidity, ("linear", "finite"))
        self.weighting = _check_choice("weighting", weighting, ("region", "volume"))
        self.eps, self.fold_penalty = eps, fold_penalty

    def terms(
        self,
        ddf: torch.Tensor,
        reg_mask: torch.Tensor | None = None,
        normals: torch.Tensor | None = None,
        spacing: SpacingLike = None,
    ) -> dict[str, torch.Tensor]:
        """The terms ``jacobian``, ``rigidity``, ``shearing`` (region means, or with ``weighting="volume"`` region
        sums over the grid's voxel count) and their sum ``total`` (scalars)."""
        grad = self.gradient(ddf, spacing)
        jac_term = jacobian_term(jacobian_det(grad), self.eps, self.fold_penalty)
        zero = jac_term.new_zeros(())
        out = {"jacobian": jac_term.mean(), "rigidity": zero, "shearing": zero}
        if self.mode != "jacobian":
            if reg_mask is None:
                raise ValueError(f"mode {self.mode!r} needs the regularisation label map reg_mask (0/1/2)")
            labels = _as_weights(reg_mask, jac_term).round()
            rigid, sliding = labels == RIGID, labels == SLIDING
            full = self.mode == "rigidity_shearing_jacobian"
            jacobian_region = ~(rigid | sliding) if full else ~rigid  # sliding voxels get the log-Jacobian otherwise
            out["jacobian"] = region_mean(jac_term, jacobian_region.to(jac_term.dtype))
            if full:
                if sliding.any():
                    if normals is None:
                        raise ValueError("mode 'rigidity_shearing_jacobian' needs normals (B, D, *S) on sliding voxels")
                    index = sliding.reshape(-1).nonzero()[:, 0]
                    if normals.shape != ddf.shape:
                        raise ValueError(
                            f"normals {tuple(normals.shape)} must have the field's shape {tuple(ddf.shape)}"
                        )
                    n = [normals[:, m].reshape(-1)[index] for m in range(normals.shape[1])]
                    out["shearing"] = sliding_strain_energy(gather_voxels(grad, index), n).mean()
            if rigid.any():
                # the strain is evaluated on the rigid voxels only: small temporaries, fast backward
                index = rigid.reshape(-1).nonzero()[:, 0]
                out["rigidity"] = rigidity_term(gather_voxels(grad, index), self.rigidity).mean()
            if self.weighting == "volume":
                total = float(labels.numel())
                out["rigidity"] = out["rigidity"] * (float(rigid.sum()) / total)
                out["shearing"] = out["shearing"] * (float(sliding.sum()) / total)
                out["jacobian"] = out["jacobian"] * (float(jacobian_region.sum()) / total)
        out["total"] = out["jacobian"] + out["rigidity"] + out["shearing"]
        return out

    def forward(
        self,
        ddf: torch.Tensor,
        reg_mask: torch.Tensor | None = None,
        normals: torch.Tensor | None = None,
        spacing: SpacingLike = None,
    ) -> torch.Tensor:
        """ddf (B, D, *S); reg_mask (B, 1, *S) 0/1/2; normals (B, D, *S): scalar."""
        return self.terms(ddf, reg_mask, normals, spacing)["total"]


class RegistrationLoss(nn.Module):
    """alpha * similarity(fixed, warped) + beta * Dice(fixed_label, warped_label) + gamma * regulariser
    [+ delta * field error].

    Args:
        similarity: ``"mse"`` or ``"lncc"`` (MONAI's local normalised cross-correlation loss,
            -NCC^2 in [-1, 0]).
        alpha, beta, gamma: weights; a term whose weight is 0 is not computed (reported as 0).
        delta: weight of the supervised ``field`` term, the mean endpoint error (mm with ``spacing``, else voxels)
            against a known field ``true_ddf`` (generated training data). A departure from the paper, which learns
            from the images alone; 0 (default) keeps the paper's loss.
        field_weighting: how the ``field`` term averages the endpoint error. ``"voxel"`` (default): over the whole
            grid, so that the bones, a few % of its voxels, hardly count and a smooth field that drags them with the
            organs costs little. ``"region"``: the mean of the per-region means over the labels of ``reg_mask``
            (0 elsewhere, 1 bone, 2 sliding) present in the batch, so that the bones weigh as much as the rest.
        regulariser: a :class:`BiomechanicalLoss` (default: the full model).
        lncc_kernel_size: window of the LNCC loss, voxels.
    """

    def __init__(
        self,
        similarity: str = "mse",
        alpha: float = 1.0,
        beta: float = 0.0,
        gamma: float = 0.1,
        regulariser: BiomechanicalLoss | None = None,
        lncc_kernel_size: int = 9,
        delta: float = 0.0,
        field_weighting: str = "voxel",
    ):
        super().__init__()
        similarity = _check_choice("similarity", similarity, ("mse", "lncc"))
        self.field_weighting = _check_choice("field_weighting", field_weighting, ("voxel", "region"))
        if min(alpha, beta, gamma, delta) < 0:
            raise ValueError(
                f"loss weights must be non-negative, got alpha={alpha}, beta={beta}, gamma={gamma}, delta={delta}"
            )
        self.alpha, self.beta, self.gamma, self.delta = alpha, beta, gamma, delta
        self.regulariser = regulariser if regulariser is not None else BiomechanicalLoss()
        self.similarity = (
            nn.MSELoss()
            if similarity == "mse"
            else LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=lncc_kernel_size)
        )
        self.dice = DiceLoss(include_background=False, to_onehot_y=True)
        self.last_terms: dict[str, float] = {}

    def terms(
        self,
        fixed: torch.Tensor,
        warped: torch.Tensor,
        ddf: torch.Tensor,
        reg_mask: torch.Tensor | None = None,
        normals: torch.Tensor | None = None,
        fixed_label: torch.Tensor | None = None,
        warped_label: torch.Tensor | None = None,
        spacing: SpacingLike = None,
        true_ddf: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """All loss terms as scalars: ``similarity``, ``dice``, ``jacobian``, ``rigidity``, ``shearing``,
        ``regulariser``, ``field`` and the weighted ``total``.

        Args:
            fixed, warped: (B, 1, *S) images.
            ddf: (B, D, *S) displacement (voxels unless the regulariser says mm).
            reg_mask, normals: regularisation label map (B, 1, *S) and normals (B, D, *S) on the fixed grid.
            fixed_label: (B, 1, *S) integer labels; warped_label: (B, C, *S) one-hot moving labels
                warped bilinearly (C classes, background first). Needed when ``beta > 0``.
            true_ddf: (B, D, *S) known field, same units as ``ddf``. Needed when ``delta > 0``.
        """
        out = {"similarity": self.similarity(warped, fixed)}
        zero = out["similarity"].new_zeros(())
        reg = {"jacobian": zero, "rigidity": zero, "shearing": zero, "total": zero}
        if self.gamma > 0:
            reg = self.regulariser.terms(ddf, reg_mask, normals, spacing)
        out["dice"] = zero
        if self.beta > 0:
            if fixed_label is None or warped_label is None:
                raise ValueError("the Dice term (beta > 0) needs fixed_label and warped one-hot moving labels")
            out["dice"] = self.dice(warped_label, fixed_label)
        out.update(jacobian=reg["jacobian"], rigidity=reg["rigidity"], shearing=reg["shearing"])
        out["regulariser"] = reg["total"]
        out["field"] = zero
        if self.delta > 0:
            if true_ddf is None:
                raise ValueError("the field term (delta > 0) needs the known field true_ddf (a generated dataset)")
            sp = as_spacing(spacing, ddf.shape[1], ddf.shape[0], ddf).reshape(*ddf.shape[:2], *[1] * (ddf.ndim - 2))
            error = (((ddf - true_ddf) * sp).square().sum(1) + 1e-6).sqrt()
            out["field"] = self._field_mean(error, reg_mask)
        out["total"] = self.alpha * out["similarity"] + self.beta * out["dice"] + self.gamma * out["regulariser"]
        out["total"] = out["total"] + self.delta * out["field"]
        return out

    def _field_mean(self, error: torch.Tensor, reg_mask: torch.Tensor | None) -> torch.Tensor:
        """The mean of the endpoint error ``error`` (B, *S) as ``field_weighting`` says."""
        if self.field_weighting == "voxel":
            return error.mean()
        if reg_mask is None:
            raise ValueError("field_weighting 'region' needs the regularisation label map reg_mask (0/1/2)")
        labels = _as_weights(reg_mask, error).round()
        means = [region_mean(error, (labels == k).to(error.dtype)) for k in labels.unique().tolist()]
        return torch.stack(means).mean()

    def forward(self, pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted total loss (scalar) from the workflow's dicts.

        Args:
            pred: :class:`scripts.networks.registration.RegistrationNet` output (``warped``, ``ddf``, optional
                ``warped_label``).
            target: the batch targets (``fixed`` and optional ``reg_mask``, ``normals``, ``fixed_label``,
                ``spacing``), as :class:`scripts.networks.registration.PrepareRegistrationBatch` gives them.

        The detached terms of the last call are kept in ``last_terms`` for logging.
        """
        terms = self.terms(
            target["fixed"],
            pred["warped"],
            pred["ddf"],
            reg_mask=target.get("reg_mask"),
            normals=target.get("normals"),
            fixed_label=target.get("fixed_label"),
            warped_label=pred.get("warped_label"),
            spacing=target.get("spacing"),
            true_ddf=target.get("true_ddf") if self.delta > 0 else None,
        )
        self.last_terms = {key: float(value.detach()) for key, value in terms.items()}
        return terms["total"]
