"""Cohort lockfiles: the exact series of one dataset version, as a pinned IDC release served them.

Reconstructing a past release from the bundled (current) index
----------------------------------------------------------------
IDC publishes one index per release. ``idc-index-data`` ships the newest one plus
``prior_versions_index``, the series versions that earlier releases served and the newest one
no longer does. A series version (identified by ``crdc_series_uuid``, immutable in IDC) was
served by release N when either

- it is in the current index and ``series_revised_idc_version <= N`` (the current version of the
  series already existed at N and has been served ever since), or
- it is in ``prior_versions_index`` with ``min_idc_version <= N <= max_idc_version``.

Limits of the rule, all recorded in the lockfile as nulls rather than guessed:
- prior versions carry no instance count; it is null (the download then verifies only that
  the files belong to the series and are unique).
- prior versions carry no licence or source DOI; they are taken from the current version of the
  same SeriesInstanceUID when there is one. A series removed from IDC altogether has neither,
  so a DOI filter cannot keep it: such series are counted in ``reconstruction.unattributed``.
- collection membership and PatientID are as the prior-versions table records them.
The rule is exact for every series version that exists in the bundled index; a release that
is newer than the bundled index cannot be reconstructed (use BigQuery, ``radassets.idc.bigquery``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pydicom

from radassets import __version__
from radassets.datasets import DatasetVersion
from radassets.idc.index import IndexSource, resolve_table
from radassets.idc.schema import CT_IMAGE_CLASSES
from radassets.staging import local_files
from radassets.storage import atomic_write_json, sha256_file, sha256_json
from radassets.errors import RadassetsError

LOCKFILE_FORMAT = 1

# The columns of a cohort's series rows (IDC index names, kept for traceability).
SERIES_COLUMNS = (
    "collection_id", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "crdc_series_uuid",
    "Modality", "instanceCount", "series_size_MB", "license_short_name", "source_DOI",
    "aws_bucket", "series_aws_url", "series_init_idc_version", "series_revised_idc_version",
    "index_table",
)

SERVED_AT_RELEASE_SQL = """
WITH current_versions AS (
    SELECT SeriesInstanceUID,
           any_value(license_short_name) AS license_short_name,
           any_value(source_DOI) AS source_DOI,
           min(series_init_idc_version) AS series_init_idc_version
    FROM idc_index GROUP BY SeriesInstanceUID
),
prior_spans AS (
    SELECT crdc_series_uuid, min(min_idc_version) AS first_served
    FROM prior_versions_index GROUP BY crdc_series_uuid
),
served AS (
    SELECT collection_id, PatientID, StudyInstanceUID, SeriesInstanceUID, crdc_series_uuid,
           Modality, instanceCount, series_size_MB, license_short_name, source_DOI,
           aws_bucket, series_aws_url, series_init_idc_version, series_revised_idc_version,
           'idc_index' AS index_table, SOPClassUID
    FROM idc_index
    WHERE series_revised_idc_version <= $idc_version
    UNION ALL
    SELECT p.collection_id, p.PatientID, p.StudyInstanceUID, p.SeriesInstanceUID, p.crdc_series_uuid,
           p.Modality, NULL::BIGINT, p.series_size_MB, c.license_short_name, c.source_DOI,
           p.aws_bucket, p.series_aws_url, coalesce(c.series_init_idc_version, s.first_served),
           s.first_served, 'prior_versions_index', NULL::VARCHAR
    FROM prior_versions_index p
    JOIN prior_spans s USING (crdc_series_uuid)
    LEFT JOIN current_versions c USING (SeriesInstanceUID)
    WHERE p.min_idc_version <= $idc_version AND $idc_version <= p.max_idc_version
)
SELECT * FROM served
WHERE list_contains($collections, collection_id)
  AND list_contains($modalities, Modality)"""


class CohortError(RadassetsError, RuntimeError):
    """A cohort cannot be built or read: the message names the dataset version and the cause."""


@dataclass(frozen=True)
class CohortStats:
    """A cohort's summary: counts of its series, their size and modalities (``radassets cohort show``)."""

    dataset_version: str
    idc_version: int
    patients: int
    studies: int
    series: int
    instances: int  # of the series that state their count
    series_without_instance_count: int
    size_gb: float
    modalities: dict[str, int]
    hash: str  # the cohort's content hash
    index: str  # package and version the series list was read from
    backend: str
    excluded: int = 0  # series the selection matched that the index shows are not volumes (left out)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Cohort:
    """A cohort lockfile. ``content_hash`` identifies the series versions, nothing else."""

    dataset_version: str
    idc_version: int
    idc_release_date: str | None
    backend: str  # "duckdb" over an IDC-shaped index, or "bigquery"
    index: dict[str, str]  # package and version the series list was read from
    query: dict[str, Any]  # sql and parameters, exactly as executed
    inputs: dict[str, str]  # reference tables the query read: path -> sha256
    collections: list[dict[str, Any]]  # collection, DOI and licence, to cite
    series: list[dict[str, Any]]
    reconstruction: dict[str, int]
    content_hash: str
    created_at: str
    created_by: str = f"radassets {__version__}"
    format: int = LOCKFILE_FORMAT
    # Series the selection matched that the index shows are not volumes (``non_volume_reason``): left out of
    # ``series`` (never downloaded), listed here with the reason, and shown as excluded in the volumes' QC table.
    excluded: list[dict[str, Any]] = field(default_factory=list)

    # -- summaries -------------------------------------------------------------------------
    def stats(self) -> CohortStats:
        instances = [s["instanceCount"] for s in self.series]
        return CohortStats(
            dataset_version=self.dataset_version,
            idc_version=self.idc_version,
            patients=len({s["PatientID"] for s in self.series}),
            studies=len({s["StudyInstanceUID"] for s in self.series}),
            series=len(self.series),
            instances=sum(i for i in instances if i is not None),
            series_without_instance_count=sum(i is None for i in instances),
            size_gb=round(sum(s["series_size_MB"] or 0.0 for s in self.series) / 1000.0, 3),
            modalities=_counts(s["Modality"] for s in self.series),
            hash=self.content_hash,
            index=f"{self.index['package']} {self.index['version']}",
            backend=self.backend,
            excluded=len(self.excluded),
        )

    def metadata(self) -> dict[str, Any]:
        """What an asset shows of the cohort (plain values)."""
        stats = self.stats()
        return {"idc_version": self.idc_version, "idc_release_date": self.idc_release_date or "",
                "patients": stats.patients, "series": stats.series, "instances": stats.instances,
                "size_gb": stats.size_gb, "content_hash": self.content_hash, "index": stats.index,
                "excluded_not_volumes": stats.excluded}

    # -- persistence -----------------------------------------------------------------------
    def write(self, path: Path) -> Path:
        return atomic_write_json(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> Cohort:
        try:
            raw = json.loads(path.read_text())  # a local path or one on the artifact store (UPath)
        except FileNotFoundError:
            raise CohortError(f"no cohort lockfile at {path}; materialize the cohort first") from None
        except json.JSONDecodeError as e:
            raise CohortError(f"cohort lockfile {path} is not valid JSON: {e}") from None
        if raw.get("format") != LOCKFILE_FORMAT:
            raise CohortError(f"cohort lockfile {path} has format {raw.get('format')}, expected {LOCKFILE_FORMAT}")
        cohort = cls(**raw)
        if series_hash(cohort.idc_version, cohort.series) != cohort.content_hash:
            raise CohortError(f"cohort lockfile {path} was modified: its series no longer match its content hash")
        return cohort


def _counts(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def series_hash(idc_version: int, series: list[dict[str, Any]]) -> str:
    """Content identity of a cohort: the release and the exact series versions in it."""
    keys = sorted((s["SeriesInstanceUID"], s["crdc_series_uuid"]) for s in series)
    return sha256_json({"idc_version": idc_version, "series": keys})


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def selection_query(definition: DatasetVersion, source_root: Path | None) -> tuple[str, dict[str, Any], dict[str, Path]]:
    """The DuckDB SQL, its parameters and the reference tables it reads, for one definition."""
    sel = definition.selection
    sql = SERVED_AT_RELEASE_SQL
    params: dict[str, Any] = {
        "idc_version": definition.source.idc_version,
        "collections": list(sel.collections),
        "modalities": list(sel.modalities),
    }
    tables: dict[str, Path] = {}
    if sel.source_dois:
        sql += "\n  AND list_contains($source_dois, lower(source_DOI))"
        params["source_dois"] = list(sel.source_dois)
    if sel.series_from:
        tables["series_from_table"] = resolve_table(sel.series_from.table, source_root, definition.data_root)
        keep = (f"SeriesInstanceUID IN (SELECT {_quote_ident(sel.series_from.column)} "
                f"FROM read_csv($series_from_table, all_varchar = true))")
        if sel.series_from.modalities:
            params["series_from_modalities"] = list(sel.series_from.modalities)
            keep = f"(NOT list_contains($series_from_modalities, Modality) OR {keep})"
        sql += f"\n  AND {keep}"
    if sel.patients_from:
        tables["patients_from_table"] = resolve_table(sel.patients_from.table, source_root, definition.data_root)
        sql += (f"\n  AND PatientID IN (SELECT {_quote_ident(sel.patients_from.column)} "
                "FROM read_csv($patients_from_table, all_varchar = true))")
    sql += "\nORDER BY collection_id, PatientID, StudyInstanceUID, Modality, SeriesInstanceUID, crdc_series_uuid"
    return sql, params, tables


def build_cohort(definition: DatasetVersion, index: IndexSource) -> Cohort:
    """Select a dataset version's series from an IDC-shaped index at its pinned release."""
    version = definition.source.idc_version
    latest = index.latest_version()
    if version > latest:
        raise CohortError(
            f"{definition.name}: IDC release {version} is newer than the index "
            f"({index.package} {index.package_version} holds releases up to {latest}); "
            "upgrade the index package or build the cohort from BigQuery"
        )
    sql, params, tables = selection_query(definition, index.source_root)
    # DuckDB reads local files: a ``source:`` table of a demo collection on the artifact store is copied first.
    with local_files(list(tables.values())) as local_tables, index.connect() as con:
        bound = dict(params, **{k: str(v) for k, v in zip(tables, local_tables)})
        try:
            cursor = con.execute(sql, bound)
        except Exception as e:  # DuckDB raises several error types; all mean the same to a user
            raise CohortError(f"{definition.name}: cohort query failed: {e}") from e
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r)) for r in cursor.fetchall()]
    return make_cohort(definition, rows, backend="duckdb", index=index,
                        query={"sql": sql, "parameters": params}, tables=tables)


CT_IMAGE_STORAGE = CT_IMAGE_CLASSES[0]


def non_volume_reason(row: dict[str, Any]) -> str | None:
    """Why the index shows a CT series is not a volume, or None. Only what the index tells for certain: a SOP
    class that is not a CT image (a dose report's Secondary Capture, Raw Data), or a single-frame CT series of one
    instance (a localizer, a screen, one slice). The volumes step tells the rest from the files' headers."""
    if row.get("Modality") != "CT" or not row.get("SOPClassUID"):
        return None
    sop_class = str(row["SOPClassUID"])
    if sop_class not in CT_IMAGE_CLASSES:
        return f"{pydicom.uid.UID(sop_class).name or sop_class}, not a CT image (IDC index)"
    if sop_class == CT_IMAGE_STORAGE and row.get("instanceCount") == 1:
        return "one single-frame CT image (IDC index): a localizer, a screen or a single slice, not a volume"
    return None


def make_cohort(definition: DatasetVersion, rows: list[dict[str, Any]], *, backend: str,
                 index: IndexSource | None, query: dict[str, Any], tables: dict[str, Path],
                 release_date: str | None = None) -> Cohort:
    if not rows:
        sel = definition.selection
        raise CohortError(
            f"{definition.name}: the selection matched no series at IDC release {definition.source.idc_version} "
            f"(collections {sel.collections}, modalities {sel.modalities}, DOIs {sel.source_dois}); "
            "check the collection ids and DOIs against the index"
        )
    excluded = [{"PatientID": row.get("PatientID"), "Modality": row.get("Modality"),
                 "SeriesInstanceUID": row.get("SeriesInstanceUID"), "crdc_series_uuid": row.get("crdc_series_uuid"),
                 "SOPClassUID": row.get("SOPClassUID"), "reason": non_volume_reason(row)}
                for row in rows if non_volume_reason(row)]
    series = [{k: row.get(k) for k in SERIES_COLUMNS} for row in rows if not non_volume_reason(row)]
    for s in series:
        if s["instanceCount"] is not None:
            s["instanceCount"] = int(s["instanceCount"])
        if s["series_size_MB"] is not None:
            s["series_size_MB"] = float(s["series_size_MB"])
    unattributed = sum(s["source_DOI"] is None for s in series)
    collections: dict[tuple, dict[str, Any]] = {}
    for s in series:
        key = (s["collection_id"], s["source_DOI"], s["license_short_name"])
        entry = collections.setdefault(key, {
            "collection_id": s["collection_id"], "source_DOI": s["source_DOI"],
            "doi_url": f"https://doi.org/{s['source_DOI']}" if s["source_DOI"] else None,
            "license_short_name": s["license_short_name"], "series": 0,
        })
        entry["series"] += 1
    if index is not None:
        index_info = {"package": index.package, "version": index.package_version}
        release_date = release_date or index.release_date(definition.source.idc_version)
    else:
        index_info = {"package": "bigquery-public-data", "version": f"idc_v{definition.source.idc_version}"}
    return Cohort(
        dataset_version=definition.name,
        idc_version=definition.source.idc_version,
        idc_release_date=release_date,
        backend=backend,
        index=index_info,
        query=query,
        inputs={name: sha256_file(path) for name, path in tables.items()},
        collections=sorted(collections.values(), key=lambda c: (c["collection_id"], str(c["source_DOI"]))),
        series=series,
        reconstruction={
            "from_current_index": sum(s["index_table"] == "idc_index" for s in series),
            "from_prior_versions": sum(s["index_table"] == "prior_versions_index" for s in series),
            "unattributed": unattributed,
        },
        content_hash=series_hash(definition.source.idc_version, series),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        excluded=excluded,
    )


@dataclass
class CohortDiff:
    """Series added, removed and revised between two cohorts.

    Revised: the same SeriesInstanceUID with a different crdc_series_uuid (new content).
    """

    a: str
    b: str
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    revised: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "added": len(self.added), "removed": len(self.removed),
                "revised": len(self.revised)}


def diff_cohorts(a: Cohort, b: Cohort) -> CohortDiff:
    def by_uid(c: Cohort) -> dict[str, dict[str, Any]]:
        return {s["SeriesInstanceUID"]: s for s in c.series}

    sa, sb = by_uid(a), by_uid(b)
    out = CohortDiff(a.dataset_version, b.dataset_version)
    brief = ("PatientID", "Modality", "SeriesInstanceUID", "crdc_series_uuid")
    def order(uids, series):  # by patient and modality, as a reader scans the list
        return sorted(uids, key=lambda u: (series[u]["PatientID"], series[u]["Modality"], u))

    for uid in order(sb.keys() - sa.keys(), sb):
        out.added.append({k: sb[uid][k] for k in brief})
    for uid in order(sa.keys() - sb.keys(), sa):
        out.removed.append({k: sa[uid][k] for k in brief})
    for uid in order(sa.keys() & sb.keys(), sb):
        if sa[uid]["crdc_series_uuid"] != sb[uid]["crdc_series_uuid"]:
            out.revised.append({
                "PatientID": sb[uid]["PatientID"], "Modality": sb[uid]["Modality"], "SeriesInstanceUID": uid,
                "crdc_series_uuid_a": sa[uid]["crdc_series_uuid"], "crdc_series_uuid_b": sb[uid]["crdc_series_uuid"],
            })
    return out

