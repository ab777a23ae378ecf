"""Where every generated artifact lives: the one owner of the paths under the artifact root.

``Layout(root)`` answers, for each asset, partition and item, where its files are, and whether a step
finished. ``root`` is a local folder or an fsspec URL (``s3://bucket/prefix``, ``gs://...``,
``memory://...``), through ``universal_pathlib``: the paths below are computed the same way for both.
A local root gives plain ``pathlib.Path`` objects (what SimpleITK, numpy and DuckDB open); a URL gives
``UPath`` objects with the same API, written through ``radassets.storage``'s atomic writers.

The layout under the root::

    cohort/<dataset_version>/cohort.lock.json
    dicom/series/<crdc_series_uuid>/            shared by dataset versions (series versions are immutable)
    dicom/<dataset_version>/manifest.json
    volumes|seeds|patches/<dataset_version>/    ... manifest.json
    embeddings|evaluation|stability/<dataset_version>/<model>/
    comparison/<dataset_version>/
    reports/<name>/                             unpartitioned reports (hosny2018_figure2)
    demo/   local/<name>/   weights/<model>/   lineage/   .locks/<asset>/<partition>.lock

A step writes its record file last (``manifest.json``; ``cohort.lock.json`` for a cohort,
``metrics.json`` for a report), so a partition without it is unfinished and is never read.

Locks and the lineage database need a local file system (``flock``, DuckDB): under a URL root they live
in ``state_dir``, a local folder (default ``~/.radassets/state/<the URL, made a folder name>``), as do the
DICOM series being fetched before they are put to the store (``dicom_work_dir``); the lineage event files stay
under the root (``lineage/events/``), where every node writes and from which a database is rebuilt.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import cast

from upath import UPath

from radassets.errors import RadassetsError

MANIFEST = "manifest.json"
# The file each asset writes last (its record): the step is finished when it is there.
RECORD_FILES = {"cohort": "cohort.lock.json", "evaluation": "metrics.json", "comparison": "metrics.json",
                "seed_stability": "metrics.json", "hosny2018_figure2": "metrics.json"}
# An asset's folder when it is not the asset's name.
FOLDERS = {"seed_stability": "stability"}
UNPARTITIONED = {"hosny2018_figure2": "reports"}  # asset -> folder of its report, reports/<asset>/


class StorageRootError(RadassetsError, ValueError):
    """The artifact root cannot hold what is asked of it."""


class StepInputMissing(RadassetsError, RuntimeError):
    """The step before has not been materialized for this dataset version."""


def as_path(location: str | os.PathLike) -> Path | UPath:
    """A local folder as a ``pathlib.Path`` (``file://`` URLs too); any other URL as a ``UPath``.

    A URL given as text opens its file system without a listings cache: other processes (pool and Ray workers)
    write under the root while this one reads, and s3fs and gcsfs would otherwise answer ``exists`` from a
    listing made before those writes."""
    if isinstance(location, str) and "://" in location and not location.startswith(("file://", "local://")):
        path = UPath(location, use_listings_cache=False)
    else:
        path = UPath(location)
    if isinstance(path, Path):
        return Path(path)
    if path.protocol in ("file", "local"):
        return Path(path.path)
    return path


class Layout:
    """The paths of the artifacts under one root (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, weights_dir: str | os.PathLike | None = None,
                 state_dir: str | os.PathLike | None = None):
        root_path = as_path(os.path.expanduser(root) if isinstance(root, str) and "://" not in root else root)
        self.is_local = isinstance(root_path, Path)
        # Typed ``Path`` for the code that uses the layout: under a URL root the paths are ``UPath`` objects,
        # which have pathlib's API (/, exists, is_file, read_bytes, open, iterdir) and are written through
        # radassets.storage. A step that hands a path to a C library (SimpleITK, DuckDB, numpy) stages the file
        # locally first (radassets.staging).
        self.root: Path = cast(Path, root_path)
        self._weights_dir = Path(weights_dir) if weights_dir is not None else None
        if state_dir is not None:
            self.state_dir = Path(state_dir)
        elif self.is_local:
            self.state_dir = self.root
        else:
            self.state_dir = Path.home() / ".radassets" / "state" / re.sub(r"[^A-Za-z0-9._-]+", "_", str(self.root))

    def require_local(self, what: str) -> None:
        """Refuse, naming ``what``, what only a local root can hold: a local DICOM source's index of the files
        on this machine (``datasets add-local``) and a demo collection generated in place (``demo generate``).
        Every step runs on a URL root."""
        if not self.is_local:
            raise StorageRootError(f"{what} needs a local artifact root; {self.root} is not one (set RADASSETS_HOME "
                                   f"to a folder for it)")

    def __repr__(self) -> str:
        return f"Layout({str(self.root)!r})"

    # -- paths recorded in outputs --------------------------------------------------------------------

    def relative(self, path: Path | str) -> str:
        """How a record (a manifest, a table, metrics.json) names an artifact: its path relative to the root
        (``volumes/demo_v1/ct/<uuid>.nrrd``), so that the records are the same on every root and a root can be
        copied or moved (a bucket synced to a disk) and still be read. A path outside the root (a file of a
        local source, a packaged table) stays as it is."""
        text = str(path)
        root = str(self.root).rstrip("/") + "/"
        return text[len(root):] if text.startswith(root) else text

    def resolve(self, recorded: str | Path) -> Path:
        """The path of an artifact as a record names it (``relative``); an absolute path or a URL (written by
        an earlier version, or outside the root) is taken as it is."""
        text = str(recorded)
        if "://" in text or text.startswith("/"):
            return cast(Path, as_path(text))
        return self.root / text

    # -- assets and partitions -----------------------------------------------------------------------

    def asset_dir(self, asset: str, dataset_version: str | None = None, model: str | None = None) -> Path:
        """The output folder of one asset partition: ``<asset>/<dataset_version>[/<model>]``, or the
        asset's whole folder without a dataset version (``embeddings/<dataset_version>`` holds every model)."""
        if asset in UNPARTITIONED:
            return self.root / UNPARTITIONED[asset] / asset
        path = self.root / FOLDERS.get(asset, asset)
        if dataset_version is not None:
            path = path / dataset_version
            if model is not None:
                path = path / model
        return path

    def partition_dir(self, asset: str, partition: dict[str, str] | None) -> Path:
        """``asset_dir`` of a partition given as its dimensions (``{"dataset_version": ..., "model": ...}``)."""
        partition = partition or {}
        return self.asset_dir(asset, partition.get("dataset_version"), partition.get("model"))

    def record(self, asset: str, dataset_version: str | None = None, model: str | None = None) -> Path:
        """The file a partition's step writes last: ``manifest.json`` (or its lockfile, or its metrics)."""
        return self.asset_dir(asset, dataset_version, model) / RECORD_FILES.get(asset, MANIFEST)

    def manifest(self, asset: str, dataset_version: str, model: str | None = None) -> Path:
        return self.asset_dir(asset, dataset_version, model) / MANIFEST

    def is_finished(self, asset: str, dataset_version: str | None = None, model: str | None = None) -> bool:
        """Whether the partition's step finished: its record file, written last, is there."""
        return self.record(asset, dataset_version, model).is_file()

    def require_finished(self, asset: str, dataset_version: str, needed_by: str,
                         model: str | None = None) -> Path:
        """The record of a finished partition that ``needed_by`` reads; ``StepInputMissing`` if unfinished."""
        path = self.record(asset, dataset_version, model)
        if not path.is_file():
            what = f"{asset}' for {model}" if model else asset + "'"
            raise StepInputMissing(f"{needed_by} of {dataset_version!r} needs '{what}, which is not materialized "
                                   f"(no {path}); materialize '{asset}' first")
        return path

    # -- named files and folders ------------------------------------------------------------------

    def cohort_lockfile(self, dataset_version: str) -> Path:
        return self.record("cohort", dataset_version)

    def dicom_manifest(self, dataset_version: str) -> Path:
        return self.manifest("dicom", dataset_version)

    def dicom_series_dir(self) -> Path:
        """``dicom/series/``: one folder per series version, shared by the dataset versions that hold it."""
        return self.root / "dicom" / "series"

    def dicom_work_dir(self) -> Path:
        """Where series are fetched and verified before they are in ``dicom_series_dir`` (their partial folders and
        locks): that folder itself under a local root (a verified series is renamed into place), a local folder
        under a URL root (a verified series is put to the store)."""
        return self.dicom_series_dir() if self.is_local else self.state_dir / "dicom" / "series"

    def seeds_table(self, dataset_version: str) -> Path:
        return self.asset_dir("seeds", dataset_version) / "seeds.parquet"

    def report_dir(self, name: str) -> Path:
        return self.root / "reports" / name

    def demo_root(self) -> Path:
        """The generated demo collection."""
        return self.root / "demo"

    def local_sources_dir(self) -> Path:
        return self.root / "local"

    def local_root(self, name: str) -> Path:
        """The index (and links) of a local DICOM source added with ``datasets add-local``."""
        return self.local_sources_dir() / name

    def weights_dir(self) -> Path:
        """The weights cache (``torch.load`` reads local files): ``weights/`` unless set apart."""
        if self._weights_dir is not None:
            return self._weights_dir
        return Path(self.state_dir) / "weights" if not self.is_local else self.root / "weights"

    def lineage_dir(self) -> Path:
        """The lineage store's database (DuckDB: a local file)."""
        return self.state_dir / "lineage"

    def lineage_events_dir(self) -> Path:
        """The lineage event files (``pending``, ``merged``, ``rejected``): under the root, so that workers on
        every node write theirs where the merger reads them (for a local root, beside the database)."""
        return self.root / "lineage" / "events"

    def locks_dir(self) -> Path:
        return self.state_dir / ".locks"

    def lock_file(self, asset: str, partition: str | None) -> Path:
        """``.locks/<asset>/<partition>.lock``; a multi-partition key ``demo_v1|radiomics`` becomes
        ``demo_v1+radiomics`` (dimension keys are ``[a-z0-9_]``)."""
        return self.locks_dir() / asset / f"{(partition or 'all').replace('|', '+')}.lock"
