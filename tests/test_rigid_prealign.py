"""The rigid pre-alignment on the bones before the CT network (scripts/networks/rigid.py, configs/inference.json).

- a rigid offset of the whole patient (3 degrees, 4-6 mm, on an anisotropic grid) is found from the bones, also when
  the organs move 6 mm along the body axis as in a breath (a whole-body fit follows the organs);
- the network's field is composed with it exactly (a backbone that predicts nothing gives back the rigid map);
- the CT model of ``configs/inference.json`` uses it (threshold = 250 HU through ``ct.json``'s HU window), the
  synthetic model does not, ``--rigid_prealign false`` turns it off;
- ``run inference`` on a real CT moved on the table finds the shift at the bones (without the pre-alignment the
  shipped network does not move them);
- training with ``--rigid_prealign true`` (off by default) aligns each training pair the same way: the batch hands the
  network the grid's spacing and the network's field is composed with the rigid map found.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.networks.blocks import Warp
from scipy import ndimage as ndi

from scripts.networks.registration import RegistrationNet
from scripts.networks.rigid import RigidPrealign, compose_rigid, inverse_rigid, rigid_sampling_field, rotation_matrix

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
SPACING = torch.tensor([[4.5, 4.7, 1.9]])  # mm: the real CT's network grid is this anisotropic
SHAPE = (48, 40, 64)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _body(organ_shift_mm: float = 0.0) -> torch.Tensor:
    """(1, 1, *SHAPE) on the network's input scale: a body (0.78), a lung-like region (0.15) that can move along the
    last (body) axis by ``organ_shift_mm``, a spine, rib arcs and a sternum (1.0)."""
    p = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in SHAPE], indexing="ij"))
    p = p * SPACING.view(3, 1, 1, 1)
    c = (torch.tensor(SHAPE, dtype=torch.float32) - 1).view(3, 1, 1, 1) / 2 * SPACING.view(3, 1, 1, 1)
    x, y, z = p - c
    image = torch.where((x / 95) ** 2 + (y / 75) ** 2 < 1, 0.78, 0.0)
    organ = ((x - 20) / 60) ** 2 + ((y - 5) / 45) ** 2 + ((z + organ_shift_mm) / 40) ** 2 < 1
    image = torch.where(organ, 0.15, image)  # a lung base: the highest contrast in the body
    spine = ((x / 14) ** 2 + ((y + 50) / 14) ** 2 < 1) & (torch.remainder(z, 30) < 24)
    ribs = ((x / 88) ** 2 + (y / 68) ** 2 > 1) & ((x / 95) ** 2 + (y / 75) ** 2 < 1) & (torch.remainder(z, 25) < 8)
    ribs = ribs & (y > -40) & ((x < 0) | (y < 30))  # arcs, not rings: a rotation about the body axis shows
    sternum = ((x + 8) / 10) ** 2 + ((y - 62) / 8) ** 2 < 1
    image = torch.where(spine | ribs | sternum, 1.0, image)
    return image[None, None]


def _moved(image: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """The image with the patient moved by the rigid map (fixed(x) = moved(M(x)))."""
    return Warp("bilinear", "zeros")(image, rigid_sampling_field(rotation, translation, SHAPE, SPACING))


def _truth() -> tuple[torch.Tensor, torch.Tensor]:
    axis = torch.tensor([0.3, -0.5, 0.8])
    return rotation_matrix((axis / axis.norm() * math.radians(3.0))[None]), torch.tensor([[4.0, -5.0, 6.0]])


def _moved_inverse(image: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """moving(p) = image(M^-1(p)): the patient moved by M (then fixed(x) = moving(M(x)))."""
    return _moved(image, *inverse_rigid(rotation, translation))


@pytest.mark.parametrize("organ_shift_mm", [0.0, 6.0])
def test_the_patients_rigid_offset_is_found_from_the_bones(organ_shift_mm):
    rotation, translation = _truth()
    fixed = _body()
    moving = _moved_inverse(_body(organ_shift_mm), rotation, translation)
    found_rotation, found_translation = RigidPrealign(bone_threshold=0.9)(fixed, moving, SPACING)
    trace = (found_rotation.transpose(1, 2) @ rotation).diagonal(dim1=1, dim2=2).sum()
    angle = torch.rad2deg(torch.arccos(((trace - 1) / 2).clamp(-1, 1)))  # the rotation between found and true
    assert float(angle) < 0.75, float(angle)
    assert float((found_translation - translation).abs().max()) < 0.8, (found_translation, translation)


@pytest.mark.parametrize("case", ["ct0", "ct0-cranial"])
def test_on_the_held_out_ct_breathing_the_bones_keep_the_fit_off_the_breath(case, ct_example_dir):
    """The held-out CT with a known breath and no offset of the patient (the bones hardly move): a fit of the whole
    body follows the organs 4-6 mm along the body axis, the fit on the bones stays within 2.5 mm."""
    from monai.transforms import Compose

    from benchmarks.benchmark_ct_refine import build_case
    from scripts.data.generated import _meta_tensor

    parser = ConfigParser()
    parser.read_config([str(BUNDLE_ROOT / "configs" / c) for c in ("train.json", "ct.json", "ct_generated.json")])
    chain = Compose(parser.get_parsed_content("preprocessing").transforms[1:])  # after the loader
    breath = build_case(case)
    fixed, moving = (
        chain({"image": _meta_tensor(breath[k], breath["affine"], k)})["image"] for k in ("fixed", "moving")
    )
    spacing = torch.as_tensor(np.sqrt((np.asarray(fixed.affine)[:3, :3] ** 2).sum(0)), dtype=torch.float32)[None]
    fixed, moving = fixed[None].as_tensor().float(), moving[None].as_tensor().float()
    axis = 2  # the network grid is RAS (ct.json's Orientationd): the body axis is the last
    _, bones = RigidPrealign(bone_threshold=parser.get_parsed_content("bone_threshold"))(fixed, moving, spacing)
    _, body = RigidPrealign(bone_threshold=2.0)(fixed, moving, spacing)  # no voxel is "bone": the whole body
    assert abs(float(bones[0, axis])) < 2.5 and abs(float(body[0, axis])) > 4.0, (bones, body)


def test_the_networks_field_is_composed_with_the_rigid_map_exactly():
    rotation, translation = _truth()
    fixed = _body()
    moving = _moved_inverse(fixed, rotation, translation)

    class Nothing(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 3, *x.shape[2:])

    net = RegistrationNet(Nothing(), integration_steps=7, prealign=RigidPrealign(bone_threshold=0.9)).eval()
    with torch.no_grad():
        out = net(torch.cat([fixed, moving], dim=1), spacing=SPACING)
    prealign = net.prealign
    found = prealign(fixed, moving, SPACING)
    torch.testing.assert_close(out["ddf"], rigid_sampling_field(*found, SHAPE, SPACING), atol=1e-4, rtol=0)
    expected = rigid_sampling_field(rotation, translation, SHAPE, SPACING)
    body = (fixed > 0.5).expand(1, 3, *SHAPE)
    assert float(((out["ddf"] - expected) * SPACING.view(1, 3, 1, 1, 1)).norm(dim=1)[body[:, 0]].mean()) < 1.0
    inside = fixed > 0.5
    assert (out["warped"] - fixed).abs()[inside].mean() < 0.3 * (moving - fixed).abs()[inside].mean()
    # a displacement d to the aligned image composes as M(x + d(x)) - x
    d = torch.full((1, 3, *SHAPE), 0.5)
    p = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in SHAPE], indexing="ij"))[None]
    p_mm = (p + d) * SPACING.view(1, 3, 1, 1, 1)
    c = (torch.tensor(SHAPE, dtype=torch.float32) - 1).view(1, 3, 1, 1, 1) / 2 * SPACING.view(1, 3, 1, 1, 1)
    mapped = torch.einsum("bij,bj...->bi...", rotation, p_mm - c) + c + translation.view(1, 3, 1, 1, 1)
    composed = compose_rigid(rotation, translation, d, SPACING)
    torch.testing.assert_close(composed, mapped / SPACING.view(1, 3, 1, 1, 1) - p, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="spacing"):
        net(torch.cat([fixed, moving], dim=1))
    # the rigid map alone comes back too (the refinement's cavity start uses it outside the cavity) ...
    torch.testing.assert_close(out["rigid_ddf"], rigid_sampling_field(*found, SHAPE, SPACING), atol=1e-4, rtol=0)
    # ... and a rigid map found elsewhere (e.g. on a finer grid) replaces the network's own search

    class Refuse(torch.nn.Module):
        def forward(self, *args):
            raise AssertionError("the pre-alignment ran although a rigid map was given")

    net.prealign = Refuse()
    with torch.no_grad():
        given = net(torch.cat([fixed, moving], dim=1), spacing=SPACING, rigid=(rotation, translation))
    torch.testing.assert_close(given["ddf"], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(given["rigid_ddf"], expected, atol=1e-4, rtol=0)


def _registration_net(configs: list[str], **overrides):
    parser = ConfigParser()
    parser.read_config([str(BUNDLE_ROOT / "configs" / c) for c in configs])
    parser["bundle_root"] = str(BUNDLE_ROOT)
    for key, value in overrides.items():
        parser[key] = value
    return parser.get_parsed_content("registration_net"), parser


def test_the_ct_model_prealigns_the_synthetic_model_does_not_and_the_option_turns_it_off():
    net, _ = _registration_net(["inference.json"])
    ct = ConfigParser()
    ct.read_config(str(BUNDLE_ROOT / "configs" / "ct.json"))
    assert isinstance(net.prealign, RigidPrealign)
    # the shipped CT model's grid (40 x 32 x 24, 9 mm in-plane voxels) keeps few voxels of a real CT above 250 HU: it
    # aligns on those above 120 HU; the AbdomenCTCT preset of ct.json (a finer grid) keeps 250 HU
    assert net.prealign.bone_threshold == pytest.approx((120 + 1200) / 1600)
    assert ct.get_parsed_content("bone_threshold") == pytest.approx((250 + 1200) / 1600)
    merged, _ = _registration_net(["inference.json", "ct.json", "ct_generated.json"])
    assert merged.prealign.bone_threshold == pytest.approx(net.prealign.bone_threshold)
    assert _registration_net(["inference.json", "synthetic.json"])[0].prealign is None
    assert _registration_net(["inference.json"], rigid_prealign="false")[0].prealign is None


def test_inference_finds_a_real_ct_moved_on_the_table(ct_example_dir, tmp_path):
    from scripts.inference.predict import run_inference_workflow

    if not (BUNDLE_ROOT / "models" / "model_ct.pt").is_file():
        pytest.skip("models/model_ct.pt is not there (the CT model ships with the bundle)")
    ct = nib.load(str(ct_example_dir / "example_ct_sm.nii.gz"))
    volume = np.asanyarray(ct.dataobj).astype(np.float32)
    shift_mm = np.array([6.0, -4.5, 4.0])  # RAS, the array axes of this file (3 mm voxels)
    moved = ndi.shift(volume, shift_mm / 3.0, order=1, mode="nearest")  # moving(p) = fixed(p - s)
    nib.save(nib.Nifti1Image(np.round(moved).astype(np.int16), ct.affine), str(tmp_path / "moved.nii.gz"))
    bones = ndi.binary_erosion(volume > 250)  # the fixed image's bones
    for prealign, expect in (("true", True), ("false", False)):
        out = tmp_path / f"out_{prealign}"
        run_inference_workflow(BUNDLE_ROOT, ["inference.json"], fixed=str(ct_example_dir / "example_ct_sm.nii.gz"),
                               moving=str(tmp_path / "moved.nii.gz"), output_dir=str(out),
                               rigid_prealign=prealign)  # fmt: skip
        ddf = nib.load(str(next(out.glob("*_ddf.nii.gz")))).get_fdata()[..., 0, :] * [-1, -1, 1]  # LPS -> RAS mm
        error = np.linalg.norm(ddf[bones] - shift_mm, axis=1).mean()
        if expect:  # fixed(x) = moving(x + s): the field is the shift at the bones, give or take the network's own
            assert error < 2.5, error  # motion on top (1.29 mm measured, bundle 0.9.6; 1.53 mm with 0.9.0's model)
        else:
            assert error > 6.0, error  # the network alone does not find the patient's shift (8.33 mm measured)


def test_training_with_the_option_prealigns_each_pair_as_inference_does():
    """``--rigid_prealign true`` in training: the trainer's batch passes the spacing (from the fixed image's affine)
    and the training network aligns on the bones before its backbone, so that it learns the motion left after the
    alignment that inference performs; off by default."""
    rotation, translation = _truth()
    fixed = _body()
    moving = _moved_inverse(fixed, rotation, translation)
    affine = torch.diag(torch.tensor([*SPACING[0].tolist(), 1.0]))
    batch = {"fixed": MetaTensor(fixed, affine=affine), "moving": MetaTensor(moving, affine=affine),
             "moving_label": torch.zeros_like(fixed)}  # fmt: skip
    assert _registration_net(["train.json", "ct.json"])[0].prealign is None
    assert _registration_net(["train.json", "ct.json"], rigid_prealign="true")[0].prealign.bone_threshold == (
        pytest.approx((250 + 1200) / 1600)
    )
    net, parser = _registration_net(["train.json", "ct.json", "ct_generated.json"])  # the CT preset: on, at 120 HU
    assert isinstance(net.prealign, RigidPrealign)
    assert net.prealign.bone_threshold == pytest.approx((120 + 1200) / 1600)
    for stage in ("train", "validate"):
        inputs, _, args, kwargs = parser.get_parsed_content(f"{stage}#prepare_batch")(batch)
        torch.testing.assert_close(kwargs["spacing"], SPACING)
    net.backbone = torch.nn.Conv3d(2, 3, 1)  # a field of about nothing: what is left is the rigid map
    torch.nn.init.zeros_(net.backbone.weight), torch.nn.init.zeros_(net.backbone.bias)
    with torch.no_grad():
        ddf = net(inputs, *args, **kwargs)["ddf"]
    error = ((ddf - rigid_sampling_field(rotation, translation, SHAPE, SPACING)) * SPACING.view(1, 3, 1, 1, 1)).norm(
        dim=1
    )
    assert float(error[(fixed > 0.5)[:, 0]].mean()) < 1.0
