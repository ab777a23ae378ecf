"""One entry point for a dataset version's cohort, shared by the Dagster asset and the CLI."""

from __future__ import annotations

from pathlib import Path

from radassets.datasets import DatasetVersion
from radassets.idc.bigquery import QueryClient, build_cohort_bigquery
from radassets.idc.cohort import Cohort, build_cohort, lockfile_path
from radassets.idc.index import index_for


def cohort_for(definition: DatasetVersion, *, bigquery_client: QueryClient | None = None) -> Cohort:
    """Build the cohort: from BigQuery when a client is given (IDC sources), else from the index."""
    if bigquery_client is not None and definition.source.kind == "idc":
        return build_cohort_bigquery(definition, bigquery_client)
    return build_cohort(definition, index_for(definition))


def write_cohort(cohort: Cohort) -> Path:
    return cohort.write(lockfile_path(cohort.dataset_version))
