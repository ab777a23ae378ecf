"""Ingest assets: the cohort lockfile and its verified DICOM files, per dataset version.

No ``from __future__ import annotations`` here: Dagster inspects the context annotation at runtime.
"""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from radassets.defs.lineage import recorded
from radassets import datasets
from radassets.dataplane import IN_PROCESS
from radassets.defs.metadata import failures_table, markdown_table, progress_logger
from radassets.defs.partitions import cohort_problems, dataset_version_partitions
from radassets.defs.resources import BigQueryCohortResource, IdcResource, StorageResource
from radassets.idc.cohort import Cohort
from radassets.idc.cohorts import cohort_for, write_cohort
from radassets.idc.dicom import fetch_dataset_dicom


@asset(
    partitions_def=dataset_version_partitions,
    group_name="ingest",
    kinds={"duckdb", "json"},
    code_version="cohort-1",
    description=(
        cohort_problems() +  # the UI's place for dataset definitions that are not partitions
        "Cohort lockfile of one dataset version: every series (SeriesInstanceUID and crdc_series_uuid) "
        "as the pinned IDC release served it, with the query, the index version and a content hash. "
        "Read from the IDC index bundled in idc-index-data, or from BigQuery when "
        "RADASSETS_GCP_PROJECT is set."
    ),
)
@recorded
def cohort(context: AssetExecutionContext, bigquery: BigQueryCohortResource, storage: StorageResource) -> MaterializeResult:
    settings = storage.settings()
    layout = settings.layout()
    definition = datasets.get(context.partition_key, settings.resolved_data_dir())
    if definition.source.kind == "demo":  # the demo spec is read (and checked) only for the demo
        from radassets.demo import ensure_demo_source  # the generator (highdicom) loads only for the demo

        ensure_demo_source(definition, layout, settings.demo(), progress=context.log.info)
    if bigquery.project and definition.source.kind == "idc":
        with bigquery.get_client() as client:
            result = cohort_for(definition, layout, bigquery_client=client)
    else:
        result = cohort_for(definition, layout)
    path = write_cohort(result, layout)
    stats = result.stats()
    context.log.info(f"{definition.name}: {stats.series} series of {stats.patients} patients at IDC v{result.idc_version}")
    return MaterializeResult(
        metadata={
            **result.metadata(),
            "lockfile": MetadataValue.path(str(path)),
            "collections (cite these)": MetadataValue.md(
                markdown_table(result.collections, ["collection_id", "source_DOI", "license_short_name", "series"])
            ),
        },
        data_version=DataVersion(result.content_hash),
    )


@asset(
    partitions_def=dataset_version_partitions,
    deps=[cohort],
    group_name="ingest",
    kinds={"dicom", "s3"},
    code_version="dicom-1",
    check_specs=[AssetCheckSpec("all_series_verified", asset="dicom",
                                description="every series of the cohort is present and verified")],
    description=(
        "The cohort's DICOM files, downloaded with s5cmd (or copied from a local mirror) and verified "
        "against the cohort: instance count, SeriesInstanceUID, unique SOP Instance UIDs. Series that "
        "cannot be completed are recorded with their cause; the rest proceeds."
    ),
)
@recorded
def dicom(context: AssetExecutionContext, idc: IdcResource, storage: StorageResource) -> MaterializeResult:
    settings = storage.settings()
    layout = settings.layout()
    definition = datasets.get(context.partition_key, settings.resolved_data_dir())
    lock = Cohort.read(layout.cohort_lockfile(definition.name))
    # A Ray cluster spreads the series over its nodes, each downloading and putting its own; local processes
    # would gain little, as s5cmd already fetches a series' files concurrently: the series go one by one here.
    compute = settings.compute() if settings.compute().ray_address else IN_PROCESS
    report = fetch_dataset_dicom(definition, lock, layout, mirror=settings.mirror(idc.mirror) if idc.mirror else None,
                                 idc_mirror=settings.mirror(), attempts=idc.attempts, progress=progress_logger(context),
                                 compute=compute)
    failures = failures_table(report.failures)
    if report.failed_fraction > idc.max_failed_fraction:
        raise Failure(
            description=(f"{report.failed} of {report.series} series could not be completed "
                         f"(more than the allowed {idc.max_failed_fraction:.0%})"),
            metadata={"failures": failures, "manifest": MetadataValue.path(str(report.manifest_path))},
        )
    return MaterializeResult(
        metadata={
            **report.metadata(),
            "manifest": MetadataValue.path(str(report.manifest_path)),
            **({"failures": failures} if report.failed else {}),
        },
        data_version=DataVersion(report.content_hash),
        check_results=[
            AssetCheckResult(
                check_name="all_series_verified",
                passed=report.failed == 0,
                severity=AssetCheckSeverity.WARN,
                metadata={"failed": report.failed, "verified": report.verified,
                          **({"failures": failures} if report.failed else {})},
            )
        ],
    )
