"""The same cohort from BigQuery: ``bigquery-public-data.idc_vN.dicom_all`` at the pinned release.

Used when a GCP billing project is configured (the Dagster layer passes the client of
dagster-gcp's ``BigQueryResource``). Unlike the bundled index, BigQuery serves every release
as it was published, so no reconstruction is needed and instance counts come from the
instances themselves. The default path (bundled index) needs no credentials.

Reference-table filters cannot be read by BigQuery from local disk; their values are passed as
array parameters instead, and their sha256 is recorded like in the DuckDB path.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Protocol

from radassets.datasets import DatasetVersion
from radassets.idc.cohort import Cohort, CohortError, make_cohort
from radassets.idc.index import resolve_table

PUBLIC_PROJECT = "bigquery-public-data"

DICOM_ALL_SQL = """
SELECT
  collection_id, PatientID, StudyInstanceUID, SeriesInstanceUID, crdc_series_uuid, Modality,
  COUNT(DISTINCT SOPInstanceUID) AS instanceCount,
  ROUND(SUM(instance_size) / 1000000, 2) AS series_size_MB,
  ANY_VALUE(license_short_name) AS license_short_name,
  LOWER(ANY_VALUE(Source_DOI)) AS source_DOI,
  REGEXP_EXTRACT(ANY_VALUE(aws_url), r's3://([^/]+)/') AS aws_bucket,
  CONCAT('s3://', REGEXP_EXTRACT(ANY_VALUE(aws_url), r's3://([^/]+)/'), '/', crdc_series_uuid, '/') AS series_aws_url,
  'bigquery' AS index_table,
  IF(COUNT(DISTINCT SOPClassUID) = 1, ANY_VALUE(SOPClassUID), NULL) AS SOPClassUID
FROM `{project}.idc_v{version}.dicom_all`
WHERE collection_id IN UNNEST(@collections)
  AND Modality IN UNNEST(@modalities){extra}
GROUP BY collection_id, PatientID, StudyInstanceUID, SeriesInstanceUID, crdc_series_uuid, Modality
ORDER BY collection_id, PatientID, StudyInstanceUID, Modality, SeriesInstanceUID, crdc_series_uuid"""


class QueryClient(Protocol):
    """What radassets needs of ``google.cloud.bigquery.Client``."""

    def query(self, query: str, job_config: Any = None) -> Any: ...


def _column_values(path: Path, column: str) -> list[str]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise CohortError(f"reference table {path} has no column {column!r}")
        return sorted({row[column] for row in reader if row[column]})


def bigquery_selection(definition: DatasetVersion, source_root: Path | None = None,
                       project: str = PUBLIC_PROJECT) -> tuple[str, dict[str, list[str]], dict[str, Path]]:
    """The BigQuery SQL, its array parameters and the reference tables behind them."""
    sel = definition.selection
    params: dict[str, list[str]] = {"collections": list(sel.collections), "modalities": list(sel.modalities)}
    tables: dict[str, Path] = {}
    extra = ""
    if sel.source_dois:
        extra += "\n  AND LOWER(Source_DOI) IN UNNEST(@source_dois)"
        params["source_dois"] = list(sel.source_dois)
    if sel.series_from:
        tables["series_from_table"] = path = resolve_table(sel.series_from.table, source_root, definition.data_root)
        params["series_uids"] = _column_values(path, sel.series_from.column)
        keep = "SeriesInstanceUID IN UNNEST(@series_uids)"
        if sel.series_from.modalities:
            params["series_from_modalities"] = list(sel.series_from.modalities)
            keep = f"(Modality NOT IN UNNEST(@series_from_modalities) OR {keep})"
        extra += f"\n  AND {keep}"
    if sel.patients_from:
        tables["patients_from_table"] = path = resolve_table(sel.patients_from.table, source_root, definition.data_root)
        params["patient_ids"] = _column_values(path, sel.patients_from.column)
        extra += "\n  AND PatientID IN UNNEST(@patient_ids)"
    sql = DICOM_ALL_SQL.format(project=project, version=definition.source.idc_version, extra=extra)
    return sql, params, tables


def _job_config(params: dict[str, list[str]]) -> Any:
    from google.cloud import bigquery

    return bigquery.QueryJobConfig(
        query_parameters=[bigquery.ArrayQueryParameter(name, "STRING", values) for name, values in params.items()]
    )


def build_cohort_bigquery(definition: DatasetVersion, client: QueryClient, *, project: str = PUBLIC_PROJECT,
                          source_root: Path | None = None) -> Cohort:
    """Build the cohort lockfile of ``definition`` from IDC's BigQuery tables."""
    if definition.source.kind != "idc":
        raise CohortError(f"{definition.name}: BigQuery serves IDC sources only, not {definition.source.kind!r}")
    sql, params, tables = bigquery_selection(definition, source_root, project)
    try:
        rows = [dict(row.items()) for row in client.query(sql, job_config=_job_config(params)).result()]
    except Exception as e:  # google.api_core raises many types; the message is what matters
        raise CohortError(f"{definition.name}: BigQuery cohort query failed: {e}") from e
    return make_cohort(definition, rows, backend="bigquery", index=None,
                        query={"sql": sql, "parameters": params}, tables=tables)
