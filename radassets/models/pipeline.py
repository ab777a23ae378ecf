"""The embeddings step of one (dataset version, model): patches in, one vector per seed out.

Shared by the Dagster asset and the CLI (no Dagster imports). Output where the ``Layout`` says
(``embeddings/<dataset_version>/<model>/``): ``embeddings.parquet`` and ``manifest.json`` (written last). Under a
URL root (``s3://``) the patches are read from the store (``load_patches``: the Zarr chunks by range) and both files
are put whole, the same bytes as under a local root; the weights cache stays local (``Layout.weights_dir``).

Where the batches run (``Compute``): with no Ray cluster set, in this process, one batch after the other, the
model's own threads using every core (``embed.run_embeddings``); with ``ray_address`` set, on that cluster's
actors, each holding the model (``embed_ray``). The same patches give the same bytes either way.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable

from radassets.dataplane import IN_PROCESS, Compute
from radassets.imaging.patches import load_patches
from radassets.layout import Layout
from radassets.models import registry
from radassets.models.embed import EmbeddingsReport, choose_device, run_embeddings
from radassets.models.weights import resolve_weights, weights_path

Progress = Callable[[int, int, str], None]


def run_model(dataset_version: str, model: str, layout: Layout, *, registry_dir: Path | None = None,
              data_root: Path | None = None, batch_size: int = 8, device: str = "auto", download: bool = True,
              progress: Progress | None = None, compute: Compute = IN_PROCESS) -> EmbeddingsReport:
    """Embed the patches of ``dataset_version`` with ``model`` of the registry ``registry_dir``, where ``compute``
    says (the module docstring)."""
    # Here, not at the top: the extractors import torch and MONAI (seconds), and every run worker and CLI command
    # that imports the definitions would pay for them, embedding or not.
    from radassets.models.extractors import load_extractor

    entry = registry.get(model, registry_dir)
    layout.require_finished("patches", dataset_version, "embeddings")
    patches_dir = layout.asset_dir("patches", dataset_version)
    patches, masks, rows = load_patches(patches_dir)
    out_dir = layout.asset_dir("embeddings", dataset_version, model)
    if compute.ray_address and rows:
        from radassets.models.embed_ray import RegistryExtractor, embed_on_ray

        weights_dir = layout.weights_dir()
        if entry.kind in ("torch", "torchscript", "onnx"):  # fetched once, here; the actors read the cache
            resolve_weights(entry, weights_dir, download)
        return embed_on_ray(RegistryExtractor(entry, weights_dir, data_root), entry, patches_dir, out_dir,
                            compute=compute, batch_size=batch_size, device=device, progress=progress)
    chosen = choose_device(device)
    extractor = load_extractor(entry, chosen, download, weights_dir=layout.weights_dir(), data_root=data_root)
    return run_embeddings(extractor, patches, masks, rows, out_dir, batch_size=batch_size, device=str(chosen),
                          progress=progress)


def runnable_here(entry: registry.ModelEntry, weights_dir: Path, data_root: Path | None = None) -> tuple[bool, str]:
    """Whether a model can run without a download: (yes or no, why not)."""
    if entry.kind in ("radiomics", "untrained"):
        return True, ""
    if entry.kind == "table":
        from radassets.models.table import table_path

        path = table_path(entry, data_root)
        return path.is_file(), f"no embedding table at {path}"
    path = weights_path(entry, weights_dir)
    return path.is_file(), f"weights not in the cache ({path})"


def default_models(weights_dir: Path, registry_dir: Path | None = None,
                   data_root: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The models of the registry ``registry_dir`` that can run here without a download, and the others
    (invalid entries included) with the reason."""
    entries, invalid = registry.scan_registry(registry_dir)
    run, skipped = [], {name: f"invalid registry entry: {why}" for name, why in invalid.items()}
    for name, entry in entries.items():
        ok, why = runnable_here(entry, weights_dir, data_root)
        if ok:
            run.append(name)
        else:
            skipped[name] = why
    return run, skipped
