"""The wall variants and segmentation perturbations (scripts/synthesis/walls.py) and their benchmark
(benchmarks/benchmark_walls.py)."""

import json
import logging
import re

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from scripts.synthesis.breathing import bone_ids, cavity_ids, jacobian_det_np, make_breathing_case, thorax_ids
from scripts.synthesis.phantom import make_ct_phantom
from scripts.synthesis.walls import (
    SEG_PERTURBATIONS,
    WALL_VARIANTS,
    draw_wall,
    perturb_segmentation,
    wall_kwargs,
)


def _phantom():
    return make_ct_phantom((40, 36, 48), (3.0, 3.5, 3.5), "PLS", np.random.default_rng(1))


def _smooth_image(shape):
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(float)
    return (100 * (np.sin(grid[0] / 5) + np.cos(grid[1] / 4) + np.sin(grid[2] / 6 + 1))).astype(np.float32)


@pytest.fixture(scope="module")
def phantom_cases():
    ph = _phantom()
    image = _smooth_image(ph["seg"].shape)
    return {
        name: make_breathing_case(image, ph["seg"], ph["affine"], np.random.default_rng(4), **wall_kwargs(name, [3.5]))
        for name in WALL_VARIANTS
    }


@pytest.mark.parametrize("name", list(WALL_VARIANTS))
def test_the_true_field_of_every_wall_variant_warps_moving_onto_fixed(name, phantom_cases):
    from monai.networks.blocks import Warp

    case = phantom_cases[name]
    fixed = case["fixed"]
    warped = Warp("bilinear", "border")(
        torch.from_numpy(case["moving"])[None, None], torch.from_numpy(case["ddf"])[None]
    )
    keep = np.zeros(fixed.shape, bool)
    keep[3:-3, 3:-3, 3:-3] = True
    keep &= ~case["wall"]
    err = np.abs(warped[0, 0].numpy() - fixed)[keep]
    raw = np.abs(case["moving"] - fixed)[keep]
    assert np.median(err) < 1.0 and np.median(raw) > 3.0
    assert np.percentile(err, 95) < 0.1 * np.percentile(raw, 95)
    assert jacobian_det_np(case["ddf"])[~ndi.binary_dilation(case["wall"])].min() > 0.0  # no fold off the wall


def test_the_wall_lies_where_each_variant_puts_it(phantom_cases):
    default = phantom_cases["default"]["cavity"]
    bones = phantom_cases["default"]["bones"]
    tight, wide = phantom_cases["tight"]["cavity"], phantom_cases["wide"]["cavity"]
    assert tight.sum() < default.sum() < wide.sum()
    # the parietal boundary moved 2 voxels out (never into a bone) and 1 voxel in
    out2, in1 = phantom_cases["out2"]["cavity"], phantom_cases["in1"]["cavity"]
    assert (out2 >= default).all() and not (out2 & bones).any()
    assert (out2 == (ndi.binary_dilation(default, iterations=2) & ~ndi.binary_dilation(bones))).mean() > 0.999
    assert (in1 <= default).all() and (in1 == ndi.binary_erosion(default, border_value=1)).mean() > 0.999
    # eroded inwards only: where the cavity runs out of the scan it goes on (the scan's end is no wall)
    assert default[..., -1].sum() > 400 and in1[..., -1].sum() > 0.8 * default[..., -1].sum()
    assert (out2 & ~default).sum() > 0.2 * default.sum() ** (2 / 3)  # a shell, not a few voxels


def test_a_sliding_layer_spreads_the_jump_over_its_depth(phantom_cases):
    sharp, layer = phantom_cases["default"], phantom_cases["layer"]
    assert (layer["cavity"] == sharp["cavity"]).all()
    inner = sharp["wall"] & sharp["cavity"]
    jump = lambda c: np.sqrt((c["jump"] ** 2).sum(0))[inner]  # noqa: E731
    assert np.median(jump(layer)) < 0.3 * np.median(jump(sharp))  # at the wall: little of the jump left
    # deeper than the layer (2 voxels) the contents move as in the sharp case
    depth = ndi.distance_transform_edt(sharp["cavity"], sampling=sharp["spacing"])
    deep = (depth > 12.0) & (depth < 20.0)
    diff = np.sqrt(((layer["ddf_mm"] - sharp["ddf_mm"]) ** 2).sum(0))[deep]
    assert deep.sum() > 100 and np.median(diff) < 0.5


def test_psoas_and_diaphragm_variants_on_the_real_ct(ct_example_dir):
    import nibabel as nib

    from scripts.regions.labels import label_table
    from scripts.synthesis.breathing import cavity_mask

    seg_img = nib.load(str(ct_example_dir / "example_seg.nii.gz"))
    seg, affine = np.asanyarray(seg_img.dataobj).astype(np.uint8), seg_img.affine
    table = label_table("totalsegmentator")
    psoas = np.isin(seg, [table["iliopsoas_left"], table["iliopsoas_right"]])
    default = cavity_mask(seg, affine)
    with_psoas = cavity_mask(seg, affine, muscles_in=True)
    assert psoas.sum() > 500 and default[psoas].mean() < 0.05 and with_psoas[psoas].mean() > 0.9
    split = cavity_mask(seg, affine, split_diaphragm=True)
    lungs = np.isin(seg, thorax_ids())
    assert lungs.sum() > 1000 and split.sum() < default.sum()
    # what leaves the cavity is the tissue between the lung bases and the abdominal organs (the diaphragm region)
    left = default & ~split
    near_lungs = ndi.distance_transform_edt(~lungs) <= 6
    assert left.sum() > 500 and near_lungs[left].mean() > 0.8


def test_drawn_walls_vary():
    draws = [draw_wall(np.random.default_rng(s)) for s in range(30)]
    closing = [d["cavity_kwargs"]["closing_mm"] for d in draws]
    assert 12.0 <= min(closing) and max(closing) <= 28.0 and np.std(closing) > 2.0
    assert {d["cavity_kwargs"]["shift_vox"] for d in draws} == {-2, -1, 0, 1, 2}
    assert 0 < sum(d["cavity_kwargs"].get("muscles_in", False) for d in draws) < 30
    assert 0 < sum(d["layer_mm"] > 0 for d in draws) < 30
    assert wall_kwargs(draws[0], [1.0, 2.0, 3.0])["layer_mm"] == pytest.approx(3.0 * draws[0]["layer_mm"])
    with pytest.raises(ValueError, match="wall variant must be one of"):
        wall_kwargs("thick", [1.0])


def test_segmentation_perturbations():
    seg = _phantom()["seg"]
    bones = np.isin(seg, bone_ids())
    labels = [int(i) for i in np.unique(seg) if i]
    eroded, _ = perturb_segmentation(seg, np.random.default_rng(0), **SEG_PERTURBATIONS["eroded"])
    dilated, _ = perturb_segmentation(seg, np.random.default_rng(0), **SEG_PERTURBATIONS["dilated"])
    for lab in labels:  # eroded: each label only loses voxels (to background); dilated: grows by one voxel at most
        assert ((eroded == lab) <= (seg == lab)).all()
        assert ((dilated == lab) <= ndi.binary_dilation(seg == lab)).all()
    assert (eroded == 0).sum() > (seg == 0).sum() and (dilated == 0).sum() < (seg == 0).sum()
    assert (eroded[eroded != seg] == 0).all()
    organs_grown = np.isin(dilated[bones], bone_ids())
    assert organs_grown.all()  # organs grow into background and other organs, never into a bone
    missing, info = perturb_segmentation(seg, np.random.default_rng(0), missing=True)
    assert info["missing"] in cavity_ids() and not (missing == info["missing"]).any()
    assert ((missing != seg) == (seg == info["missing"])).all()
    noisy, info = perturb_segmentation(seg, np.random.default_rng(0), noise=0.3)
    changed = noisy != seg
    boundary = np.zeros(seg.shape, bool)
    for axis in range(3):
        for step in (-1, 1):
            boundary |= np.roll(seg, step, axis) != seg
    # noise flips voxels at the boundaries (passes along each axis in turn: one flip can expose the next voxel)
    assert info["noisy_voxels"] >= changed.sum() > 0 and boundary[changed].mean() > 0.8
    assert ndi.binary_dilation(boundary, iterations=2)[changed].all()
    again, _ = perturb_segmentation(seg, np.random.default_rng(0), **SEG_PERTURBATIONS["segmenter"])
    same, _ = perturb_segmentation(seg, np.random.default_rng(0), **SEG_PERTURBATIONS["segmenter"])
    assert (again == same).all() and 0.01 < (again != seg).mean() < 0.3
    with pytest.raises(ValueError, match="low <= high"):
        perturb_segmentation(seg, np.random.default_rng(0), radius=(2, 1))
    # eroded split in two: the organs' part leaves the bones as they were, the bones' part the organs, and together
    # they are eroded
    organs, _ = perturb_segmentation(seg, np.random.default_rng(0), **SEG_PERTURBATIONS["eroded_organs"])
    bone_part, _ = perturb_segmentation(seg, np.random.default_rng(0), **SEG_PERTURBATIONS["eroded_bones"])
    assert (organs[bones] == seg[bones]).all() and (organs != seg).any()
    assert (bone_part[~bones] == seg[~bones]).all() and (bone_part != seg).any()
    assert (np.where(bones, bone_part, organs) == eroded).all()
    with pytest.raises(ValueError, match="only"):
        perturb_segmentation(seg, np.random.default_rng(0), radius=(-1, -1), only="lungs")


def test_benchmark_walls_rows_and_files(tmp_path):
    from benchmarks import benchmark_walls as bench

    args = ["--anatomies", "phantom", "--walls", "out2", "--seeds", "0", "--perturbations", "clean,segmenter",
            "--iterations", "40,30", "--refine-option", "fold_barrier=10.0", "--profile",
            "--out", str(tmp_path)]  # fmt: skip
    summary = bench.main(args)
    clean, pert = summary[("phantom", "out2", "clean")], summary[("phantom", "out2", "segmenter")]
    for row in (clean, pert):
        assert row["epe_body"] < 3.0 and row["slip"] > 0.1 and row["seconds"] > 0  # none: 4.6 mm, 0 %; 2.7 mm, 19 %
    assert "| phantom | out2 | segmenter |" in (tmp_path / "results.md").read_text()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert {c["perturbation"] for c in saved["cases"]} == {"clean", "segmenter"}
    assert saved["cases"][1]["seg_changed_pct"] > 1.0
    assert saved["settings"]["refine_kwargs"]["fold_barrier"] == 10.0  # passed through to refine_pair
    # where the slip lies: the true field steps down between the wall's inner voxels and one voxel out, the
    # refinement slides the same way (its contents move along the true jump relative to the outside)
    true, refined = saved["cases"][0]["profile_true_mm"], saved["cases"][0]["profile_mm"]
    offsets = saved["cases"][0]["profile_offsets_mm"]
    assert len(true) == len(refined) == len(offsets) == 9 and offsets[4] == 0.0
    assert true[0] > 2.0 and true[0] - true[4] < 0.2 * true[0] and true[7] < 0.2 * true[0]
    assert refined[0] > 0.3 * true[0]
    with pytest.raises(SystemExit, match="error: unknown wall variant 'thick'"):
        bench.main(["--walls", "thick", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="error: --refine-option takes KEY=VALUE"):
        bench.main(["--refine-option", "fold_barrier", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="error: --amplitude-mm takes LO,HI with 0 <= LO < HI, got '30,15'"):
        bench.main(["--amplitude-mm", "30,15", "--out", str(tmp_path)])
    motion = saved["cases"][0]["motion"]  # the case's own motion, beside the refinement's figures
    assert 6.0 <= motion["organ_motion_mm_p5_p50_p95"][1] <= 10.0 and motion["jump_mm_mean"] > 2.0
    assert motion["cavity_det_below_half_pct"] < 5.0 and 0 < saved["cases"][0]["epe_body_seen"] < 3.0  # 2.6 %


def test_benchmark_walls_logs_the_wall_search_choice(tmp_path, caplog):
    from benchmarks import benchmark_walls as bench

    args = ["--anatomies", "phantom", "--walls", "default", "--seeds", "0", "--perturbations", "clean",
            "--iterations", "20,10", "--refine-option", "first_wall_search=1",
            "--refine-option", "first_wall_region_mm=20", "--log-search", "--out", str(tmp_path)]  # fmt: skip
    try:
        bench.main(args)
    finally:
        logging.getLogger("scripts.refinement.wall_search").setLevel(logging.NOTSET)
    chose = [r.getMessage() for r in caplog.records if "the wall search per region (20 mm) chose" in r.getMessage()]
    shares = [int(share) for share in re.findall(r": (\d+) %", chose[0])]  # each candidate's share of the wall zone
    assert len(chose) == 1 and len(shares) == 3 and 98 <= sum(shares) <= 102
    assert "(mean local NCC^2 -1: 0." in chose[0] and ", +1: 0." in chose[0]  # and how close the choice was
