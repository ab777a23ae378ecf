"""The embeddings' batches on a Ray cluster (``radassets.models.embed_ray``): a two-node cluster on loopback, one
node advertising ``gpu_standin``, gives the bytes the run's own process writes; every batch runs on the
accelerator node when that resource is the setting's; an actor killed mid-batch is restarted and the bytes are the
same. Without a cluster the embeddings stay in the run's own process."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from radassets.dataplane import Compute
from radassets.imaging import patch_store
from radassets.layout import Layout
from radassets.models import registry
from radassets.models.embed import ModelOutputError, run_embeddings
from radassets.models.embed_ray import RegistryExtractor, actor_resources, embed_on_ray
from radassets.models.extractors import load_extractor
from radassets.models.pipeline import run_model
from radassets.settings import Settings
from radassets_tests.models.ray_extractors import DiesOnce, WrongShape
from radassets_tests.models.test_embed import CPU, SIZE, _patches

DATASET_VERSION = "tiny_v1"
MODEL = "untrained_cnn"
N_PATCHES, BATCH_SIZE = 6, 4  # two batches: 0-4 and 4-6


def patches_partition(layout: Layout) -> Path:
    """A finished ``patches`` partition of six synthetic patches, written with the store's own functions."""
    patches, masks, rows = _patches(N_PATCHES)
    out = layout.asset_dir("patches", DATASET_VERSION)
    out.mkdir(parents=True)
    store = out / patch_store.STORE_NAME
    patch_store.create_store(store, N_PATCHES, SIZE)
    arrays = patch_store.open_arrays(store, read_only=False)
    for i in range(N_PATCHES):
        patch_store.write_patch(arrays, i, patches[i], masks[i])
    pq.write_table(pa.Table.from_pylist(rows), out / "patches.parquet")
    (out / "manifest.json").write_text("{}")
    return out


def outputs(layout: Layout) -> tuple[bytes, bytes]:
    """embeddings.parquet's and manifest.json's bytes (the manifest records no timing)."""
    out = layout.asset_dir("embeddings", DATASET_VERSION, MODEL)
    return (out / "embeddings.parquet").read_bytes(), (out / "manifest.json").read_bytes()


@pytest.fixture
def partition(layout) -> Layout:
    patches_partition(layout)
    return layout


@pytest.fixture
def local(partition) -> tuple[bytes, dict]:
    """The run's own process (the reference), on the CPU: the same device on every machine."""
    report = run_model(DATASET_VERSION, MODEL, partition, batch_size=BATCH_SIZE, device="cpu")
    assert report.failed == 0 and report.places == {"local": 2}
    return outputs(partition)


def accelerator_node() -> str:
    import ray

    (node,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("gpu_standin")]
    return f"node {node}"


def test_without_a_cluster_the_embeddings_stay_in_this_process(partition, tmp_path):
    """Local workers (a pool for the imaging steps) do not move the model out of the run's process: the bytes are
    those of the batch loop run on the arrays."""
    report = run_model(DATASET_VERSION, MODEL, partition, batch_size=BATCH_SIZE, device="cpu",
                       compute=Compute(workers=2))
    assert report.places == {"local": 2}
    patches, masks, rows = _patches(N_PATCHES)
    direct = run_embeddings(load_extractor(registry.get(MODEL), CPU), patches, masks, rows, tmp_path / "direct",
                            batch_size=BATCH_SIZE)
    assert (direct.out_dir / "embeddings.parquet").read_bytes() == outputs(partition)[0]


def test_the_accelerator_resource_sizes_the_pool_else_the_cpus():
    assert actor_resources({"CPU": 8.0, "GPU": 2.0}, "GPU", 5) == (2, {"num_cpus": 1, "num_gpus": 1})
    assert actor_resources({"CPU": 2.0, "gpu_standin": 1.0}, "gpu_standin", 5) == \
        (1, {"num_cpus": 1, "resources": {"gpu_standin": 1}})
    assert actor_resources({"CPU": 8.0}, "GPU", 3) == (3, {"num_cpus": 1})  # no more actors than batches
    assert actor_resources({"CPU": 8.0, "GPU": 4.0}, "GPU", 1) == (1, {"num_cpus": 1, "num_gpus": 1})


def test_the_accelerator_resource_is_a_setting(monkeypatch):
    monkeypatch.setenv("RADASSETS_RAY_GPU_RESOURCE", "gpu_standin")
    assert Settings().compute().ray_gpu_resource == "gpu_standin"
    monkeypatch.delenv("RADASSETS_RAY_GPU_RESOURCE")
    assert Settings().compute().ray_gpu_resource == "GPU"


@pytest.mark.services
def test_on_ray_the_bytes_are_the_local_ones_and_every_batch_ran_on_the_accelerator_node(partition, local,
                                                                                         ray_cluster):
    compute = Compute(ray_address=ray_cluster.address, ray_gpu_resource="gpu_standin")
    report = run_model(DATASET_VERSION, MODEL, partition, batch_size=BATCH_SIZE, device="cpu", compute=compute)
    assert outputs(partition) == local
    assert report.places == {accelerator_node(): 2}, report.places


@pytest.mark.services
def test_on_ray_without_the_accelerator_resource_cpu_actors_give_the_same_bytes(partition, local, ray_cluster):
    report = run_model(DATASET_VERSION, MODEL, partition, batch_size=BATCH_SIZE, device="cpu",
                       compute=Compute(ray_address=ray_cluster.address))  # GPU: the cluster has none
    assert outputs(partition) == local
    assert sum(report.places.values()) == 2 and all(p.startswith("node ") for p in report.places)


@pytest.mark.services
def test_on_ray_an_actor_killed_mid_batch_is_restarted_and_the_bytes_are_the_same(partition, local, ray_cluster,
                                                                                  tmp_path):
    marker = tmp_path / "first-try"
    entry = registry.get(MODEL)
    build = DiesOnce(RegistryExtractor(entry, partition.weights_dir(), None), marker)
    report = embed_on_ray(build, entry, partition.asset_dir("patches", DATASET_VERSION),
                          partition.asset_dir("embeddings", DATASET_VERSION, MODEL),
                          compute=Compute(ray_address=ray_cluster.address, ray_gpu_resource="gpu_standin"),
                          batch_size=BATCH_SIZE, device="cpu")
    assert marker.exists()  # the first try did die
    assert outputs(partition) == local
    assert report.places == {accelerator_node(): 2}


@pytest.mark.services
def test_on_ray_a_model_error_is_raised_as_it_is_not_retried(partition, ray_cluster):
    entry = registry.get(MODEL)
    with pytest.raises(ModelOutputError, match=r"returned shape \(4, 511\) for a batch of 4 patches"):
        embed_on_ray(WrongShape, entry, partition.asset_dir("patches", DATASET_VERSION),
                     partition.asset_dir("embeddings", DATASET_VERSION, MODEL),
                     compute=Compute(ray_address=ray_cluster.address), batch_size=BATCH_SIZE, device="cpu")
    assert not partition.asset_dir("embeddings", DATASET_VERSION, MODEL).exists()
