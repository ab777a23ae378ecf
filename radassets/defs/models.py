"""Model assets: embeddings per (dataset version × model), and the sensor that keeps the ``model``
partitions in sync with the registry in ``data/models/``.

Thin: the asset calls ``radassets.models.pipeline.run_model``. No ``from __future__ import
annotations`` here: Dagster inspects the context annotation at runtime.
"""

import warnings

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    BetaWarning,
    ConfigurableResource,
    DataVersion,
    DefaultSensorStatus,
    Failure,
    MaterializeResult,
    MetadataValue,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    sensor,
)
from pydantic import Field

from radassets.defs.automation import EMBEDS_WHAT_RUNS_HERE
from radassets.defs.lineage import recorded
from radassets.defs.imaging import patches
from radassets.defs.metadata import failures_table, progress_logger, user_failure
from radassets.defs.partitions import dataset_version_partitions, model_partitions
from radassets.defs.resources import StorageResource
from radassets.settings import Settings
from radassets.models import registry
from radassets.models.pipeline import run_model

with warnings.catch_warnings():  # the mapping is marked beta; it is the documented way for multi → single
    warnings.simplefilter("ignore", BetaWarning)
    PATCHES_OF_DATASET_VERSION = MultiToSingleDimensionPartitionMapping(partition_dimension_name="dataset_version")


embeddings_partitions = MultiPartitionsDefinition({"dataset_version": dataset_version_partitions,
                                                   "model": model_partitions})


class ModelsResource(ConfigurableResource):
    """How models run: batch size, device, whether weights may be downloaded, failure threshold."""

    batch_size: int = Field(default=8, ge=1, description="patches per forward pass")
    device: str = Field(default="auto", description="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    download_weights: bool = Field(default=True, description="download missing weights from the registry URI")
    max_failed_fraction: float = Field(default=0.1, ge=0.0, le=1.0,
                                       description="the partition fails when more seeds than this fail")


@asset(
    partitions_def=embeddings_partitions,
    deps=[AssetDep(patches, partition_mapping=PATCHES_OF_DATASET_VERSION)],
    group_name="models",
    kinds={"pytorch", "parquet"},
    code_version="embeddings-1",
    pool="gpu",
    automation_condition=EMBEDS_WHAT_RUNS_HERE,
    check_specs=[AssetCheckSpec("all_seeds_embedded", asset="embeddings",
                                description="every seed has a finite embedding")],
    description=(
        "One embedding per seed and model: the model's own crop, axes and intensity transform of the canonical "
        "patch, run in batches (CUDA when present). Rows carry the model, the weights' sha256 and the "
        "preprocessing hash. NaN or infinite vectors are recorded failures. Add a model to data/models/ "
        "(or `radassets models add`) and backfill its partitions: nothing upstream is recomputed."
    ),
)
@recorded
def embeddings(context: AssetExecutionContext, models: ModelsResource, storage: StorageResource) -> MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    dataset_version, model = keys["dataset_version"], keys["model"]
    settings = storage.settings()
    compute = settings.compute()
    if compute.ray_address:
        context.log.info(f"embedding on the {compute.describe()}")
    with user_failure():
        report = run_model(dataset_version, model, settings.layout(), registry_dir=settings.resolved_models_dir(),
                           data_root=settings.resolved_data_dir(), batch_size=models.batch_size,
                           device=models.device, download=models.download_weights, progress=progress_logger(context),
                           compute=compute)
    failures = failures_table(report.failures)
    if report.failed_fraction > models.max_failed_fraction:
        raise Failure(description=(f"{report.failed} of {report.seeds} seeds could not be embedded by "
                                   f"{model} (more than the allowed {models.max_failed_fraction:.0%})"),
                      metadata={"failures": failures})
    return MaterializeResult(
        metadata={
            **report.metadata(),
            "weights_sha256": report.weights_sha256 or "none (no weights)",
            "preprocessing_hash": report.preprocessing_hash,
            **({"batches_by_place": MetadataValue.json(report.places)} if report.places else {}),
            "embeddings_table": MetadataValue.path(str(report.out_dir / "embeddings.parquet")),
            **({"failures": failures} if report.failures else {}),
        },
        data_version=DataVersion(report.content_hash),
        check_results=[AssetCheckResult(check_name="all_seeds_embedded", passed=not report.failures,
                                        severity=AssetCheckSeverity.WARN,
                                        metadata={"failed": report.failed,
                                                  **({"failures": failures} if report.failures else {})})],
    )


def registry_partition_changes(existing: set[str],
                               registry_dir=None) -> tuple[list[str], list[str], dict[str, str]]:
    """Registry names missing from the ``model`` partitions, partitions no longer registered, and the
    invalid registry files with the reason (they get no partition; one bad file does not stop the others).
    The registry is ``registry_dir``, by default the settings' (read now: the sensor sees a changed setting)."""
    entries, invalid = registry.scan_registry(registry_dir or Settings.load().resolved_models_dir())
    names = set(entries)
    return sorted(names - existing), sorted(existing - names - set(invalid)), invalid


@sensor(
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds a 'model' partition for every model registered in data/models/ (never deletes one: "
                "materialized history stays visible).",
)
def model_registry_sensor(context: SensorEvaluationContext):
    added, orphaned, invalid = registry_partition_changes(set(context.instance.get_dynamic_partitions("model")))
    for name, why in invalid.items():
        context.log.warning(f"registry entry {name} is invalid and gets no partition: {why}")
    if orphaned:
        context.log.info(f"model partitions without a registry entry (kept): {orphaned}")
    if not added:
        return SkipReason("the model partitions match the registry")
    context.log.info(f"adding model partitions: {added}")
    return SensorResult(dynamic_partitions_requests=[model_partitions.build_add_request(added)])
