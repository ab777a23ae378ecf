"""Declarative automation: what the daemon's automation sensor (``make ui``) materializes by itself.

- ``embeddings`` is ``EMBEDS_WHAT_RUNS_HERE``: Dagster's ``eager``, or missing with its inputs ready (eager
  alone never requests a partition that was already missing at the sensor's first tick), for the (dataset
  version × model) partitions whose model runs here with no download (``ModelRunsHere``). A partition runs when it becomes
  missing (a model added to the registry: the registry sensor adds its ``model`` partition, and every dataset
  version gets a new, missing partition) or when what it depends on is updated (a dataset version's patches,
  new or rebuilt), once none of its inputs is missing or in progress. So a new model is embedded for every
  dataset version whose patches exist, and a dataset version whose patches are materialized gets its models'
  embeddings, with no backfill.
- Weights policy: automation downloads nothing. A registered foundation model whose weights are not in the
  cache is left alone (a download is gigabytes, and an offline machine would fail a run per dataset version);
  once its weights are there (a run launched by a person may download them, e.g. ``radassets pipeline run
  demo_v1 --models ct_fm``), its missing partitions are no longer held back and automation embeds them.
- ``evaluation`` is ``FOLLOWS_PATCHES`` (``eager``): it follows its embeddings.
- ``comparison`` is ``COMPARES_WHAT_EXISTS``: ``eager`` without "no input missing", since its inputs are the
  evaluations of *every* model partition and a model that cannot run here would otherwise block it for ever;
  it compares the evaluations that exist (once there is one), again when another one lands.
- Nothing upstream of the patches is automated (the cohort and DICOM come from IDC, over the network, when
  a person asks), and the opt-in assets (``radassets/opt_in`` tag, e.g. ``seed_stability``) have no condition.

``ModelRunsHere`` reads the registry and the weights cache, so the sensor evaluates it in the code location's
process (``use_user_code_server``), as Dagster requires of a condition written in Python.
"""

from __future__ import annotations

import warnings

from dagster import (AssetKey, AssetSelection, AutomationCondition, AutomationConditionSensorDefinition,
                     AutomationContext, AutomationResult, BetaWarning, DefaultSensorStatus, MultiPartitionsDefinition)

MODEL_DIMENSION = "model"


class ModelRunsHere(AutomationCondition[AssetKey]):
    """True for the (dataset version × model) partitions whose model can run here without a download
    (``radassets.models.pipeline.runnable_here``: radiomics, an untrained network, weights in the cache)."""

    @property
    def description(self) -> str:
        return "the model runs here with no download"

    @property
    def name(self) -> str:
        return "model_runs_here"

    def evaluate(self, context: AutomationContext) -> AutomationResult:
        from radassets.models.pipeline import default_models
        from radassets.settings import Settings

        settings = Settings.load()  # read now: a model added or weights downloaded since the last tick count
        runnable, _ = default_models(settings.layout().weights_dir(), settings.resolved_models_dir(),
                                     settings.resolved_data_dir())
        partitions = context.partitions_def
        assert isinstance(partitions, MultiPartitionsDefinition), "ModelRunsHere is for (… × model) partitions"
        keys = {key for key in context.candidate_subset.expensively_compute_partition_keys()
                if partitions.get_partition_key_from_str(key).keys_by_dimension[MODEL_DIMENSION] in runnable}
        return AutomationResult(context, context.candidate_subset.compute_intersection_with_partition_keys(keys))


FOLLOWS_PATCHES = AutomationCondition.eager()
_RUNS_HERE = ModelRunsHere()
# Eager's triggers ("newly missing", "an input updated") fire only for what changes after the sensor's first
# tick, so a partition already missing then (a model added before `make ui` started, or whose weights arrived
# later) is requested by the second branch: missing, its patches there, nothing in progress, not failed before
# (a failed partition is not retried until a person asks), and the model runs here.
_MISSING_AND_READY = (AutomationCondition.missing() & ~AutomationCondition.any_deps_missing()
                      & ~AutomationCondition.any_deps_in_progress() & ~AutomationCondition.in_progress()
                      & ~AutomationCondition.execution_failed()).with_label("missing, inputs ready, not failed")
EMBEDS_WHAT_RUNS_HERE = ((AutomationCondition.eager() | _MISSING_AND_READY) & _RUNS_HERE).with_label(
    "eager or missing, model runs here")
COMPARES_WHAT_EXISTS = (
    AutomationCondition.eager().without(~AutomationCondition.any_deps_missing())
    & AutomationCondition.any_deps_match(~AutomationCondition.missing())  # at least one evaluation to compare
).with_label("eager, some inputs missing")

# Explicit, and running by default: Dagster's implicit ``default_automation_condition_sensor`` would start
# stopped, and a person would have to find and turn it on in the UI before anything followed.
with warnings.catch_warnings():  # use_user_code_server is a beta parameter: said once, here, not on every command
    warnings.simplefilter("ignore", BetaWarning)
    automation_sensor = AutomationConditionSensorDefinition(
        "automation", target=AssetSelection.all(), default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30, use_user_code_server=True,
        description="Materializes the models' assets of every dataset version whose patches exist, for every model "
                    "in the registry that runs here with no download (radassets.defs.automation).")
