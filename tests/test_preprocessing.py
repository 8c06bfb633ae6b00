"""One preprocessing for training, evaluation and inference (configs/ct.json declares the CT chain once; the
default of configs/inference.json reads it from there).

On a real CT stored on a non-RAS (flipped, LPS-like), anisotropic grid:
- the training/evaluation dataset (``registration_dataset("pairs", ...)`` with ``dataset_options``) and the inference
  dataset (``InferencePairDataset`` with the same ``preprocessing``) give the network the same input;
- a CT-preset checkpoint gives the same displacement through the evaluator's path and through the inference
  workflow with the CT override, and the written field is that displacement on the fixed image's native grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from scripts.inference.predict import run_inference_workflow
from scripts.io.resampling import field_to_fixed_grid

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
SMALL = {"image_size": [32, 32, 16], "channels": [4, 8, 16, 32, 64], "strides": [2, 2, 2, 2]}  # CT preset, smaller


@pytest.fixture(scope="module")
def ct_pair(ct_example_dir, tmp_path_factory) -> Path:
    """A real CT flipped on axes 0, 1 (LPS-like) and subsampled on axis 0 (6 x 3 x 3 mm), and a copy moved by a
    few voxels, with the segmentation as ``fixed_seg``; returns the pairs.json."""
    folder = tmp_path_factory.mktemp("ct_pair")
    img, seg = nib.load(ct_example_dir / "example_ct_sm.nii.gz"), nib.load(ct_example_dir / "example_seg.nii.gz")
    flip = np.diag([-2.0, -1.0, 1.0, 1.0])  # index i -> 2 i along axis 0 (flipped), flipped axis 1
    shape = img.shape
    flip[0, 3], flip[1, 3] = shape[0] - 1, shape[1] - 1
    affine = img.affine @ flip
    data = np.asanyarray(img.dataobj)[::-1, ::-1][::2].astype(np.int16)
    labels = np.asanyarray(seg.dataobj)[::-1, ::-1][::2].astype(np.uint8)
    moving = np.roll(data, (1, -2, 1), axis=(0, 1, 2))
    assert nib.aff2axcodes(affine)[:2] == ("L", "P")
    for name, array in (("fixed_0001", data), ("moving_0002", moving), ("fixed_seg", labels)):
        nib.save(nib.Nifti1Image(array, affine), str(folder / f"{name}.nii.gz"))
    entry = {"fixed": "fixed_0001.nii.gz", "moving": "moving_0002.nii.gz", "fixed_seg": "fixed_seg.nii.gz"}
    (folder / "pairs.json").write_text(json.dumps({"test": [entry]}))
    return folder / "pairs.json"


def parser(configs: tuple[str, ...], **overrides) -> ConfigParser:
    out = ConfigParser()
    out.read_config([str(BUNDLE_ROOT / "configs" / name) for name in configs])
    for key, value in {"bundle_root": str(BUNDLE_ROOT), **SMALL, **overrides}.items():
        out[key] = value
    return out


def evaluator_side(pairs_json: Path) -> tuple[dict, ConfigParser]:
    """Item 0 of the test split through the training/evaluation dataset (no cache)."""
    p = parser(("train.json", "ct.json", "evaluate.json"), dataset="pairs", dataset_dir=str(pairs_json), cache="none")
    return p.get_parsed_content("test#dataset")[0], p


def inference_side(
    pairs_json: Path, configs: tuple[str, ...] = ("inference.json", "ct.json")
) -> tuple[dict, ConfigParser]:
    folder = pairs_json.parent
    p = parser(
        configs,
        fixed=str(folder / "fixed_0001.nii.gz"),
        moving=str(folder / "moving_0002.nii.gz"),
    )
    return p.get_parsed_content("dataset")[0], p


@pytest.mark.parametrize("configs", [("inference.json", "ct.json"), ("inference.json",)])
def test_training_and_inference_give_the_network_the_same_input(ct_pair, configs):
    """With the CT override, and with inference.json alone (its default model is the CT model: the chain declared
    in ct.json, read through scripts.data.preprocessing)."""
    train_item, _ = evaluator_side(ct_pair)
    infer_item, _ = inference_side(ct_pair, configs)
    train_input = torch.cat([train_item["fixed"].as_tensor(), train_item["moving"].as_tensor()], dim=0).float()
    assert tuple(train_input.shape) == (2, *SMALL["image_size"])
    assert float(train_input.std()) > 0.1  # a real CT, windowed
    assert float((train_input - infer_item["image"]).abs().max()) <= 1e-6
    np.testing.assert_allclose(infer_item["pair"].net_affine, train_item["fixed"].affine.numpy(), atol=1e-6)
    assert nib.aff2axcodes(infer_item["pair"].net_affine) == ("R", "A", "S")  # the chain reoriented the LPS file


def test_ct_checkpoint_gives_the_same_field_in_evaluation_and_inference(ct_pair, tmp_path):
    torch.manual_seed(0)
    train_item, p_eval = evaluator_side(ct_pair)
    ckpt = tmp_path / "model.pt"
    torch.save(p_eval.get_parsed_content("network").state_dict(), ckpt)  # a CT-preset backbone (random weights)

    # the evaluator's path: its prepare_batch and network on the dataset item
    from monai.data import list_data_collate

    batch = list_data_collate([train_item])
    inputs, _, _, _ = p_eval.get_parsed_content("test#prepare_batch")(batch, torch.device("cpu"))
    net_eval = p_eval.get_parsed_content("registration_net").eval()
    net_eval.backbone.load_state_dict(torch.load(ckpt, weights_only=True))
    with torch.no_grad():
        ddf_eval = net_eval(inputs)["ddf"]

    # the inference path: the bundle workflow with the CT override, writing the field on the native grid
    folder = ct_pair.parent
    out = tmp_path / "out"
    run_inference_workflow(
        BUNDLE_ROOT,
        ("inference.json", "ct.json"),
        fixed=str(folder / "fixed_0001.nii.gz"),
        moving=str(folder / "moving_0002.nii.gz"),
        output_dir=str(out),
        ckpt_path=str(ckpt),
        learn2reg=True,
        rigid_prealign=False,  # the network's own field; the pre-alignment is tested in tests/test_rigid_prealign.py
        **SMALL,
    )
    infer_item, p_inf = inference_side(ct_pair)
    p_inf["rigid_prealign"] = False
    net_inf = p_inf.get_parsed_content("registration_net").eval()
    net_inf.backbone.load_state_dict(torch.load(ckpt, weights_only=True))
    with torch.no_grad():
        ddf_inf = p_inf.get_parsed_content("inferer")(infer_item["image"][None], net_inf)["ddf"]
    assert float(ddf_eval.abs().max()) > 0.05  # a real (random-model) field
    torch.testing.assert_close(ddf_inf, ddf_eval, atol=1e-5, rtol=1e-4)

    pair = infer_item["pair"]
    expected = field_to_fixed_grid(ddf_eval, pair.net_affine, pair.fixed_affine, pair.fixed_shape)
    summary = json.loads((out / "summary.json").read_text())
    written = nib.load(summary["pairs"][0]["outputs"]["learn2reg"]).get_fdata()  # fixed-grid voxels (X, Y, Z, 3)
    np.testing.assert_allclose(written, expected.permute(1, 2, 3, 0).numpy(), atol=1e-4)


@pytest.mark.parametrize("buffer_voxels", [3000, 2**24])  # many chunks per axis; one
def test_anti_aliased_resize_gives_monais_values_and_affine(buffer_voxels):
    """The CT chain's AntiAliasedResized = MONAI's Resized(anti_aliasing=True): same values to float rounding, same
    affine and recorded operation; axis 0 shrinks 4x, axis 1 2.5x, axis 2 keeps its size, axis 3 of the output grows
    (no smoothing where nothing shrinks)."""
    from monai.data import MetaTensor
    from monai.transforms import Resized

    from scripts.data.transforms import AntiAliasedResized

    affine = torch.tensor([[-2.0, 0.1, 0, 10], [0, 1.5, 0, -3], [0, 0, 3, 4], [0, 0, 0, 1]])
    img = MetaTensor(torch.rand(2, 64, 50, 17, generator=torch.Generator().manual_seed(0)) * 1000, affine=affine)
    for size in ([16, 20, 17], [16, 20, 30]):
        ref = Resized("image", size, mode="trilinear", anti_aliasing=True)({"image": img.clone()})["image"]
        ours = AntiAliasedResized("image", size, buffer_voxels=buffer_voxels)({"image": img.clone()})["image"]
        assert tuple(ours.shape) == (2, *size) and float((ref - img.mean()).abs().max()) > 100  # not a constant
        torch.testing.assert_close(ours.as_tensor(), ref.as_tensor(), atol=1e-3, rtol=1e-5)  # of values up to 1000
        torch.testing.assert_close(ours.affine, ref.affine)
        assert [op["class"] for op in ours.applied_operations] == [op["class"] for op in ref.applied_operations]
    with pytest.raises(ValueError, match=r"shape \(64, 50, 17\) is not \(C, \*S\)"):
        AntiAliasedResized("image", [16, 20, 17])({"image": img[0]})
