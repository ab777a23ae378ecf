"""The Dagster code location: ``dagster dev -m radassets.definitions`` (or ``make ui``)."""

from __future__ import annotations

from dagster import Definitions

from radassets import profile
from radassets.defs import evaluation, imaging, ingest, models
from radassets.defs.automation import automation_sensor
from radassets.defs.dead_runs import dead_run_sensor
from radassets.defs.jobs import JOBS
from radassets.defs.resources import IdcResource, StorageResource, bigquery_resource
from radassets.settings import Settings

# The edge. DAGSTER_HOME from the settings reaches what this process starts (the CLI's runs); `dagster dev` and
# the daemon read DAGSTER_HOME before they load this module, from their own environment.
settings = Settings.load()
settings.export_dagster_home()
profile.enable(settings.profile)  # a run worker's phases go where its command's go (RADASSETS_PROFILE is inherited)

defs = Definitions(
    assets=[ingest.cohort, ingest.dicom, imaging.volumes, imaging.seeds, imaging.patches, models.embeddings,
            evaluation.evaluation, evaluation.comparison, evaluation.hosny2018_figure2,
            evaluation.seed_stability],
    jobs=JOBS,
    sensors=[models.model_registry_sensor, dead_run_sensor, automation_sensor],
    resources={"storage": StorageResource(), "idc": IdcResource(), "bigquery": bigquery_resource(settings),
               "imaging": imaging.ImagingResource(), "models": models.ModelsResource()},
)
