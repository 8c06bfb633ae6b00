"""Time one training iteration of a training config on this machine, and plan a training run within a time budget.

Prints, for the configs of ``configs/`` merged in order (default: the CT model trained on generated pairs, GPU
preset): the seconds to generate (or load) one training item in one process, the milliseconds of one training
iteration (the trainer's own iteration: preparing the batch, the network, the loss, backward and the optimiser
step; one item repeated ``batch_size`` times, after warm-up), the peak GPU memory, and, with ``--budget-seconds``,
the training pairs and epochs that fit in that many seconds when ``--workers`` DataLoader workers generate the pairs
during the first epoch (later epochs read the disk cache)::

    python -m benchmarks.benchmark_training_step
    python -m benchmarks.benchmark_training_step --budget-seconds 420 --workers 14   # last line: PLAN <pairs> <epochs>

The plan: the first epoch generates the ``pairs`` (``workers`` processes) about ``--generation-share`` of the
budget; the epochs after it run at the measured iteration time. It is an estimate for choosing ``--epochs`` and
``--num_train_pairs`` of a run on a machine you hold for a fixed time (a lent GPU): run the training under
``timeout`` all the same, each epoch's checkpoint is kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from monai.bundle import ConfigParser
from monai.data import list_data_collate

from benchmarks.benchmark_inference import BUNDLE_ROOT

DEFAULT_CONFIGS = "train.json,ct.json,ct_generated.json,ct_generated_gpu.json"


def _parser(configs: str, overrides: dict, output_dir: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLE_ROOT / "configs" / name) for name in configs.split(",")])
    parser["bundle_root"] = str(BUNDLE_ROOT)
    parser["output_dir"] = output_dir
    for key, value in overrides.items():
        parser[key] = value
    return parser


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(configs: str, overrides: dict, items: int = 2, iterations: int = 20, warmup: int = 5) -> dict:
    """Seconds per generated item (one process) and milliseconds per training iteration of the merged configs."""
    with tempfile.TemporaryDirectory() as run_dir:
        parser = _parser(configs, overrides, run_dir)
        if "cache" in parser.get("dataset_options", {}):
            parser["dataset_options"]["cache"] = "none"  # time the generation, not a cache left by an earlier run
        if "initialize" in parser:
            parser.get_parsed_content("initialize")  # determinism, as the training run has it
        if "cudnn_setup" in parser:
            parser.get_parsed_content("cudnn_setup")  # cuDNN's settings, which the run sets after parsing its flags
        dataset = parser.get_parsed_content("train#dataset")
        seconds = []
        for index in range(items):
            start = time.perf_counter()
            item = dataset[index]
            seconds.append(time.perf_counter() - start)
        batch = list_data_collate([item] * int(parser["batch_size"]))
        trainer = parser.get_parsed_content("train#trainer")
        device = torch.device(parser.get_parsed_content("device"))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for step in range(warmup + iterations):
            _sync(device)
            start = time.perf_counter()
            trainer._iteration(trainer, batch)
            _sync(device)
            if step >= warmup:
                times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        return {
            "device": str(device),
            "generation_s_per_item": round(statistics.mean(seconds), 3),
            "ms_per_iteration": round(1000 * statistics.median(times), 1),
            "batch_size": int(parser["batch_size"]),
            "peak_gpu_gib": None if peak is None else round(peak, 2),
            "max_pairs": int(parser["num_train_pairs"]),
            "val_pairs": int(parser["num_val_pairs"]),
        }


def plan(
    figures: dict,
    budget_s: float,
    workers: int,
    generation_share: float = 0.35,
    startup_s: float = 30.0,
    efficiency: float = 0.5,
) -> tuple[int, int]:
    """(pairs, epochs) that fit in ``budget_s``: the command's start-up, a first epoch that generates the pairs with
    ``workers`` processes, the epochs after it at the measured iteration time, the validation at the end (its pairs
    generated then: a run killed during it keeps no checkpoint of its last epoch).

    ``efficiency``: the share of ``workers`` / (seconds per item) that the workers deliver beside the training (on
    the lent H200's 16 cores, 14 workers generated 4.9 pairs a second at 1.38 s per pair alone: 0.48;
    docs/benchmark_results/gpu_training/)."""
    rate = efficiency * workers / max(figures["generation_s_per_item"], 1e-3)  # items per second, first epoch
    pairs = int(min(figures["max_pairs"], max(figures["batch_size"] * 8, generation_share * budget_s * rate)))
    pairs -= pairs % figures["batch_size"]
    epoch_s = pairs / figures["batch_size"] * figures["ms_per_iteration"] / 1000
    first_s = max(pairs / rate, epoch_s)
    left = budget_s - startup_s - first_s - 2 * figures["val_pairs"] / rate
    return pairs, max(1, 1 + int(left // max(epoch_s, 1e-3)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="files of configs/, merged in order")
    ap.add_argument("--override", default="{}", help="JSON dict of config overrides, e.g. '{\"batch_size\": 2}'")
    ap.add_argument("--items", type=int, default=2, help="items generated (timed) before the iterations")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="iterations before the timed ones (cuDNN's autotuning)")
    ap.add_argument("--budget-seconds", type=float, default=None)
    ap.add_argument("--workers", type=int, default=8, help="DataLoader workers that generate the first epoch")
    ap.add_argument("--generation-share", type=float, default=0.35, help="share of the budget the first epoch takes")
    ap.add_argument("--efficiency", type=float, default=0.5, help="workers' generation rate / (workers / s per item)")
    args = ap.parse_args(argv)
    figures = measure(
        args.configs, json.loads(args.override), items=args.items, iterations=args.iterations, warmup=args.warmup
    )
    print(json.dumps(figures), flush=True)
    if args.budget_seconds:
        pairs, epochs = plan(
            figures, args.budget_seconds, args.workers, args.generation_share, efficiency=args.efficiency
        )
        print(f"PLAN {pairs} {epochs}", flush=True)


if __name__ == "__main__":
    main()
