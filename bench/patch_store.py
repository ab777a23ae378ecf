"""Benchmark: reading patches from the Zarr store against a memory-mapped .npy of the same data.

The patches step stores one partition's patches as a Zarr store, one chunk per patch
(``radassets.imaging.patch_store``); before, it stored one memory-mapped ``.npy``. Both are written
here from the same N patches (default 400 of 64³ int16, 200 MB), CT-like: a body of soft tissue
(40 HU) and lung (-850 HU) in air, a 2 cm lesion, Gaussian noise of 15 HU (what the demo's 12-25 HU
leaves after the linear resampling to 1 mm), and every tenth patch half padded with air as at a
volume border. Every codec is timed on the same patches:

- ``none``: raw chunks (the store's choice, ``COMPRESSORS``), read as the steps read them (``open_readers``: a
  local store's chunk files directly) and, as ``none (zarr)``, through zarr; ``zstd-1``: Zstandard level 1;
  ``blosc-lz4``, ``blosc-zstd-1``: Blosc with LZ4, or Zstandard level 1, and byte shuffle.

Timed, with every file in the OS cache (the store was just written; each read is repeated
``--repeats`` times and the median kept): (1) every patch in order, one ``[i]`` at a time, as the
montage and the perturbation read them; (2) random batches of 8 (a shuffled order, 8 indices at a
time; from Zarr one ``[i]`` per patch, stacked: zarr's fancy indexing ``[indices]`` is several times
slower still); (3) slices ``[s:s+8]``, as the embeddings read. The .npy reads copy into memory
(``np.array``), as a model's input must be. Reported: patches/s, the store's size ÷ the raw size, and memory map ÷ Zarr time per
read (> 1: the memory map is faster). A partition of your own: ``--store DIR/patches.zarr``.

Run: ``python bench/patch_store.py`` (``make bench`` runs it with the others).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, with or without an installed package
    sys.path.insert(0, str(REPO))

N, SIZE, BATCH, REPEATS = 400, 64, 8, 3


def ct_like_patches(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, size³) int16 HU and uint8 masks, CT-like (see the module docstring)."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.arange(size) - (size - 1) / 2] * 3, indexing="ij")
    patches = np.empty((n, size, size, size), np.int16)
    masks = np.empty((n, size, size, size), np.uint8)
    for p in range(n):
        shift = rng.uniform(-8, 8, 3)
        body = np.where((j + shift[1]) > size / 4, 40.0, -850.0)  # chest wall below, lung above
        lesion = ((k - shift[0]) ** 2 + (j - shift[1]) ** 2 + (i - shift[2]) ** 2) < rng.uniform(6, 12) ** 2
        hu = np.where(lesion, 30.0, body) + rng.normal(0.0, 15.0, body.shape)
        if p % 10 == 0:
            hu[: size // 2] = -1024  # half outside the volume: padded with air
        patches[p] = np.clip(np.rint(hu), -32768, 32767)
        masks[p] = lesion
    return patches, masks


def median_seconds(read, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def zarr_timings(patches, n: int, batches: list[np.ndarray], repeats: int) -> dict[str, float]:
    """Seconds to read every patch of a Zarr array: one at a time, in random batches of 8, in slices of 8."""
    return {"sequential": median_seconds(lambda: [patches[i] for i in range(n)], repeats),
            "batches of 8": median_seconds(lambda: [np.stack([patches[i] for i in b]) for b in batches], repeats),
            "slices of 8": median_seconds(lambda: [patches[s:s + BATCH] for s in range(0, n, BATCH)], repeats)}


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.parent.name != path.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patches", type=int, default=N, help=f"number of patches (default {N})")
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"timed repeats, median kept (default {REPEATS})")
    parser.add_argument("--store", type=Path, default=None, help="read this patches.zarr's patches instead")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    from zarr.codecs import BloscCodec, ZstdCodec

    from radassets.imaging import patch_store

    if args.store:
        stored, stored_masks = patch_store.open_arrays(args.store)
        data, masks = np.asarray(stored[:]), np.asarray(stored_masks[:])
    else:
        data, masks = ct_like_patches(args.patches, SIZE)
    n = data.shape[0]
    codecs = {"none": (), "zstd-1": (ZstdCodec(level=1, checksum=False),),
              "blosc-lz4": (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),),
              "blosc-zstd-1": (BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),)}
    order = np.random.default_rng(1).permutation(n)
    batches = [np.sort(order[s:s + BATCH]) for s in range(0, n, BATCH)]
    results: dict = {"patches": n, "shape": list(data.shape[1:]), "raw_MB": round(data.nbytes / 1e6, 1), "codecs": {}}

    with tempfile.TemporaryDirectory(prefix="radassets-bench-") as work:
        npy = Path(work) / "patches.npy"
        np.save(npy, data)
        mm = np.load(npy, mmap_mode="r")
        base = {"sequential": median_seconds(lambda: [np.array(mm[i]) for i in range(n)], args.repeats),
                "batches of 8": median_seconds(lambda: [np.array(mm[b]) for b in batches], args.repeats),
                "slices of 8": median_seconds(lambda: [np.array(mm[s:s + BATCH]) for s in range(0, n, BATCH)],
                                              args.repeats)}
        results["npy"] = {k: round(n / v, 1) for k, v in base.items()}
        print(f"{n} patches of {data.shape[1:]} int16 ({data.nbytes / 1e6:.0f} MB), median of {args.repeats}")
        print(f"{'':12} {'size':>6} " + " ".join(f"{k:>28}" for k in base))
        print(f"{'npy (mmap)':12} {1.0:6.2f} " + " ".join(f"{n / base[k]:10.0f}/s {'':>16}" for k in base))
        for name, compressors in codecs.items():
            location = Path(work) / f"{name}.zarr"
            patch_store.create_store(location, n, SIZE, compressors)
            arrays = patch_store.open_arrays(location, read_only=False)
            for i in range(n):
                patch_store.write_patch(arrays, i, data[i], masks[i])
            size = (store_bytes(location / "patches")) / data.nbytes
            # What the steps read (open_readers: raw chunks of a local store from their files), and for the raw
            # store also zarr's own reads of the same files.
            readers = {name: patch_store.open_readers(location)[0]}
            if not compressors:
                readers[f"{name} (zarr)"] = patch_store.open_arrays(location)[0]
            for label, patches in readers.items():
                check = np.asarray(patches[batches[0]])
                assert np.array_equal(check, data[batches[0]]), label
                timed = zarr_timings(patches, n, batches, args.repeats)
                results["codecs"][label] = {
                    "size_ratio": round(size, 3), "reader": type(patches).__name__,
                    **{k: {"patches_per_s": round(n / v, 1), "mmap_over_zarr": round(v / base[k], 2)}
                       for k, v in timed.items()}}
                print(f"{label:12} {size:6.2f} " + " ".join(f"{n / timed[k]:10.0f}/s (mmap ×{timed[k] / base[k]:5.1f} "
                                                            f"faster)" for k in timed))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
