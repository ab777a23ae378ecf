"""Cohort lockfiles: release reconstruction against known answers, the real v16 cohort, BigQuery."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from radassets import datasets
from radassets.datasets import DatasetVersion
from radassets.idc import schema
from radassets.idc.bigquery import build_cohort_bigquery
from radassets.idc.cohort import Cohort, CohortError, build_cohort, diff_cohorts
from radassets.idc.index import bundled_index, folder_index
from radassets_tests.standins import DuckDBBigQueryStandIn

# A small IDC history with every case the reconstruction rule must handle. (series, crdc uuid,
# releases that served that version, bucket per release)
#   S1 unchanged since release 1; S2 revised at release 3; S3 removed at release 3;
#   S4 added at release 4; S5 revised at 3, its old version moved bucket between 1 and 2;
#   R1 an RTSTRUCT of another DOI, for the filters.
HISTORY = [
    ("S1", "u-s1", range(1, 5), "idc-open-data", "CT", "10.1/a"),
    ("S2", "u-s2-old", range(1, 3), "idc-open-data", "CT", "10.1/a"),
    ("S2", "u-s2-new", range(3, 5), "idc-open-data", "CT", "10.1/a"),
    ("S3", "u-s3", range(1, 3), "idc-open-data", "CT", "10.1/a"),
    ("S4", "u-s4", range(4, 5), "idc-open-data", "CT", "10.1/a"),
    ("S5", "u-s5-old", range(1, 2), "bucket-x", "CT", "10.1/a"),
    ("S5", "u-s5-old", range(2, 3), "bucket-y", "CT", "10.1/a"),
    ("S5", "u-s5-new", range(3, 5), "idc-open-data", "CT", "10.1/a"),
    ("R1", "u-r1", range(1, 5), "idc-open-data", "RTSTRUCT", "10.1/b"),
]
LATEST = 4
INSTANCES = {"u-s1": 3, "u-s2-old": 2, "u-s2-new": 4, "u-s3": 5, "u-s4": 6, "u-s5-old": 7, "u-s5-new": 8, "u-r1": 1}


def _patient(series: str) -> str:
    return "P-" + series


def write_history_index(root: Path) -> Path:
    current, prior = [], []
    first_release = {}
    for series, _, releases, *_ in HISTORY:
        first_release.setdefault(series, releases.start)
    for series, uuid, releases, bucket, modality, doi in HISTORY:
        base = {"collection_id": "toy", "PatientID": _patient(series), "SeriesInstanceUID": series,
                "StudyInstanceUID": "ST-" + series, "Modality": modality, "crdc_series_uuid": uuid,
                "series_aws_url": f"s3://{bucket}/{uuid}/", "aws_bucket": bucket, "series_size_MB": 1.5}
        if LATEST in releases:
            current.append(dict(base, source_DOI=doi, license_short_name="CC BY 4.0",
                                instanceCount=INSTANCES[uuid], series_init_idc_version=first_release[series],
                                series_revised_idc_version=releases.start))
        else:
            prior.append(dict(base, min_idc_version=releases.start, max_idc_version=releases.stop - 1,
                              gcs_bucket=bucket))
    folder = root / "index"
    schema.write_table(current, schema.IDC_INDEX_SCHEMA, folder / "idc_index.parquet")
    schema.write_table(prior, schema.PRIOR_VERSIONS_SCHEMA, folder / "prior_versions_index.parquet")
    schema.write_table([{"idc_version": v, "version_timestamp": f"2020-0{v}-01"} for v in range(1, LATEST + 1)],
                       schema.VERSION_METADATA_SCHEMA, folder / "version_metadata_index.parquet")
    schema.write_table([{"collection_id": "toy"}], schema.COLLECTIONS_SCHEMA, folder / "collections_index.parquet")
    schema.write_table([], schema.INSTANCES_SCHEMA, folder / "instances.parquet")
    return root


def toy_definition(version: int, **selection) -> DatasetVersion:
    return DatasetVersion.model_validate({
        "name": f"toy_v{version}", "title": "toy", "description": "toy",
        "source": {"kind": "idc", "idc_version": version},
        "selection": {"collections": ["toy"], "modalities": ["CT", "RTSTRUCT"], **selection},
        "seeds": {"source": "mask", "segment_rule": "all"},
    })


@pytest.fixture(scope="module")
def toy_index(tmp_path_factory):
    return folder_index(write_history_index(tmp_path_factory.mktemp("toy")), "toy-index")


def served(cohort: Cohort) -> dict[str, str]:
    return {s["SeriesInstanceUID"]: s["crdc_series_uuid"] for s in cohort.series}


def test_reconstructs_each_release_exactly(toy_index):
    expected = {
        1: {"S1": "u-s1", "S2": "u-s2-old", "S3": "u-s3", "S5": "u-s5-old", "R1": "u-r1"},
        2: {"S1": "u-s1", "S2": "u-s2-old", "S3": "u-s3", "S5": "u-s5-old", "R1": "u-r1"},
        3: {"S1": "u-s1", "S2": "u-s2-new", "S5": "u-s5-new", "R1": "u-r1"},
        4: {"S1": "u-s1", "S2": "u-s2-new", "S4": "u-s4", "S5": "u-s5-new", "R1": "u-r1"},
    }
    for version, want in expected.items():
        assert served(build_cohort(toy_definition(version), toy_index)) == want, version


def test_prior_version_rows_keep_their_bucket_and_null_counts(toy_index):
    by_uid = {s["SeriesInstanceUID"]: s for s in build_cohort(toy_definition(1), toy_index).series}
    assert by_uid["S5"]["series_aws_url"] == "s3://bucket-x/u-s5-old/"  # the bucket of release 1
    by_uid = {s["SeriesInstanceUID"]: s for s in build_cohort(toy_definition(2), toy_index).series}
    assert by_uid["S5"]["series_aws_url"] == "s3://bucket-y/u-s5-old/"
    # Prior versions carry no instance count; licence and DOI come from the current version.
    assert by_uid["S2"]["instanceCount"] is None and by_uid["S2"]["source_DOI"] == "10.1/a"
    # A removed series has no current version: no DOI, counted as unattributed.
    assert by_uid["S3"]["source_DOI"] is None
    cohort = build_cohort(toy_definition(2), toy_index)
    assert cohort.reconstruction == {"from_current_index": 2, "from_prior_versions": 3, "unattributed": 1}
    assert cohort.stats().series_without_instance_count == 3


def test_filters_by_modality_and_doi(toy_index):
    assert set(served(build_cohort(toy_definition(4, modalities=["RTSTRUCT"]), toy_index))) == {"R1"}
    assert set(served(build_cohort(toy_definition(4, source_dois=["10.1/B"]), toy_index))) == {"R1"}


def test_diff_lists_added_removed_revised(toy_index):
    v2, v4 = (build_cohort(toy_definition(v), toy_index) for v in (2, 4))
    d = diff_cohorts(v2, v4)
    assert [r["SeriesInstanceUID"] for r in d.added] == ["S4"]
    assert [r["SeriesInstanceUID"] for r in d.removed] == ["S3"]
    assert [(r["SeriesInstanceUID"], r["crdc_series_uuid_a"], r["crdc_series_uuid_b"]) for r in d.revised] == [
        ("S2", "u-s2-old", "u-s2-new"), ("S5", "u-s5-old", "u-s5-new")]


def test_content_hash_identifies_series_versions(toy_index):
    h = {v: build_cohort(toy_definition(v), toy_index).content_hash for v in (1, 2, 3)}
    assert h[1] != h[2]  # same series, but a different release is a different cohort
    assert h[2] != h[3]
    assert build_cohort(toy_definition(3), toy_index).content_hash == h[3]


def test_bad_requests_fail_clearly(toy_index):
    with pytest.raises(CohortError, match=r"toy_v9: IDC release 9 is newer than the index .* up to 4"):
        build_cohort(toy_definition(9), toy_index)
    with pytest.raises(CohortError, match=r"toy_v4: the selection matched no series at IDC release 4"):
        build_cohort(toy_definition(4, collections=["not_a_collection"]), toy_index)


def test_lockfile_round_trip_and_tamper_detection(toy_index, tmp_path):
    cohort = build_cohort(toy_definition(4), toy_index)
    path = cohort.write(tmp_path / "cohort.lock.json")
    again = Cohort.read(path)
    assert again.content_hash == cohort.content_hash and again.series == cohort.series
    raw = json.loads(path.read_text())
    assert raw["query"]["parameters"]["idc_version"] == 4 and "served" in raw["query"]["sql"]
    raw["series"][0]["crdc_series_uuid"] = "something-else"
    path.write_text(json.dumps(raw))
    with pytest.raises(CohortError, match="was modified"):
        Cohort.read(path)


def test_nsclc_radiomics_v16_matches_the_published_cohort():
    """The Hosny et al. replication's cohort: 422 patients, 844 series, 51,652 instances."""
    cohort = build_cohort(datasets.get("nsclc_radiomics_idc_v16"), bundled_index())
    stats = cohort.stats()
    assert (stats.patients, stats.series, stats.instances) == (422, 844, 51652)
    assert stats.modalities == {"CT": 422, "RTSTRUCT": 422}
    assert cohort.collections[0]["source_DOI"] == "10.7937/k9/tcia.2015.pf0m9rei"
    assert cohort.collections[0]["license_short_name"] == "CC BY-NC 3.0"
    assert cohort.idc_release_date == "2023-08-14"
    assert cohort.index["package"] == "idc-index-data"


# -- BigQuery, through a stand-in client --------------------------------------------------------

def dicom_all_from_history(con: duckdb.DuckDBPyConnection) -> None:
    for version in range(1, LATEST + 1):
        rows = []
        for series, uuid, releases, bucket, modality, doi in HISTORY:
            if version in releases:
                for i in range(INSTANCES[uuid]):
                    rows.append(("toy", _patient(series), "ST-" + series, series, f"{uuid}.{i}", uuid, modality,
                                 1_500_000 / INSTANCES[uuid], "CC BY 4.0", doi.upper(), f"s3://{bucket}/{uuid}/{i}.dcm",
                                 None))
        con.execute(f"""CREATE TABLE dicom_all_v{version} (collection_id TEXT, PatientID TEXT, StudyInstanceUID TEXT,
            SeriesInstanceUID TEXT, SOPInstanceUID TEXT, crdc_series_uuid TEXT, Modality TEXT, instance_size DOUBLE,
            license_short_name TEXT, Source_DOI TEXT, aws_url TEXT, SOPClassUID TEXT)""")
        con.executemany(f"INSERT INTO dicom_all_v{version} VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)


def test_bigquery_cohort_equals_reconstructed_cohort(toy_index):
    con = duckdb.connect()
    dicom_all_from_history(con)
    client = DuckDBBigQueryStandIn(con)
    for version in (2, 4):
        bq = build_cohort_bigquery(toy_definition(version), client)
        assert bq.content_hash == build_cohort(toy_definition(version), toy_index).content_hash, version
        assert bq.backend == "bigquery" and bq.index["version"] == f"idc_v{version}"
        assert f"`bigquery-public-data.idc_v{version}.dicom_all`" in client.queries[-1]
    # The documented limit of the reconstruction: a series removed from IDC (S3) has no DOI in the
    # bundled index, so a DOI filter cannot keep it; BigQuery still knows its DOI.
    with_doi = toy_definition(2, source_dois=["10.1/A"])
    assert set(served(build_cohort_bigquery(with_doi, client))) - set(served(build_cohort(with_doi, toy_index))) == {"S3"}
    # BigQuery knows the instances, so prior versions get their count back.
    bq2 = {s["SeriesInstanceUID"]: s for s in build_cohort_bigquery(toy_definition(2), client).series}
    assert bq2["S2"]["instanceCount"] == INSTANCES["u-s2-old"]


def test_bigquery_errors_name_the_dataset_version():
    class Broken:
        def query(self, query, job_config=None):
            raise RuntimeError("403 Access Denied: billing not enabled")

    with pytest.raises(CohortError, match=r"toy_v2: BigQuery cohort query failed: 403 Access Denied"):
        build_cohort_bigquery(toy_definition(2), Broken())
