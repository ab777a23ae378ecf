"""NRRD files as ITK writes them, with the voxels gzip-compressed by ISA-L.

Why not ``sitk.WriteImage``: ITK's NrrdImageIO compresses with zlib at level 2 (its only other codec is
bzip2), which was a third of a CT series' conversion time. ISA-L (``isal``) writes a standard gzip stream
several times faster, a few percent larger; NRRD's ``encoding: gzip`` is any gzip stream, so ITK, teem,
3D Slicer and pynrrd read these files as they read ITK's. The header is the one ITK's NrrdImageIO writes
for the same image, field by field and number by number (``%.17g``, as teem prints doubles), so that a
reader finds exactly the same origin, spacing and direction as in a file that ITK wrote (pinned by
``radassets_tests/imaging/test_nrrd_writer.py`` against ITK itself). The file is hashed as it is written, so
its sha256 needs no second read.

Only what radassets writes is supported: a scalar 3-D image, and metadata that are plain key/value
strings (ITK's ``NRRD_*`` keys, which it turns into header fields, are refused rather than guessed at).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from isal import isal_zlib

ENCODINGS = ("gzip", "raw")
GZIP_LEVEL = 1  # ISA-L levels are 0-3; level 1 was chosen on bench/imaging.py's codec table (docs/benchmarks.md)
_CHUNK = 1 << 22  # bytes of voxels compressed at a time: bounded memory for any volume size

# NRRD type names, as ITK's NrrdImageIO (teem) writes them.
_TYPES: dict[int, str] = {
    sitk.sitkInt8: "signed char", sitk.sitkUInt8: "unsigned char", sitk.sitkInt16: "short",
    sitk.sitkUInt16: "unsigned short", sitk.sitkInt32: "int", sitk.sitkUInt32: "unsigned int",
    sitk.sitkInt64: "long long int", sitk.sitkUInt64: "unsigned long long int", sitk.sitkFloat32: "float",
    sitk.sitkFloat64: "double",
}
_COMMENT = b"# Complete NRRD file format specification at:\n# http://teem.sourceforge.net/nrrd/format.html\n"


def _number(value: float) -> str:
    """A double as teem prints it (``%.17g``): the exact value back on reading."""
    if not math.isfinite(value):
        raise ValueError(f"cannot write a non-finite geometry value ({value}) to NRRD")
    return f"{value + 0.0:.17g}"  # + 0.0: -0.0 is written 0, as teem writes it


def _vector(values: Any) -> str:
    return "(" + ",".join(_number(v) for v in values) + ")"


def _escape(text: str) -> str:
    """Key/value text as teem writes it: backslash and newline escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def header(image: sitk.Image, encoding: str = "gzip") -> bytes:
    """The NRRD header ITK's NrrdImageIO writes for ``image`` (including the blank line that ends it)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"NRRD encoding {encoding!r}: expected one of {ENCODINGS}")
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetPixelID() not in _TYPES or image.GetDimension() != 3:
        raise ValueError(f"NRRD writer: scalar 3-D images only, not {image.GetDimension()}-D "
                         f"{image.GetPixelIDTypeAsString()}")
    dim = 3
    spacing, direction = image.GetSpacing(), np.array(image.GetDirection()).reshape(dim, dim)
    # ITK writes each axis' space direction as spacing * direction column, in double precision.
    directions = " ".join(_vector([spacing[axis] * direction[row, axis] for row in range(dim)])
                          for axis in range(dim))
    lines = [
        f"type: {_TYPES[image.GetPixelID()]}", f"dimension: {dim}",
        "space: left-posterior-superior",
        "sizes: " + " ".join(str(n) for n in image.GetSize()), f"space directions: {directions}",
        "kinds: " + " ".join(["domain"] * dim),
        *(["endian: little"] if image.GetSizeOfPixelComponent() > 1 else []),
        f"encoding: {encoding}", f"space origin: {_vector(image.GetOrigin())}",
    ]
    for key in sorted(image.GetMetaDataKeys()):  # ITK's metadata dictionary is a std::map: sorted keys
        if key.startswith("NRRD_"):
            raise ValueError(f"NRRD writer: metadata key {key!r} would be a header field in ITK; not supported")
        lines.append(f"{_escape(key)}:={_escape(image.GetMetaData(key))}")
    return b"NRRD0004\n" + _COMMENT + "\n".join(lines).encode("utf-8") + b"\n\n"


def _voxel_chunks(image: sitk.Image) -> Iterator[memoryview]:
    """The voxels in NRRD order (x fastest, little-endian), in chunks of at most ``_CHUNK`` bytes."""
    array = sitk.GetArrayViewFromImage(image)
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    flat = array.reshape(-1).view(np.uint8)
    for start in range(0, len(flat), _CHUNK):
        yield flat[start:start + _CHUNK].data


def gzip_compressor(level: int = GZIP_LEVEL) -> Callable[[Iterator[memoryview]], Iterator[bytes]]:
    """A gzip stream (RFC 1952) of the chunks, compressed by ISA-L at ``level`` (0-3)."""
    def compress(chunks: Iterator[memoryview]) -> Iterator[bytes]:
        compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)  # wbits 31: with the gzip container
        for chunk in chunks:
            yield compressor.compress(chunk)
        yield compressor.flush()
    return compress


def write_nrrd(image: sitk.Image, path: Path, encoding: str = "gzip", gzip_level: int = GZIP_LEVEL,
               compressor: Callable[[Iterator[memoryview]], Iterator[bytes]] | None = None) -> str:
    """Write ``image`` to the local file ``path`` as NRRD; return the file's sha256, hashed while writing.
    ``compressor`` (for the benchmark's codec table): another gzip stream writer than ISA-L's."""
    digest = hashlib.sha256()
    chunks = _voxel_chunks(image)
    body = chunks if encoding == "raw" else (compressor or gzip_compressor(gzip_level))(chunks)
    with open(path, "wb") as f:
        for block in (header(image, encoding), *body):
            if block:
                digest.update(block)
                f.write(block)
    return digest.hexdigest()
