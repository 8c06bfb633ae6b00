"""Can a training config's network fit ONE generated pair? A capacity check before a long training run.

A network that registers unseen pairs badly after a training run either cannot represent the motion (too small, too
coarse, an optimiser that does not move it) or has not seen enough pairs to generalise. This script separates the two:
it trains the configs' ``registration_net`` on the first pair of the training split alone (aligned on its bones first
when the configs' network has the rigid pre-alignment, as the CT preset's), with the known field as
the only loss (mean endpoint error, mm, over the grid: the ``delta`` term of
:class:`scripts.losses.biomechanical.RegistrationLoss`), Adam at the configs' learning rate, and prints the endpoint
error as it falls, against no registration::

    python -m benchmarks.fit_one_pair                          # the CPU preset of the CT model
    python -m benchmarks.fit_one_pair --iterations 300 --every 25

Last line: ``FIT <iterations> <epe at the start> <epe at the end> <epe of no registration>`` (mm). A preset whose
network fits one pair to well under a millimetre, yet stays far from the motion on unseen pairs after training, is
limited by the pairs and iterations it trains on, not by its size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from monai.data import list_data_collate
from monai.utils import set_determinism

from benchmarks.benchmark_training_step import _parser
from scripts.losses.biomechanical import RegistrationLoss
from scripts.networks.registration import PrepareRegistrationBatch

DEFAULT_CONFIGS = "train.json,ct.json,ct_generated.json"


def fit_one_pair(configs: str, overrides: dict, iterations: int = 300, every: int = 25, seed: int = 0) -> dict:
    """``{"curve": [(iteration, epe mm)], "none": epe of the zero field}`` of the configs' network on one pair."""
    set_determinism(seed)  # the network's initial weights and the pair's augmentation: one run like the next
    with tempfile.TemporaryDirectory() as run_dir:
        parser = _parser(configs, overrides, run_dir)
        if "cache" in parser.get("dataset_options", {}):
            parser["dataset_options"]["cache"] = "none"
        item = parser.get_parsed_content("train#dataset")[0]  # one read: augmented once, then kept
        net = parser.get_parsed_content("registration_net")
        lr = float(parser.get_parsed_content("learning_rate"))
    # the batch as the trainer prepares it (inputs, the known field, the spacing in mm); the loss's field term alone
    pair, targets, _, _ = PrepareRegistrationBatch(physical_spacing=True)(list_data_collate([item]))
    loss = RegistrationLoss(alpha=0.0, gamma=0.0, delta=1.0)

    def endpoint_error(ddf: torch.Tensor) -> torch.Tensor:
        terms = loss.terms(
            targets["fixed"], targets["moving"], ddf, spacing=targets["spacing"], true_ddf=targets["true_ddf"]
        )
        return terms["field"]

    kwargs = {}
    if net.prealign is not None:  # the CT preset aligns each pair on its bones first: found once, kept
        spacing = targets["spacing"]
        with torch.no_grad():
            kwargs = {"spacing": spacing, "rigid": net.prealign(pair[:, :1], pair[:, 1:2], spacing)}
    optimiser = torch.optim.Adam(net.parameters(), lr)
    curve = []
    for it in range(iterations + 1):
        epe = endpoint_error(net(pair, **kwargs)["ddf"])
        if it % every == 0 or it == iterations:
            curve.append((it, float(epe.detach())))
            print(f"iteration {it}: endpoint error {float(epe.detach()):.3f} mm  {time.strftime('%X')}", flush=True)
        if it < iterations:
            optimiser.zero_grad()
            epe.backward()
            optimiser.step()
    none = float(endpoint_error(torch.zeros_like(targets["true_ddf"])))
    return {"curve": curve, "none": none}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="files of configs/, merged in order")
    p.add_argument("--override", default="{}", help="JSON of config overrides, e.g. '{\"image_size\": [40, 32, 24]}'")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--every", type=int, default=25, help="print the endpoint error every so many iterations")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = fit_one_pair(args.configs, json.loads(args.override), args.iterations, args.every)
    (_, start), (_, end) = result["curve"][0], result["curve"][-1]
    print(f"FIT {args.iterations} {start:.3f} {end:.3f} {result['none']:.3f}")
    return result


if __name__ == "__main__":
    main()
