"""biomech-reg's custom code, referenced by the configs (``_target_: scripts.<room>.<module>.<name>``).

One sub-package (a room) per stage, dependencies pointing one way, from the bottom up:

- ``io``: errors, files and images in and out, resampling, checkpoints and weights;
- ``regions``: label tables, segmentation -> regularisation mask and sliding normals, the cavity wall, TotalSegmentator;
- ``losses``: the mechanics of a displacement field, the biomechanical losses, MIND;
- ``networks``: the registration model around the backbone and the batch preparation of the workflows;
- ``synthesis``: generated images with known motion (the paper's synthetic sets, CT phantoms, breathing on real CT);
- ``data``: the datasets the configs name, their pair lists, checks and transforms;
- ``evaluation``: metrics, known-motion metrics, Learn2Reg scoring, figures, reporting handlers;
- ``inference``: registration of user pairs: pair lists, checks before work, prediction, the outputs;
- ``refinement``: the per-pair optimiser with the biomechanical prior and its inferer.

Each room's ``__init__`` says what it holds and, on a line ``May import:``, which rooms it may import; a room imports
none above it and no module imports another inside a function except to defer a heavy optional dependency (said in a
comment). ``tests/test_layout.py`` checks both from the source, function-level imports included.
"""
