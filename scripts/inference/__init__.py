"""Registration of user pairs with a trained model (``configs/inference.json``).

- ``pairs``: which files to register, their header checks, the output names;
- ``preflight``: checks before work (weights, output folder and room, finite voxels of every pair);
- ``predict``: loading with the model's own preprocessing, prediction, the workflow;
- ``modality``: one warning line when a model gets images unlike its training data, and when its field leaves the
  pair less alike than before;
- ``writer``, ``streaming``, ``file_streams``: the outputs on the fixed image's grid; slab-wise outputs of large grids;
  their files (NIfTI, NRRD, MetaImage) written slab by slab;
- ``batch``: batch runs: each pair's record, resume, the pairs shared among ``torchrun`` processes, one summary.

May import: scripts.io, scripts.regions, scripts.losses, scripts.networks, scripts.evaluation.
"""
