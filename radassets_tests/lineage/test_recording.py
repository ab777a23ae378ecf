"""Recording through Dagster: every asset is wrapped; four materializations at once lose no row; a failed
materialization is recorded with its error; a run killed mid-way leaves the store consistent."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from dagster import DagsterInstance, MultiPartitionKey, materialize

from radassets.definitions import defs
from radassets.lineage import store
from radassets_tests.conftest import REPO, SMALL_DEMO_SPEC

pytestmark = pytest.mark.integration

MATERIALIZE = """
import sys
from dagster import DagsterInstance, materialize
from radassets.definitions import defs
keys = sys.argv[2].split(",")
result = materialize(list(defs.assets), instance=DagsterInstance.get(), selection=keys, resources=defs.resources,
                     partition_key=sys.argv[1] or None, raise_on_error=False)
sys.exit(0 if result.success else 1)
"""


def assert_consistent(con) -> None:
    """No half-records: outputs, versions and items only from completed runs; every parent row has its item."""
    checks = {
        "outputs of runs that did not complete": "SELECT count(*) FROM run_outputs o JOIN runs r USING (run_id) "
                                                 "WHERE r.status <> 'COMPLETE'",
        "versions without their run": "SELECT count(*) FROM dataset_versions v LEFT JOIN runs r ON r.run_id = "
                                      "v.produced_by WHERE v.produced_by IS NOT NULL AND r.run_id IS NULL",
        "items of versions nobody produced": "SELECT count(*) FROM items i JOIN dataset_versions v USING (version_id) "
                                             "WHERE v.produced_by IS NULL",
        "parents of unknown items": "SELECT count(*) FROM item_parents p LEFT JOIN items i USING (version_id, item_id) "
                                    "WHERE i.item_id IS NULL",
        "events of unknown runs": "SELECT count(*) FROM events e LEFT JOIN runs r USING (run_id) WHERE r.run_id IS NULL",
    }
    found = {name: con.execute(query).fetchone()[0] for name, query in checks.items()}
    assert not any(found.values()), found


@pytest.fixture
def home(tmp_path, monkeypatch):
    (tmp_path / "dagster").mkdir()
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster" / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("RADASSETS_HOME", str(tmp_path / "home"))
    with DagsterInstance.get() as instance:  # create Dagster's own databases once, before runs race to do it
        instance.get_run_records(limit=1)
    return tmp_path / "home"


def test_every_asset_is_recorded():
    unrecorded = [a.key.to_user_string() for a in defs.assets
                  if not getattr(a.op.compute_fn.decorated_fn, "radassets_recorded", False)]
    assert not unrecorded, f"assets without @recorded: {unrecorded}"


def test_four_materializations_at_once_lose_no_row(home):
    processes = [subprocess.Popen([sys.executable, "-c", MATERIALIZE, "", "hosny2018_figure2"], env=os.environ.copy(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(4)]
    for p in processes:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    with DagsterInstance.get() as instance:
        dagster_runs = {r.dagster_run.run_id for r in instance.get_run_records()}
    with store.reader(home / "lineage") as con:
        runs = con.execute("SELECT dagster_run_id, status FROM runs WHERE job_name = 'hosny2018_figure2'").fetchall()
        assert {r for r, _ in runs} == dagster_runs and len(runs) == 4
        assert {s for _, s in runs} == {"COMPLETE"}
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 8
        # The four runs wrote the same bytes: one version, produced by the first run that recorded it.
        assert con.execute("SELECT count(*) FROM dataset_versions").fetchone()[0] == 1
        assert con.execute("SELECT count(*) FROM run_outputs").fetchone()[0] == 4
        assert_consistent(con)
    assert not list((home / "lineage" / "events" / "pending").iterdir())
    assert not (home / "lineage" / "events" / "rejected").exists()


def test_a_failed_materialization_is_recorded_with_its_error(home):
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("model", ["radiomics"])
        result = materialize(list(defs.assets), instance=instance, selection=["evaluation"], resources=defs.resources,
                             partition_key=MultiPartitionKey({"dataset_version": "demo_v1", "model": "radiomics"}),
                             raise_on_error=False)
    assert not result.success
    with store.reader(home / "lineage") as con:
        row = con.execute("SELECT status, error, partition_key, partition FROM runs WHERE job_name = 'evaluation'").fetchone()
        assert row[0] == "FAIL" and "is missing; materialize the steps before 'evaluation' first" in row[1]
        assert json.loads(row[3]) == {"dataset_version": "demo_v1", "model": "radiomics"}
        assert con.execute("SELECT count(*) FROM run_outputs").fetchone()[0] == 0
        assert_consistent(con)


def test_a_run_killed_mid_way_leaves_the_store_consistent(home, small_demo, monkeypatch):
    home.mkdir(parents=True)
    (home / "demo").symlink_to(small_demo)
    monkeypatch.setenv("RADASSETS_DEMO_SPEC", json.dumps(SMALL_DEMO_SPEC))
    process = subprocess.Popen([sys.executable, "-c", MATERIALIZE, "demo_v1", "cohort,dicom,volumes"],
                               env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    events = home / "lineage" / "events"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:  # kill as soon as 'volumes' has started
            started = [p for p in events.glob("*/*.json") if '"name": "volumes"' in p.read_text(errors="ignore")]
            if started:
                break
            assert process.poll() is None, "the run ended before 'volumes' started"
            time.sleep(0.05)
        else:
            pytest.fail("'volumes' never started")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    with store.reader(home / "lineage") as con:
        runs = dict(con.execute("SELECT job_name, status FROM runs").fetchall())
        assert runs == {"cohort": "COMPLETE", "dicom": "COMPLETE", "volumes": "START"}
        assert con.execute("SELECT count(*) FROM items WHERE kind = 'series'").fetchone()[0] == 16
        assert con.execute("SELECT count(*) FROM items WHERE kind IN ('volume', 'mask')").fetchone()[0] == 0
        assert_consistent(con)
    assert not (events / "rejected").exists()


def test_the_workers_record_the_items_of_volumes_and_patches(home, small_demo, monkeypatch):
    """With a pool of two processes, each task's worker writes its items as a chunk; the COMPLETE events of volumes
    and patches carry none; the store holds, for each, exactly the items read back from the step's own tables."""
    from radassets.layout import Layout
    from radassets.lineage.items import output_record

    home.mkdir(parents=True)
    (home / "demo").symlink_to(small_demo)
    monkeypatch.setenv("RADASSETS_DEMO_SPEC", json.dumps(SMALL_DEMO_SPEC))
    monkeypatch.setenv("RADASSETS_WORKERS", "2")
    with DagsterInstance.get() as instance:
        result = materialize(list(defs.assets), instance=instance, resources=defs.resources, partition_key="demo_v1",
                             selection=["cohort", "dicom", "volumes", "seeds", "patches"])
    assert result.success
    store.merge(home / "lineage")  # what the command or a reader does (the steps leave their events pending)
    merged = [json.loads(p.read_text()) for p in sorted((home / "lineage" / "events" / "merged").glob("*.json"))]
    chunks = [e for e in merged if e["event_type"] == "ITEMS"]
    assert {c["job_name"] for c in chunks} == {"volumes", "patches"}
    for event in merged:
        if event["event_type"] == "COMPLETE" and event["job"]["name"] in ("volumes", "patches"):
            assert event["outputs"][0]["items"] == []

    def canonical(items):
        return sorted(json.dumps({**i, "parents": sorted(i.get("parents", []))}, sort_keys=True, default=str)
                      for i in items)

    with store.reader(home / "lineage") as con:
        assert_consistent(con)
        for asset in ("volumes", "patches"):
            rows = con.execute(
                "SELECT i.item_id, i.kind, i.name, i.status, i.sha256, i.path, i.attributes, "
                "list(p.parent_id ORDER BY p.parent_id) FROM items i JOIN dataset_versions v USING (version_id) "
                "JOIN datasets d USING (dataset_name) LEFT JOIN item_parents p USING (version_id, item_id) "
                "WHERE d.asset = ? GROUP BY ALL", [asset]).fetchall()
            stored = [{"item_id": r[0], "kind": r[1], "name": r[2], "status": r[3], "sha256": r[4], "path": r[5],
                       "attributes": json.loads(r[6]), "parents": [p for p in r[7] if p]} for r in rows]
            _, from_tables = output_record(Layout(home), asset, {"dataset_version": "demo_v1"})
            expected = [{"status": "ok", "sha256": None, "path": None, **i} for i in from_tables]
            assert canonical(stored) == canonical(expected) and stored, asset
