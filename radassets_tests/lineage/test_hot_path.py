"""What ``@recorded`` costs a step: a materialization writes its event files and never opens DuckDB; a backlog of
pending files (runs no command follows, e.g. launched from the UI) is merged by the next step."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import duckdb
import pytest
from dagster import materialize

from radassets import profile
from radassets.definitions import defs
from radassets.defs import lineage as recorder
from radassets.lineage import store
from radassets_tests.conftest import SMALL_DEMO_SPEC
from radassets_tests.lineage.test_recording import home  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


def test_a_materialization_writes_its_events_and_does_not_open_duckdb(home, small_demo, monkeypatch):  # noqa: F811
    home.mkdir(parents=True)
    (home / "demo").symlink_to(small_demo)
    monkeypatch.setenv("RADASSETS_DEMO_SPEC", json.dumps(SMALL_DEMO_SPEC))
    real, opened = duckdb.connect, []

    def connect(database: str = ":memory:", *args, **kwargs):  # the step's own in-memory queries are its business
        if str(database).endswith(store.database_path(Path()).name):
            opened.append(database)
            raise AssertionError("the lineage store was opened in a step")
        return real(database, *args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", connect)
    phases = home.parent / "phases.jsonl"
    profile.enable(phases)  # what bench/demo.py reads per asset (off otherwise; nothing of it in the outputs)
    try:
        result = materialize(list(defs.assets), selection=["cohort"], resources=defs.resources,
                             partition_key="demo_v1", raise_on_error=False)
    finally:
        profile.enable(None)
    assert result.success
    assert not opened
    lines = [json.loads(line) for line in phases.read_text().splitlines()]
    assert [(p["phase"], p["asset"], p["partition"]) for p in lines] == [
        ("lineage: inputs and start event", "cohort", "demo_v1"), ("asset function", "cohort", "demo_v1"),
        ("lineage: items and end event", "cohort", "demo_v1")]
    pending = home / "lineage" / "events" / "pending"
    assert len(list(pending.glob("*.json"))) == 2  # its START and COMPLETE, waiting for a merge
    assert not store.database_path(home / "lineage").exists()
    monkeypatch.setattr(duckdb, "connect", real)
    with store.reader(home / "lineage") as con:  # readers merge first
        assert con.execute("SELECT job_name, status FROM runs").fetchall() == [("cohort", "COMPLETE")]
        assert con.execute("SELECT count(*) FROM items WHERE kind = 'series'").fetchone()[0] == 16
    assert not list(pending.iterdir())


def test_a_backlog_is_many_files_or_an_old_one(tmp_path, monkeypatch):
    events = tmp_path / "events"
    assert not recorder._backlog(events)  # no folder yet
    (events / "pending").mkdir(parents=True)
    assert not recorder._backlog(events)
    monkeypatch.setattr(recorder, "MERGE_BACKLOG", 3)
    for i in range(3):
        (events / "pending" / f"{i}.json").write_text("{}")
    for i in range(10):  # a step's items chunks (its workers write one per task) are not a backlog
        (events / "pending" / f"{i}{store.CHUNK_SUFFIX}").write_text("{}")
    assert not recorder._backlog(events)
    (events / "pending" / "3.json").write_text("{}")
    assert recorder._backlog(events)
    for path in (events / "pending").iterdir():
        if path.name != "0.json":
            path.unlink()
    [old] = (events / "pending").iterdir()
    assert not recorder._backlog(events)
    then = time.time() - recorder.MERGE_AFTER_S - 1
    os.utime(old, (then, then))
    assert recorder._backlog(events)
