"""Learn2Reg conventions: submission names of both official scripts, the challenge's metrics, the score command.

Reference values (REF_*) were produced with the OFFICIAL evaluation code, github.com/MDL-UzL/L2R at commit 8847509
("fixed naming issue"): ``evaluation/evaluation.py``, ``evaluation/utils.py`` and the vendored
``evaluation/surface-distance`` (deepmind's surface_distance), unmodified, run in a scratch venv outside the repository
(python 3.11, ``pip install numpy==1.23.5 scipy==1.9.3 nibabel==4.0.2``; ``evalutils`` replaced by a stub module
defining ``evalutils.exceptions.ValidationError``, the only name used). The case (tests/_learn2reg_case.py) was written
as a Learn2Reg folder (``labelsTr/Case_000{1,2,3}_0000.nii.gz``, spacing 1.5 x 1 x 2 mm; case 3 = case 1 rolled by
2 voxels on axis 0), with three submissions: 1 <- 2 the analytic field, 2 <- 1 zero, 1 <- 3 the exact shift (2, 0, 0);
labels [1..5]; then ``python evaluation.py -i sub -d ds -c config.json -o official.json`` (long names) and
``python L2RTest/evaluation.py`` (short names) gave the same ``cases``. REF_HD95_ANISO: ``compute_robust_hausdorff(
compute_surface_distances(fixed == l, warped == l, np.array([1.5, 1.0, 2.0])), 95.)`` on the official warp.
"""

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.evaluation.learn2reg import (
    accepted_names,
    grid_mismatch,
    learn2reg_metrics,
    parse_learn2reg_name,
    score_field,
    score_submission,
    submission_names,
    warp_labels,
)
from scripts.evaluation.surface_distance import hd95, surface_distances, surfel_area_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _learn2reg_case as case  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NAN = float("nan")
# official evaluation.py, pair Case_0001_0000 <- Case_0002_0000 (analytic field), labels 1..5
REF_DICE = [0.7338782924613987, 0.5056039850560399, 0.6366366366366366, NAN, NAN]
REF_HD95 = [1.7320508075688772, 2.8284271247461903, 2.0, NAN, NAN]
REF_MEAN = {"dice": 0.6253729713846917, "hd95": 2.186825977438356, "sdlogj": 0.009192946445812452}
# pair 2 <- 1 with the zero field (the unregistered pair)
REF_ZERO = {"dice": 0.6721339875461739, "hd95": 1.910683602522959}
REF_ZERO_DICE = [0.6986175115207374, 0.6691358024691358, 0.6486486486486487, NAN, NAN]
# deepmind's surface distance with the anisotropic spacing, same warp (labels 1..3)
REF_HD95_ANISO = [2.5, 4.123105625617661, 2.0]


def _write(path: Path, array: np.ndarray, spacing=case.SPACING) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag(list(spacing) + [1.0])), str(path))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Learn2Reg folder of the reference case, with a submission folder (official names)."""
    root = tmp_path_factory.mktemp("l2r")
    (root / "labelsTr").mkdir()
    fixed, moving = case.label_maps()
    for i, lab in ((1, fixed), (2, moving), (3, np.roll(fixed, 2, axis=0))):
        _write(root / "labelsTr" / f"Case_{i:04d}_0000.nii.gz", lab)
    pairs = [(1, 2), (2, 1), (1, 3)]
    shift = np.zeros(case.SHAPE + (3,), np.float32)
    shift[..., 0] = 2.0
    fields = [case.displacement(), np.zeros_like(shift), shift]
    sub = root / "sub"
    sub.mkdir()
    for (f, m), disp in zip(pairs, fields):
        name = submission_names(f"Case_{f:04d}_0000.nii.gz", f"Case_{m:04d}_0000.nii.gz")[0]
        _write(sub / name, disp)
    items = [
        {"fixed": f"./imagesTr/Case_{f:04d}_0000.nii.gz", "moving": f"./imagesTr/Case_{m:04d}_0000.nii.gz"}
        for f, m in pairs
    ]
    meta = {"name": "Case", "registration_val": items, "labels": {str(i): f"l{i}" for i in range(6)}}
    (root / "Case_dataset.json").write_text(__import__("json").dumps(meta))
    return root


def _label(root: Path, i: int) -> Path:
    return root / "labelsTr" / f"Case_{i:04d}_0000.nii.gz"


# ------------------------------------------------------------------------------------------------------ file names
def test_submission_names_of_both_official_scripts():
    f, m = "AbdomenCTCT_0005_0000.nii.gz", "/data/imagesTr/AbdomenCTCT_0006_0000.nii.gz"
    assert parse_learn2reg_name(m) == ("0006", "0000")
    assert submission_names(f, m) == ["disp_0005_0000_0006_0000.nii.gz"]  # evaluation/evaluation.py
    assert submission_names(f, m, "template") == ["disp_0005_0006.nii.gz"]  # L2RTest/evaluation.py
    assert submission_names(f, m, "both") == ["disp_0005_0000_0006_0000.nii.gz", "disp_0005_0006.nii.gz"]
    # ThoraxCBCT-like modalities: the template reads the short name only for equal modalities or 0000 -> 0001
    assert submission_names("ThoraxCBCT_0011_0001.nii.gz", "ThoraxCBCT_0011_0000.nii.gz", "template") == [
        "disp_0011_0001_0011_0000.nii.gz"
    ]
    assert submission_names("X_0001_0000.nii.gz", "X_0001_0001.nii.gz", "template", ext=".npz") == [
        "disp_0001_0001.npz"
    ]
    assert accepted_names("X_0001_0000.nii.gz", "X_0002_0001.nii.gz") == ["disp_0001_0000_0002_0001", "disp_0001_0002"]
    assert accepted_names("X_0011_0001.nii.gz", "X_0011_0000.nii.gz") == ["disp_0011_0001_0011_0000"]
    assert parse_learn2reg_name("patient12.nii.gz") == ("0012", "0000")  # other names: last number = case
    assert parse_learn2reg_name("scan_7_b3.nii") == ("0003", "0000")
    with pytest.raises(ValueError, match="fixed_ct.nii.gz: no case number"):
        submission_names("fixed_ct.nii.gz", m)
    with pytest.raises(ValueError, match="naming"):
        submission_names(f, m, "short")


def test_grid_mismatch():
    eye = np.eye(4)
    assert grid_mismatch(((8, 8, 8), eye), ((8, 8, 8), eye + 1e-6)) is None
    assert "shapes (8, 8, 8) and (8, 8, 9)" in grid_mismatch(((8, 8, 8), eye), ((8, 8, 9), eye))
    shifted = eye.copy()
    shifted[0, 3] = 5.0
    assert "affines differ (max |difference| 5)" in grid_mismatch(((8, 8, 8), eye), ((8, 8, 8), shifted))


# ------------------------------------------------------------------------------------------------------ metrics
def test_surface_distance_algorithm_known_values():
    a = np.zeros((12, 12, 12), bool)
    a[3:9, 3:9, 3:9] = True
    assert surfel_area_table()[1] == pytest.approx(np.sqrt(3) / 8)  # one corner: triangle through 3 edge midpoints
    assert surfel_area_table((2.0, 1.0, 1.0))[15] == pytest.approx(2 * 0.5)  # half-plane face, x0 normal: s1 s2
    assert hd95(a, a) == 0.0
    assert hd95(a, np.roll(a, 2, axis=1)) == 2.0 and hd95(a, np.roll(a, 2, axis=1), (1.0, 1.5, 1.0)) == 3.0
    assert hd95(a, np.zeros_like(a)) == np.inf
    d = surface_distances(a, np.roll(a, 1, axis=0))
    assert np.all(np.diff(d["distances_gt_to_pred"]) >= 0) and d["surfel_areas_gt"].sum() == pytest.approx(
        d["surfel_areas_pred"].sum()
    )


def test_matches_official_reference_values(dataset):
    score = score_submission(
        dataset / "sub" / "disp_0001_0000_0002_0000.nii.gz", _label(dataset, 1), _label(dataset, 2), case.LABELS
    )
    np.testing.assert_allclose(score["dice_per_label"], REF_DICE, rtol=0, atol=1e-6)
    np.testing.assert_allclose(score["hd95_per_label"], REF_HD95, rtol=0, atol=1e-6)
    for key, value in REF_MEAN.items():
        assert score[key] == pytest.approx(value, abs=1e-6)
    fixed, moving = case.label_maps()
    warped = warp_labels(moving, case.displacement())
    aniso = [hd95(fixed == lab, warped == lab, case.SPACING) for lab in (1, 2, 3)]
    np.testing.assert_allclose(aniso, REF_HD95_ANISO, rtol=0, atol=1e-6)
    # the border convention matters here: MONAI's nearest Warp (border label within half a voxel) scores otherwise
    from monai.networks.blocks import Warp

    ddf = torch.from_numpy(case.displacement().transpose(3, 0, 1, 2).copy())[None]
    monai = Warp("nearest", "zeros")(torch.from_numpy(moving[None, None].astype(np.float32)), ddf)[0, 0].numpy()
    assert not np.array_equal(monai, warped)
    # the batched API (evaluation workflow) gives the same numbers on this grid
    batch = learn2reg_metrics(
        ddf, torch.from_numpy(fixed[None, None]), torch.from_numpy(moving[None, None]), case.LABELS
    )
    assert float(batch["l2r_dice"][0]) == pytest.approx(REF_MEAN["dice"], abs=1e-6)
    assert float(batch["l2r_hd95"][0]) == pytest.approx(REF_MEAN["hd95"], abs=1e-6)
    assert float(batch["l2r_sdlogj"][0]) == pytest.approx(REF_MEAN["sdlogj"], abs=1e-6)


def test_exact_field_scores_dice_one_and_zero_field_scores_unregistered(dataset):
    exact = score_submission(
        dataset / "sub" / "disp_0001_0000_0003_0000.nii.gz", _label(dataset, 1), _label(dataset, 3)
    )
    assert exact["labels"] == list(range(1, 14))  # default: AbdomenCTCT's 1..13; absent labels skipped (NaN)
    assert exact["dice_per_label"][:4] == [1.0] * 4 and np.isnan(exact["dice_per_label"][4:]).all()
    assert exact["dice"] == 1.0 and exact["hd95"] == 0.0 and exact["sdlogj"] == pytest.approx(0.0, abs=1e-12)
    zero = score_submission(
        dataset / "sub" / "disp_0002_0000_0001_0000.nii.gz",
        _label(dataset, 2),
        _label(dataset, 1),
        case.LABELS,
        before=True,
    )
    assert zero["dice"] == pytest.approx(REF_ZERO["dice"], abs=1e-6) and zero["hd95"] == pytest.approx(
        REF_ZERO["hd95"], abs=1e-6
    )
    np.testing.assert_allclose(zero["dice_per_label"], REF_ZERO_DICE, rtol=0, atol=1e-6)
    assert zero["dice_before"] == zero["dice"]
    with pytest.raises(ValueError, match="not on the fixed grid"):
        score_field(np.zeros((4, 4, 4, 3)), np.zeros((4, 4, 5)), np.zeros((4, 4, 5)))


# ------------------------------------------------------------------------------------------------------ score command
def _score(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.score_learn2reg", *map(str, args)], cwd=cwd, capture_output=True, text=True
    )


def test_score_command(dataset, tmp_path):
    out = _score(dataset / "sub", "--dataset", dataset, "--output", tmp_path / "s.json")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["pair", "DSC", "HD95", "LogJacDetStd"]
    assert lines[1].split() == ["0001_0000<--0002_0000", "0.62537", "2.18683", "0.00919"]
    assert lines[4].split() == ["mean", "0.76584", "1.36584", "0.00306"]  # the official aggregates of the 3 pairs
    scores = __import__("json").loads((tmp_path / "s.json").read_text())
    assert scores["aggregates"]["DSC"]["30"] == pytest.approx(0.653429581081581, abs=1e-6)  # official.json
    assert scores["aggregates"]["HD95"]["mean"] == pytest.approx(1.3658365266537718, abs=1e-6)
    # template names + label folder give the same scores
    template = tmp_path / "template"
    template.mkdir()
    for f in (dataset / "sub").glob("disp_*.nii.gz"):
        fc, _, mc, _ = f.name[5:-7].split("_")
        (template / f"disp_{fc}_{mc}.nii.gz").write_bytes(f.read_bytes())
    out = _score(
        template, "--labels_dir", dataset / "labelsTr", "--labels", "1,2,3,4,5", "--output", tmp_path / "t.json"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[4].split() == ["mean", "0.76584", "1.36584", "0.00306"]
    # a missing submission: one error line naming it, exit 1
    (template / "disp_0001_0003.nii.gz").unlink()
    out = _score(template, "--dataset", dataset, "--output", tmp_path / "u.json")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        f"error: missing submission for Case_0001_0000.nii.gz <- Case_0003_0000.nii.gz: expected "
        f"disp_0001_0000_0003_0000.nii.gz or disp_0001_0003.nii.gz in {template}"
    ]
