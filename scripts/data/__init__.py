"""The datasets that the configs name, and what they need: pair lists, checks before the first epoch, transforms.

- ``datasets``: the dataset factory behind the ``dataset`` override; file pairs preprocessed once per image;
- ``lists``: the pair lists (Learn2Reg JSON, JSON/CSV);
- ``checks``: every file present and readable before the first epoch;
- ``transforms``: the MapTransforms of the bundle (regions, their resampling, vector reorientation, resizing);
- ``preprocessing``: a model's preprocessing read from the config that declares it.

May import: scripts.io, scripts.regions, scripts.losses, scripts.networks, scripts.synthesis.
"""
