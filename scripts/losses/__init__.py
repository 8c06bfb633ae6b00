"""The mechanics of a displacement field and the losses built on them.

- ``mechanics``: grad u, J, det J, the strain and the per-voxel energies (the conventions of every loss and metric);
- ``biomechanical``: rigidity, shearing and log-Jacobian losses, the biomechanical regulariser, the full loss;
- ``mind``: the MIND-SSC descriptor (a modality-independent similarity).

May import: scripts.io, scripts.regions.
"""
