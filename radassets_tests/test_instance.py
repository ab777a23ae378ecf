"""The Dagster instance configured by dagster.yaml: SQLite, queued runs, a gpu pool of 1, run monitoring."""

from __future__ import annotations

import shutil

from dagster import DagsterInstance
from dagster._core.storage.runs import SqliteRunStorage

from radassets_tests.conftest import REPO


def test_dagster_yaml_configures_the_instance(tmp_path):
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        assert isinstance(instance.run_storage, SqliteRunStorage)
        instance.get_runs()
        assert (tmp_path / "history" / "runs.db").is_file()  # under DAGSTER_HOME, outside git
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        gpu = instance.event_log_storage.get_concurrency_info("gpu")
        assert gpu.limit == 1
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
    finally:
        instance.dispose()
