"""Canonical tumour patches: one cube per seed, 1 mm isotropic, HU as int16, stored once.

Every model crops its own input from this patch (FMCIB takes 50³ at 1 mm, others more), so the
patch is large enough for all of them (64³ by default) and nothing reads a volume twice.

Geometry: the patch grid has identity direction (axes along L, P, S), ``spacing_mm`` spacing and
its centre at the seed: voxel (i, j, k) lies at ``seed + (index - (size - 1) / 2) * spacing``
in LPS millimetres, so for an even size the seed falls between the two middle voxels. Arrays
are indexed ``[k, j, i]`` (S, P, L), as SimpleITK's ``GetArrayFromImage`` returns them.

Crop first, then resample: the region of the volume that the patch's corners map to (plus a
margin of 3 voxels for the interpolator's support) is cut out, and only that is resampled. This
gives the same values as resampling the whole volume (the interpolator sees the same
neighbours), at a fraction of the cost. Patch voxels outside the volume are air (−1024 HU) and
the patch is flagged ``at_border`` with the fraction of voxels that were padded: never shifted
back inside, which would move the lesion off-centre.

Storage (``patches/<dataset_version>/``): ``patches.zarr``, a Zarr store with the arrays ``patches``
(N, S, S, S) int16 and ``masks`` (N, S, S, S) uint8 (the seed's own segment, zeros for published
seeds without a mask), one chunk per patch (``radassets.imaging.patch_store``: layout, codec, crashes);
``patches.parquet`` gives row ``i`` of both arrays; ``manifest.json`` is written last.

Work: the driver (``write_patches``) creates the store's empty arrays, then runs one task per CT
volume (``PatchTask``: plain, picklable data, so that a process pool or a cluster can run it):
``extract_volume_patches`` reads the volume once and writes the chunks of that volume's seeds
straight to the store, returning only their rows. No two tasks share a chunk; a task run again
(a retry) writes the same bytes. The driver then writes ``patches.parquet`` and the manifest.

The volumes, masks and the store are local or on an object store (``UPath``: ``s3://``, ``gs://``): a task reads
its volume and masks from local copies (``radassets.staging``: the files themselves when local), and the driver
writes ``patches.parquet``, the manifest and the montage with the atomic writers (a local file put whole).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import SimpleITK as sitk

from radassets.dataplane import IN_PROCESS, Compute, map_items
from radassets.imaging import patch_store
from radassets.imaging.nrrd_region import Volume, WholeImage, open_volume
from radassets.layout import as_path
from radassets.staging import local_file
from radassets.storage import atomic_write_json, is_local, sha256_file, sha256_json

Point = Sequence[float] | np.ndarray  # x, y, z in LPS mm
AIR_HU = -1024
MARGIN_VOXELS = 3  # B-spline (order 3) support; linear needs 1
PLANE_MARGIN_ULPS = 16  # see _padded_fraction_plane: how near a limit a point leaves the count to the grid path
INTERPOLATORS = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline, "nearest": sitk.sitkNearestNeighbor}
PATCH_COLUMNS = {
    "index": pa.int64(), "seed_id": pa.string(), "PatientID": pa.string(), "SeriesInstanceUID": pa.string(),
    "crdc_series_uuid": pa.string(), "segment_label": pa.string(), "source": pa.string(),
    "coordX": pa.float64(), "coordY": pa.float64(), "coordZ": pa.float64(),
    "origin_x": pa.float64(), "origin_y": pa.float64(), "origin_z": pa.float64(),
    "at_border": pa.bool_(), "padded_fraction": pa.float64(), "has_mask": pa.bool_(), "mask_voxels": pa.int64(),
    "sha256": pa.string(),  # of the patch's values then its mask's (patch_store.patch_sha256)
}
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class PatchSpec:
    size: int = 64
    spacing_mm: float = 1.0
    interpolator: str = "linear"
    pad_hu: int = AIR_HU

    def __post_init__(self) -> None:
        if self.size < 8 or self.spacing_mm <= 0 or self.interpolator not in INTERPOLATORS:
            raise ValueError(f"invalid patch spec {self}")

    def origin(self, center: Point) -> np.ndarray:
        """LPS position of voxel (0, 0, 0) of the patch centred at ``center``."""
        return np.asarray(center, dtype=float) - (self.size - 1) / 2 * self.spacing_mm

    def as_dict(self) -> dict[str, Any]:
        return dict(asdict(self), direction="identity (L, P, S)", crop_margin_voxels=MARGIN_VOXELS,
                    mask_interpolator="nearest", storage=patch_store.DESCRIPTION)


Image = sitk.Image | Volume  # a volume in memory, or one read box by box (``radassets.imaging.nrrd_region``)


def _to_index(image: Image, points: np.ndarray) -> np.ndarray:
    """Continuous (i, j, k) indices of LPS ``points`` (..., 3) in ``image``."""
    return (points - np.array(image.GetOrigin())) @ _inverse_matrix(image).T


def _inverse_matrix(image: Image) -> np.ndarray:
    """inv(direction × diag(spacing)): LPS millimetres → index steps."""
    matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    return np.linalg.inv(matrix)


def padded_fraction(image: Image, center: Point, spec: PatchSpec) -> float:
    """Fraction of patch voxels whose centre falls outside the volume (ITK's half-voxel rule)."""
    inverse = _inverse_matrix(image)
    axis = np.arange(spec.size) * spec.spacing_mm
    origin = spec.origin(center)
    if _is_permutation(inverse):
        return _padded_fraction_axes(image, inverse, axis, origin)
    fraction = _padded_fraction_plane(image, inverse, axis, origin)
    if fraction is not None:
        return fraction
    grid = np.stack(np.meshgrid(axis + origin[0], axis + origin[1], axis + origin[2], indexing="ij"), axis=-1)
    index = (grid.reshape(-1, 3) - np.array(image.GetOrigin())) @ inverse.T
    inside = ((index >= -0.5) & (index <= np.array(image.GetSize()) - 0.5)).all(axis=1)
    return float(1.0 - inside.mean())


def _is_permutation(matrix: np.ndarray) -> bool:
    """Exactly one non-zero entry in each row and each column (a volume's axes along L, P, S in some order)."""
    nonzero = matrix != 0
    return bool((nonzero.sum(axis=0) == 1).all() and (nonzero.sum(axis=1) == 1).all())


def _padded_fraction_axes(image: Image, inverse: np.ndarray, axis: np.ndarray, origin: np.ndarray) -> float:
    """``padded_fraction`` where index axis a depends on one LPS axis b only: the same float, without the grid.

    Why it is the same: the general path's index a of a grid point is sum_b' (p_b' - o_b') * inverse[a, b'],
    whose terms are exact zeros but one, so it is that one product, rounded once, whatever the summation order
    (or a fused multiply-add). Here it is computed from the same operands. A point is inside when it is inside
    along every index axis, and the grid is the product of its three LPS axes, so the inside count is the
    product of the three per-axis counts: an exact integer, and 1 - count / N the same division as ``mean``."""
    volume_origin = np.array(image.GetOrigin())
    size = np.array(image.GetSize())
    count = 1
    for a in range(3):
        b = int(np.flatnonzero(inverse[a])[0])
        index = ((axis + origin[b]) - volume_origin[b]) * inverse[a, b]
        count *= int(((index >= -0.5) & (index <= size[a] - 0.5)).sum())
    return float(1.0 - np.float64(count) / np.float64(axis.size ** 3))


def _padded_fraction_plane(image: Image, inverse: np.ndarray, axis: np.ndarray, origin: np.ndarray) -> float | None:
    """``padded_fraction`` of a volume turned in one plane only (e.g. a gantry's table rotation about S: index k
    from S alone, i and j from L and P): counted on the 64² plane grid and the 64 points of the third axis, not on
    64³ points. None where that does not apply or cannot be sure to give the grid path's float.

    Why it is the same float: the lone axis is exact as in ``_padded_fraction_axes``. In the plane, an index is a
    sum of two products, which the grid path's matrix product may round differently (order, fused multiply-add),
    by at most a few units in the last place of |t1| + |t2|; so every point farther than 16 such units from the
    -0.5 and size - 0.5 limits is inside or outside for both, and where any point is nearer, None (the caller
    takes the grid path). The counts are then the same exact integers."""
    lone = [a for a in range(3) if np.count_nonzero(inverse[a]) == 1]
    if len(lone) != 1:
        return None
    a0 = lone[0]
    b0 = int(np.flatnonzero(inverse[a0])[0])
    if np.count_nonzero(inverse[:, b0]) != 1:
        return None
    plane_a = [a for a in range(3) if a != a0]
    plane_b = [b for b in range(3) if b != b0]
    volume_origin = np.array(image.GetOrigin())
    size = np.array(image.GetSize())
    index = ((axis + origin[b0]) - volume_origin[b0]) * inverse[a0, b0]
    count = int(((index >= -0.5) & (index <= size[a0] - 0.5)).sum())
    u = ((axis + origin[plane_b[0]]) - volume_origin[plane_b[0]])[:, None]  # as the grid path subtracts, per axis
    v = ((axis + origin[plane_b[1]]) - volume_origin[plane_b[1]])[None, :]
    inside = np.ones((axis.size, axis.size), dtype=bool)
    for a in plane_a:
        t1, t2 = u * inverse[a, plane_b[0]], v * inverse[a, plane_b[1]]
        plane_index = t1 + t2
        margin = PLANE_MARGIN_ULPS * np.finfo(float).eps * float((np.abs(t1) + np.abs(t2)).max())
        low, high = -0.5, size[a] - 0.5
        if (np.abs(plane_index - low) <= margin).any() or (np.abs(plane_index - high) <= margin).any():
            return None
        inside &= (plane_index >= low) & (plane_index <= high)
    count *= int(inside.sum())
    return float(1.0 - np.float64(count) / np.float64(axis.size ** 3))


def crop_bounds(image: Image, center: Point, spec: PatchSpec) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """The index box [lo, hi) of ``image`` that a patch at ``center`` samples (None if it misses the volume)."""
    half = (spec.size - 1) / 2 * spec.spacing_mm
    corners = np.asarray(center, float) + np.array(list(itertools.product((-half, half), repeat=3)))
    index = _to_index(image, corners)
    size = np.array(image.GetSize())
    lo = np.clip(np.floor(index.min(axis=0)).astype(int) - MARGIN_VOXELS, 0, size)
    hi = np.clip(np.ceil(index.max(axis=0)).astype(int) + MARGIN_VOXELS + 1, 0, size)
    if (hi <= lo).any():
        return None
    return (int(lo[0]), int(lo[1]), int(lo[2])), (int(hi[0]), int(hi[1]), int(hi[2]))


def crop_for_patch(image: Image, center: Point, spec: PatchSpec) -> sitk.Image | None:
    """The part of ``image`` that a patch at ``center`` samples (None if the patch misses the volume)."""
    bounds = crop_bounds(image, center, spec)
    if bounds is None:
        return None
    lo, hi = bounds
    if isinstance(image, sitk.Image):
        return image[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return image.region(lo, hi)


def resample(source: sitk.Image, center: Point, spec: PatchSpec, interpolator: int, default: float,
             pixel_type: int) -> np.ndarray:
    """Resample the cropped ``source`` onto the patch grid at ``center``: an array [k, j, i]."""
    out = sitk.Resample(source, [spec.size] * 3, sitk.Transform(), interpolator, spec.origin(center).tolist(),
                        [spec.spacing_mm] * 3, np.eye(3).ravel().tolist(), default, pixel_type)
    return sitk.GetArrayFromImage(out)


def sample(image: Image, center: Point, spec: PatchSpec, interpolator: int, default: float,
           pixel_type: int) -> np.ndarray:
    """Resample ``image`` onto the patch grid at ``center``: an array [k, j, i]."""
    source = crop_for_patch(image, center, spec)
    if source is None:  # the patch misses the volume entirely: all padding
        return np.full((spec.size,) * 3, default, dtype={sitk.sitkFloat32: np.float32, sitk.sitkUInt8: np.uint8}[pixel_type])
    return resample(source, center, spec, interpolator, default, pixel_type)


def to_hu(values: np.ndarray) -> np.ndarray:
    """Resampled float32 values as whole HU in int16."""
    return np.clip(np.rint(values), -32768, 32767).astype(np.int16)


def extract_patch(image: Image, center: Point, spec: PatchSpec = PatchSpec()) -> np.ndarray:
    """The int16 HU patch at ``center`` (crop, then resample; outside the volume is ``pad_hu``)."""
    return to_hu(sample(image, center, spec, INTERPOLATORS[spec.interpolator], float(spec.pad_hu), sitk.sitkFloat32))


def extract_mask_patch(mask: Image, center: Point, spec: PatchSpec = PatchSpec()) -> np.ndarray:
    """The uint8 0/1 mask patch at ``center`` (nearest neighbour)."""
    return sample(mask, center, spec, sitk.sitkNearestNeighbor, 0.0, sitk.sitkUInt8)


@dataclass(frozen=True)
class PatchesReport:
    """What ``write_patches`` did: one row per patch (as written to patches.parquet), the spec, the files' sha256."""

    out_dir: Path
    spec: dict[str, Any]
    rows: list[dict[str, Any]]
    sha256: dict[str, str]

    @property
    def at_border(self) -> list[dict[str, Any]]:
        """The patches padded with air at the volume border."""
        return [r for r in self.rows if r["at_border"]]

    def summary(self) -> dict[str, Any]:
        """The manifest's ``summary``, as written (and the counts an asset shows)."""
        return {"patches": len(self.rows), "at_border": sum(r["at_border"] for r in self.rows),
                "with_mask": sum(r["has_mask"] for r in self.rows), "size": self.spec["size"],
                "spacing_mm": self.spec["spacing_mm"]}

    def metadata(self) -> dict[str, Any]:
        """The counts an asset shows (plain values)."""
        return self.summary()

    @property
    def content_hash(self) -> str:
        return sha256_json({"spec": self.spec, "files": self.sha256})


@dataclass(frozen=True)
class PatchTask:
    """The seeds of one CT volume, to extract into the store at ``store``: plain data, picklable.

    ``seeds`` holds (index, seed row) pairs: the index is the patch's row in the partition (its chunk).
    ``ct_path`` and the seeds' ``mask_path``: paths (or their text), local or on an object store."""

    ct_path: str | os.PathLike
    seeds: tuple[tuple[int, dict[str, Any]], ...]
    spec: PatchSpec
    store: str | os.PathLike


def patch_tasks(seeds: Sequence[dict[str, Any]], store: str | os.PathLike, spec: PatchSpec) -> list[PatchTask]:
    """One task per CT volume (so each volume is read once), in the order of the volumes' paths."""
    by_volume: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for i in sorted(range(len(seeds)), key=lambda i: str(seeds[i]["ct_path"])):
        by_volume.setdefault(str(seeds[i]["ct_path"]), []).append((i, dict(seeds[i])))
    return [PatchTask(items[0][1]["ct_path"], tuple(items), spec, store) for items in by_volume.values()]


def _read_image(path: str | os.PathLike) -> sitk.Image:
    """A volume or mask, local or on an object store (read from a local copy, removed at once)."""
    with local_file(cast(Path, as_path(path))) as local:
        return sitk.ReadImage(str(local))


def read_volume(path: str | os.PathLike) -> Image:
    """A volume or mask to take patches from: a local NRRD file is read box by box, only where patches need it
    (``radassets.imaging.nrrd_region``); anything else (an object store, another format) whole by SimpleITK."""
    location = as_path(path)
    if isinstance(location, Path) and is_local(location):
        return open_volume(location)
    return WholeImage(_read_image(path))


def seed_patch(volume: Image, mask: Image | None, center: Point, spec: PatchSpec
               ) -> tuple[np.ndarray, np.ndarray, float]:
    """One seed's HU patch, mask patch (zeros without a mask) and padded fraction."""
    patch = extract_patch(volume, center, spec)
    mask_patch = extract_mask_patch(mask, center, spec) if mask is not None else np.zeros_like(patch, dtype=np.uint8)
    return patch, mask_patch, padded_fraction(volume, center, spec)


def extract_volume_patches(task: PatchTask) -> list[dict[str, Any]]:
    """Extract the patch and mask patch of every seed of ``task`` into chunk ``index`` of the store's arrays;
    the rows of ``patches.parquet`` for them. Run again, it writes the same bytes."""
    spec = task.spec
    arrays = patch_store.open_arrays(task.store, read_only=False)
    image = read_volume(task.ct_path)
    masks: dict[str, Image] = {}  # each mask file opened once, however many of the volume's seeds use it
    rows = []
    for i, seed in task.seeds:
        center = (seed["coordX"], seed["coordY"], seed["coordZ"])
        has_mask = bool(seed.get("mask_path"))
        mask = None
        if has_mask:
            if str(seed["mask_path"]) not in masks:
                masks[str(seed["mask_path"])] = read_volume(seed["mask_path"])
            mask = masks[str(seed["mask_path"])]
        patch, mask_patch, padded = seed_patch(image, mask, center, spec)
        digest = patch_store.write_patch(arrays, i, patch, mask_patch)
        origin = spec.origin(center)
        rows.append({"index": i, "seed_id": seed["seed_id"], "PatientID": seed["PatientID"],
                     "SeriesInstanceUID": seed["SeriesInstanceUID"], "crdc_series_uuid": seed["crdc_series_uuid"],
                     "segment_label": seed.get("segment_label"), "source": seed["source"],
                     "coordX": center[0], "coordY": center[1], "coordZ": center[2],
                     "origin_x": float(origin[0]), "origin_y": float(origin[1]), "origin_z": float(origin[2]),
                     "at_border": padded > 0, "padded_fraction": round(padded, 5), "has_mask": has_mask,
                     "mask_voxels": int(mask_patch.sum()), "sha256": digest})
    return rows


def write_patches(seeds: Sequence[dict[str, Any]], out_dir: Path, spec: PatchSpec = PatchSpec(),
                  progress: Progress | None = None, compute: Compute = IN_PROCESS) -> PatchesReport:
    """Extract every seed's patch (and mask patch) into the Zarr store ``out_dir/patches.zarr``, then write
    ``patches.parquet`` and, last, ``manifest.json``. Each CT volume's seeds are one ``radassets.dataplane`` task,
    run where ``compute`` says; each writes its own chunks.

    The manifest's ``sha256`` of ``patches.zarr`` is of the data (each row's ``sha256``, in row order), not of
    the store's files, so it does not depend on the codec or the chunk files' layout.
    """
    from radassets.imaging.volumes import write_table

    out_dir = cast(Path, as_path(out_dir))  # a UPath under a URL root: pathlib's API (see radassets.layout)
    n = len(seeds)
    store = out_dir / patch_store.STORE_NAME
    patch_store.create_store(store, n, spec.size)
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    done = 0

    def volume_done(_volumes_done: int, _volumes: int, volume_rows: list[dict[str, Any]]) -> None:
        nonlocal done
        for row in volume_rows:
            done += 1
            if progress:
                padded = row["padded_fraction"]
                progress(done, n, f"{row['PatientID']} {row.get('segment_label') or ''}"
                                  + (f" at the volume border ({padded:.1%} padded with air)" if padded > 0 else ""))

    for volume_rows in map_items(extract_volume_patches, patch_tasks(seeds, store, spec), compute,
                                 progress=volume_done, cost=lambda task: len(task.seeds)).results:
        for row in volume_rows:
            rows[row["index"]] = row
    patch_store.finish_store(store)
    write_table(rows, PATCH_COLUMNS, out_dir / "patches.parquet")
    sha = {patch_store.STORE_NAME: sha256_json([r["sha256"] for r in rows]),
           "patches.parquet": sha256_file(out_dir / "patches.parquet")}
    report = PatchesReport(out_dir, spec.as_dict(), rows, sha)
    atomic_write_json(out_dir / "manifest.json", {"spec": report.spec, "summary": report.summary(), "sha256": sha,
                                                  "content_hash": report.content_hash})
    return report


def load_patches(out_dir: Path) -> tuple[patch_store.PatchArray, patch_store.PatchArray, list[dict[str, Any]]]:
    """The patches and masks of one ``patches`` partition, read lazily (``[i]`` and slices read those chunks
    only, and give numpy arrays), and their rows. ``out_dir`` is a local folder or a ``UPath`` of a bucket."""
    import pyarrow.parquet as pq

    out_dir = cast(Path, as_path(out_dir))
    if not (out_dir / "manifest.json").is_file():  # written last: its absence means an unfinished partition
        raise FileNotFoundError(f"no complete patches partition at {out_dir}")
    store = out_dir / patch_store.STORE_NAME
    if not (store / "zarr.json").is_file():
        raise patch_store.PatchStoreError(f"the patches partition at {out_dir} has no {patch_store.STORE_NAME} (it "
                                          f"was written by an older radassets as .npy files); materialize 'patches' "
                                          f"again")
    patches, masks = patch_store.open_readers(store)
    with (out_dir / "patches.parquet").open("rb") as f:
        rows = pq.read_table(f).to_pylist()
    if patches.shape[0] != len(rows) or masks.shape != patches.shape:
        raise patch_store.PatchStoreError(f"patches at {out_dir} are inconsistent: {patches.shape}, {masks.shape}, "
                                          f"{len(rows)} rows")
    return patches, masks, rows
