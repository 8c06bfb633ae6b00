"""Every failure a user can cause gives one ``error: <what> <file>: <why>; <what to do>`` line, a non-zero exit, and
writes nothing (scripts/io/errors.py, scripts/inference/preflight.py, scripts/data/checks.py; every workflow's config).

In process (``find_input_error`` on the raised chain) for each failure class; one real command line per workflow
(training, evaluation, inference, a CLI in scripts/) shows the hook: exit status 1, stderr's last line ``error:``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.io.errors import InputError, find_input_error
from scripts.synthesis.phantom import write_learn2reg_phantom

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = BUNDLE_ROOT / "configs"
CT = ["train.json", "ct.json", "abdomenctct.json"]
TINY = {"channels": [4, 8, 16], "strides": [2, 2], "batch_size": 2, "image_size": [16, 16, 16], "epochs": 1}
NAME = "AbdomenCTCT_{:04d}_0000"


@pytest.fixture(scope="module")
def phantom_src(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("AbdomenCTCT")
    write_learn2reg_phantom(str(out), num_images=4, num_val_images=2, seed=1, shape=(20, 18, 16))
    return out


@pytest.fixture
def phantom(phantom_src, tmp_path) -> Path:
    """A private copy to break."""
    return Path(shutil.copytree(phantom_src, tmp_path / "AbdomenCTCT"))


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def workflow_error(configs, workflow_type="train", **overrides):
    """Run a bundle workflow in process and return the user error it raised (the test fails if there is none)."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=[str(CONFIGS / c) for c in configs], meta_file=str(CONFIGS / "metadata.json"),
                        logging_file=False, workflow_type=workflow_type, **overrides)  # fmt: skip
    with pytest.raises(Exception) as info:
        wf.initialize()
        wf.run()
    err = find_input_error(info.value)
    assert err is not None, repr(info.value)
    return str(err)


def train_error(tmp_path, phantom, **overrides):
    root = tmp_path / "bundle"
    root.mkdir(exist_ok=True)
    args = {"bundle_root": str(root), "dataset_dir": str(phantom), **TINY, **overrides}
    message = workflow_error(CT, **args)
    assert listing(root) == [], listing(root)  # no run folder, event file, cache entry
    return message


# ------------------------------------------------------------------------------------------------------- training
def test_training_dataset_errors_name_the_file(tmp_path, phantom):
    msg = train_error(tmp_path, phantom, dataset_dir=str(tmp_path / "nowhere"))
    assert "dataset_dir" in msg and "nowhere" in msg and "not found" in msg

    ds_json = phantom / "AbdomenCTCT_dataset.json"
    good = ds_json.read_text()
    lines = good.splitlines()
    lines[3] = lines[3] + ","  # a trailing comma somewhere in the middle
    ds_json.write_text("\n".join(lines))
    msg = train_error(tmp_path, phantom)
    assert str(ds_json) in msg and "not valid JSON at line" in msg
    ds_json.write_text(good)

    label = phantom / "labelsTr" / f"{NAME.format(1)}.nii.gz"
    label.rename(label.with_suffix(".bak"))
    msg = train_error(tmp_path, phantom)
    assert str(label) in msg and "not found" in msg
    label.with_suffix(".bak").rename(label)

    seg = phantom / "totalsegmentator" / f"{NAME.format(2)}_seg.nii.gz"
    seg.rename(seg.with_suffix(".bak"))
    msg = train_error(tmp_path, phantom)
    assert "TotalSegmentator segmentation" in msg and seg.name in msg
    seg.with_suffix(".bak").rename(seg)

    image = phantom / "imagesTr" / f"{NAME.format(3)}.nii.gz"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])  # truncated
    msg = train_error(tmp_path, phantom)
    assert str(image) in msg and "truncated" in msg and "AbdomenCTCT_dataset.json" in msg


def test_generated_pairs_options_out_of_range_name_the_option_and_the_fix(tmp_path):
    generated = ["train.json", "ct.json", "ct_generated.json"]
    msg = workflow_error(generated, bundle_root=str(tmp_path), cranial_fraction=2)
    assert msg.startswith("cranial_fraction 2:") and "--cranial_fraction 0.5" in msg, msg
    msg = workflow_error(generated, bundle_root=str(tmp_path), texture_hu=-5)
    assert msg.startswith("texture_hu -5:") and "--texture_hu 40" in msg, msg
    msg = workflow_error(generated, bundle_root=str(tmp_path), min_slab_mm=10)
    assert msg.startswith("min_slab_mm 10:") and "--min_slab_mm 90" in msg, msg
    msg = workflow_error(generated, bundle_root=str(tmp_path), bone_hu=[300, 100])
    assert msg.startswith("bone_hu [300, 100]:") and '--bone_hu "[100, 300]"' in msg, msg
    msg = workflow_error(generated, bundle_root=str(tmp_path), offset_mm=-2)
    assert msg.startswith("offset_mm -2:") and "--offset_mm 8" in msg, msg
    msg = workflow_error(generated, bundle_root=str(tmp_path), offset_deg=-1)
    assert msg.startswith("offset_deg -1:") and "--offset_deg 3" in msg, msg
    msg = workflow_error(generated, bundle_root=str(tmp_path), rigid_prealign="true", physical_spacing="false")
    assert msg.startswith("option --rigid_prealign true:") and "--physical_spacing true" in msg, msg
    assert listing(tmp_path) == [], listing(tmp_path)  # checked before any run folder or cache entry


def test_dataset_json_entry_with_another_key_names_the_file_entry_and_keys(tmp_path, phantom):
    ds_json = phantom / "AbdomenCTCT_dataset.json"
    meta = json.loads(ds_json.read_text())
    meta["training"][1]["img"] = meta["training"][1].pop("image")
    ds_json.write_text(json.dumps(meta))
    msg = train_error(tmp_path, phantom)
    assert str(ds_json) in msg and "entry 1 of 'training'" in msg and "'img'" in msg and "no 'image'" in msg, msg
    assert "rename 'img' to 'image'" in msg

    meta["training"][1]["image"] = meta["training"][1].pop("img")
    meta["registration_val"][0] = {"fix": meta["registration_val"][0]["fixed"], "moving": "x.nii.gz"}
    ds_json.write_text(json.dumps(meta))
    msg = train_error(tmp_path, phantom)
    assert str(ds_json) in msg and "entry 0 of 'registration_val'" in msg and "rename 'fix' to 'fixed'" in msg, msg

    from scripts.data.lists import read_pairs

    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"fixed": "a.nii.gz", "moving": "b.nii.gz"}, {"fixed": "a.nii.gz", "mov": "b"}]))
    with pytest.raises(InputError, match=r"pairs file .*pairs.json: pair 1 has the key\(s\) \['fixed', 'mov'\]"):
        read_pairs(pairs, "train")


def test_training_resume_and_output_dir_errors(tmp_path, phantom):
    msg = train_error(tmp_path, phantom, resume="true")
    assert "--resume true" in msg and "checkpoint" in msg
    target = tmp_path / "a_file"
    target.write_text("x")
    msg = train_error(tmp_path, phantom, output_dir=str(target))
    assert str(target) in msg and "not a folder" in msg


def test_dice_without_label_maps_is_an_error_before_training(tmp_path, phantom):
    shutil.rmtree(phantom / "labelsTr")
    meta = json.loads((phantom / "AbdomenCTCT_dataset.json").read_text())
    for entry in meta["training"]:
        entry.pop("label", None)
    (phantom / "AbdomenCTCT_dataset.json").write_text(json.dumps(meta))
    msg = train_error(tmp_path, phantom)
    assert "no label maps" in msg and "--beta 0" in msg and "AbdomenCTCT_dataset.json" in msg


# ------------------------------------------------------------------------------------------------------ inference
def _tiny_pair(folder: Path, prefix: str = "p", nan: bool = False, shape=(20, 18, 16)) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = rng.random(shape).astype(np.float32)
    if nan:
        data[1, 2, 3] = np.nan
    fixed, moving = folder / f"{prefix}_fixed.nii.gz", folder / f"{prefix}_moving.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.5, 1.0])), str(fixed))
    nib.save(nib.Nifti1Image(data[::-1].copy(), np.diag([2.0, 2.0, 2.5, 1.0])), str(moving))
    return {"fixed": str(fixed), "moving": str(moving)}


def infer_error(tmp_path, **overrides) -> str:
    return workflow_error(["inference.json"], "infer", bundle_root=str(BUNDLE_ROOT), **overrides)


def test_inference_checkpoint_errors_before_any_work(tmp_path):
    pair = _tiny_pair(tmp_path / "in")
    out = tmp_path / "out"
    shipped = (BUNDLE_ROOT / "models" / "model.pt").read_bytes()
    cases = {
        "truncated.pt": (shipped[: len(shipped) // 3], "not a readable PyTorch checkpoint"),
        "text.pt": (b"these are not weights\n", "not a readable PyTorch checkpoint"),
        "empty.pt": (b"", "empty"),
    }
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        msg = infer_error(tmp_path, **pair, output_dir=str(out), ckpt_path=str(tmp_path / name))
        assert expected in msg and name in msg, msg
    from monai.networks.nets import AttentionUnet

    other = AttentionUnet(3, 2, 3, (16, 32, 64, 128), (2, 2, 2))
    torch.save(other.state_dict(), tmp_path / "wide.pt")
    msg = infer_error(tmp_path, **pair, output_dir=str(out), ckpt_path=str(tmp_path / "wide.pt"))
    assert "wide.pt" in msg and "channels [16, 32, 64, 128]" in msg and "channels [8, 16, 32, 64]" in msg
    deep = AttentionUnet(3, 2, 3, (8, 16, 32, 64, 128), (2, 2, 2, 2))
    torch.save({"model": deep.state_dict()}, tmp_path / "deep.pt")
    msg = infer_error(tmp_path, **pair, output_dir=str(out), ckpt_path=str(tmp_path / "deep.pt"))
    assert "depth 5" in msg and "strides [2, 2, 2]" in msg
    assert not out.exists()


def test_inference_output_folder_and_nan_in_a_later_pair(tmp_path):
    pair = _tiny_pair(tmp_path / "in")
    target = tmp_path / "a_file"
    target.write_text("x")
    msg = infer_error(tmp_path, **pair, output_dir=str(target))
    assert str(target) in msg and "not a folder" in msg
    msg = infer_error(tmp_path, **pair, output_dir=str(target / "sub"))
    assert "is a file, not a folder" in msg
    folder = tmp_path / "many"
    _tiny_pair(folder, "a")
    bad = _tiny_pair(folder, "b", nan=True)
    out = tmp_path / "out"
    msg = infer_error(tmp_path, dataset_dir=str(folder), output_dir=str(out))
    assert bad["fixed"] in msg and "NaN or Inf" in msg
    assert not out.exists()


@pytest.mark.parametrize("key", ["fixed_seg", "moving_label"])
def test_a_later_pairs_segmentation_that_is_not_a_label_map_fails_before_any_output(tmp_path, key):
    folder = tmp_path / "many"
    _tiny_pair(folder, "a")
    _tiny_pair(folder, "b")
    not_labels = np.random.default_rng(1).random((20, 18, 16)).astype(np.float32) * 10  # an image, not labels
    path = folder / f"b_{key}.nii.gz"
    nib.save(nib.Nifti1Image(not_labels, np.diag([2.0, 2.0, 2.5, 1.0])), str(path))
    out = tmp_path / "out"
    msg = infer_error(tmp_path, dataset_dir=str(folder), output_dir=str(out))
    assert str(path) in msg and "not a label map" in msg and "non-integer" in msg, msg
    assert not out.exists()


def test_training_segmentation_that_is_not_a_label_map(tmp_path, phantom):
    seg = phantom / "totalsegmentator" / f"{NAME.format(2)}_seg.nii.gz"
    img = nib.load(str(seg))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32) + 0.25, img.affine), str(seg))
    msg = train_error(tmp_path, phantom)
    assert str(seg) in msg and "not a label map" in msg and "AbdomenCTCT_dataset.json" in msg, msg


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return proc.returncode == 0


@pytest.mark.parametrize("case", ["read_only", "disk_full"])
def test_inference_unwritable_or_full_file_system(tmp_path, case):
    mount = tmp_path / "mnt"
    if not _mount_tmpfs(mount, "ro,size=1m" if case == "read_only" else "size=1m"):
        pytest.skip("needs root to mount a small tmpfs (read-only / full file system)")
    try:
        pair = _tiny_pair(tmp_path / "in", shape=(44, 44, 44))
        out = mount / "out"
        # disk full: the ddf (1000 KB) passes the free-space check, the warped image no longer fits: fails mid-write
        msg = infer_error(tmp_path, **pair, output_dir=str(out), save_jacobian=False)
        expected = "Read-only file system" if case == "read_only" else "No space left"
        assert expected in msg and str(mount) in msg, msg
        if out.exists():  # every file complete or absent: no temporary left, only whole NIfTI files
            for p in out.iterdir():
                assert not p.name.endswith(".tmp"), p
                nib.load(str(p)).get_fdata()
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    from scripts.io.files import check_output_dir, temp_prefix

    out = tmp_path / "out"
    code = ("import sys, tempfile, os; from scripts.io.files import temp_prefix; "
            f"tempfile.mkstemp(dir={str(out)!r}, prefix=temp_prefix('x_ddf.nii.gz'), suffix='.tmp')")  # fmt: skip
    out.mkdir()
    subprocess.run([sys.executable, "-c", code], cwd=BUNDLE_ROOT, check=True)  # a writer that died mid-write
    (out / "tmpab12cd34").write_bytes(b"")  # Ignite's legacy checkpoint temporary
    os.utime(out / "tmpab12cd34", (1, 1))
    live = out / f"{temp_prefix('y.nii.gz')}abcd1234.tmp"  # ours, this process is alive: kept
    live.write_bytes(b"")
    (out / "user_file.txt").write_text("keep")
    assert len(list(out.iterdir())) == 4
    check_output_dir(out)
    assert sorted(p.name for p in out.iterdir()) == sorted([live.name, "user_file.txt"])


# ------------------------------------------------------------------------------------------------ boolean options
def _values(node, path=""):
    """(config id, value) of every leaf of a config."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
    if items is None:
        yield path, node
        return
    for key, value in items:
        yield from _values(value, f"{path}#{key}" if path else str(key))


def test_every_boolean_option_of_every_config_is_parsed_once():
    """Every true/false option (a top-level key with a boolean default, in any config) is listed in a ``flags``
    (scripts.io.options.Flags), and no component reads it raw: ``--learn2reg false`` is the string "false"."""
    configs = {p.name: json.loads(p.read_text()) for p in sorted(CONFIGS.glob("*.json")) if p.name != "metadata.json"}
    options = {
        key: name
        for name, cfg in configs.items()
        for key, value in cfg.items()
        if isinstance(value, bool) and "#" not in key
    }
    assert {"learn2reg", "save_jacobian", "organ_pairs", "progress", "resume", "physical_spacing"} <= set(options)
    listed = {path.split("#")[1] for cfg in configs.values() for path, value in _values(cfg)
              if path.startswith("flags#") and value == "@" + path.split("#")[1]}  # fmt: skip
    assert set(options) <= listed, {key: options[key] for key in set(options) - listed}
    pattern = re.compile(r"@(%s)(?![\w#])" % "|".join(map(re.escape, options)))
    raw = [(name, path, value) for name, cfg in configs.items() for path, value in _values(cfg)
           if isinstance(value, str) and pattern.search(value) and not path.startswith("flags#")]  # fmt: skip
    assert not raw, f"read @option instead of @flags.option: {raw}"


def test_true_false_options_given_as_words_are_parsed():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "refine.json")])
    parser["bundle_root"] = str(BUNDLE_ROOT)
    parser.update({"progress": "false", "organ_pairs": "false", "learn2reg": "False", "save_jacobian": "TRUE"})
    inferer = parser.get_parsed_content("inferer")
    assert inferer.progress is False and inferer.organ_pairs is False  # "false" is a true string in Python
    writer = parser.get_parsed_content("handlers")[-1]
    assert writer.learn2reg is False and writer.save_jacobian is True

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / c) for c in (*CT, "evaluate.json")])
    parser.update({"resume": "auto", "physical_spacing": "false", "learn2reg_metrics": "true"})
    flags = parser.get_parsed_content("flags")
    assert (flags.resume, flags.physical_spacing, flags.learn2reg_metrics) == ("auto", False, True)


def test_inference_with_false_options_writes_no_learn2reg_file_and_no_jacobian(tmp_path):
    from scripts.inference.predict import run_inference_workflow

    pair = _tiny_pair(tmp_path / "in")
    out = tmp_path / "out"
    run_inference_workflow(None, ["inference.json"], **pair, output_dir=str(out), learn2reg="false",
                           save_jacobian="false")  # fmt: skip
    names = listing(out)
    assert any("_warped" in n for n in names), names
    assert not any("jacdet" in n or n.startswith("disp_") for n in names), names


def test_a_bad_true_false_value_names_the_option(tmp_path, phantom):
    pair = _tiny_pair(tmp_path / "in")
    out = tmp_path / "out"
    msg = infer_error(tmp_path, **pair, output_dir=str(out), learn2reg="flase")
    assert msg == "option --learn2reg: 'flase' is not one of true, false; give --learn2reg true or --learn2reg false"
    assert not out.exists()
    msg = train_error(tmp_path, phantom, resume="yes")
    assert "--resume" in msg and "--resume auto" in msg, msg


def test_bad_rigid_bones_options_name_the_option_before_any_output(tmp_path):
    pair = _tiny_pair(tmp_path / "in")
    out = tmp_path / "out"
    for option, value, expected in (
        ("rigid_bones_hu", "bright", "--rigid_bones_hu 'bright': give a number of HU or auto"),
        ("rigid_bones_mm", [3.0, 0.0], "--rigid_bones_mm [3.0, 0.0]: give [near, fall] in mm"),
        ("rigid_bones_mm", [3.0], "--rigid_bones_mm [3.0]: give [near, fall] in mm"),
        ("rigid_bones", "maybe", "option --rigid_bones: 'maybe' is not one of true, false"),
    ):
        assert expected in infer_error(tmp_path, **pair, output_dir=str(out), **{option: value})
        assert not out.exists()


# --------------------------------------------------------------------------------------------- the command lines
def subprocess_env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("BIOMECH_DEBUG", None)
    return env


def command(run_id: str, configs: list[str], *args: str, cwd: Path, env=None) -> subprocess.CompletedProcess:
    config_file = str([str(CONFIGS / c) for c in configs]).replace(" ", "")
    cmd = [sys.executable, "-W", "ignore", "-m", "monai.bundle", "run", run_id, "--config_file", config_file, *args]
    return subprocess.run(cmd, cwd=cwd, env=env or subprocess_env(), capture_output=True, text=True, timeout=300)


def assert_one_error_line(proc: subprocess.CompletedProcess, *names: str) -> str:
    assert proc.returncode != 0, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for name in names:
        assert name in last, last
    return last


def test_training_command_line_truncated_image(tmp_path, phantom):
    image = phantom / "imagesTr" / f"{NAME.format(2)}.nii.gz"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    root = tmp_path / "bundle"
    root.mkdir()
    args = ["--bundle_root", str(root), "--dataset_dir", str(phantom), "--channels", "[4,8,16]", "--strides", "[2,2]",
            "--image_size", "[16,16,16]", "--epochs", "1"]  # fmt: skip
    proc = command("training", CT, *args, cwd=BUNDLE_ROOT)
    assert_one_error_line(proc, str(image), "truncated")
    assert listing(root) == []
    debug = command("training", CT, *args, cwd=BUNDLE_ROOT, env={**subprocess_env(), "BIOMECH_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_evaluation_and_inference_command_lines(tmp_path):
    from monai.networks.nets import AttentionUnet

    root = tmp_path / "bundle"
    run_dir = root / "runs" / "synthetic_rigid_rigidity_jacobian"
    run_dir.mkdir(parents=True)
    torch.save(AttentionUnet(3, 2, 3, (4, 8, 16), (2, 2)).state_dict(), run_dir / "model.pt")
    proc = command("evaluating", ["train.json", "evaluate.json"], "--bundle_root", str(root), "--num_test_pairs", "2",
                   "--image_size", "[16,16,16]", cwd=BUNDLE_ROOT)  # fmt: skip
    assert_one_error_line(proc, str(run_dir / "model.pt"), "channels [4, 8, 16]")
    assert listing(root) == ["runs", "runs/synthetic_rigid_rigidity_jacobian",
                             "runs/synthetic_rigid_rigidity_jacobian/model.pt"]  # fmt: skip

    pair = _tiny_pair(tmp_path / "in")
    target = tmp_path / "a_file"
    target.write_text("x")
    proc = command("inference", ["inference.json"], "--bundle_root", str(BUNDLE_ROOT), "--fixed", pair["fixed"],
                   "--moving", pair["moving"], "--output_dir", str(target), cwd=tmp_path)  # fmt: skip
    assert_one_error_line(proc, str(target))
    proc = command("inference", ["inference.json", "refine.json"], "--bundle_root", str(BUNDLE_ROOT), "--fixed",
                   pair["fixed"], "--moving", pair["moving"], "--output_dir", str(tmp_path / "o"), "--progress", "no",
                   cwd=tmp_path)  # fmt: skip
    assert_one_error_line(proc, "option --progress: 'no'", "--progress true or --progress false")
    assert not (tmp_path / "o").exists()
    # a wrong --bundle_root: the default model's preprocessing is read from <bundle_root>/configs/ct.json
    proc = command("inference", ["inference.json"], "--bundle_root", str(tmp_path), "--fixed", pair["fixed"],
                   "--moving", pair["moving"], "--output_dir", str(tmp_path / "o"), cwd=BUNDLE_ROOT)  # fmt: skip
    assert_one_error_line(proc, str(tmp_path / "configs" / "ct.json"), "set --bundle_root")
    assert not (tmp_path / "o").exists()


def test_cli_errors_are_one_line(tmp_path):
    env = subprocess_env()
    cmd = [sys.executable, "-m", "scripts.regions.precompute", "--labels", str(tmp_path / "no.nii.gz"), "--out_dir",
           str(tmp_path / "o")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=BUNDLE_ROOT, env=env, capture_output=True, text=True)
    assert_one_error_line(proc, "no.nii.gz")
    target = tmp_path / "a_file"
    target.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "scripts.synthesis.synthetic", "write", "--out_dir",
                           str(target / "sub"), "--num_pairs", "1", "--shape", "[16,16,16]"], cwd=BUNDLE_ROOT, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert_one_error_line(proc, "a_file")


class _BrokenDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        from scripts.io.errors import InputError

        raise InputError(f"image /data/case_{index}.nii.gz: truncated file; download it again")


def test_input_error_in_a_dataloader_worker_keeps_its_one_line_message():
    loader = torch.utils.data.DataLoader(_BrokenDataset(), num_workers=1)
    with pytest.raises(Exception) as info:
        next(iter(loader))
    assert "Original Traceback" in str(info.value)  # torch re-raises it with the worker's traceback as its message
    err = find_input_error(info.value)
    assert str(err) == "image /data/case_0.nii.gz: truncated file; download it again"
