"""The embeddings' batches on a Ray cluster: Ray Data ``map_batches`` over the batches, on a pool of actors that
each load the model once.

The dataset is the list of batch descriptors ``(start, stop)`` that the local loop would run
(``embed.batch_bounds``: the same boundaries, so every patch is embedded with the same neighbours and gives the
same vector). Each actor (``EmbedBatches``) builds the extractor once in its constructor, from a picklable recipe
(``RegistryExtractor``: the registry entry, the weights cache, the device asked for), and opens the patches
partition itself from its folder or URL (``load_patches``: the Zarr arrays read by range), never receiving the
arrays. A call embeds one batch and returns one small record: the batch's start, its vectors as raw float32 bytes
(so they come back bit for bit), the node it ran on and the extractor's identity; or the user's error
(``RadassetsError``: weights that do not load, a model's output of the wrong shape), which the driver raises as the
local path would. Any other exception is Ray Data's to report (a ``UserCodeException`` with the actor's
traceback). The driver puts the vectors in place and writes ``embeddings.parquet`` and the manifest exactly as the
local path does (``write_embeddings``).

Resources. The accelerator is the resource named by the setting ``ray_gpu_resource`` (``GPU`` by default; a
custom resource such as the tests' ``gpu_standin`` works the same way). When the cluster advertises it, each actor
asks for one unit of it (``num_gpus=1`` for ``GPU``, ``resources={name: 1}`` otherwise) and the pool has one actor
per unit; when it does not, the actors ask for one CPU each and the pool has one actor per CPU of the cluster.
Either way no more actors than batches. Inside an actor the device is CUDA only if torch sees one there (the
``device`` setting ``auto``), so an actor on a custom resource without CUDA runs on its CPU.

Retries. An actor whose process dies (``kill -9``, the OOM killer, a lost node) is restarted, and the batch it was
running is run again, at most ``Compute.retries`` times each (``max_restarts`` and ``max_task_retries``, which
Ray Data would otherwise leave unbounded). A batch's vectors depend only on the batch, so a retried run writes the
same bytes.
"""

from __future__ import annotations

import json
import pickle
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radassets.dataplane import Compute, DataPlaneError, connect_ray
from radassets.errors import RadassetsError
from radassets.imaging.patches import load_patches
from radassets.models.embed import EmbeddingsReport, Extractor, Progress, batch_bounds, embed_batch, write_embeddings
from radassets.models.registry import ModelEntry

if TYPE_CHECKING:
    import torch

GPU = "GPU"  # Ray's own name for the GPUs a node has (num_gpus)


@dataclass(frozen=True)
class RegistryExtractor:
    """How an actor builds a registry model's extractor (picklable: it travels to every actor)."""

    entry: ModelEntry
    weights_dir: Path | None
    data_root: Path | None

    def __call__(self, device: torch.device) -> Extractor:
        from radassets.models.extractors import load_extractor

        # The driver fetched the weights already: an actor only reads them from the cache.
        return load_extractor(self.entry, device, False, weights_dir=self.weights_dir, data_root=self.data_root)


class EmbedBatches:
    """Ray Data's UDF: one actor of the pool, holding the model. Called with one descriptor ``{start, stop}``."""

    def __init__(self, build: Callable[[torch.device], Extractor], patches_dir: Any, device: str):
        import ray

        from radassets.models.embed import choose_device

        self.node = f"node {ray.get_runtime_context().get_node_id()}"
        self.error: RadassetsError | None = None  # a user's error (weights, model output): sent to the driver
        try:
            self.patches, self.masks, self.rows = load_patches(patches_dir)
            chosen = choose_device(device)
            self.extractor = build(chosen)
        except RadassetsError as e:  # not a dying actor for Ray to restart: the driver raises it, as locally
            self.error = e
            return
        self.identity = json.dumps({"weights_sha256": self.extractor.weights_sha256, "dim": self.extractor.dim,
                                    "device": str(chosen)})

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records: dict[str, list[Any]] = {"start": [], "vectors": [], "node": [], "identity": [], "error": []}
        for start, stop in zip(batch["start"].tolist(), batch["stop"].tolist()):
            vectors, error = b"", self.error
            if error is None:
                try:
                    vectors = np.ascontiguousarray(embed_batch(self.extractor, self.patches, self.masks, self.rows,
                                                               start, stop), dtype="<f4").tobytes()
                except RadassetsError as e:
                    error = e
            records["start"].append(start)
            records["vectors"].append(vectors)
            records["node"].append(self.node)
            records["identity"].append("" if error else self.identity)
            records["error"].append(pickle.dumps(error) if error else b"")
        return {"start": np.array(records["start"], dtype=np.int64),
                "vectors": np.array(records["vectors"], dtype=object),
                "node": np.array(records["node"]), "identity": np.array(records["identity"]),
                "error": np.array(records["error"], dtype=object)}


def actor_resources(cluster: dict[str, float], gpu_resource: str, n_batches: int) -> tuple[int, dict[str, Any]]:
    """The pool's size and each actor's resources on a cluster with these total resources (``ray.cluster_resources``):
    one actor per unit of the accelerator resource when the cluster has it, else one per CPU; at most one per
    batch, at least one."""
    units = int(cluster.get(gpu_resource, 0))
    if units >= 1:
        ask: dict[str, Any] = {"num_gpus": 1} if gpu_resource == GPU else {"resources": {gpu_resource: 1}}
        return max(1, min(units, n_batches)), {"num_cpus": 1, **ask}
    return max(1, min(int(cluster.get("CPU", 1)), n_batches)), {"num_cpus": 1}


def embed_on_ray(build: Callable[[torch.device], Extractor], entry: ModelEntry, patches_dir: Any, out_dir: Path, *,
                 compute: Compute, batch_size: int, device: str = "auto",
                 progress: Progress | None = None) -> EmbeddingsReport:
    """Embed the patches of the partition at ``patches_dir`` on the Ray cluster of ``compute`` (the module
    docstring) and write ``embeddings.parquet`` and ``manifest.json`` under ``out_dir``."""
    import ray
    import ray.data
    from ray.util.annotations import RayDeprecationWarning

    assert compute.ray_address is not None
    started = time.monotonic()
    _, _, rows = load_patches(patches_dir)
    n = len(rows)
    bounds = batch_bounds(n, batch_size)
    connect_ray(compute.ray_address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    size, resources = actor_resources(ray.cluster_resources(), compute.ray_gpu_resource, len(bounds))
    descriptors = ray.data.from_items([{"start": start, "stop": stop} for start, stop in bounds],
                                      override_num_blocks=len(bounds)) if bounds else None
    pieces: dict[int, np.ndarray] = {}
    places: Counter[str] = Counter()
    identities: set[str] = set()
    if descriptors is not None:
        with warnings.catch_warnings():
            # Ray 2.60 takes max_restarts / max_task_retries only as "ray_remote_args", which it marks as deprecated
            # with no named parameter to replace them; without them a model that kills its process every time would
            # be restarted for ever.
            warnings.simplefilter("ignore", RayDeprecationWarning)
            embedded = descriptors.map_batches(
                EmbedBatches, fn_constructor_args=(build, patches_dir, device), batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=size), max_restarts=compute.retries,
                max_task_retries=compute.retries, **resources)
        for record in embedded.iter_rows():
            if record["error"]:
                raise pickle.loads(record["error"])  # the user's error, as the local path raises it
            start = int(record["start"])
            stop = bounds[start // batch_size][1]
            pieces[start] = np.frombuffer(record["vectors"], dtype="<f4").reshape(stop - start, -1)
            places[str(record["node"])] += 1
            identities.add(str(record["identity"]))
            if progress:
                progress(sum(len(v) for v in pieces.values()), n, f"{entry.name}: batch {start}-{stop} on "
                                                                   f"{record['node']}")
    if len(pieces) != len(bounds):
        raise DataPlaneError(f"model {entry.name!r} on the Ray cluster at {compute.ray_address!r}: "
                             f"{len(bounds) - len(pieces)} of {len(bounds)} batches came back with no vectors")
    weights_sha256, dim, devices = _agreed(identities, entry)
    vectors = np.concatenate([pieces[start] for start, _ in bounds]) if bounds else np.zeros((0, dim), np.float32)
    return write_embeddings(entry, weights_sha256, vectors, rows, out_dir, batch_size=batch_size, device=devices,
                            started=started, places=dict(places))


def _agreed(identities: set[str], entry: ModelEntry) -> tuple[str | None, int, str]:
    """The weights' sha256, length and device(s) the actors reported: the weights must be the same everywhere."""
    if not identities:
        return None, int(entry.embedding_dim or 0), "none"
    seen = [json.loads(i) for i in sorted(identities)]
    if len({(s["weights_sha256"], s["dim"]) for s in seen}) > 1:
        raise DataPlaneError(f"model {entry.name!r}: the Ray actors loaded different weights or lengths: "
                             f"{sorted({(s['weights_sha256'], s['dim']) for s in seen})}")
    return seen[0]["weights_sha256"], int(seen[0]["dim"]), ", ".join(sorted({s["device"] for s in seen}))
