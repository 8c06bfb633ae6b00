"""Test-time refinement of each pair with the biomechanical prior (``configs/refine.json``).

- ``optimiser``: ``refine_pair``, coarse to fine with step control;
- ``pyramid``: the working grids, and images, fields and regions moved between them;
- ``terms``: the optimiser's own terms, the sliding-aware diffusion and the fold barrier;
- ``inferer``: the refinement as the inference workflow's inferer (regions from a segmentation or TotalSegmentator).

May import: scripts.io, scripts.regions, scripts.losses, scripts.networks, scripts.evaluation, scripts.inference.
"""
