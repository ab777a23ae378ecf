"""Where an IDC-shaped index lives, and a DuckDB connection over it.

Three kinds of index share one layout (``radassets.idc.schema``):
- the index bundled with the ``idc-index-data`` package (real IDC, one release, no network);
- the demo collection's index, written by ``radassets.demo``;
- the index of a local DICOM folder, written by ``radassets datasets add-local``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from radassets.datasets import SOURCE_PREFIX, DatasetDefinitionError, DatasetVersion
from radassets.errors import RadassetsError
from radassets.layout import Layout
from radassets.packaged import packaged_data_dir

BUNDLED_PACKAGE = "idc-index-data"
log = logging.getLogger(__name__)


class IndexMissingError(RadassetsError, RuntimeError):
    """An index is missing or cannot answer the question asked of it."""


@dataclass(frozen=True)
class IndexSource:
    """An IDC-shaped index: its parquet tables and what produced them."""

    package: str  # "idc-index-data", "radassets-demo" or "radassets-local"
    package_version: str
    tables: dict[str, Path] = field(hash=False)
    source_root: Path | None = None  # folder of a demo/local source (its files and tables)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per index table."""
        con = duckdb.connect()
        for name, path in self.tables.items():
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{_sql_path(path)}')")
        return con

    def latest_version(self) -> int:
        with self.connect() as con:
            (latest,) = con.execute("SELECT max(idc_version) FROM version_metadata_index").fetchone()
        return int(latest)

    def release_date(self, version: int) -> str | None:
        with self.connect() as con:
            row = con.execute(
                "SELECT version_timestamp FROM version_metadata_index WHERE idc_version = ?", [version]
            ).fetchone()
        return row[0] if row else None


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def bundled_index() -> IndexSource:
    """The real IDC index shipped in ``idc-index-data`` (pinned in pyproject)."""
    import idc_index_data

    folder = Path(idc_index_data.IDC_INDEX_PARQUET_FILEPATH).parent
    tables = {
        name: folder / f"{name}.parquet"
        for name in ("idc_index", "prior_versions_index", "version_metadata_index", "collections_index")
    }
    missing = [str(p) for p in tables.values() if not p.is_file()]
    if missing:
        raise IndexMissingError(f"{BUNDLED_PACKAGE} {idc_index_data.__version__} lacks index tables: {missing}")
    return IndexSource(BUNDLED_PACKAGE, idc_index_data.__version__, tables)


def folder_index(root: Path, package: str) -> IndexSource:
    """An index written under ``root/index/`` (demo collection or a local folder)."""
    folder = Path(root) / "index"
    names = ("idc_index", "prior_versions_index", "version_metadata_index", "collections_index", "instances")
    tables = {name: folder / f"{name}.parquet" for name in names}
    missing = [name for name, p in tables.items() if not p.is_file()]
    if missing:
        raise IndexMissingError(f"index at {folder} is incomplete: missing {missing}")
    from radassets import __version__

    return IndexSource(package, __version__, tables, source_root=Path(root))


def index_for(definition: DatasetVersion, layout: Layout, *, generate_demo: bool = True,
              demo_spec=None) -> IndexSource:
    """The index a dataset version's cohort is selected from.

    For the demo, the collection is generated on first use (deterministic, about half a minute),
    so the embedded default works on a fresh machine without a separate step; ``demo_spec`` (a
    ``DemoSpec``, the default one if None) says which.
    """
    kind = definition.source.kind
    if kind == "idc":
        return bundled_index()
    if kind == "demo":
        root = layout.demo_root()
        if generate_demo:
            from radassets.demo import DemoSpec, ensure_demo_collection

            ensure_demo_collection(root, demo_spec or DemoSpec(), progress=log.info)
        return folder_index(root, "radassets-demo")
    root = layout.local_root(definition.name)
    if not (root / "index").is_dir():
        raise IndexMissingError(
            f"dataset version {definition.name!r} is a local source but has no index at {root / 'index'}; "
            f"run: radassets datasets add-local {definition.name} {definition.source.path}"
        )
    return folder_index(root, "radassets-local")


def source_root(definition: DatasetVersion, layout: Layout) -> Path | None:
    """The folder that ``source:`` table paths of a definition are relative to (as ``index_for`` sets it)."""
    if definition.source.kind == "demo":
        return layout.demo_root()
    if definition.source.kind == "local":
        return layout.local_root(definition.name)
    return None


def resolve_table(table: str, source_root: Path | None, data_root: Path | None = None) -> Path:
    """The file behind a table reference of a definition (``data/`` relative, or ``source:``)."""
    if table.startswith(SOURCE_PREFIX):
        if source_root is None:
            raise DatasetDefinitionError(f"table {table!r} refers to a source folder, but this source has none")
        path = source_root / table[len(SOURCE_PREFIX):]
    else:
        path = (data_root or packaged_data_dir()) / table
    if not path.is_file():
        raise DatasetDefinitionError(f"table {table!r} not found at {path}")
    return path
