"""The outputs of a large pair computed and written slab by slab (clinical sizes in bounded memory).

:func:`scripts.inference.writer.finish_pair` computes each output on the whole fixed grid at once: a 512 x 512 x 300
pair then holds several full-size copies of the field (6+ GiB). :func:`finish_pair_in_slabs` computes the same outputs
for slabs of ``slab`` slices along the fixed grid's last axis (the slowest axis of a NIfTI file, so each slab is a
contiguous piece of every output file) and streams them into the files:

- the field on the fixed grid (trilinear from the network grid, the vectors re-expressed exactly: the same maths as
  :func:`scripts.io.resampling.field_to_fixed_grid`), with a one-slice halo for det J (central differences inside,
  one-sided at the volume's border, exactly as on the whole volume);
- the warped moving image and label map (:func:`scripts.io.resampling.sample_volume`);
- statistics: det J is kept whole (one float32 volume, for its percentiles), the displacement size is accumulated.

Only one full-size float volume (det J) besides the moving image is alive. Files are written through
:class:`NiftiStream` (header, then the voxel data in file order; ``.nii.gz`` as parallel-compressed gzip members)
into temporary files renamed together at the end, so a failed run leaves no partial output.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scripts.inference.file_streams import ItkStream, NiftiStream
from scripts.io.errors import write_error
from scripts.io.resampling import _mix, index_map, sample_volume
from scripts.losses.mechanics import jacobian_determinant

__all__ = ["SlabField", "finish_pair_in_slabs", "SLAB_VOXELS"]

SLAB_VOXELS = 2**22  # voxels per slab (4 Mi: 16 slices of 512 x 512)


class SlabField:
    """The network's displacement on the fixed grid, slab by slab: ``field(a, b)`` is the (3, X, Y, b - a) field in
    fixed-grid voxels for slices a..b-1 of the last axis (what :func:`scripts.io.resampling.field_to_fixed_grid` gives
    for those slices)."""

    def __init__(self, ddf_net: torch.Tensor, net_affine, fixed_affine, fixed_shape: Sequence[int]):
        ddf = ddf_net[0] if ddf_net.ndim == 5 else ddf_net
        ddf = (ddf.as_tensor() if hasattr(ddf, "as_tensor") else ddf).float()
        a_net, a_fix = np.asarray(net_affine, np.float64), np.asarray(fixed_affine, np.float64)
        self.mixed = _mix(np.linalg.inv(a_fix[:3, :3]) @ a_net[:3, :3], ddf)
        self.to_net = np.linalg.inv(a_net) @ a_fix
        self.shape = tuple(int(s) for s in fixed_shape)

    def __call__(self, a: int, b: int) -> torch.Tensor:
        shift = np.eye(4)
        shift[2, 3] = a
        part = (self.shape[0], self.shape[1], b - a)
        return sample_volume(self.mixed, index_map(self.to_net @ shift, part), part, fill=None)[0]


def _slab_size(shape: Sequence[int], slab: int | None) -> int:
    return int(slab) if slab else max(1, SLAB_VOXELS // max(1, int(shape[0]) * int(shape[1])))


@torch.no_grad()
def finish_pair_in_slabs(pair, ddf_net: torch.Tensor, paths: dict, save_jacobian: bool = True,
                         compression: str = "fast", write_threads: int = 2, slab: int | None = None,
                         ras_to_lps=(-1.0, -1.0, 1.0)) -> dict[str, Any]:  # fmt: skip
    """The outputs of :func:`scripts.inference.writer.finish_pair` (NIfTI, NRRD or MetaImage as ``paths`` are named;
    no Learn2Reg files) computed and written slab by slab. ``paths``: the output paths by kind
    (:func:`scripts.inference.pairs.output_paths`). Returns ``{"det": full det J (X, Y, Z) tensor, "disp_mean_mm",
    "disp_max_mm", "inside_percent", "warped_label": array or None, "written": {kind: path}}``.

    Compression (``compression``: see :func:`scripts.io.image_io.write_niftis_atomically`): "fast" stores the ddf and
    det J maps uncompressed (inside the gzip container for ``.nii.gz``; raw NRRD / MetaImage, as the whole-grid path
    writes them) and compresses the images at zlib level 1; "small": level 6 everywhere; ``.nii``: none."""
    shape = pair.fixed_shape
    nx, ny, nz = shape
    step = _slab_size(shape, slab)
    name = str(paths["ddf"]).lower()
    itk = name.endswith((".nrrd", ".mha"))

    def level(kind: str) -> int | None:
        if name.endswith(".nii"):
            return None
        if compression == "small":
            return 6
        return (None if itk else 0) if kind in ("ddf", "jacdet") else 1

    def stream(kind: str, dtype, components: int = 1):
        if itk:
            return ItkStream(paths[kind], shape, dtype, a_fix, level(kind), components, pool)
        vector = (1, components) if components > 1 else ()
        return NiftiStream(paths[kind], (*shape, *vector), dtype, a_fix, pair.fixed_codes,
                           "vector" if components > 1 else None, level(kind), components, pool)  # fmt: skip

    field = SlabField(ddf_net, pair.net_affine, pair.fixed_affine, shape)
    a_fix = np.asarray(pair.fixed_affine, np.float64)
    mm = a_fix[:3, :3] * np.asarray(ras_to_lps)[:, None]  # voxels -> LPS mm, one 3x3
    to_moving = np.linalg.inv(np.asarray(pair.moving_affine, np.float64)) @ a_fix
    moving = pair.moving.as_tensor() if hasattr(pair.moving, "as_tensor") else pair.moving
    moving = moving.float()[None]
    fill = float(moving.min())
    label = None
    if pair.moving_label is not None:
        label = torch.from_numpy(np.ascontiguousarray(pair.moving_label, dtype=np.float32))[None]
    pool = ThreadPoolExecutor(max_workers=max(1, int(write_threads)))
    streams: dict[str, NiftiStream | ItkStream] = {}
    try:
        Path(paths["ddf"]).parent.mkdir(parents=True, exist_ok=True)
        streams["ddf"] = stream("ddf", np.float32, components=3)
        if save_jacobian:
            streams["jacdet"] = stream("jacdet", np.float32)
        streams["warped"] = stream("warped", pair.moving_dtype)
        if label is not None:
            streams["warped_label"] = stream("warped_label", pair.moving_label.dtype)
            warped_label = np.empty(shape, dtype=pair.moving_label.dtype)
        det_full = torch.empty(shape, dtype=torch.float32)
        disp_sum, disp_max, inside_count = 0.0, 0.0, 0
        for a in range(0, nz, step):
            b = min(a + step, nz)
            lo, hi = max(a - 1, 0), min(b + 1, nz)
            halo = field(lo, hi)
            det_full[:, :, a:b] = jacobian_determinant(halo[None])[0][:, :, a - lo : b - lo]
            ddf = halo[:, :, :, a - lo : b - lo]
            del halo
            disp = _mix(mm, ddf)  # (3, X, Y, dz) LPS mm
            mag = disp.square().sum(dim=0).sqrt()
            disp_sum += float(mag.double().sum())
            disp_max = max(disp_max, float(mag.max()))
            del mag
            streams["ddf"].write_vectors(disp.numpy())
            del disp
            if save_jacobian:
                streams["jacdet"].write(det_full[:, :, a:b].numpy())
            shift = np.eye(4)
            shift[2, 3] = a
            part = (nx, ny, b - a)
            coords = index_map(to_moving @ shift, part, ddf)
            warped, inside = sample_volume(moving, coords, part, fill=fill)
            inside_count += int(inside.sum())
            warped = warped[0].numpy()
            if pair.moving_dtype.kind in "iu":
                info = np.iinfo(pair.moving_dtype)
                warped = np.clip(np.rint(warped), info.min, info.max)
            streams["warped"].write(warped)
            if label is not None:
                lab, _ = sample_volume(label, coords, part, mode="nearest", fill=0.0)
                lab = lab[0].numpy().astype(pair.moving_label.dtype)
                warped_label[:, :, a:b] = lab
                streams["warped_label"].write(lab)
            del coords, warped, inside
        temps = {kind: stream.close() for kind, stream in streams.items()}
        for kind, tmp in temps.items():
            os.replace(tmp, paths[kind])
    except BaseException as err:
        for stream in streams.values():
            stream.discard()
        if isinstance(err, OSError) and write_error(paths["ddf"], err) is not None:
            raise write_error(paths["ddf"], err) from None
        raise
    finally:
        pool.shutdown()
    return {
        "det": det_full,
        "disp_mean_mm": disp_sum / float(np.prod(shape)),
        "disp_max_mm": disp_max,
        "inside_percent": 100.0 * inside_count / float(np.prod(shape)),
        "warped_label": warped_label if label is not None else None,
        "written": {kind: str(paths[kind]) for kind in streams},
    }
