"""The patches' Zarr store: the same seeds give the same bytes, a killed and retried extraction gives them too and
leaves nothing behind, and a bucket (moto's S3 server) holds the same objects and serves any patch alone."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest
import SimpleITK as sitk
import zarr
from upath import UPath

from radassets.dataplane import Compute
from radassets.imaging import patch_store
from radassets.imaging.patches import (PatchSpec, extract_mask_patch, extract_patch, extract_volume_patches,
                                       load_patches, patch_tasks, write_patches)
from radassets_tests.idc.conftest import monkeypatch_module, s3_server  # noqa: F401 (fixtures)
from radassets_tests.reliability.conftest import LITTER

SPEC = PatchSpec(size=16)


def write_volume(folder: Path, name: str, shift: float) -> tuple[str, str]:
    """A CT (an HU gradient plus a lesion) and its mask, on an anisotropic grid; returns their paths."""
    k, j, i = np.meshgrid(np.arange(20), np.arange(40), np.arange(36), indexing="ij")
    lesion = (i - 18) ** 2 + (j - 20) ** 2 + ((k - 10) * 3) ** 2 < 64
    hu = (3 * i - 2 * j + 5 * k - 600 + 400 * lesion + shift).astype(np.int16)
    paths = []
    for array, suffix in ((hu, "ct"), (lesion.astype(np.uint8), "mask")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.8, 0.7, 2.5))
        image.SetOrigin((-10.0 + shift, 5.0, -30.0))
        path = folder / f"{name}_{suffix}.nrrd"
        sitk.WriteImage(image, str(path))
        paths.append(str(path))
    return paths[0], paths[1]


@pytest.fixture
def seeds(tmp_path) -> list[dict]:
    """Five seeds on two volumes, listed out of volume order: one at the border, one without a mask."""
    rows = []
    for name, shift in (("b", 7.0), ("a", 0.0)):
        ct, mask = write_volume(tmp_path, name, shift)
        for n, (x, y, z, with_mask) in enumerate([(4.4 + shift, 19.0, -5.0, True), (0.0 + shift, 10.0, -25.0, True),
                                                  (8.0 + shift, 25.0, 0.0, False)][: 3 if name == "a" else 2]):
            rows.append({"seed_id": f"{name}{n}", "PatientID": f"P-{name}", "SeriesInstanceUID": f"1.2.{name}",
                         "crdc_series_uuid": f"u-{name}", "segment_label": "GTV-1" if with_mask else None,
                         "source": "test", "ct_path": ct, "mask_path": mask if with_mask else None,
                         "coordX": x, "coordY": y, "coordZ": z})
    return rows


def tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_patches_are_read_back_from_the_store_as_extracted(seeds, tmp_path):
    report = write_patches(seeds, tmp_path / "out", SPEC)
    patches, masks, rows = load_patches(tmp_path / "out")
    # Read lazily: from a local folder, from the chunk files themselves (a bucket: zarr by range).
    assert isinstance(patches, patch_store.RawChunkReader) and patches.shape == (5, 16, 16, 16) and patches.dtype == np.int16
    assert masks.dtype == np.uint8 and masks.shape == patches.shape
    assert [r["seed_id"] for r in rows] == [s["seed_id"] for s in seeds]  # row i is seed i, whatever the tasks' order
    for i, seed in enumerate(seeds):
        center = (seed["coordX"], seed["coordY"], seed["coordZ"])
        image = sitk.ReadImage(seed["ct_path"])
        assert np.array_equal(patches[i], extract_patch(image, center, SPEC))
        expected_mask = (extract_mask_patch(sitk.ReadImage(seed["mask_path"]), center, SPEC) if seed["mask_path"]
                         else np.zeros((16,) * 3, np.uint8))
        assert np.array_equal(masks[i], expected_mask)
        assert rows[i]["sha256"] == patch_store.patch_sha256(patches[i], masks[i])
    assert np.array_equal(patches[1:4], np.stack([patches[i] for i in (1, 2, 3)]))  # a slice reads those chunks
    assert report.summary()["with_mask"] == 4 and report.summary()["at_border"] >= 1
    # One chunk file per patch and array, the patch-less masks' zeros included.
    chunks = sorted(p.relative_to(tmp_path / "out" / "patches.zarr").as_posix()
                    for p in (tmp_path / "out" / "patches.zarr").rglob("c/*/0/0/0"))
    assert chunks == [f"{a}/c/{i}/0/0/0" for a in ("masks", "patches") for i in range(5)]
    # The manifest's hash is of the values: the same data in other files (another codec) hashes the same.
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["sha256"]["patches.zarr"] == report.sha256["patches.zarr"]
    assert "patches.npy" not in manifest["sha256"]


def test_two_runs_write_byte_identical_stores_with_no_timestamp(seeds, tmp_path):
    first = write_patches(seeds, tmp_path / "one", SPEC)
    second = write_patches(list(reversed(seeds)), tmp_path / "two", SPEC)  # other order: other rows, other bytes
    again = write_patches(seeds, tmp_path / "three", SPEC)
    assert tree(tmp_path / "one") == tree(tmp_path / "three")
    assert first.content_hash == again.content_hash != second.content_hash
    metadata = json.loads((tmp_path / "one" / "patches.zarr" / "patches" / "zarr.json").read_text())
    assert set(metadata) == {"shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs",
                             "attributes", "zarr_format", "node_type", "storage_transformers", "dimension_names"}
    assert metadata["attributes"] == {} and metadata["chunk_grid"]["configuration"]["chunk_shape"] == [1, 16, 16, 16]


def test_a_pool_of_processes_writes_the_store_one_process_writes(seeds, tmp_path):
    """Each volume's seeds are a data-plane task writing its own chunks: two processes, the same bytes."""
    alone = write_patches(seeds, tmp_path / "one", SPEC, compute=Compute(workers=1))
    ticks = []
    pooled = write_patches(seeds, tmp_path / "two", SPEC, progress=lambda done, total, what: ticks.append(done),
                           compute=Compute(workers=2))
    assert tree(tmp_path / "one") == tree(tmp_path / "two")
    assert pooled.content_hash == alone.content_hash
    assert sorted(ticks) == [1, 2, 3, 4, 5]  # one tick per patch, as the volumes' tasks finish


KILLED_WORKER = """
import os, pickle, signal, sys
from pathlib import Path
from radassets.imaging.patches import extract_volume_patches
task = pickle.loads(Path(sys.argv[1]).read_bytes())
victim = Path(sys.argv[2])
rename = os.replace
def replace(src, dst):  # the kill lands after the chunk's temporary file is written, before it is renamed
    if Path(dst) == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    return rename(src, dst)
os.replace = replace
extract_volume_patches(task)
"""


def test_a_killed_extraction_retried_gives_the_same_bytes_and_no_litter(seeds, tmp_path):
    clean = tmp_path / "clean"
    write_patches(seeds, clean, SPEC)
    out = tmp_path / "retried"
    store = out / "patches.zarr"
    patch_store.create_store(store, len(seeds), SPEC.size)
    tasks = patch_tasks(seeds, store, SPEC)
    assert [t.ct_path for t in tasks] == sorted({s["ct_path"] for s in seeds})  # one task per volume
    first = tasks[0]
    (tmp_path / "task.pkl").write_bytes(pickle.dumps(first))  # what a process pool sends a worker
    victim_index = first.seeds[1][0]
    victim = store / "patches" / "c" / str(victim_index) / "0" / "0" / "0"
    worker = subprocess.run([sys.executable, "-c", KILLED_WORKER, str(tmp_path / "task.pkl"), str(victim)],
                            capture_output=True, text=True)
    assert worker.returncode == -9, worker.stderr
    # Killed mid-task: the chunk is absent, not half-written; its temporary file is left, and is litter.
    assert not victim.exists()
    left = [p for p in store.rglob("*") if p.is_file() and LITTER.search(p.name)]
    assert len(left) == 1 and left[0].parent == victim.parent, left
    assert (store / "patches" / "c" / str(first.seeds[0][0]) / "0" / "0" / "0").is_file()  # done before the kill

    # The retry runs the same task again (and the driver the others), then finishes the partition.
    rows = [row for task in tasks for row in extract_volume_patches(task)]
    patch_store.finish_store(store)
    assert [p for p in out.rglob("*") if LITTER.search(p.name)] == []
    assert tree(store) == tree(clean / "patches.zarr")
    clean_rows = {r["index"]: r["sha256"] for r in load_patches(clean)[2]}
    assert {r["index"]: r["sha256"] for r in rows} == clean_rows


def test_a_rerun_replaces_every_chunk_of_an_earlier_run(seeds, tmp_path):
    write_patches(seeds + seeds[:2], tmp_path / "out", SPEC)  # an earlier run with more seeds
    litter = tmp_path / "out" / "patches.zarr" / "masks" / "c" / "0" / "0" / "0" / "0.0123456789abcdef0123456789abcdef.partial"
    litter.write_bytes(b"\0" * 100)
    write_patches(seeds, tmp_path / "out", SPEC)
    write_patches(seeds, tmp_path / "fresh", SPEC)
    assert tree(tmp_path / "out" / "patches.zarr") == tree(tmp_path / "fresh" / "patches.zarr")


def test_an_old_partition_of_npy_files_asks_for_a_rerun(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    np.save(tmp_path / "patches.npy", np.zeros((1, 8, 8, 8), np.int16))
    with pytest.raises(patch_store.PatchStoreError, match="materialize 'patches' again"):
        load_patches(tmp_path)


@pytest.mark.integration
def test_the_store_on_s3_holds_the_local_bytes_and_serves_one_patch(seeds, tmp_path, s3_server):  # noqa: F811
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="artifacts")
    remote = UPath("s3://artifacts/root/patches/v1", client_kwargs={"endpoint_url": s3_server})
    local = tmp_path / "local"
    remote_report = write_patches(seeds, remote, SPEC)
    local_report = write_patches(seeds, local, SPEC)
    assert remote_report.content_hash == local_report.content_hash

    client = boto3.client("s3", endpoint_url=s3_server)
    objects = {o["Key"].removeprefix("root/patches/v1/"): o["Key"]
               for o in client.list_objects_v2(Bucket="artifacts", Prefix="root/")["Contents"]}
    assert set(objects) == set(tree(local))
    for name, key in objects.items():
        assert client.get_object(Bucket="artifacts", Key=key)["Body"].read() == (local / name).read_bytes(), name

    patches, masks, rows = load_patches(remote)
    local_patches, local_masks, local_rows = load_patches(local)
    assert rows == local_rows
    assert np.array_equal(patches[3], local_patches[3]) and np.array_equal(masks[3], local_masks[3])
    # Patch 3 alone is one object, and a range of it is served alone (the store's chunks are raw values).
    key = objects["patches.zarr/patches/c/3/0/0/0"]
    part = client.get_object(Bucket="artifacts", Key=key, Range="bytes=0-31")["Body"].read()
    assert np.array_equal(np.frombuffer(part, "<i2"), np.asarray(local_patches[3]).ravel()[:16])


def small_store(folder: Path, compressors=patch_store.COMPRESSORS) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    data = rng.integers(-1024, 2000, size=(5, 4, 4, 4)).astype(np.int16)
    masks = (data > 500).astype(np.uint8)
    patch_store.create_store(folder, 5, 4, compressors)
    arrays = patch_store.open_arrays(folder, read_only=False)
    for i in range(5):
        patch_store.write_patch(arrays, i, data[i], masks[i])
    return data, masks


def test_a_local_store_is_read_from_its_chunk_files_with_zarrs_values(tmp_path):
    data, masks = small_store(tmp_path / "patches.zarr")
    patches, mask_reader = patch_store.open_readers(tmp_path / "patches.zarr")
    assert isinstance(patches, patch_store.RawChunkReader) and isinstance(mask_reader, patch_store.RawChunkReader)
    zarr_patches, _ = patch_store.open_arrays(tmp_path / "patches.zarr")
    for key in (0, 4, -1, np.int64(2), slice(1, 4), slice(None), slice(3, 99), [4, 0, 2], np.array([1, 1])):
        assert np.array_equal(patches[key], np.asarray(zarr_patches[key])), key
        assert np.array_equal(patches[key], data[key]), key
    assert np.array_equal(mask_reader[1:3], masks[1:3]) and mask_reader[0].dtype == np.uint8
    assert np.array_equal(np.asarray(patches), data) and len(patches) == 5 and patches.shape == data.shape
    with pytest.raises(IndexError):
        patches[5]


def test_a_missing_chunk_is_an_error_naming_it_not_zeros(tmp_path):
    small_store(tmp_path / "patches.zarr")
    (tmp_path / "patches.zarr" / "patches" / "c" / "3" / "0" / "0" / "0").unlink()
    patches, _ = patch_store.open_readers(tmp_path / "patches.zarr")
    with pytest.raises(patch_store.PatchStoreError, match=r"c/3/0/0/0: the chunk of patch 3 is missing"):
        patches[2:4]
    chunk = tmp_path / "patches.zarr" / "patches" / "c" / "1" / "0" / "0" / "0"
    for damaged in (chunk.read_bytes()[:-2], chunk.read_bytes() + b"\0"):  # cut short, or too long
        chunk.write_bytes(damaged)
        with pytest.raises(patch_store.PatchStoreError, match=r"c/1/0/0/0: not one patch of \(4, 4, 4\) int16"):
            patches[1]


def test_a_compressed_or_remote_store_is_read_through_zarr(tmp_path):
    from zarr.codecs import ZstdCodec

    data, _ = small_store(tmp_path / "zstd.zarr", (ZstdCodec(level=1),))
    patches, _ = patch_store.open_readers(tmp_path / "zstd.zarr")
    assert isinstance(patches, zarr.Array) and np.array_equal(patches[1:3], data[1:3])
