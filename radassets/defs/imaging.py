"""Imaging assets: CT volumes and tumour masks, seed points, canonical patches, per dataset version.

Thin: each asset calls one step of ``radassets.imaging.pipeline`` and turns its report into
metadata, a data version and asset checks. No ``from __future__ import annotations`` here:
Dagster inspects the context annotation at runtime.
"""

import base64

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    ConfigurableResource,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from radassets.defs.lineage import recorded, step_compute
from radassets import datasets
from radassets.defs.ingest import dicom
from radassets.defs.metadata import failures_table, markdown_table, progress_logger, user_failure
from radassets.defs.partitions import dataset_version_partitions
from radassets.defs.resources import StorageResource
from radassets.imaging import pipeline
from radassets.imaging.ct import Tolerances
from radassets.imaging.patches import PatchSpec
from radassets.imaging.seeds import DISAGREEMENT_MM


class ImagingResource(ConfigurableResource):
    """Conversion tolerances, failure threshold, seed disagreement threshold and patch geometry."""

    max_failed_fraction: float = Field(
        default=0.1, ge=0.0, le=1.0,
        description="the volumes partition fails when more than this fraction of series cannot be converted",
    )
    spacing_tolerance: float = Field(default=0.01, gt=0, description="max |slice gap - median| / median")
    tilt_tolerance_mm_per_mm: float = Field(default=1e-3, gt=0, description="max in-plane drift of slice origins")
    max_tilt_degrees: float = Field(default=30.0, ge=0, le=90,
                                    description="a gantry tilt up to this is resampled onto an orthogonal grid")
    resample_uneven: bool = Field(default=True, description="resample series with uneven slice gaps")
    max_interpolated_gap_mm: float = Field(default=10.0, gt=0,
                                           description="widest slice gap of an uneven series interpolated across")
    seed_disagreement_mm: float = Field(default=DISAGREEMENT_MM, gt=0,
                                        description="flag a mask seed further than this from its published point")
    patch_size: int = Field(default=64, ge=8, description="patch edge in voxels (every model crops its own from it)")
    patch_spacing_mm: float = Field(default=1.0, gt=0)
    patch_interpolator: str = Field(default="linear", description="linear, bspline or nearest")

    def tolerances(self) -> Tolerances:
        return Tolerances(spacing_relative=self.spacing_tolerance, tilt_mm_per_mm=self.tilt_tolerance_mm_per_mm,
                          max_tilt_degrees=self.max_tilt_degrees, resample_uneven=self.resample_uneven,
                          max_interpolated_gap_mm=self.max_interpolated_gap_mm)

    def patch_spec(self) -> PatchSpec:
        return PatchSpec(self.patch_size, self.patch_spacing_mm, self.patch_interpolator)


def _table(rows: list[dict], columns: list[str], limit: int = 50) -> MetadataValue:
    return MetadataValue.md(markdown_table(rows, columns, limit))


@asset(
    partitions_def=dataset_version_partitions,
    deps=[dicom],
    group_name="imaging",
    kinds={"dicom", "nrrd"},
    code_version="volumes-1",
    check_specs=[AssetCheckSpec("all_series_converted", asset="volumes",
                                description="every CT and mask series became a volume on its CT grid (excluded "
                                            "series, not volumes, do not count)")],
    description=(
        "CT series as int16 HU volumes (NRRD, LPS) and the selected tumour segments of each SEG / RTSTRUCT "
        "on its CT's grid. Every series is validated first (spacing, missing or duplicate slices, gantry tilt, "
        "orientation, SOP class, rescale, decodability); each failure is a QC row with its cause, and the "
        "partition fails only above the configured failure ratio. Localizers, dose screens and other series "
        "that are not volumes are excluded with their reason, apart from the failures."
    ),
)
@recorded
def volumes(context: AssetExecutionContext, imaging: ImagingResource, storage: StorageResource) -> MaterializeResult:
    settings = storage.settings()
    definition = datasets.get(context.partition_key, settings.resolved_data_dir())
    compute = step_compute(context, settings)
    context.log.info(f"converting {definition.name}'s series in {compute.describe()}")
    with user_failure():
        report = pipeline.run_volumes(definition, settings.layout(), imaging.tolerances(), progress_logger(context),
                                      compute)
    failures = failures_table(report.failures)
    # Localizers, screens and other non-volume series are shown apart: excluded, with their reasons, not failures.
    excluded = ({"excluded_series": _table(report.exclusions, ["PatientID", "SeriesInstanceUID", "Modality", "code",
                                                                "message"])} if report.excluded else {})
    if report.failed_fraction > imaging.max_failed_fraction:
        raise Failure(
            description=(f"{report.failed} of {report.series - report.excluded} series could not be converted "
                         f"(more than the allowed {imaging.max_failed_fraction:.0%}; {report.excluded} excluded "
                         f"as not volumes): {report.failures_by_code}"),
            metadata={"failures": failures, "qc": MetadataValue.path(str(report.out_dir / "qc.parquet")), **excluded},
        )
    return MaterializeResult(
        metadata={
            **report.metadata(),
            "failures_by_code": MetadataValue.json(report.failures_by_code),
            "excluded_by_code": MetadataValue.json(report.excluded_by_code),
            "conversion_settings": MetadataValue.json(report.settings),
            "qc_table": MetadataValue.path(str(report.out_dir / "qc.parquet")),
            **({"failures": failures} if report.failed else {}),
            **excluded,
        },
        data_version=DataVersion(report.content_hash),
        check_results=[AssetCheckResult(
            check_name="all_series_converted", passed=report.failed == 0, severity=AssetCheckSeverity.WARN,
            metadata={"failed": report.failed, "failures_by_code": MetadataValue.json(report.failures_by_code),
                      "excluded": report.excluded, "excluded_by_code": MetadataValue.json(report.excluded_by_code),
                      **({"failures": failures} if report.failed else {})},
        )],
    )


@asset(
    partitions_def=dataset_version_partitions,
    deps=[volumes],
    group_name="imaging",
    kinds={"parquet"},
    code_version="seeds-1",
    check_specs=[AssetCheckSpec("seeds_agree_with_reference", asset="seeds",
                                description="mask seeds lie within the threshold of their published points")],
    description=(
        "One seed point per lesion in physical LPS millimetres: the centroid of the selected mask segment, or "
        "a published point. Where both exist, the distance between them is recorded and disagreements over "
        "the threshold (10 mm) are flagged."
    ),
)
@recorded
def seeds(context: AssetExecutionContext, imaging: ImagingResource, storage: StorageResource) -> MaterializeResult:
    settings = storage.settings()
    definition = datasets.get(context.partition_key, settings.resolved_data_dir())
    compute = step_compute(context, settings)
    with user_failure():
        report = pipeline.run_seeds(definition, settings.layout(), imaging.seed_disagreement_mm, compute)
    metadata = report.metadata()
    context.log.info(f"{len(report.seeds)} seeds of {report.patients} patients; {metadata}")
    disagreeing = report.disagreeing
    return MaterializeResult(
        metadata={
            **metadata,
            "seeds_table": MetadataValue.path(str(report.out_dir / "seeds.csv")),
            "preview": _table(report.seeds, ["PatientID", "segment_label", "coordX", "coordY", "coordZ", "volume_ml",
                                             "source", "reference_distance_mm"], limit=20),
            **({"failures": failures_table(report.failures)} if report.failures else {}),
            **({"disagreements": _table(disagreeing, ["PatientID", "SeriesInstanceUID", "segment_label",
                                                      "reference_distance_mm"])} if disagreeing else {}),
        },
        data_version=DataVersion(report.content_hash),
        check_results=[AssetCheckResult(
            check_name="seeds_agree_with_reference", passed=not disagreeing, severity=AssetCheckSeverity.WARN,
            metadata={"disagreements": len(disagreeing), "compared": report.compared_with_reference,
                      "threshold_mm": imaging.seed_disagreement_mm,
                      **({"disagreeing seeds": _table(disagreeing, ["PatientID", "SeriesInstanceUID", "segment_label",
                                                                    "reference_distance_mm"])} if disagreeing else {})},
        )],
    )


@asset(
    partitions_def=dataset_version_partitions,
    deps=[seeds],
    group_name="imaging",
    kinds={"zarr"},
    code_version="patches-2",
    description=(
        "One canonical patch per seed: 1 mm isotropic, 64³ voxels, int16 HU, LPS axes, centred on the seed, "
        "cropped before resampling; the seed's mask alongside. A Zarr store, one chunk per patch. Patches at the "
        "volume border are padded with air (-1024 HU) and flagged. A QC montage shows every patch."
    ),
)
@recorded
def patches(context: AssetExecutionContext, imaging: ImagingResource, storage: StorageResource) -> MaterializeResult:
    settings = storage.settings()
    definition = datasets.get(context.partition_key, settings.resolved_data_dir())
    with user_failure():
        report, montage = pipeline.run_patches(definition, settings.layout(), imaging.patch_spec(),
                                                progress_logger(context, flag=("border",)),
                                                step_compute(context, settings))
    image = base64.b64encode(montage.read_bytes()).decode("ascii")
    border = report.at_border
    return MaterializeResult(
        metadata={
            **report.metadata(),
            "patch_spec": MetadataValue.json(report.spec),
            "patches_zarr": MetadataValue.path(str(report.out_dir / "patches.zarr")),
            "montage_png": MetadataValue.path(str(montage)),
            "montage": MetadataValue.md(f"![QC montage](data:image/png;base64,{image})"),
            **({"at_border": _table(border, ["PatientID", "segment_label", "padded_fraction"])} if border else {}),
            "sha256": MetadataValue.json(report.sha256),
        },
        data_version=DataVersion(report.content_hash),
    )
