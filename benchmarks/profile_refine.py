"""Where an iteration of the refinement spends its time: each term of the finest level, forward and backward.

The case is that of :mod:`benchmarks.benchmark_refine` (the real abdomen CT deformed by a known motion, 1 mm,
192 x 160 x 256; its 2 mm working grid 97 x 81 x 129), with its regions. The finest level's terms are built as
:func:`scripts.refinement.optimiser.refine_pair` builds them (:func:`~scripts.refinement.optimiser.level_terms`) on
a field that is not zero (the true field, resampled), and each term's forward and backward is timed over
``iterations`` repetitions after one warm-up; then, with ``--table``, PyTorch's profiler prints the operators of
whole iterations, the most expensive first. The figures are per iteration, in milliseconds.

Usage::

    python -m benchmarks.profile_refine --threads 1
    python -m benchmarks.profile_refine --threads 2 --iterations 20 --table 25
    python -m benchmarks.profile_refine --threads 2 --similarity mind   # the MIND descriptor's 12 channels warped
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from benchmarks.benchmark_refine import build_case
from scripts.losses.biomechanical import BiomechanicalLoss
from scripts.refinement.optimiser import backward_terms, level_terms
from scripts.refinement.pyramid import (
    WORKING_GRID_MM,
    grid_spacing,
    resize_field,
    resize_image,
    resize_regions,
    resize_side,
    working_shape,
)
from scripts.refinement.similarity import GridWarp, Similarity
from scripts.regions.labels import SLIDING


def finest_level(case: dict, grid_mm: float = WORKING_GRID_MM) -> dict:
    """The finest level's inputs on the working grid: images, regions, side, spacing and a field (the true one)."""
    fixed, moving = (torch.from_numpy(case[k])[None, None] for k in ("fixed", "moving"))
    in_shape = tuple(fixed.shape[2:])
    shape = working_shape(in_shape, (1.0, 1.0, 1.0), grid_mm)
    spacing = grid_spacing(in_shape, (1.0, 1.0, 1.0), shape)
    mask, normals = resize_regions(
        torch.from_numpy(case["mask"])[None, None].float(), torch.from_numpy(case["normals"])[None], shape
    )
    side = resize_side(torch.from_numpy(case["side"])[None, None].float(), shape)
    v = resize_field(torch.from_numpy(case["v"])[None], shape)
    return dict(
        fixed=resize_image(fixed, shape),
        moving=resize_image(moving, shape),
        mask=mask,
        normals=normals,
        side=side,
        spacing=spacing,
        field=v,
        shape=shape,
    )


def main(threads: int = 1, iterations: int = 10, table: int = 0, similarity: str = "lncc") -> None:
    torch.set_num_threads(threads)
    case = dict(np.load(build_case()))
    level = finest_level(case)

    sim = Similarity(similarity, 3, 1, 2)
    source, target = sim.prepare(level["fixed"], level["moving"], level["spacing"])
    param = level["field"].clone().requires_grad_(True)
    sliding = level["mask"] == SLIDING
    losses = (sim, GridWarp(), BiomechanicalLoss(fold_penalty=1.0))
    terms = level_terms(
        param,
        (1.0, 0.5, 1.0, 10.0),
        losses,
        source,
        target,
        level["spacing"],
        level["mask"],
        level["normals"],
        sliding,
        level["normals"],
        level["side"],
    )
    per_term = {}
    for name, (weight, term) in terms.items():
        single = {name: (weight, term)}
        backward_terms(single)  # warm-up
        start = time.perf_counter()
        for _ in range(iterations):
            param.grad = None
            backward_terms(single)
        per_term[name] = round((time.perf_counter() - start) / iterations * 1000, 1)
    start = time.perf_counter()
    for _ in range(iterations):
        param.grad = None
        backward_terms(terms)
    whole = (time.perf_counter() - start) / iterations * 1000
    print(
        json.dumps(
            dict(
                grid=list(level["shape"]),
                threads=threads,
                similarity=similarity,
                iterations=iterations,
                ms_per_iteration=round(whole, 1),
                ms_per_term=per_term,
                sliding_percent=round(float(sliding.float().mean()) * 100, 2),
            )
        ),
        flush=True,
    )
    if table > 0:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(iterations):
                param.grad = None
                backward_terms(terms)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=table))


if __name__ == "__main__":
    import fire

    fire.Fire(main)
