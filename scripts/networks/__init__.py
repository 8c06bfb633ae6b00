"""The registration model: backbone + integration + warp, and the batch preparation of the Ignite workflows.

- ``registration``: ``RegistrationNet`` (the backbone, ``network_def``, stays TorchScript-exportable on its own);
- ``rigid``: ``RigidPrealign``, the rigid alignment on the bones that the CT model runs before its backbone.

May import: scripts.io, scripts.regions, scripts.losses.
"""
