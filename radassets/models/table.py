"""Precomputed embeddings imported as a model: a CSV or parquet table keyed by patient, series or seed.

The vector of a seed is the table row whose id matches the seed's PatientID, SeriesInstanceUID or
seed_id (``id_kind``). A seed whose id is not in the table gets a NaN vector, which the runner
records as a failure naming the seed; a table with duplicate ids or non-numeric vector columns
is refused when it is loaded. The file's sha256 stands in for the weights' identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radassets.packaged import packaged_data_dir
from radassets.models.registry import ModelEntry
from radassets.storage import sha256_file
from radassets.errors import RadassetsError


class TableError(RadassetsError, ValueError):
    """An embedding table cannot serve as a model."""


def table_path(entry: ModelEntry, data_root: Path | None = None) -> Path:
    """The entry's table: a relative path is relative to ``data_root`` (the data folder; the shipped one by
    default)."""
    path = Path(entry.table.path).expanduser()
    return path if path.is_absolute() else (data_root or packaged_data_dir()) / path


class TableExtractor:
    def __init__(self, entry: ModelEntry, data_root: Path | None = None):
        source = entry.table
        path = table_path(entry, data_root)
        if not path.is_file():
            raise TableError(f"model {entry.name!r}: no embedding table at {path}")
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={source.id_column: str})
        if source.id_column not in frame:
            raise TableError(f"{path}: no id column {source.id_column!r}; it has {list(frame.columns)[:10]}")
        columns = source.vector_columns or [c for c in frame.columns if c != source.id_column]
        missing = [c for c in columns if c not in frame]
        if missing:
            raise TableError(f"{path}: vector column(s) {missing} not in the table")
        values = frame[columns].apply(pd.to_numeric, errors="coerce")
        if values.isna().any().any():
            bad = values.columns[values.isna().any()].tolist()
            raise TableError(f"{path}: non-numeric or empty values in vector column(s) {bad[:5]}")
        ids = frame[source.id_column].astype(str)
        duplicated = ids[ids.duplicated()].unique().tolist()
        if duplicated:
            raise TableError(f"{path}: {len(duplicated)} duplicated id(s) in {source.id_column!r}, e.g. {duplicated[:3]}")
        if entry.embedding_dim is not None and entry.embedding_dim != len(columns):
            raise TableError(f"{path}: {len(columns)} vector columns; the registry says {entry.embedding_dim}")
        self.vectors = dict(zip(ids, values.to_numpy(dtype=np.float32)))
        self.key = source.id_kind
        self.entry = entry
        self.weights_sha256 = sha256_file(path)
        self.dim = len(columns)

    def embed(self, patches: np.ndarray, masks: np.ndarray, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        missing = np.full(self.dim, np.nan, dtype=np.float32)
        return np.stack([self.vectors.get(str(r[self.key]), missing) for r in rows])
