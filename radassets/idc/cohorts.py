"""One entry point for a dataset version's cohort, shared by the Dagster asset and the CLI."""

from __future__ import annotations

from pathlib import Path

from radassets.datasets import DatasetVersion
from radassets.idc.bigquery import QueryClient, build_cohort_bigquery
from radassets.idc.cohort import Cohort, build_cohort
from radassets.idc.index import index_for
from radassets.layout import Layout


def cohort_for(definition: DatasetVersion, layout: Layout, *, bigquery_client: QueryClient | None = None) -> Cohort:
    """Build the cohort: from BigQuery when a client is given (IDC sources), else from the index (for the demo,
    the collection under the layout's demo root, which ``radassets.demo.ensure_demo_source`` makes)."""
    if bigquery_client is not None and definition.source.kind == "idc":
        return build_cohort_bigquery(definition, bigquery_client)
    return build_cohort(definition, index_for(definition, layout))


def write_cohort(cohort: Cohort, layout: Layout) -> Path:
    return cohort.write(layout.cohort_lockfile(cohort.dataset_version))
