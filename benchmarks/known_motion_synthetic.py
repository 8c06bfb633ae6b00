"""Known-motion evaluation of trained synthetic-set models: endpoint error, slip ratio, and the sliding figure.

Loads the ``model.pt`` of a baseline run and a full-model run (``configs/train.json`` networks), registers the test
pairs, and writes per model ``<out_dir>/<regulariser>/metrics.csv`` and ``summary.json`` with the paper's metrics
(:func:`scripts.evaluation.metrics.pair_metrics`) plus the known-motion ones
(:func:`scripts.evaluation.motion_metrics.known_motion_metrics`: ``epe_mean``, ``epe_p95``, ``epe_mean_before`` in mm,
and on the shearing set ``slip_ratio``, ``true_jump_mm``), prints the table, and for the shearing set draws
``<out_dir>/sliding_figure.png`` (:func:`scripts.evaluation.figures.save_sliding_figure`) on the test pair with the
largest true slip::

    python benchmarks/known_motion_synthetic.py --dataset synthetic_shearing --out_dir /tmp/m12/eval \\
        --runs "{'jacobian': 'runs/synthetic_shearing_jacobian',
                 'rigidity_shearing_jacobian': 'runs/synthetic_shearing_rigidity_shearing_jacobian'}"

``--overrides "{'image_size': [32, 32, 32]}"`` must repeat any config override the runs were trained with.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from monai.bundle import ConfigParser  # noqa: E402

from scripts.data.datasets import registration_dataset  # noqa: E402
from scripts.evaluation.figures import save_sliding_figure  # noqa: E402
from scripts.evaluation.metrics import pair_metrics  # noqa: E402
from scripts.evaluation.motion_metrics import known_motion_metrics  # noqa: E402
from scripts.networks.registration import PrepareRegistrationBatch  # noqa: E402

COLUMNS = ("mse", "rigidity_error", "epe_mean", "epe_p95", "slip_ratio", "true_jump_mm", "epe_mean_before")


def load_run(run_dir: str, dataset: str, regulariser: str, overrides: dict) -> tuple[torch.nn.Module, ConfigParser]:
    """The RegistrationNet of a training run (``<run_dir>/model.pt``) and its parsed config."""
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.json"))
    parser.update({"bundle_root": str(ROOT), "dataset": dataset, "regulariser": regulariser, "output_dir": run_dir})
    parser.update({**overrides, "device": "$torch.device('cpu')"})
    net = parser.get_parsed_content("registration_net")
    path = Path(run_dir) / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train the run first (python -m monai.bundle run training ...)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.backbone.load_state_dict(state.get("model", state) if isinstance(state, dict) and "model" in state else state)
    return net.eval(), parser


def evaluate(net: torch.nn.Module, parser: ConfigParser, num_pairs: int) -> tuple[list[dict], dict]:
    """Per-pair metric rows on the test split, and the (first-batch-first) predictions for the figure."""
    dataset = registration_dataset(
        name=parser["dataset"],
        split="test",
        num_pairs=num_pairs,
        seed=parser.get_parsed_content("seed"),
        shape=parser.get_parsed_content("image_size"),
    )
    classes = parser.get_parsed_content("label_classes")
    prepare = PrepareRegistrationBatch(num_label_classes=classes, physical_spacing=True)
    rows, outputs = [], []
    for batch in torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False):
        inputs, targets, _, kwargs = prepare(batch)
        with torch.no_grad():
            pred = net(inputs, **kwargs)
        values = pair_metrics(pred, targets, classes)
        values.update(known_motion_metrics(pred, targets))
        for b in range(inputs.shape[0]):
            rows.append({"pair": len(rows), **{k: float(v[b]) for k, v in values.items()}})
            kept = {k: v[b] for k, v in targets.items()}
            outputs.append({"warped": pred["warped"][b, 0], "ddf": pred["ddf"][b], **kept})
    return rows, outputs


def summarise(rows: list[dict], out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {"pairs": len(rows)}
    for name in (k for k in rows[0] if k != "pair"):
        values = torch.tensor([r[name] for r in rows], dtype=torch.float64)
        values = values[~values.isnan()]
        summary[name] = {
            "mean": float(values.mean()) if len(values) else None,
            "std": float(values.std(unbiased=False)) if len(values) else None,
            "median": float(values.median()) if len(values) else None,
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _cell(value: dict | None) -> str:
    return f"{value['mean']:>13.4f} ({value['std']:.3f})" if value and value["mean"] is not None else f"{'-':>22}"


def run(
    dataset: str = "synthetic_shearing",
    runs: dict | None = None,
    out_dir: str = "/tmp/known_motion",
    overrides: dict | None = None,
    num_pairs: int = 50,
    figure_pair: int | None = None,
) -> dict:
    """Evaluate each ``{regulariser: run_dir}`` of ``runs``; returns ``{regulariser: summary}``."""
    if not runs:
        raise ValueError("runs: give {regulariser: run_dir} for the baseline and the full model")
    out, summaries, outputs = Path(out_dir), {}, {}
    for regulariser, run_dir in runs.items():
        net, parser = load_run(run_dir, dataset, regulariser, overrides or {})
        rows, outputs[regulariser] = evaluate(net, parser, num_pairs)
        summaries[regulariser] = summarise(rows, out / regulariser)
    print(f"\n{dataset}: {num_pairs} test pairs, mean (std); epe in mm (= voxels of the {dataset} grid)")
    print(f"{'regulariser':<28}" + "".join(f"{c:>22}" for c in COLUMNS))
    for regulariser, summary in summaries.items():
        print(f"{regulariser:<28}" + "".join(_cell(summary.get(c)) for c in COLUMNS))
    if len(summaries) == 2:
        (base, a), (model, b) = summaries.items()
        ratio = a["rigidity_error"]["mean"] / max(b["rigidity_error"]["mean"], 1e-12)
        print(f"rigidity error {ratio:.1f}x lower with {model} than {base}")
    first = next(iter(outputs.values()))
    if "interface_mask" in first[0]:
        pick = figure_pair
        if pick is None:  # the pair with the largest true slip
            pick = max(range(len(first)), key=lambda i: float(first[i]["true_ddf"][0].abs().max()))
        target = first[pick]
        results = {reg: (o[pick]["warped"], o[pick]["ddf"]) for reg, o in outputs.items()}
        path = save_sliding_figure(
            target["fixed"][0], target["moving"][0], results, out / "sliding_figure.png", true_ddf=target["true_ddf"]
        )
        print(f"figure (test pair {pick}): {path}")
    return summaries


def main(**kwargs) -> None:
    """Command line: the arguments of :func:`run`."""
    run(**kwargs)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
