"""The embeddings step of one (dataset version, model): patches in, one vector per seed out.

Shared by the Dagster asset and the CLI (no Dagster imports). Output under
``$RADASSETS_HOME/embeddings/<dataset_version>/<model>/``: ``embeddings.parquet`` and
``manifest.json`` (written last).
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable

from radassets.imaging.patches import load_patches
from radassets.imaging.pipeline import StepInputMissing, step_dir
from radassets.models import registry
from radassets.models.embed import EmbeddingsReport, choose_device, run_embeddings
from radassets.models.extractors import load_extractor
from radassets.models.weights import weights_path

Progress = Callable[[int, int, str], None]


def embeddings_dir(dataset_version: str, model: str) -> Path:
    return step_dir("embeddings", dataset_version) / model


def run_model(dataset_version: str, model: str, *, batch_size: int = 8, device: str = "auto", download: bool = True,
              progress: Progress | None = None) -> EmbeddingsReport:
    entry = registry.get(model)
    patches_dir = step_dir("patches", dataset_version)
    if not (patches_dir / "manifest.json").is_file():
        raise StepInputMissing(f"embeddings of {dataset_version!r} need 'patches', which is not materialized "
                               f"(no {patches_dir / 'manifest.json'}); materialize 'patches' first")
    patches, masks, rows = load_patches(patches_dir)
    chosen = choose_device(device)
    extractor = load_extractor(entry, chosen, download)
    return run_embeddings(extractor, patches, masks, rows, embeddings_dir(dataset_version, model),
                          batch_size=batch_size, device=str(chosen), progress=progress)


def runnable_here(entry: registry.ModelEntry) -> tuple[bool, str]:
    """Whether a model can run without a download: (yes or no, why not)."""
    if entry.kind in ("radiomics", "untrained"):
        return True, ""
    if entry.kind == "table":
        from radassets.models.table import table_path

        path = table_path(entry)
        return path.is_file(), f"no embedding table at {path}"
    path = weights_path(entry)
    return path.is_file(), f"weights not in the cache ({path})"


def default_models() -> tuple[list[str], dict[str, str]]:
    """The registered models that can run here without a download, and the others (invalid entries
    included) with the reason."""
    entries, invalid = registry.scan_registry()
    run, skipped = [], {name: f"invalid registry entry: {why}" for name, why in invalid.items()}
    for name, entry in entries.items():
        ok, why = runnable_here(entry)
        if ok:
            run.append(name)
        else:
            skipped[name] = why
    return run, skipped

