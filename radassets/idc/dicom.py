"""The DICOM step of one dataset version: fetch (or verify in place) every series of its cohort.

Series folders are keyed by ``crdc_series_uuid`` under ``$RADASSETS_HOME/dicom/series/``:
IDC series versions are immutable, so dataset versions that share a series share one copy
and a rerun skips what is already verified. The partition's manifest
(``$RADASSETS_HOME/dicom/<dataset_version>/manifest.json``) lists every series with its
status, folder (relative to the artifact root, ``Layout.relative``; readers also accept the absolute paths
that earlier versions wrote), file count, size and, for failures, the cause.

The artifact root may be an object store (``s3://...``): series are then fetched and verified in a local work
folder (``Layout.dicom_work_dir``) and put to the store, their record last (``radassets.idc.download``), and the
manifest is the same bytes as under a local root.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from radassets.dataplane import IN_PROCESS, Compute
from radassets.datasets import DatasetVersion
from radassets.idc import download
from radassets.idc.cohort import Cohort
from radassets.layout import Layout
from radassets.reports import ItemFailure
from radassets.staging import local_file
from radassets.storage import atomic_write_json, sha256_json

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class DicomReport:
    """What ``fetch_dataset_dicom`` did: one manifest row per series of the cohort (as written to the manifest)."""

    dataset_version: str
    manifest_path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    manifest_name: str | None = None  # how the manifest names itself: relative to the root (default: its path)

    @property
    def series(self) -> int:
        return len(self.rows)

    @property
    def failures(self) -> list[ItemFailure]:
        """The series that could not be fetched or verified, by SeriesInstanceUID."""
        return [ItemFailure("dicom", r["SeriesInstanceUID"], r["reason"], patient=r["PatientID"],
                            series=r["SeriesInstanceUID"]) for r in self.rows if r["status"] == "failed"]

    @property
    def failed(self) -> int:
        return sum(r["status"] == "failed" for r in self.rows)

    @property
    def verified(self) -> int:
        return self.series - self.failed

    @property
    def failed_fraction(self) -> float:
        return self.failed / self.series if self.series else 0.0

    @property
    def files(self) -> int:
        return sum(r["files"] or 0 for r in self.rows)

    @property
    def size_gb(self) -> float:
        return round(sum(r["bytes"] or 0 for r in self.rows) / 1e9, 4)

    def summary(self) -> dict[str, Any]:
        """The manifest's ``summary``, as written."""
        return {
            "dataset_version": self.dataset_version,
            "series": self.series,
            "verified": self.verified,
            "failed": self.failed,
            "failed_fraction": self.failed_fraction,
            "files": self.files,
            "size_gb": self.size_gb,
            "manifest": self.manifest_name or str(self.manifest_path),
        }

    def metadata(self) -> dict[str, Any]:
        """The counts an asset shows (plain values)."""
        return {"series": self.series, "verified": self.verified, "failed": self.failed, "files": self.files,
                "size_gb": self.size_gb}

    def manifest(self, cohort_hash: str, excluded: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The partition's ``manifest.json``; ``excluded``: the cohort's series that are not volumes (not
        fetched), passed on so that the volumes' QC table lists them."""
        return {"summary": self.summary(), "cohort_hash": cohort_hash, "content_hash": self.content_hash,
                "series": self.rows, **({"excluded": excluded} if excluded else {})}

    @property
    def content_hash(self) -> str:
        """Identity of what is on disk: which series versions are verified, and which failed."""
        return sha256_json(sorted((r["crdc_series_uuid"], r["status"]) for r in self.rows))


def mirror_for(definition: DatasetVersion, layout: Layout, configured: download.Mirror | None,
               idc_mirror: download.Mirror | None = None) -> download.Mirror:
    """A mirror configured for this run wins (the ``idc`` resource's); otherwise the demo comes from its
    generated bucket folder, and IDC from ``idc_mirror`` (the settings' mirror of the IDC buckets) or the
    public buckets. The settings' mirror stands in for IDC only: it never hides the demo's own bucket."""
    if configured:
        return configured
    if definition.source.kind == "demo":
        return download.Mirror.local_folder(layout.demo_root() / "bucket")
    return idc_mirror or download.Mirror.aws()


def _local_files(definition: DatasetVersion, layout: Layout) -> dict[str, list[Path]]:
    """crdc_series_uuid -> files, from the index written by ``add-local``."""
    table = layout.local_root(definition.name) / "index" / "instances.parquet"
    with local_file(table) as local_table, duckdb.connect() as con:
        rows = con.execute("SELECT crdc_series_uuid, path FROM read_parquet(?) ORDER BY path",
                           [str(local_table)]).fetchall()
    files: dict[str, list[Path]] = {}
    for uuid, path in rows:
        files.setdefault(uuid, []).append(Path(path))
    return files


def series_files(definition: DatasetVersion, layout: Layout) -> Callable[[dict[str, Any]], list[Path]]:
    """A lookup of the DICOM files of each verified series of a ``dicom`` manifest row, wherever they lie
    (a local source's index is read once, not once per series): under a URL root, paths on the store."""
    if definition.source.kind == "local":
        local = _local_files(definition, layout)
        return lambda row: local.get(row["crdc_series_uuid"], [])
    return lambda row: download.dicom_files(layout.resolve(row["folder"])) if row.get("folder") else []


def read_manifest(dataset_version: str, layout: Layout) -> dict[str, Any]:
    """The ``dicom`` partition's manifest (written by ``fetch_dataset_dicom``)."""
    path = layout.dicom_manifest(dataset_version)
    if not layout.is_finished("dicom", dataset_version):
        raise FileNotFoundError(f"no DICOM manifest for {dataset_version!r} at {path}: materialize 'dicom' first")
    return json.loads(path.read_text())


def fetch_dataset_dicom(definition: DatasetVersion, cohort: Cohort, layout: Layout, *,
                        mirror: download.Mirror | None = None, idc_mirror: download.Mirror | None = None,
                        attempts: int = 3, progress: Progress | None = None,
                        compute: Compute = IN_PROCESS) -> DicomReport:
    """Fetch or verify every series of ``cohort``; failures are recorded, never raised per series.
    ``mirror`` is where series are copied from; when it is None, ``mirror_for`` says which (``idc_mirror``
    for IDC sources). ``compute`` says where the series are fetched (``download.fetch_series``).

    Raises ``download.BucketUnreachableError`` before doing anything when the source cannot be
    reached at all: that is not a property of any one series.
    """
    if definition.source.kind == "local":
        files = _local_files(definition, layout)
        results = [download.verify_in_place(row, files.get(row["crdc_series_uuid"], [])) for row in cohort.series]
        if progress:
            progress(len(results), len(results), f"verified {len(results)} local series in place")
    else:
        source = mirror_for(definition, layout, mirror, idc_mirror)
        results = download.fetch_series(cohort.series, layout.dicom_series_dir(), source, attempts=attempts,
                                        progress=progress, work_root=layout.dicom_work_dir(), compute=compute)
    by_uuid = {r.crdc_series_uuid: r for r in results}
    rows = []
    for s in cohort.series:
        r = by_uuid[s["crdc_series_uuid"]]
        rows.append({
            "PatientID": s["PatientID"], "Modality": s["Modality"], "SeriesInstanceUID": s["SeriesInstanceUID"],
            "crdc_series_uuid": s["crdc_series_uuid"], "status": "failed" if r.status == "failed" else "verified",
            "how": r.status, "folder": layout.relative(r.folder) if r.folder else None, "files": r.files, "bytes": r.bytes,
            "reason": r.reason,
        })
    manifest_path = layout.dicom_manifest(definition.name)
    report = DicomReport(definition.name, manifest_path, rows, layout.relative(manifest_path))
    atomic_write_json(report.manifest_path, report.manifest(cohort.content_hash, cohort.excluded))
    return report
