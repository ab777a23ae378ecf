"""The Dagster code location: ``dagster dev -m radassets.definitions`` (or ``make ui``)."""

from __future__ import annotations

from dagster import Definitions

from radassets.defs import evaluation, imaging, ingest, models
from radassets.defs.dead_runs import dead_run_sensor
from radassets.defs.resources import IdcResource, StorageResource, bigquery_resource
from radassets.settings import Settings

settings = Settings.load()  # the edge: Dagster's environment gets DAGSTER_HOME from here when it lacks it
settings.export_dagster_home()

defs = Definitions(
    assets=[ingest.cohort, ingest.dicom, imaging.volumes, imaging.seeds, imaging.patches, models.embeddings,
            evaluation.evaluation, evaluation.comparison, evaluation.hosny2018_figure2,
            evaluation.seed_stability],
    sensors=[models.model_registry_sensor, dead_run_sensor],
    resources={"storage": StorageResource(), "idc": IdcResource(), "bigquery": bigquery_resource(settings),
               "imaging": imaging.ImagingResource(), "models": models.ModelsResource()},
)
