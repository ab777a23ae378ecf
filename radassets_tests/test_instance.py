"""The Dagster instance configured by dagster.yaml: SQLite, queued runs, a gpu pool of 1, run monitoring; and the
deployment's deploy/dagster-postgres.yaml, the same but for its storage (run against PostgreSQL:
radassets_tests/test_postgres_instance.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import yaml
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


def test_the_postgres_deployment_differs_from_the_default_only_in_storage():
    default = yaml.safe_load((REPO / "dagster.yaml").read_text())
    deployment = yaml.safe_load((REPO / "deploy" / "dagster-postgres.yaml").read_text())
    assert "storage" not in default  # SQLite under DAGSTER_HOME stays the embedded default
    assert deployment.pop("storage") == {"postgres": {"postgres_url": {"env": "RADASSETS_DAGSTER_PG_URL"}}}
    assert deployment == default  # queue, pools, run monitoring: kept in step


def test_a_postgres_url_without_the_psycopg2_driver_is_refused(tmp_path):
    # SQLAlchemy 2.1 opens postgresql:// with psycopg 3, which dagster-postgres does not install. The engine is
    # created (and its driver imported) before any connection: no server is needed to see the refusal.
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    done = subprocess.run([sys.executable, "-m", "radassets.cli", "pipeline", "run", "demo_v1", "--select",
                           "key:cohort"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DAGSTER_HOME": str(home), "RADASSETS_HOME": str(tmp_path / "home"),
                               "RADASSETS_DAGSTER_PG_URL": "postgresql://user@127.0.0.1:9/db"})
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("radassets: error: ") and "postgres_url" in line and "postgresql+psycopg2://" in line
