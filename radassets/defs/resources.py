"""Resources: where IDC series come from, and (optionally) BigQuery for cohorts."""

from __future__ import annotations

import os

from dagster import ConfigurableResource
from dagster_gcp import BigQueryResource
from pydantic import Field

GCP_PROJECT_ENV = "RADASSETS_GCP_PROJECT"


class IdcResource(ConfigurableResource):
    """How DICOM series are fetched from IDC (or a mirror of it)."""

    mirror: str | None = Field(
        default=None,
        description="a local folder laid out as BUCKET/CRDC_SERIES_UUID/, or the URL of an S3-compatible "
        "server; default: $RADASSETS_IDC_MIRROR, else the public IDC buckets",
    )
    attempts: int = Field(default=3, ge=1, description="download attempts per series")
    max_failed_fraction: float = Field(
        default=0.1, ge=0.0, le=1.0,
        description="the dicom partition fails when more than this fraction of series cannot be completed",
    )


def bigquery_resource() -> BigQueryResource:
    """BigQuery is used for cohorts only when a billing project is configured."""
    return BigQueryResource(project=os.environ.get(GCP_PROJECT_ENV))
