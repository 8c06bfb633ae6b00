"""Tests of the figure functions (scripts/evaluation/figures.py)."""

import numpy as np
import pytest
import torch

from scripts.evaluation.figures import save_sliding_figure
from scripts.synthesis.synthetic import make_shearing_pair


def test_sliding_figure_rows_and_errors(tmp_path):
    pair = {k: torch.from_numpy(v) for k, v in make_shearing_pair(np.random.default_rng(0), (16, 16, 12)).items()}
    true = pair["true_ddf"]
    results = {"exact": (pair["fixed"][0], true), "identity": (pair["moving"][0], torch.zeros_like(true))}
    path = save_sliding_figure(pair["fixed"][0], pair["moving"][0], results, tmp_path / "f" / "s.png", true_ddf=true)
    import matplotlib.image

    image = matplotlib.image.imread(str(path))
    assert image.shape[:2] == (680, 1600)  # 2 rows of 5 panels at 100 dpi
    assert image[..., :3].std() > 0.05  # not blank
    with pytest.raises(ValueError, match="tangent"):
        save_sliding_figure(pair["fixed"][0], pair["moving"][0], results, tmp_path / "x.png", axis=0, tangent=0)
