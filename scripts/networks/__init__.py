"""The registration model: backbone + integration + warp, and the batch preparation of the Ignite workflows.

- ``registration``: ``RegistrationNet`` (the backbone, ``network_def``, stays TorchScript-exportable on its own).

May import: scripts.io, scripts.regions, scripts.losses.
"""
