"""Embeddings of one dataset version's patches by one model: batched, deterministic, every failure recorded.

The model is loaded once per run; patches are read from the Zarr arrays of the ``patches`` step in batches
(``batch_size``, at the fixed boundaries of ``batch_bounds``), on the device chosen (CUDA when present, unless
told otherwise). ``run_embeddings`` runs the batches in this process; ``embed_ray`` runs the same batches on a Ray
cluster's actors; both hand the vectors to ``write_embeddings``. A vector with NaN or infinite values is a
recorded failure of that seed, not an embedding. The output (``embeddings.parquet``) has one row per seed:
identifiers, the vector (float32), the model, the weights' sha256 and the preprocessing hash; ``manifest.json`` is
written last. The output folder may be on the artifact store (a ``UPath``): both files are put whole, the same bytes.

Determinism: the model runs in eval mode under ``torch.inference_mode`` with deterministic
algorithms requested, so the same patches give the same bytes on the same machine and settings. The number of
torch's CPU threads is not one of those settings: a Ray actor runs with one thread (Ray sets ``OMP_NUM_THREADS``
to its CPUs), this process with one per core, and the registry's CPU models (``radiomics``, ``untrained_cnn``)
and a user's TorchScript network give the same bits with 1, 2 or 4 threads (checked on x86-64, torch 2.x CPU;
``radassets_tests/models/test_embed_ray.py`` compares the two paths' bytes).

Shape: a network's output is taken as it is, never reshaped to fit (``output_vectors``): exactly
(batch, D), or (batch, D, 1, 1, 1) from a global pool left unflattened, with D the registry's
``embedding_dim`` and at most ``MAX_EMBEDDING_DIM``; anything else is a ``ModelOutputError`` naming the
model and the shape, for every batch.
"""

from __future__ import annotations

import time
from functools import cached_property
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from radassets.errors import RadassetsError
from radassets.models.registry import ModelEntry
from radassets.reports import ItemFailure
from radassets.storage import atomic_path, atomic_write_json, sha256_file, sha256_json

if TYPE_CHECKING:  # torch is imported where a model runs: the definitions (every run worker) load without it
    import torch

    from radassets.imaging.patch_store import PatchArray

Progress = Callable[[int, int, str], None]

# Longer than any published CT embedding (FMCIB: 4096) by a wide margin, and far shorter than a feature map
# flattened (a 64-channel map of a 48-voxel input halved is 64 x 24^3 = 884,736 values).
MAX_EMBEDDING_DIM = 16_384
POOL_ADVICE = ("pool it to one vector per patch (e.g. torch.nn.functional.adaptive_avg_pool3d(x, 1).flatten(1)) "
               "and export again")


class ModelOutputError(RadassetsError, ValueError):
    """A network does not return one vector per patch, of its registered length, for every patch on its own."""


def _patches_word(n: int) -> str:
    return f"{n} patch" if n == 1 else f"{n} patches"


def output_vectors(output: Any, n_patches: int, model: str, dim: int | None) -> np.ndarray:
    """The (n_patches, D) float32 vectors of a network's raw output, checked and never reshaped to fit.

    Accepted: (batch, D); and (batch, D, 1, 1, 1), the output of a global pool left unflattened, whose three
    singleton axes are dropped. ``dim`` is the registered length (None while registering, when it is learnt).
    """
    if isinstance(output, (tuple, list, dict)):
        raise ModelOutputError(f"model {model!r} returned a {type(output).__name__} of {len(output)} outputs; "
                               f"export a network whose forward returns one tensor of shape (batch, D)")
    import torch

    array = output.detach().float().cpu().numpy() if isinstance(output, torch.Tensor) else np.asarray(output)
    shape = tuple(int(n) for n in array.shape)
    if array.ndim == 5 and shape[2:] == (1, 1, 1):
        array = array[:, :, 0, 0, 0]
    elif array.ndim >= 3 and max(shape[2:]) > 1:
        raise ModelOutputError(f"model {model!r} returned a feature map of shape {shape} for a batch of "
                               f"{_patches_word(n_patches)}, not one vector per patch: {POOL_ADVICE}")
    if array.ndim != 2 or array.shape[0] != n_patches:
        raise ModelOutputError(
            f"model {model!r} returned shape {shape} for a batch of {_patches_word(n_patches)}; expected "
            f"({n_patches}, D) or ({n_patches}, D, 1, 1, 1): one vector per patch along the first axis (an output "
            f"with the batch on another axis, such as (D, batch), would mix the vectors of different patients)")
    if array.shape[1] > MAX_EMBEDDING_DIM:
        raise ModelOutputError(f"model {model!r} returned {array.shape[1]} values per patch, more than "
                               f"{MAX_EMBEDDING_DIM}: a flattened feature map, not an embedding; {POOL_ADVICE}")
    if dim is not None and array.shape[1] != dim:
        raise ModelOutputError(f"model {model!r} returned {array.shape[1]} values per patch; the registry says "
                               f"embedding_dim {dim}")
    return array.astype(np.float32, copy=False)


class Extractor(Protocol):
    """What the runner needs of a model: its entry, weights identity and a batch → vectors function."""

    entry: ModelEntry
    weights_sha256: str | None
    dim: int

    def embed(self, patches: np.ndarray, masks: np.ndarray, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        """(B, S, S, S) int16 HU patches, their masks and rows → (B, dim) float32."""


def choose_device(requested: str = "auto") -> torch.device:
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available here")
    return torch.device(requested)


# How fast this run was: in the step's metadata, not in the manifest (the record of the output).
RUN_ONLY = ("seconds", "patches_per_second")


@dataclass(frozen=True)
class EmbeddingsReport:
    """What ``run_embeddings`` did: one row per seed (as written to embeddings.parquet, with the vector)."""

    out_dir: Path
    model: str
    rows: list[dict[str, Any]]
    dim: int
    weights_sha256: str | None
    preprocessing_hash: str
    device: str
    seconds: float
    places: dict[str, int] = field(default_factory=dict)  # where the batches ran, as dataplane.Mapped: not written

    @property
    def failures(self) -> list[ItemFailure]:
        """The seeds whose embedding has NaN or infinite values, by seed id."""
        return [ItemFailure("embeddings", r["seed_id"], r["reason"], patient=r["PatientID"],
                            series=r["SeriesInstanceUID"]) for r in self.rows if r["status"] == "failed"]

    @property
    def seeds(self) -> int:
        return len(self.rows)

    @property
    def failed(self) -> int:
        return sum(r["status"] == "failed" for r in self.rows)

    @property
    def embedded(self) -> int:
        return self.seeds - self.failed

    @property
    def failed_fraction(self) -> float:
        return self.failed / self.seeds if self.seeds else 0.0

    def summary(self) -> dict[str, Any]:
        """The manifest's ``summary``, as written (and the counts an asset shows)."""
        n = self.seeds
        return {"model": self.model, "seeds": n, "embedded": self.embedded, "failed": self.failed,
                "dim": self.dim, "device": self.device, "seconds": round(self.seconds, 2),
                "patches_per_second": round(n / self.seconds, 2) if self.seconds > 0 else None}

    def metadata(self) -> dict[str, Any]:
        """The counts an asset shows (plain values; those without a value left out)."""
        return {k: v for k, v in self.summary().items() if v is not None}

    def manifest(self, entry: dict[str, Any], batch_size: int, torch_version: str) -> dict[str, Any]:
        """The partition's ``manifest.json`` (``entry``: the model's registry entry, as JSON), without this run's
        timings (``RUN_ONLY``: the step's metadata shows them), so that the same embeddings have the same record
        wherever and however fast they were made."""
        summary = {k: v for k, v in self.summary().items() if k not in RUN_ONLY}
        return {"model": entry, "weights_sha256": self.weights_sha256, "preprocessing_hash": self.preprocessing_hash,
                "batch_size": batch_size, "device": self.device, "torch": torch_version, "summary": summary,
                "content_hash": self.content_hash,
                "failures": [{"seed_id": f.item, "PatientID": f.patient, "reason": f.reason} for f in self.failures]}

    @cached_property  # hashes the parquet file: once per report
    def content_hash(self) -> str:
        return sha256_json({"model": self.model, "weights": self.weights_sha256, "preprocessing": self.preprocessing_hash,
                            "file": sha256_file(self.out_dir / "embeddings.parquet")})


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """The batches' (start, stop): 0, batch_size, 2·batch_size... Fixed by ``n`` and ``batch_size`` alone, wherever
    the batches run, so that every patch is embedded in the same company (a network's float rounding may depend on
    the batch it is in)."""
    return [(start, min(n, start + batch_size)) for start in range(0, n, batch_size)]


def embed_batch(extractor: Extractor, patches: PatchArray, masks: PatchArray,
                rows: Sequence[dict[str, Any]], start: int, stop: int) -> np.ndarray:
    """The (stop - start, dim) vectors of patches ``start:stop`` (read from the arrays now: a slice of a Zarr
    array reads those chunks only)."""
    batch = extractor.embed(np.asarray(patches[start:stop]), np.asarray(masks[start:stop]), rows[start:stop])
    if batch.shape != (stop - start, extractor.dim):  # every extractor's, networks' checked already
        raise ModelOutputError(f"model {extractor.entry.name!r} returned shape {batch.shape} for a batch of "
                               f"{_patches_word(stop - start)}, expected {(stop - start, extractor.dim)}")
    return batch


def run_embeddings(extractor: Extractor, patches: PatchArray, masks: PatchArray,
                   rows: Sequence[dict[str, Any]],
                   out_dir: Path, batch_size: int = 8, device: str = "cpu",
                   progress: Progress | None = None) -> EmbeddingsReport:
    """Embed every patch in this process, batch after batch; write ``embeddings.parquet`` and ``manifest.json``
    under ``out_dir``. The model's own threads use every core (torch's intra-op pool)."""
    started = time.monotonic()
    n = len(rows)
    vectors = np.zeros((n, extractor.dim), dtype=np.float32)
    bounds = batch_bounds(n, batch_size)
    for start, stop in bounds:
        vectors[start:stop] = embed_batch(extractor, patches, masks, rows, start, stop)
        if progress:
            progress(stop, n, f"{extractor.entry.name}: {stop}/{n} patches")
    return write_embeddings(extractor.entry, extractor.weights_sha256, vectors, rows, out_dir, batch_size=batch_size,
                            device=device, started=started, places={"local": len(bounds)} if bounds else {})


def write_embeddings(entry: ModelEntry, weights_sha256: str | None, vectors: np.ndarray,
                     rows: Sequence[dict[str, Any]], out_dir: Path, *, batch_size: int, device: str, started: float,
                     places: dict[str, int] | None = None) -> EmbeddingsReport:
    """Write the (N, dim) float32 ``vectors`` of ``rows`` as ``embeddings.parquet``, then ``manifest.json``: the
    same bytes whichever process computed the vectors. ``started``: ``time.monotonic()`` when the step began;
    ``places``: where the batches ran (the report's, never written)."""
    import torch

    n, dim = vectors.shape
    status: list[tuple[str, str | None]] = [("ok", None)] * n
    for i in range(n):
        bad = ~np.isfinite(vectors[i])
        if bad.any():
            status[i] = ("failed", f"{int(np.isnan(vectors[i]).sum())} NaN and "
                                   f"{int(np.isinf(vectors[i]).sum())} infinite values in the embedding")
    preprocessing_hash = entry.preprocessing_hash
    out_rows = []
    for i, row in enumerate(rows):
        ok = status[i][0] == "ok"
        out_rows.append({
            "seed_id": row["seed_id"], "PatientID": row["PatientID"], "SeriesInstanceUID": row["SeriesInstanceUID"],
            "crdc_series_uuid": row["crdc_series_uuid"], "segment_label": row.get("segment_label"),
            "patch_index": int(row["index"]), "status": status[i][0], "reason": status[i][1],
            "vector": vectors[i].tolist() if ok else None, "model": entry.name,
            "weights_sha256": weights_sha256, "preprocessing_hash": preprocessing_hash,
        })
    schema = pa.schema([
        ("seed_id", pa.string()), ("PatientID", pa.string()), ("SeriesInstanceUID", pa.string()),
        ("crdc_series_uuid", pa.string()), ("segment_label", pa.string()), ("patch_index", pa.int64()),
        ("status", pa.string()), ("reason", pa.string()), ("vector", pa.list_(pa.float32(), dim)),
        ("model", pa.string()), ("weights_sha256", pa.string()), ("preprocessing_hash", pa.string()),
    ])
    with atomic_path(out_dir / "embeddings.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(out_rows, schema=schema), tmp)
    report = EmbeddingsReport(out_dir, entry.name, out_rows, dim, weights_sha256, preprocessing_hash, device,
                              time.monotonic() - started, dict(places or {}))
    atomic_write_json(out_dir / "manifest.json", report.manifest(entry.model_dump(mode="json"), batch_size,
                                                                 torch.__version__))
    return report


def read_embeddings(out_dir: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Rows (without vectors) and the (N, D) float32 matrix of the successfully embedded seeds; ``out_dir`` is a
    folder or a ``UPath`` of the artifact store."""
    with (out_dir / "embeddings.parquet").open("rb") as f:
        table = pq.read_table(f)
    ok = table.filter(pc.equal(table["status"], "ok"))
    dim = ok.schema.field("vector").type.list_size
    matrix = ok.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ok.drop(["vector"]).to_pylist(), matrix.reshape(ok.num_rows, dim).astype(np.float32, copy=False)
