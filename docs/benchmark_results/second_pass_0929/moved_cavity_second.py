"""The moved cavity (the default without a segmentation) with 0.9.29's second pass instead of none (a lead, not
adopted in 0.9.29): per case the first pass without labels (``refine_image``), the cavity it moved
(``motion_labels``, 0.6 of its 95th percentile, grown by two voxels), then the labelled refinement with it
(``refine_full``) with no second pass (0.9.28's and 0.9.29's product) and with the second pass from a step, 120
iterations. Cases as ``../motion_cavity_0927/grow.py`` names them (``dcm<seed>-cranial``, ``val<i>``, ``phantom<seed>``,
``ct<seed>``, ...).

    PYTHONPATH=. python docs/benchmark_results/second_pass_0929/moved_cavity_second.py ct0,ct1,ct2
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "motion_cavity_0927"))
from grow import any_case  # noqa: E402  (the 0.9.27 folder's script)

from benchmarks.benchmark_ct_refine import run_method  # noqa: E402
from benchmarks.ct_evaluation import case_regions, evaluate  # noqa: E402
from scripts.regions import label_free  # noqa: E402
from scripts.regions.cavity import body_mask  # noqa: E402
from scripts.regions.labels import RIGID  # noqa: E402

SECOND = {f"second {n}": {"second_iterations": n} for n in (0, 120)}  # the lead's two variants


def main(names: list[str], variants: dict[str, dict] = SECOND, case_of=any_case) -> None:
    """Per case (``case_of(name)``) one line: each variant's (its name: the labelled refinement's options besides
    LNCC; ``motion_cavity``: the moved cavity's fraction, 0.6 if not given) slip, band and body EPE, rigidity error,
    folds off the true band and seconds (the first pass's included)."""
    for name in names:
        case = case_of(name)
        regions, spacing = case_regions(case, 6.0), np.asarray(case["spacing"], float)
        first, first_seconds, _ = run_method("refine_image", case, {"similarity": "lncc"}, {})
        bones, body = label_free.image_bones(case["fixed"])[0] == RIGID, body_mask(case["fixed"])
        field = first * spacing[:, None, None, None]
        out = []
        for variant, options in variants.items():
            seg = label_free.motion_labels(field, bones, body, options.get("motion_cavity", 0.6), spacing=spacing)
            ddf, seconds, own = run_method(
                "refine_full", {**case, "fixed_seg": seg}, dict(options, similarity="lncc"), {}
            )
            out.append(result(variant, evaluate(ddf, case, regions, own), first_seconds + seconds))
        print(name + ": " + " | ".join(out), flush=True)


def result(label: str, r: dict, seconds: float) -> str:
    """One variant's part of a case's line: ``evaluate``'s slip, band and body EPE, rigidity error, folds off the true
    band, and the seconds."""
    return (
        f"{label}: slip {r['slip']:.3f} band {r['epe_band']:.2f} body {r['epe_body']:.2f} "
        f"rig {r['rigidity']:.4f} foldoff {r['fold_pct_off_band']:.3f} s {seconds:.1f}"
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1].split(","))
