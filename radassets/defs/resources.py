"""Resources: where artifacts live (the layout and settings), where IDC series come from, and (optionally)
BigQuery for cohorts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field

from radassets.layout import Layout
from radassets.settings import Settings

if TYPE_CHECKING:
    from google.cloud import bigquery


class StorageResource(ConfigurableResource):
    """Where the assets read and write: ``radassets.settings.Settings`` (environment, then ``radassets.toml``,
    then defaults), read when a step runs, and the ``Layout`` of its artifact root."""

    home: str | None = Field(default=None, description="the artifact root, a folder or a URL; default: the "
                             "settings' home (RADASSETS_HOME, radassets.toml, else ~/.radassets)")

    def settings(self) -> Settings:
        settings = Settings.load()
        if not self.home:
            return settings
        # Validated like a setting read from the environment: a relative folder becomes absolute.
        return Settings.model_validate({**settings.model_dump(), "home": self.home})

    def layout(self) -> Layout:
        return self.settings().layout()


class IdcResource(ConfigurableResource):
    """How DICOM series are fetched from IDC (or a mirror of it)."""

    mirror: str | None = Field(
        default=None,
        description="a local folder laid out as BUCKET/CRDC_SERIES_UUID/, or the URL of an S3-compatible "
        "server; default: the settings' idc_mirror (RADASSETS_IDC_MIRROR), else the public IDC buckets",
    )
    attempts: int = Field(default=3, ge=1, description="download attempts per series")
    max_failed_fraction: float = Field(
        default=0.1, ge=0.0, le=1.0,
        description="the dicom partition fails when more than this fraction of series cannot be completed",
    )


class BigQueryCohortResource(ConfigurableResource):
    """BigQuery for cohorts, used only when a billing project is configured (``gcp_project``).

    The client is dagster-gcp's (``BigQueryResource.get_client``: credentials, project), made when a cohort queries
    BigQuery. dagster_gcp is imported there and not at the top: with pandas and the Google clients it takes over a
    second to import, and every command, run worker and UI reload imports this code location."""

    project: str | None = Field(default=None, description="the Google Cloud project billed for the queries; "
                                "default: the settings' gcp_project (RADASSETS_GCP_PROJECT), else none (no BigQuery)")

    @contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        from dagster_gcp import BigQueryResource

        with BigQueryResource(project=self.project).get_client() as client:
            yield client


def bigquery_resource(settings: Settings) -> BigQueryCohortResource:
    """BigQuery is used for cohorts only when a billing project is configured (``gcp_project``)."""
    return BigQueryCohortResource(project=settings.gcp_project)
