"""Read a box of voxels from a NRRD volume without reading the whole volume.

A patch needs a few tens of thousands of voxels of a volume of millions: ``sitk.ReadImage`` inflates and copies
all of them, then ``image[slices]`` copies the box out. Here the header is read once per file and each box reads
only what it needs:

- ``encoding: raw``: a memory map of the data, sliced;
- ``encoding: gzip`` (any standard gzip stream, several members too): inflated whole, so that every member's
  CRC is checked as ITK checks it (a box that ends before a damage must not hide it), and only the box's slices
  are kept; a stream found damaged is handed to ITK, which says why.

Bit-identical to ``sitk.ReadImage(path)[i0:i1, j0:j1, k0:k1]`` by construction: the voxels are the file's bytes;
size, spacing, origin and direction are ITK's own (``ImageFileReader.ReadImageInformation`` parses the header,
and the box's origin and direction come from ITK's ``TransformIndexToPhysicalPoint`` and ``Slice`` on a 1-voxel
image with the file's geometry, which is what ``SliceImageFilter`` computes). Our own header parse only finds the
data (type, byte order, sizes, encoding, offset) and must agree with ITK's; anything else (another format, a
detached header, a byte or line skip, another encoding, any disagreement) gives ``None`` from ``open_nrrd``, and
the caller reads the file with SimpleITK as before.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from types import ModuleType
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import SimpleITK as sitk

_inflate_lib: ModuleType
try:  # ISA-L's inflate gives the same bytes as zlib's (inflation is deterministic), about 2x faster
    from isal import isal_zlib as _inflate_lib
except ImportError:  # pragma: no cover - isal is optional
    _inflate_lib = zlib
INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, _inflate_lib.error)

# ISA-L's inflate kernels return with the upper halves of the AVX registers dirty (no vzeroupper). Until some code
# clears them, the SSE code that follows is slowed by false dependencies: measured on the bench machine (AMD EPYC,
# AVX-512), ITK's 64³ linear resample took 13 ms instead of 4.5 ms right after an ISA-L inflate. numpy's SIMD loops
# end with vzeroupper, so one tiny numpy float operation after inflating restores full speed. It changes no value.
_AVX_SCRATCH = np.zeros(256)


def _clear_avx_upper_state() -> None:
    np.add(_AVX_SCRATCH, 0.0, out=_AVX_SCRATCH)

HEADER_LIMIT = 1 << 16  # an ITK or teem header is a few hundred bytes; a longer one is not ours to guess at
READ_CHUNK = 1 << 18  # compressed bytes fed to the inflater at a time
# gzip only: teem (ITK's NRRD reader) inflates through zlib's gzread, which reads data without a gzip header as
# they are ("transparent" mode), so a zlib stream would be read as raw bytes there; such a file fails here and is
# then read by SimpleITK, whatever it makes of it.
GZIP_WBITS = 16 + 15

# NRRD type names (the teem spec's synonyms) → numpy type. 64-bit integers and block types are left to ITK.
NRRD_TYPES: dict[str, str] = {
    **dict.fromkeys(("signed char", "int8", "int8_t"), "i1"),
    **dict.fromkeys(("uchar", "unsigned char", "uint8", "uint8_t"), "u1"),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t"), "i2"),
    **dict.fromkeys(("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), "u2"),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t"), "i4"),
    **dict.fromkeys(("uint", "unsigned int", "uint32", "uint32_t"), "u4"),
    "float": "f4", "double": "f8",
}
SITK_TYPES: dict[str, int] = {"i1": sitk.sitkInt8, "u1": sitk.sitkUInt8, "i2": sitk.sitkInt16, "u2": sitk.sitkUInt16,
                              "i4": sitk.sitkInt32, "u4": sitk.sitkUInt32, "f4": sitk.sitkFloat32,
                              "f8": sitk.sitkFloat64}


class Volume(Protocol):
    """A 3-D image whose geometry is known up front and whose voxels are read box by box."""

    def GetSize(self) -> tuple[int, ...]: ...  # SimpleITK's names: geometry code takes either
    def GetSpacing(self) -> tuple[float, ...]: ...
    def GetOrigin(self) -> tuple[float, ...]: ...
    def GetDirection(self) -> tuple[float, ...]: ...

    def region(self, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> sitk.Image:
        """``image[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]`` (index order i, j, k)."""
        ...


@dataclass(frozen=True)
class NrrdLayout:
    """Where and how a NRRD file stores its voxels (from our own parse of its header)."""

    size: tuple[int, int, int]  # i, j, k (fastest first, as in ``sizes:``)
    dtype: np.dtype
    encoding: str  # "raw" or "gzip"
    data_offset: int


def parse_layout(head: bytes) -> NrrdLayout | None:
    """The layout of an attached-header NRRD file from its first bytes; None for anything this module does not
    read itself (so the caller uses SimpleITK)."""
    if not head.startswith(b"NRRD000"):
        return None
    end = head.find(b"\n\n")
    if end < 0:
        return None
    fields: dict[str, str] = {}
    for raw_line in head[:end].split(b"\n")[1:]:
        line = raw_line.decode("latin-1").rstrip("\r")
        if not line or line.startswith("#") or ":=" in line:  # comments and key/value pairs
            continue
        key, sep, value = line.partition(":")
        if not sep:
            return None
        fields[key.strip().lower()] = value.strip()
    try:
        if int(fields.get("dimension", "0")) != 3:
            return None
        size = tuple(int(v) for v in fields["sizes"].split())
        code = NRRD_TYPES[fields["type"].lower()]
    except (KeyError, ValueError):
        return None
    encoding = {"raw": "raw", "gzip": "gzip", "gz": "gzip"}.get(fields.get("encoding", "").lower())
    if (len(size) != 3 or min(size) < 1 or encoding is None
            or {"data file", "datafile"} & fields.keys()  # detached data
            or fields.get("byte skip", "0") != "0" or fields.get("byteskip", "0") != "0"
            or fields.get("line skip", "0") != "0" or fields.get("lineskip", "0") != "0"):
        return None
    dtype = np.dtype(code)
    if dtype.itemsize > 1:
        endian = fields.get("endian", "").lower()
        if endian not in ("little", "big"):
            return None
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    return NrrdLayout((size[0], size[1], size[2]), dtype, encoding, end + 2)


class NrrdRegionReader:
    """A NRRD file's geometry (ITK's), and boxes of its voxels read on demand. Use ``open_nrrd``."""

    def __init__(self, path: Path, layout: NrrdLayout, info: sitk.ImageFileReader) -> None:
        self.path = path
        self.layout = layout
        self._size = tuple(info.GetSize())
        self._spacing = tuple(info.GetSpacing())
        self._origin = tuple(info.GetOrigin())
        self._direction = tuple(info.GetDirection())
        # A 1-voxel image with the file's geometry: ITK computes a box's origin and direction on it exactly as
        # SliceImageFilter does on the whole image (TransformIndexToPhysicalPoint; direction × identity flip).
        self._probe = sitk.Image([1, 1, 1], info.GetPixelID())
        self._probe.SetSpacing(self._spacing)
        self._probe.SetOrigin(self._origin)
        self._probe.SetDirection(self._direction)
        one_voxel = sitk.SliceImageFilter()  # what ``image[0:1, 0:1, 0:1]`` runs, on one thread (a 1-voxel copy)
        one_voxel.SetStart([0, 0, 0])
        one_voxel.SetStop([1, 1, 1])
        one_voxel.SetStep([1, 1, 1])
        one_voxel.SetNumberOfThreads(1)
        self._box_direction = one_voxel.Execute(self._probe).GetDirection()
        self._whole: sitk.Image | None = None  # the file read by SimpleITK, once our read of its data failed

    def GetSize(self) -> tuple[int, ...]:
        return self._size

    def GetSpacing(self) -> tuple[float, ...]:
        return self._spacing

    def GetOrigin(self) -> tuple[float, ...]:
        return self._origin

    def GetDirection(self) -> tuple[float, ...]:
        return self._direction

    def region(self, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> sitk.Image:
        """``sitk.ReadImage(path)[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]``, reading only what the box needs."""
        if not all(0 <= a < b <= n for a, b, n in zip(lo, hi, self._size)):
            raise ValueError(f"box {lo}..{hi} is empty or outside a volume of size {self._size}")
        if self._whole is None:
            try:
                box = self._voxels(lo, hi)
            except ValueError:  # damaged data: SimpleITK reads it as before (or says what is wrong with it)
                self._whole = sitk.ReadImage(str(self.path))
        if self._whole is not None:
            return self._whole[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        if not box.dtype.isnative:
            box = box.astype(box.dtype.newbyteorder("="))
        image = sitk.GetImageFromArray(np.ascontiguousarray(box), isVector=False)
        image.SetSpacing(self._spacing)
        image.SetOrigin(self._probe.TransformIndexToPhysicalPoint([int(v) for v in lo]))
        image.SetDirection(self._box_direction)
        return image

    def _voxels(self, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
        ni, nj, nk = self.layout.size
        dtype = self.layout.dtype
        if self.layout.encoding == "raw":
            try:
                mapped = np.memmap(self.path, dtype=dtype, mode="r", offset=self.layout.data_offset,
                                   shape=(nk, nj, ni))
            except (OSError, ValueError) as e:  # e.g. the file shrank since its header was read
                raise ValueError(f"{self.path}: {e}") from e
            return np.array(mapped[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]])  # a copy: the map is closed with it
        slice_bytes = ni * nj * dtype.itemsize
        start, stop = lo[2] * slice_bytes, hi[2] * slice_bytes
        data = np.frombuffer(_inflate(self.path, self.layout.data_offset, start, stop, nk * slice_bytes), dtype=dtype)
        return data.reshape(hi[2] - lo[2], nj, ni)[:, lo[1]:hi[1], lo[0]:hi[0]]


def _inflate(path: Path, offset: int, start: int, stop: int, total: int) -> bytes:
    """Bytes ``start:stop`` of the inflated gzip data that begins at byte ``offset`` of ``path`` and holds
    ``total`` bytes. Members are followed (a concatenated gzip stream is one stream). A damaged or truncated
    stream raises ``ValueError``."""
    try:
        return _inflate_range(path, offset, start, stop, total)
    except INFLATE_ERRORS as e:
        raise ValueError(f"{path}: {e}") from e
    finally:
        if _inflate_lib is not zlib:
            _clear_avx_upper_state()


def _inflate_range(path: Path, offset: int, start: int, stop: int, total: int) -> bytes:
    # The whole stream is inflated, not only up to the box: only its end checks each member's CRC and length,
    # so a damaged or truncated volume fails here as in ITK, not just when a box reaches the damage.
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    kept, position = [], 0
    while data:
        inflater: Any = _inflate_lib.decompressobj(GZIP_WBITS)
        piece = inflater.decompress(data)
        if not inflater.eof:
            raise ValueError(f"{path}: the compressed data ends inside its gzip stream")
        if position < stop and position + len(piece) > start:
            kept.append(piece[max(0, start - position):stop - position])
        position += len(piece)
        data = inflater.unused_data
    if position != total:
        raise ValueError(f"{path}: the gzip stream holds {position} bytes of voxels, not {total}")
    return b"".join(kept)


def open_nrrd(path: str | os.PathLike) -> NrrdRegionReader | None:
    """A region reader for the local NRRD file ``path``; None where SimpleITK should read it (not an
    attached-header raw or gzip NRRD, or a header our parse and ITK's read differently)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_LIMIT)
    except OSError:
        return None
    layout = parse_layout(head)
    if layout is None:
        return None
    info = sitk.ImageFileReader()
    info.SetFileName(str(path))
    info.SetImageIO("NrrdImageIO")
    try:
        info.ReadImageInformation()
    except RuntimeError:
        return None
    if (info.GetDimension() != 3 or info.GetNumberOfComponents() != 1 or tuple(info.GetSize()) != layout.size
            or info.GetPixelID() != SITK_TYPES[layout.dtype.str[1:]]):
        return None
    if layout.encoding == "raw" and path.stat().st_size < layout.data_offset + _nbytes(layout):
        return None  # truncated: let ITK say so
    return NrrdRegionReader(path, layout, info)


def open_volume(path: str | os.PathLike) -> Volume:
    """The local file ``path`` as a ``Volume``: read box by box where ``open_nrrd`` can, else whole by SimpleITK."""
    reader = open_nrrd(path)
    return reader if reader is not None else WholeImage(sitk.ReadImage(str(path)))


def _nbytes(layout: NrrdLayout) -> int:
    return int(np.prod(layout.size)) * layout.dtype.itemsize


class WholeImage:
    """A volume read whole by SimpleITK (the fallback), with the same interface as ``NrrdRegionReader``."""

    def __init__(self, image: sitk.Image) -> None:
        self.image = image

    def GetSize(self) -> tuple[int, ...]:
        return tuple(self.image.GetSize())

    def GetSpacing(self) -> tuple[float, ...]:
        return tuple(self.image.GetSpacing())

    def GetOrigin(self) -> tuple[float, ...]:
        return tuple(self.image.GetOrigin())

    def GetDirection(self) -> tuple[float, ...]:
        return tuple(self.image.GetDirection())

    def region(self, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> sitk.Image:
        return self.image[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
