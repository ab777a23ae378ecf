"""Jobs for the common launches, so that the UI needs no typed asset selection (issue 14, point 5).

A job runs assets of one partitioning, so "every asset of a dataset version" is two launches of one
partition each, the second done by automation (``radassets.defs.automation``) when the daemon runs:

- ``dataset_version_job`` (partitioned by dataset version): the cohort, its DICOM, volumes, seeds and patches;
  their models' embeddings, evaluations and the comparison then follow by automation, or by the next job.
- ``model_job`` (partitioned by dataset version × model): one model's embeddings and evaluation; launching it
  for one ``model`` and every dataset version (a backfill in the UI) is ``radassets models backfill``.
- ``comparison_job`` (partitioned by dataset version): every evaluated model side by side.

The opt-in assets (``seed_stability``) are in no job: they run when selected.
"""

from dagster import AssetSelection, define_asset_job

from radassets.defs import evaluation, imaging, ingest, models

dataset_version_job = define_asset_job(
    "dataset_version_job", AssetSelection.assets(ingest.cohort, ingest.dicom, imaging.volumes, imaging.seeds, imaging.patches),
    description="Every asset of a dataset version up to its patches (the models' assets follow by automation).")
model_job = define_asset_job(
    "model_job", AssetSelection.assets(models.embeddings, evaluation.evaluation),
    description="One model's embeddings and evaluation for a dataset version: pick the partitions (a backfill).")
comparison_job = define_asset_job(
    "comparison_job", AssetSelection.assets(evaluation.comparison),
    description="The comparison of every evaluated model of a dataset version.")

JOBS = [dataset_version_job, model_job, comparison_job]
