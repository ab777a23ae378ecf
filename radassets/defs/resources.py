"""Resources: where artifacts live (the layout and settings), where IDC series come from, and (optionally)
BigQuery for cohorts."""

from __future__ import annotations

from dagster import ConfigurableResource
from dagster_gcp import BigQueryResource
from pydantic import Field

from radassets.layout import Layout
from radassets.settings import Settings


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


def bigquery_resource(settings: Settings) -> BigQueryResource:
    """BigQuery is used for cohorts only when a billing project is configured (``gcp_project``)."""
    return BigQueryResource(project=settings.gcp_project)
