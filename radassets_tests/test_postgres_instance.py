"""The Dagster instance on PostgreSQL (deploy/dagster-postgres.yaml) against a real server on loopback.

The command line runs as a user runs it (a subprocess, with its own DAGSTER_HOME and RADASSETS_HOME), and what it
leaves is read from PostgreSQL with psycopg2, not through Dagster: the runs, their events and the gpu pool's
limit are in the database, and nothing was written to SQLite under DAGSTER_HOME.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml
from dagster import DagsterEventType

from radassets_tests.conftest import REPO, SMALL_DEMO_SPEC
from radassets_tests.services import pg_rows, postgres_server

pytestmark = [pytest.mark.integration, pytest.mark.services]


def test_a_pipeline_run_records_its_run_and_events_in_postgres(tmp_path, small_demo):
    dagster_home, home = tmp_path / "dagster_home", tmp_path / "home"
    dagster_home.mkdir()
    home.mkdir()
    (home / "demo").symlink_to(small_demo)
    shutil.copy(REPO / "deploy" / "dagster-postgres.yaml", dagster_home / "dagster.yaml")
    with postgres_server() as pg:
        env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "RADASSETS_HOME": str(home),
               "RADASSETS_DEMO_SPEC": json.dumps(SMALL_DEMO_SPEC), "RADASSETS_DAGSTER_PG_URL": pg.url}
        # As `make install` does for the SQLite instance: the pool limit is the instance's, here the database's.
        done = subprocess.run([str(Path(sys.executable).parent / "dagster"), "instance", "concurrency", "set", "gpu",
                               "1"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        done = subprocess.run([sys.executable, "-m", "radassets.cli", "pipeline", "run", "demo_v1", "--select",
                               "key:cohort"], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

        runs = pg_rows(pg.dsn, "SELECT run_id, status FROM runs")
        assert [status for _, status in runs] == ["SUCCESS"], runs
        [(run_id, _)] = runs
        events = pg_rows(pg.dsn, "SELECT dagster_event_type, step_key, asset_key, partition FROM event_logs "
                               "WHERE run_id = %s ORDER BY id", (run_id,))
        # The column holds the events' stored names: a run's start and success keep their legacy names there
        # (DagsterEventType.RUN_START.value is "PIPELINE_START").
        types = [event_type for event_type, *_ in events]
        assert DagsterEventType.RUN_START.value in types and DagsterEventType.RUN_SUCCESS.value in types, types
        assert ("STEP_SUCCESS", "cohort") in {(t, step) for t, step, _, _ in events}, events
        assert ("ASSET_MATERIALIZATION", json.dumps(["cohort"]), "demo_v1") in {
            (t, asset, partition) for t, _, asset, partition in events}, events
        # Set by the command above, not dagster.yaml's default_limit (also 1).
        assert pg_rows(pg.dsn, 'SELECT "limit", using_default_limit FROM concurrency_limits '
                             "WHERE concurrency_key = 'gpu'") == [(1, False)]

    # Stopped by its pid, its folder removed.
    assert not psutil.pid_exists(pg.pid) and not pg.root.exists()
    # Nothing in the SQLite files the default instance would have written.
    assert not (dagster_home / "history").exists(), sorted(p.name for p in dagster_home.rglob("*"))
    # The repository's dagster.yaml stays on SQLite, the embedded default.
    assert "storage" not in yaml.safe_load((REPO / "dagster.yaml").read_text())
