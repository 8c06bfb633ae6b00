"""Model Zoo conformance: metadata against the schema, the network's input/output, TorchScript export, and the
workflow properties ConfigWorkflow checks (with the MLflow settings)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO.parent / "shared" / "schema" / "meta_schema_20240725.json"
META = REPO / "configs" / "metadata.json"
CONFIG = REPO / "configs" / "inference.json"
NET = {"spatial_dims": 3, "in_channels": 2, "out_channels": 3, "channels": (8, 16, 32, 64), "strides": (2, 2, 2)}


def backbone(seed: int = 0) -> torch.nn.Module:
    from monai.networks.nets import AttentionUnet

    torch.manual_seed(seed)
    return AttentionUnet(**NET).eval()


def test_model_zoo_conformance(monkeypatch):
    """verify_metadata (offline: the schema beside the repository) and verify_net_in_out pass.

    The functions behind ``python -m monai.bundle verify_metadata|verify_net_in_out``, called in this process with the
    arguments of the documented commands (run from the bundle root), to spare two interpreter start-ups.
    """
    if not SCHEMA.is_file():
        pytest.skip(f"metadata schema not found at {SCHEMA} (verify_metadata would download it)")
    from monai.bundle import verify_metadata, verify_net_in_out

    monkeypatch.chdir(REPO)
    verify_metadata(meta_file="configs/metadata.json", filepath=str(SCHEMA))  # raises on a schema violation
    verify_net_in_out(net_id="network_def", meta_file="configs/metadata.json", config_file="configs/inference.json")


def test_workflow_properties_and_mlflow_settings(tmp_path):
    """The train config has what ConfigWorkflow checks (Model Zoo), and `--tracking mlflow` patches it as documented."""
    import json

    from monai.bundle import ConfigWorkflow
    from monai.utils import set_determinism

    common = dict(
        config_file=str(REPO / "configs" / "train.json"),
        meta_file=str(REPO / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        bundle_root=str(tmp_path),
    )
    tiny = dict(image_size=[16, 16, 16], num_train_pairs=4, num_val_pairs=2, channels=[4, 8, 16], strides=[2, 2])
    try:
        workflow = ConfigWorkflow(**common, **tiny)
        workflow.initialize()
        assert workflow.check_properties() == []
    finally:
        set_determinism(seed=None)

    # mlflow itself is optional (not installed for the tests): check the patched config, instantiate nothing
    parser = ConfigWorkflow(**common, tracking="mlflow").parser
    assert parser.get("train#handlers")[-1]["_target_"] == "MLFlowHandler"
    assert parser.get("validate#handlers")[-1]["_target_"] == "MLFlowHandler"
    output_dir = Path(parser.get_parsed_content("output_dir"))
    assert parser.get_parsed_content("tracking_uri").endswith(str(output_dir / "mlruns.db"))
    assert list(output_dir.glob("config_*.json"))  # the executed config, logged as an MLflow artifact

    multi = json.loads((REPO / "configs" / "multi_gpu_train.json").read_text())
    assert {"run", "training", "finalize", "+initialize"} <= set(multi)


def test_ckpt_export_torchscript_matches_checkpoint(tmp_path):
    net = backbone(5)
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    ts = tmp_path / "model.ts"
    # the function behind `python -m monai.bundle ckpt_export network_def --filepath models/model.ts
    # --ckpt_file models/model.pt --meta_file configs/metadata.json --config_file configs/inference.json`
    from monai.bundle import ckpt_export

    ckpt_export("network_def", filepath=str(ts), ckpt_file=str(ckpt), meta_file=str(META), config_file=str(CONFIG))
    scripted = torch.jit.load(str(ts)).eval()
    eager = backbone(99)
    eager.load_state_dict(torch.load(ckpt, weights_only=True))
    x = torch.rand(1, 2, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        velocity_eager, velocity_ts = eager(x), scripted(x)
        torch.testing.assert_close(velocity_ts, velocity_eager, atol=1e-5, rtol=0)
        from monai.networks.blocks import DVF2DDF

        integrate = DVF2DDF(num_steps=7)
        torch.testing.assert_close(integrate(velocity_ts), integrate(velocity_eager), atol=1e-5, rtol=0)
