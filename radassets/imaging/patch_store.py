"""The patches of one partition as a Zarr store: many workers write it at once, a bucket serves it by range.

Layout (Zarr v3, ``patches/<dataset_version>/patches.zarr``): a group with two arrays, ``patches`` (N, S, S, S)
int16 HU and ``masks`` (N, S, S, S) uint8, axes ``(patch, S, P, L)`` as the patch module describes them, each
cut into one chunk per patch, ``(1, S, S, S)``. Patch ``i`` is then one file (``patches/c/i/0/0/0``) or one
object on a bucket, written by whichever worker extracted it: no two writers ever share a chunk, so they need
no coordination, and a reader fetches one patch with one GET. The store opens the same way on a local folder
(zarr's ``LocalStore``) and on an fsspec URL (``s3://``, ``gs://``, ``memory://``: zarr's ``FsspecStore``);
``location`` is a ``pathlib.Path``, a ``UPath`` (its storage options travel with it) or a string, all of them
picklable plain data for a worker process.

Codec: none (``COMPRESSORS`` is empty): a chunk file holds the patch's raw little-endian values, which the steps
read on a local folder straight from the file (``open_readers`` / ``RawChunkReader``), and zarr reads by range on a
bucket. Measured with ``bench/patch_store.py`` (400 CT-like 64³ patches, files in the OS cache, this 2-core
machine idle; patches/s): one at a time 2,613 from the chunk files, 2,195 from the memory-mapped .npy this store
replaced, 779 through zarr; in slices of 8 (as the embeddings read) 3,302, 4,190 and 1,671; Zstandard level 1
through zarr 466-732, Blosc 400-1,160. zarr-python's own cost per chunk (about 1 ms: asyncio and the codec
pipeline) is what the chunk-file reader saves; the memory map keeps an edge on batches (one contiguous copy
against 8 files). Compression would store 0.57 (zstd-1) or 0.42-0.48 (Blosc) of the bytes, which matters on a
bucket; it is one constant away (a compressed store is read through zarr), and the manifest's hash is of the
values (``patch_sha256``), not of the files, so it would not change. Every consumer reads far slower than either
(a model embeds at most hundreds of patches per second).

Deterministic bytes: the metadata (``zarr.json``) holds the shape, chunking, codec and dimension names, no
timestamp and no random id; every chunk is written, even one that equals the fill value (``write_empty_chunks``:
otherwise a patch with no mask would have no chunk, and a missing chunk would read as zeros unnoticed). The
same seeds give a byte-identical tree on every run.

Crashes. ``LocalStore`` (zarr 3.1) writes a chunk to ``<chunk>.<uuid hex>.partial`` beside it and renames it
into place (``os.replace``): a chunk is never visible half-written, but a writer killed between the two leaves
its ``.partial`` file. An object store's put is whole or absent. Three rules make a killed and retried
extraction give the same bytes and no litter: (1) ``create_store`` starts every run by deleting the previous
arrays (``overwrite``), litter included, so no chunk of an earlier run survives into this one; (2) a retried
task rewrites its chunks with the same bytes; (3) once every task has returned, ``finish_store`` removes the
``.partial`` files that killed attempts left (no writer of this run is left then; the partition lock keeps
other runs out). The step writes its manifest after that, and a partition without a manifest is never read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from radassets.errors import RadassetsError
from radassets.layout import as_path

# zarr is imported where it is used: the code location (every command and run worker) imports this module through
# the patches step, and zarr with its codecs takes a quarter of a second to import.
if TYPE_CHECKING:
    import zarr
    from zarr.abc.store import Store
    from zarr.core.array_spec import ArrayConfigParams

STORE_NAME = "patches.zarr"
# What readers of patches take: the lazy store array (zarr's, or the raw chunk reader of a local store), or any
# numpy array with patches along the first axis.
PatchArray: TypeAlias = "np.ndarray | zarr.Array | RawChunkReader"
PATCHES, MASKS = "patches", "masks"
DTYPES: dict[str, np.dtype[Any]] = {PATCHES: np.dtype("<i2"), MASKS: np.dtype("u1")}
DIMENSIONS = ("patch", "S", "P", "L")
COMPRESSORS: tuple[Any, ...] = ()
DESCRIPTION = "patches.zarr (Zarr v3): patches int16 HU, masks uint8, one chunk per patch, uncompressed"
WRITE_CONFIG: ArrayConfigParams = {"order": "C", "write_empty_chunks": True}  # a chunk equal to the fill value is written too
PARTIAL_SUFFIX = ".partial"  # LocalStore's temporary chunk files: <chunk>.<uuid4 hex>.partial


class PatchStoreError(RadassetsError, ValueError):
    """A patches partition cannot be read: written by an older version, or inconsistent."""


def open_store(location: str | os.PathLike, read_only: bool) -> Store:
    """The Zarr store at ``location``: a local folder, or an fsspec URL (with a ``UPath``'s storage options)."""
    from zarr.storage import FsspecStore, LocalStore

    path = as_path(location)
    if isinstance(path, Path):
        return LocalStore(path, read_only=read_only)
    return FsspecStore.from_url(str(path), storage_options=dict(getattr(path, "storage_options", {}) or {}),
                                read_only=read_only)


def create_store(location: str | os.PathLike, n: int, size: int,
                 compressors: Sequence[Any] = COMPRESSORS) -> None:
    """Create (or replace, deleting every chunk of an earlier run) the two empty (n, size³) arrays."""
    import zarr

    group = zarr.create_group(open_store(location, read_only=False), zarr_format=3, overwrite=True)
    for name, fill in ((PATCHES, 0), (MASKS, 0)):
        group.create_array(name, shape=(n, size, size, size), chunks=(1, size, size, size), dtype=DTYPES[name],
                           compressors=tuple(compressors), fill_value=fill, dimension_names=DIMENSIONS,
                           config=WRITE_CONFIG)


def open_arrays(location: str | os.PathLike, read_only: bool = True) -> tuple[zarr.Array, zarr.Array]:
    """The ``patches`` and ``masks`` arrays: ``[i]`` or a slice reads those chunks only (by range on a bucket)."""
    import zarr

    store = open_store(location, read_only=read_only)
    mode = "r" if read_only else "r+"
    # write_empty_chunks is a setting of the open array, not stored in the metadata: set it on every open.
    patches, masks = (zarr.open_array(store, path=name, mode=mode, zarr_format=3).with_config(WRITE_CONFIG)
                      for name in (PATCHES, MASKS))
    return patches, masks


def open_readers(location: str | os.PathLike) -> tuple[PatchArray, PatchArray]:
    """The ``patches`` and ``masks`` arrays for reading: on a local folder whose chunks are raw (this store's
    codec), ``RawChunkReader``s; else (a bucket, a compressed store of another version) zarr's arrays."""
    patches, masks = open_arrays(location)
    path = as_path(location)
    if isinstance(path, Path) and all(RawChunkReader.can_read(a) for a in (patches, masks)):
        return RawChunkReader(patches, path / PATCHES), RawChunkReader(masks, path / MASKS)
    return patches, masks


class RawChunkReader:
    """Whole patches of a local store read straight from their chunk files (``c/<i>/0/0/0``: the raw little-endian
    values, with no codec, as zarr's "bytes" codec lays them out), for the speed of the memory-mapped ``.npy`` this
    store replaced: zarr-python's per-chunk machinery (asyncio, the codec pipeline) costs about 1 ms a chunk, three
    times what reading the file does (``bench/patch_store.py``). Written by hand for that reason, for this store's
    layout only (``can_read``); anything else is read through zarr. A chunk that is missing is an error, not zeros:
    the step writes every chunk (``write_empty_chunks``), so a missing one is a damaged store."""

    def __init__(self, array: zarr.Array, folder: Path):
        self.array = array  # anything other than an index, a slice or a list of indices reads through zarr
        self.folder = folder
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)

    @staticmethod
    def can_read(array: zarr.Array) -> bool:
        from zarr.codecs import BytesCodec

        metadata = array.metadata
        encoding = getattr(metadata, "chunk_key_encoding", None)
        return (getattr(metadata, "zarr_format", None) == 3 and not array.filters and not array.compressors
                and isinstance(array.serializer, BytesCodec)
                and ((array.serializer.endian is None and array.dtype.itemsize == 1)  # bytes have no order
                     or getattr(array.serializer.endian, "value", None) == "little")
                and tuple(array.chunks) == (1, *array.shape[1:]) and getattr(encoding, "name", None) == "default"
                and getattr(encoding, "separator", None) == "/" and array.dtype.byteorder in ("<", "=", "|")
                and array.dtype.isnative)

    def __len__(self) -> int:
        return self.shape[0]

    def chunk(self, i: int, out: np.ndarray | None = None) -> np.ndarray:
        """Patch ``i`` (a negative ``i`` counts from the end, as numpy's), read into ``out`` if given (one patch,
        C-contiguous: the file's bytes land there with no copy)."""
        n = self.shape[0]
        if not -n <= i < n:
            raise IndexError(f"patch {i} of {n}")
        path = self.folder / "c" / str(i % n) / "0" / "0" / "0"
        out = np.empty(self.shape[1:], dtype=self.dtype) if out is None else out
        try:
            with open(path, "rb", buffering=0) as f:
                read = f.readinto(out.data.cast("B"))
                extra = f.read(1)
        except FileNotFoundError:
            raise PatchStoreError(f"{path}: the chunk of patch {i % n} is missing (the step writes every chunk); "
                                  f"materialize 'patches' again") from None
        if read != out.nbytes or extra:
            raise PatchStoreError(f"{path}: not one patch of {self.shape[1:]} {self.dtype} ({out.nbytes} bytes)")
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.chunk(int(key))
        if isinstance(key, slice) and key.step in (None, 1):
            indices = range(*key.indices(self.shape[0]))
        elif isinstance(key, (list, np.ndarray)) and np.asarray(key).ndim == 1 and np.asarray(key).dtype.kind in "iu":
            return self._stack([int(i) for i in np.asarray(key)])
        else:
            return np.asarray(self.array[key])
        return self._stack(list(indices))

    def _stack(self, indices: list[int]) -> np.ndarray:
        out = np.empty((len(indices), *self.shape[1:]), dtype=self.dtype)
        for j, i in enumerate(indices):
            self.chunk(i, out[j])
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[:]
        return values if dtype is None else values.astype(dtype)


def write_patch(arrays: tuple[zarr.Array, zarr.Array], index: int, patch: np.ndarray, mask: np.ndarray) -> str:
    """Write chunk ``index`` of both arrays (whole chunks: nothing is read first); returns ``patch_sha256``."""
    patches, masks = arrays
    patch = np.ascontiguousarray(patch, dtype=DTYPES[PATCHES])
    mask = np.ascontiguousarray(mask, dtype=DTYPES[MASKS])
    patches[index] = patch
    masks[index] = mask
    return patch_sha256(patch, mask)


def patch_sha256(patch: np.ndarray, mask: np.ndarray) -> str:
    """sha256 of the patch's values then the mask's (C order, little-endian int16, uint8): of the data, so it
    does not change with the codec or the file layout."""
    h = hashlib.sha256(np.ascontiguousarray(patch, dtype=DTYPES[PATCHES]).tobytes())
    h.update(np.ascontiguousarray(mask, dtype=DTYPES[MASKS]).tobytes())
    return h.hexdigest()


def finish_store(location: str | os.PathLike) -> list[Path]:
    """Remove the ``.partial`` chunk files of killed writers (local stores only: a put is whole or absent).

    Call it only once every task of the run has returned (see the module docstring)."""
    path = as_path(location)
    if not isinstance(path, Path):
        return []
    removed = []
    for partial in sorted(path.rglob(f"*{PARTIAL_SUFFIX}")):
        if partial.is_file():
            partial.unlink(missing_ok=True)
            removed.append(partial)
    return removed
