"""The inference's check that the network's field makes the pair more alike (scripts/inference/modality.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.inference.modality import alignment_change, check_alignment

BUNDLE_ROOT = Path(__file__).resolve().parents[1]


def _blob_pair(shift: int = 2) -> torch.Tensor:
    """(2, 24, 20, 16): a bright ball in a dim body (fixed) and the same ``shift`` voxels further along axis 0."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in (24, 20, 16)], indexing="ij"))

    def ball(centre: float, radius: float) -> torch.Tensor:
        return (((grid - torch.tensor([centre, 10.0, 8.0])[:, None, None, None]) ** 2).sum(0) < radius**2).float()

    return torch.stack([0.4 * ball(c, 7.0) + 0.5 * ball(c - 1.0, 3.0) for c in (11.0, 11.0 + shift)])


def test_a_field_that_moves_the_pair_the_wrong_way_warns_in_one_line_naming_the_fix(caplog):
    image = _blob_pair()
    right = torch.zeros(1, 3, 24, 20, 16)
    right[:, 0] = 2.0  # fixed(x) = moving(x + 2 e0)
    with caplog.at_level(logging.WARNING):
        good = check_alignment("pair_a", image, right)
    assert good["mse_after"] < 0.2 * good["mse_before"] and not caplog.records
    with caplog.at_level(logging.WARNING):
        bad = check_alignment("pair_b", image, -right)
    assert bad["mse_after"] > good["mse_before"] == bad["mse_before"]
    (record,) = caplog.records
    assert "pair_b" in record.getMessage() and "configs/refine.json" in record.getMessage()
    assert alignment_change(image, torch.zeros(1, 3, 12, 10, 8)) is None  # a field on another grid: not checked
    assert alignment_change(torch.zeros(2, 24, 20, 16), right) is None  # a constant fixed image: nothing to compare


@pytest.mark.skipif(not (BUNDLE_ROOT / "models" / "model_ct.pt").is_file(), reason="no shipped CT model")
def test_the_ct_model_on_a_real_ct_pair_reports_its_alignment_and_warns_when_it_worsens(
    tmp_path, ct_example_dir, caplog
):
    """The shipped model on the held-out CT breathing both ways: the pair's difference falls, no warning. The same
    model with its last layer negated (its field reversed: what bundle 0.8.1's model did to the pairs breathing the
    other way): the difference rises, and it warns."""
    from benchmarks.benchmark_ct_refine import build_case
    from scripts.inference.predict import run_inference_workflow

    state = torch.load(BUNDLE_ROOT / "models" / "model_ct.pt", map_location="cpu", weights_only=True)
    last = sorted(k for k in state if k.endswith(".conv.weight"))[-1].rsplit(".", 1)[0]  # the output convolution
    assert last == "model.2.conv"
    reversed_state = {k: -v if k.startswith(last + ".") else v for k, v in state.items()}
    torch.save(reversed_state, tmp_path / "reversed.pt")
    rows = {}
    for name, ckpt in (("ct0", None), ("ct0-cranial", None), ("ct0", tmp_path / "reversed.pt")):
        case = build_case(name, ct_example_dir)
        for role in ("fixed", "moving"):
            image = nib.Nifti1Image(np.round(case[role]).astype(np.int16), case["affine"])
            nib.save(image, tmp_path / f"{name}_{role}.nii.gz")
        key = name + ("" if ckpt is None else "-reversed")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            run_inference_workflow(
                fixed=str(tmp_path / f"{name}_fixed.nii.gz"),
                moving=str(tmp_path / f"{name}_moving.nii.gz"),
                output_dir=str(tmp_path / key),
                **({} if ckpt is None else {"ckpt_path": str(ckpt)}),
            )
        (entry,) = json.loads((tmp_path / key / "summary.json").read_text())["pairs"]
        warned = [r for r in caplog.records if "less alike" in r.getMessage()]
        assert len(warned) == (entry["alignment"]["mse_after"] > entry["alignment"]["mse_before"]), entry
        rows[key] = entry["alignment"]
    # measured (bundle 0.9.0, docs/benchmark_results/ct_network_090/): 0.0035 -> 0.0015 on ct0, 0.0035 -> 0.0029 on
    # ct0-cranial; bundle 0.8.1's model went 0.0035 -> 0.0040 on ct0-cranial and warned
    assert rows["ct0"]["mse_after"] < 0.7 * rows["ct0"]["mse_before"], rows
    assert rows["ct0-cranial"]["mse_after"] < rows["ct0-cranial"]["mse_before"], rows
    assert rows["ct0-reversed"]["mse_after"] > rows["ct0-reversed"]["mse_before"], rows  # and it warned (above)
