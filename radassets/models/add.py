"""Registering a user's model without code: a TorchScript or ONNX file with a preprocessing spec in
YAML, or a table of precomputed embeddings.

The file is pinned by its sha256 and copied into the weights cache, the network is run once on a
blank input of its declared size (so a file that does not load, or does not return one vector per
patch, is refused before it is registered), and the entry is written to ``data/models/NAME.yaml``,
from where the ``model_registry_sensor`` adds its partition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from radassets.models import registry
from radassets.models.registry import ModelEntry, RegistryError
from radassets.models.weights import resolve_weights
from radassets.storage import atomic_write_text, sha256_file

PREPROCESSING_EXAMPLE = """spacing_mm: 1.0
input_size: [50, 50, 50]
axes: SPL            # anatomical direction of increasing index on each tensor axis (SPL, LPS, RAS, SAR)
intensity: {kind: scale_range, a_min: -1024, a_max: 2048, b_min: 0, b_max: 1, clip: false}"""


def _preprocessing(spec: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(spec).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise RegistryError(f"{spec}: cannot read the preprocessing spec: {e}") from None
    if not isinstance(raw, dict):
        raise RegistryError(f"{spec}: the preprocessing spec must be a mapping like:\n{PREPROCESSING_EXAMPLE}")
    return raw


def _output_dim(entry: ModelEntry) -> int:
    """Run the network once on a blank patch (air) and return its vector length."""
    from radassets.models.extractors import load_extractor

    extractor = load_extractor(entry.model_copy(update={"embedding_dim": 1}), torch.device("cpu"), download=True)
    size = max(64, int(np.ceil(entry.preprocessing.field_of_view_mm())))
    blank = np.full((1, size, size, size), -1024, dtype=np.int16)
    return int(extractor.embed(blank, np.zeros(blank.shape, np.uint8), [{}]).shape[1])


def add_model(name: str, *, torchscript: Path | None = None, onnx: Path | None = None, table: Path | None = None,
              preprocessing: Path | None = None, id_column: str | None = None, id_kind: str = "PatientID",
              title: str | None = None, licence: str = "as stated by the model's authors") -> tuple[ModelEntry, Path]:
    """Validate, pin and register a model; returns the entry and its definition file."""
    path = registry.models_dir() / f"{name}.yaml"
    if path.exists():
        raise RegistryError(f"a model called {name!r} is already registered ({path}); choose another name")
    if sum(x is not None for x in (torchscript, onnx, table)) != 1:
        raise RegistryError("give exactly one of --torchscript, --onnx or --table")
    source = Path(torchscript or onnx or table).expanduser().resolve()
    if not source.is_file():
        raise RegistryError(f"no such file: {source}")
    raw: dict[str, Any] = {"name": name, "title": title or f"{name} (user model from {source.name})", "licence": licence}
    if table is not None:
        if not id_column:
            raise RegistryError("a table of embeddings needs --id-column (and --id-kind if not PatientID)")
        raw.update(kind="table", table={"path": str(source), "id_column": id_column, "id_kind": id_kind})
    else:
        if preprocessing is None:
            raise RegistryError(f"a network needs --preprocessing SPEC.yaml, for example:\n{PREPROCESSING_EXAMPLE}")
        raw.update(kind="torchscript" if torchscript else "onnx", embedding_dim=1,
                   preprocessing=_preprocessing(preprocessing),
                   weights={"uri": source.as_uri(), "file": source.name, "sha256": sha256_file(source)})
    try:
        entry = ModelEntry.model_validate(raw)
    except Exception as e:  # pydantic's ValidationError, with the field named
        raise RegistryError(f"model {name!r}: {e}") from None
    if entry.kind in ("torchscript", "onnx"):
        resolve_weights(entry, download=True)  # copies the file into the weights cache, verified
        entry = entry.model_copy(update={"embedding_dim": _output_dim(entry)})
    else:
        from radassets.models.table import TableExtractor

        entry = entry.model_copy(update={"embedding_dim": TableExtractor(entry).dim})
    text = yaml.safe_dump(entry.model_dump(mode="json", exclude_none=True, exclude={"name"}), sort_keys=False)
    atomic_write_text(path, f"# Registered by `radassets models add {name}`.\n" + text)
    registry.load_entry(path)  # what was written reads back
    return entry, path
