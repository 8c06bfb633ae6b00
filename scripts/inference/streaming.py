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
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scripts.io.errors import write_error
from scripts.io.files import temp_prefix
from scripts.io.image_io import nifti_on_grid
from scripts.io.resampling import _mix, index_map, sample_volume
from scripts.losses.mechanics import jacobian_determinant

__all__ = ["NiftiStream", "SlabField", "finish_pair_in_slabs", "SLAB_VOXELS"]

SLAB_VOXELS = 2**22  # voxels per slab (4 Mi: 16 slices of 512 x 512)
CHUNK = 4 * 2**20  # bytes per gzip member


class NiftiStream:
    """One NIfTI-1 file written in pieces: the header, then the voxel data of each component (the 5th axis of a
    vector image, slowest in the file) in slabs along the last spatial axis, in order. Components go to separate
    part files (they arrive interleaved) that :meth:`close` concatenates behind the header (gzip members concatenate
    into one valid .gz file)."""

    def __init__(self, path: Path, shape: Sequence[int], dtype, affine, codes, intent=None, level: int | None = 1,
                 components: int = 1, pool: ThreadPoolExecutor | None = None):  # fmt: skip
        self.path = Path(path)
        self.level = level  # None: no gzip (.nii)
        self.dtype = np.dtype(dtype)
        self.pool = pool
        img = nifti_on_grid(np.zeros((1, 1, 1), self.dtype), affine, codes, intent)
        header = img.header
        header.set_data_shape(tuple(int(s) for s in shape))
        header.set_data_dtype(self.dtype)
        header.set_slope_inter(None, None)
        header["vox_offset"] = 352
        self._header = header.binaryblock + b"\x00" * 4  # 348 bytes + the (empty) extension flag
        self.parts: list[str] = []
        self._handles = []
        for _ in range(components):
            fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=temp_prefix(self.path.name), suffix=".tmp")
            self.parts.append(name)
            self._handles.append(os.fdopen(fd, "wb"))
        self.tmp: str | None = None

    def _encode(self, raw: bytes) -> list:
        if self.level is None:
            return [raw]
        level = self.level

        def member(chunk):
            comp = zlib.compressobj(level, zlib.DEFLATED, 31)
            return comp.compress(chunk) + comp.flush()

        view = memoryview(raw)
        pieces = [view[i : i + CHUNK] for i in range(0, max(len(raw), 1), CHUNK)]
        if self.pool is None or len(pieces) == 1:
            return [member(p) for p in pieces]
        return [f.result() for f in [self.pool.submit(member, p) for p in pieces]]

    def write(self, block: np.ndarray, component: int = 0) -> None:
        """The next (X, Y, dz) slab of ``component``."""
        raw = np.asarray(block, dtype=self.dtype).tobytes(order="F")
        for piece in self._encode(raw):
            self._handles[component].write(piece)

    def close(self) -> str:
        """Assemble the file (temporary name in the target folder); returns that name (rename it to publish)."""
        for handle in self._handles:
            handle.close()
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=temp_prefix(self.path.name), suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            for piece in self._encode(self._header):
                out.write(piece)
            for part in self.parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 16 * 2**20)
                os.unlink(part)
        self.parts = []
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        return self.tmp

    def discard(self) -> None:
        for handle in self._handles:
            handle.close()
        for name in [*self.parts, self.tmp]:
            if name:
                Path(name).unlink(missing_ok=True)


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
    """The outputs of :func:`scripts.inference.writer.finish_pair` (NIfTI, no Learn2Reg files) computed and written
    slab by slab. ``paths``: the output paths by kind (:func:`scripts.inference.pairs.output_paths`). Returns
    ``{"det": full det J (X, Y, Z) tensor, "disp_mean_mm", "disp_max_mm", "inside_percent", "warped_label": array or
    None, "written": {kind: path}}``."""
    shape = pair.fixed_shape
    nx, ny, nz = shape
    step = _slab_size(shape, slab)
    gz = str(paths["ddf"]).endswith(".gz")

    def level(kind: str):
        if not gz:
            return None
        if compression == "small":
            return 6
        return 0 if kind in ("ddf", "jacdet") else 1

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
    codes = pair.fixed_codes
    pool = ThreadPoolExecutor(max_workers=max(1, int(write_threads)))
    streams: dict[str, NiftiStream] = {}
    try:
        Path(paths["ddf"]).parent.mkdir(parents=True, exist_ok=True)
        streams["ddf"] = NiftiStream(paths["ddf"], (*shape, 1, 3), np.float32, a_fix, codes, "vector", level("ddf"),
                                     components=3, pool=pool)  # fmt: skip
        if save_jacobian:
            streams["jacdet"] = NiftiStream(paths["jacdet"], shape, np.float32, a_fix, codes, None, level("jacdet"),
                                            pool=pool)  # fmt: skip
        streams["warped"] = NiftiStream(paths["warped"], shape, pair.moving_dtype, a_fix, codes, None,
                                        level("warped"), pool=pool)  # fmt: skip
        if label is not None:
            streams["warped_label"] = NiftiStream(paths["warped_label"], shape, pair.moving_label.dtype, a_fix, codes,
                                                  None, level("warped_label"), pool=pool)  # fmt: skip
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
            for c in range(3):
                streams["ddf"].write(disp[c].numpy(), component=c)
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
