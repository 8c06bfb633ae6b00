"""The output files of a pair written slab by slab, without a full-size copy of any of them: NIfTI
(:class:`NiftiStream`), NRRD and MetaImage (:class:`ItkStream`). Both take the slabs of the fixed grid's last axis in
order (the slowest axis of every one of these formats) and write into temporary files in the target folder; ``close``
returns the finished file's temporary name, which the caller renames (``finish_pair_in_slabs`` of
:mod:`scripts.inference.streaming` renames a pair's files together), ``discard`` removes everything.

Compression runs in a thread pool (zlib releases the GIL), 4 MiB chunks at a time: a ``.nii.gz`` is a multi-member
gzip file (as :func:`scripts.io.image_io.write_niftis_atomically` writes it); a compressed NRRD or MetaImage holds ONE
deflate stream (gzip for NRRD, zlib for MetaImage, as SimpleITK writes them; readers that stop after a first gzip
member, e.g. pynrrd, read it whole), made of chunks compressed independently, each ending on a byte boundary.
"""

from __future__ import annotations

import functools
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from scripts.io.files import temp_prefix
from scripts.io.image_formats import itk_geometry
from scripts.io.image_io import nifti_on_grid

__all__ = ["NiftiStream", "ItkStream", "itk_header", "ITK_TYPES", "CHUNK"]

CHUNK = 4 * 2**20  # bytes per compressed chunk (a gzip member of a .nii.gz)


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

    def write_vectors(self, block: np.ndarray) -> None:
        """The next slab of every component, (C, X, Y, dz)."""
        for component, part in enumerate(block):
            self.write(part, component)

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


# ITK's names of the voxel types: NRRD's ``type`` and MetaImage's ``ElementType``
ITK_TYPES = {
    "uint8": ("unsigned char", "MET_UCHAR"),
    "int8": ("signed char", "MET_CHAR"),
    "uint16": ("unsigned short", "MET_USHORT"),
    "int16": ("short", "MET_SHORT"),
    "uint32": ("unsigned int", "MET_UINT"),
    "int32": ("int", "MET_INT"),
    "uint64": ("unsigned long long int", "MET_ULONG_LONG"),
    "int64": ("long long int", "MET_LONG_LONG"),
    "float32": ("float", "MET_FLOAT"),
    "float64": ("double", "MET_DOUBLE"),
}


def _numbers(values) -> list[str]:
    return ["%.17g" % float(v) for v in values]  # as ITK prints them


def _orientation(direction: np.ndarray) -> str:
    """MetaImage's ``AnatomicalOrientation`` as ITK writes it: per array axis, the LPS axis its direction is closest
    to, named by where it comes from (ITK's letters: an axis running towards L is "R")."""
    out = ""
    for axis in range(3):
        world = int(np.argmax(np.abs(direction[:, axis])))
        out += ("RL", "AP", "IS")[world][0 if direction[world, axis] > 0 else 1]
    return out


def itk_header(fmt: str, shape: Sequence[int], dtype, affine, components: int = 1, compressed: bool = False,
               compressed_size: int = 0) -> bytes:  # fmt: skip
    """The header SimpleITK writes for a (X, Y, Z) image of ``dtype`` with ``components`` values per voxel, on the grid
    ``affine`` (RAS; :func:`scripts.io.image_formats.itk_geometry`): ``fmt`` ".nrrd" (encoding raw or gzip) or ".mha"
    (one file; a compressed one names the size of its zlib stream, ``compressed_size``)."""
    spacing, origin, direction = itk_geometry(affine)
    dtype = np.dtype(dtype)
    if dtype.name not in ITK_TYPES:
        raise ValueError(f"no NRRD / MetaImage voxel type for {dtype}")
    nrrd_type, met_type = ITK_TYPES[dtype.name]
    vector = int(components > 1)
    if fmt == ".nrrd":
        axes = " ".join("(" + ",".join(_numbers(direction[:, i] * spacing[i])) + ")" for i in range(3))
        lines = [
            "NRRD0004",
            "# Complete NRRD file format specification at:",
            "# http://teem.sourceforge.net/nrrd/format.html",
            f"type: {nrrd_type}",
            f"dimension: {3 + vector}",
            "space: left-posterior-superior",
            "sizes: " + " ".join(map(str, [components] * vector + [*shape])),
            "space directions: " + "none " * vector + axes,
            "kinds: " + "vector " * vector + "domain domain domain",
        ]
        lines += ["endian: little"] if dtype.itemsize > 1 else []
        lines += [f"encoding: {'gzip' if compressed else 'raw'}", f"space origin: ({','.join(_numbers(origin))})", ""]
    else:
        lines = [
            "ObjectType = Image",
            "NDims = 3",
            "BinaryData = True",
            "BinaryDataByteOrderMSB = False",
            f"CompressedData = {compressed}",
        ] + [f"CompressedDataSize = {compressed_size}"] * compressed
        lines += [
            "TransformMatrix = " + " ".join(_numbers(direction.T.ravel())),
            "Offset = " + " ".join(_numbers(origin)),
            "CenterOfRotation = 0 0 0",
            f"AnatomicalOrientation = {_orientation(direction)}",
            "ElementSpacing = " + " ".join(_numbers(spacing)),
            "DimSize = " + " ".join(map(str, shape)),
        ]
        lines += [f"ElementNumberOfChannels = {components}"] * vector + [
            f"ElementType = {met_type}",
            "ElementDataFile = LOCAL",
        ]
    return ("\n".join(lines) + "\n").encode("ascii")


def _deflate(chunk, level: int) -> bytes:
    """Raw deflate of one chunk ending on a byte boundary, not final (a sync flush): independently compressed chunks
    concatenate into one deflate stream."""
    comp = zlib.compressobj(level, zlib.DEFLATED, -15)
    return comp.compress(chunk) + comp.flush(zlib.Z_SYNC_FLUSH)


class ItkStream:
    """One NRRD or MetaImage (``.mha``) file written in pieces, as :class:`NiftiStream`: SimpleITK's header
    (:func:`itk_header`), then the voxels of each slab along the last axis, in order (ITK's order: the first index,
    and before it a vector's components, fastest), so no full-size copy is made (SimpleITK's writer needs the whole
    image, and a copy of it in its own order). ``level`` 1-9: compressed as SimpleITK does, ONE deflate stream
    (gzip for NRRD, zlib for MetaImage), whose chunks are compressed in parallel in ``pool``; None or 0: raw."""

    def __init__(self, path: Path, shape: Sequence[int], dtype, affine, level: int | None = None,
                 components: int = 1, pool: ThreadPoolExecutor | None = None):  # fmt: skip
        self.path = Path(path)
        self.fmt = ".mha" if self.path.name.lower().endswith(".mha") else ".nrrd"
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.level, self.pool = (int(level) if level else None), pool
        self.header = functools.partial(itk_header, self.fmt, shape, self.dtype, affine, components, bool(self.level))
        self.gzip = self.fmt == ".nrrd"
        self._check, self._size, self._stream = (0 if self.gzip else 1), 0, 0  # crc32 / adler32, raw and stored sizes
        self.tmp, self._handle = self._open()
        self.part = None
        if self.level and not self.gzip:  # the MetaImage header names the compressed size: voxels first, in a part
            self.part, self.tmp = self.tmp, None
        else:
            self._handle.write(self.header())
        if self.level:  # the stream's own header: gzip (no name, no time) or zlib (with the level's flag)
            flag = (0, 1, 1, 1, 1, 1, 2, 3, 3, 3)[self.level] << 6
            zlib_header = bytes([0x78, flag + 31 - (0x7800 + flag) % 31])
            self._put(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" if self.gzip else zlib_header)

    def _open(self):
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=temp_prefix(self.path.name), suffix=".tmp")
        return name, os.fdopen(fd, "wb")

    def _put(self, data) -> None:
        self._handle.write(data)
        self._stream += len(data)

    def write(self, block: np.ndarray) -> None:
        """The next slab: (X, Y, dz), or (C, X, Y, dz) for a vector image (see :meth:`write_vectors`)."""
        raw = np.asarray(block, dtype=self.dtype).tobytes(order="F")
        if not self.level:
            self._put(raw)
            return
        self._check = (zlib.crc32 if self.gzip else zlib.adler32)(raw, self._check)
        self._size += len(raw)
        view = memoryview(raw)
        pieces = [view[i : i + CHUNK] for i in range(0, len(raw), CHUNK)]
        if self.pool is None or len(pieces) == 1:
            done = [_deflate(piece, self.level) for piece in pieces]
        else:
            done = [job.result() for job in [self.pool.submit(_deflate, piece, self.level) for piece in pieces]]
        for piece in done:
            self._put(piece)

    def write_vectors(self, block: np.ndarray) -> None:
        """The next slab of a vector image, (C, X, Y, dz): stored interleaved, the components fastest."""
        self.write(block)

    def close(self) -> str:
        """Finish the file (temporary name in the target folder); returns that name (rename it to publish)."""
        if self.level:
            self._put(zlib.compressobj(self.level, zlib.DEFLATED, -15).flush())  # the final (empty) block
            check = self._check & 0xFFFFFFFF
            self._put(struct.pack("<II", check, self._size & 0xFFFFFFFF) if self.gzip else struct.pack(">I", check))
        self._handle.close()
        if self.part is not None:
            self.tmp, handle = self._open()
            with handle as out, open(self.part, "rb") as src:
                out.write(self.header(compressed_size=self._stream))
                shutil.copyfileobj(src, out, 16 * 2**20)
            os.unlink(self.part)
            self.part = None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        return self.tmp

    def discard(self) -> None:
        self._handle.close()
        for name in (self.part, self.tmp):
            if name:
                Path(name).unlink(missing_ok=True)
