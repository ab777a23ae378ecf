"""The cohort asset through its BigQuery resource (dagster-gcp's client), answered by a DuckDB stand-in client.

The stand-in serves ``idc_v16.dicom_all`` rebuilt, instance by instance, from the bundled index,
so the BigQuery path must give exactly the cohort the bundled-index path gives.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager

import duckdb
import idc_index_data
import pytest
from dagster import DagsterInstance, materialize

from radassets import datasets
from radassets.defs.resources import BigQueryCohortResource
from radassets.definitions import defs
from radassets.idc.cohort import Cohort, build_cohort
from radassets.layout import Layout
from radassets.idc.index import bundled_index
from radassets_tests.conftest import REPO
from radassets_tests.standins import DuckDBBigQueryStandIn

pytestmark = pytest.mark.integration

_CON = duckdb.connect()


class StandInBigQuery(BigQueryCohortResource):
    """A configured BigQuery resource whose client is the DuckDB stand-in (no credentials, no network)."""

    @contextmanager
    def get_client(self):
        yield DuckDBBigQueryStandIn(_CON)


@pytest.fixture(scope="module")
def dicom_all_v16():
    _CON.execute(f"""
        CREATE OR REPLACE TABLE dicom_all_v16 AS
        SELECT collection_id, PatientID, StudyInstanceUID, SeriesInstanceUID,
               crdc_series_uuid || '.' || i AS SOPInstanceUID, crdc_series_uuid, Modality,
               series_size_MB * 1e6 / instanceCount AS instance_size, license_short_name,
               upper(source_DOI) AS Source_DOI, series_aws_url || i || '.dcm' AS aws_url, SOPClassUID
        FROM read_parquet('{idc_index_data.IDC_INDEX_PARQUET_FILEPATH}') AS idx, range(idx.instanceCount) AS t(i)
        WHERE collection_id = 'nsclc_radiomics' AND series_revised_idc_version <= 16""")


def test_cohort_asset_uses_bigquery_when_a_project_is_configured(dicom_all_v16, tmp_path, storage):
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        result = materialize([a for a in defs.assets if a.key.to_user_string() == "cohort"], instance=instance,
                             partition_key="nsclc_radiomics_idc_v16",
                             resources={**defs.resources, "bigquery": StandInBigQuery(project="my-billing-project")})
    assert result.success
    cohort = Cohort.read(Layout(storage).cohort_lockfile("nsclc_radiomics_idc_v16"))
    assert cohort.backend == "bigquery" and cohort.index["version"] == "idc_v16"
    stats = cohort.stats()
    assert (stats.patients, stats.series, stats.instances) == (422, 844, 51652)
    bundled = build_cohort(datasets.get("nsclc_radiomics_idc_v16"), bundled_index())
    assert cohort.content_hash == bundled.content_hash


def test_default_path_needs_no_credentials(storage, tmp_path):
    """Without RADASSETS_GCP_PROJECT the resource has no project and the bundled index is used."""
    assert defs.resources["bigquery"].project is None
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        result = materialize([a for a in defs.assets if a.key.to_user_string() == "cohort"], instance=instance,
                             partition_key="nsclc_radiomics_idc_v16", resources=defs.resources)
    assert result.success
    assert Cohort.read(Layout(storage).cohort_lockfile("nsclc_radiomics_idc_v16")).backend == "duckdb"
