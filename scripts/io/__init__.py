"""Files in and out: the bottom room, which every other may use and which uses none.

- ``errors``: the user-error class and the one-line ``error:`` printing;
- ``options``: the true/false options of the configs, parsed once; the torch threads from the free cores;
- ``files``: temporary names that record their writer, atomic text writes, output-folder checks;
- ``image_io``, ``image_formats``: NIfTI, NRRD/MHA/DICOM headers and voxels with their checks (which series of a DICOM
  folder is read, missing slices), atomic image writes;
- ``resampling``: resampling through affines, the field back on the fixed image's grid, warping;
- ``weights``: reading model weights and checking that they fit the network;
- ``checkpoints``: crash-safe checkpoints and resume.

May import: nothing of the project.
"""
