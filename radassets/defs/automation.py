"""Declarative automation: what the daemon's default automation sensor (``make ui``) materializes by itself.

- ``embeddings`` and ``evaluation`` are ``FOLLOWS_PATCHES`` (Dagster's ``eager``): a (dataset version × model)
  partition runs when it becomes missing (a model added to the registry: the sensor adds its ``model``
  partition, and every dataset version gets a new, missing partition) or when what it depends on is updated
  (a dataset version's patches, new or rebuilt), once none of its inputs is missing or in progress. So a new
  model is embedded and evaluated for every dataset version whose patches exist, and a dataset version whose
  patches are materialized gets its models' embeddings and evaluations, with no backfill.
- ``comparison`` is ``COMPARES_WHAT_EXISTS``: ``eager`` without "no input missing", since its inputs are the
  evaluations of *every* model partition and a model that cannot run here (weights not downloaded) would
  otherwise block it for ever; it compares the evaluations that exist, again when another one lands.
- Nothing upstream of the patches is automated (the cohort and DICOM come from IDC, over the network, when
  a person asks), and the opt-in assets (``radassets/opt_in`` tag, e.g. ``seed_stability``) have no condition.
"""

from dagster import AssetSelection, AutomationCondition, AutomationConditionSensorDefinition, DefaultSensorStatus

FOLLOWS_PATCHES = AutomationCondition.eager()
COMPARES_WHAT_EXISTS = AutomationCondition.eager().without(~AutomationCondition.any_deps_missing()).with_label(
    "eager, some inputs missing")

# Explicit, and running by default: Dagster's implicit ``default_automation_condition_sensor`` would start
# stopped, and a person would have to find and turn it on in the UI before anything followed.
automation_sensor = AutomationConditionSensorDefinition(
    "automation", target=AssetSelection.all(), default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Materializes the models' assets of every dataset version whose patches exist, for every model in "
                "the registry (radassets.defs.automation).")
