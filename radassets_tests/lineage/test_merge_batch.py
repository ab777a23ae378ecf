"""The batched merge: all pending event files in one transaction, with the same rows as ingesting them one by one;
a bad file rejected alone; a merge killed after its commit ingests nothing twice; the schema's DDL only for a store
that lacks it."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import duckdb

from radassets.lineage import store
from radassets_tests.lineage.test_store import _merge_killed, run_events

TABLES = ("events", "jobs", "runs", "datasets", "dataset_versions", "run_inputs", "run_outputs", "items",
          "item_parents", "item_chunks")


def dump(root: Path) -> dict[str, list[tuple]]:
    """Every table's rows, sorted; without ``events.merged_at`` (the time of the merge)."""
    with store.reader(root) as con:
        out = {}
        for table in TABLES:
            columns = [c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE "
                                                 "table_name = ? ORDER BY ordinal_position", [table]).fetchall()
                       if c != "merged_at"]
            out[table] = sorted(con.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall(), key=repr)
        return out


def study(root: Path) -> None:
    """Events of a small chain: an input seen before its producer, a version made twice (its latest items count), and
    a failed run."""
    seeds = [{"item_id": f"seed:{i}", "kind": "seed", "parents": [f"volume:{i}"]} for i in range(5)]
    s1 = {"asset": "seeds", "partition_key": "v1", "version": "s1"}
    events = (run_events("patches", "v1", "p1", inputs=[s1], items=[{"item_id": "patch:0", "kind": "patch",
                                                                     "parents": ["seed:0"]}])
              + run_events("seeds", "v1", "s1", items=seeds)
              + run_events("seeds", "v1", "s1", items=seeds[:3])  # the same version made again: its latest items
              + run_events("embeddings", "v1", "", inputs=[s1], fail="Failure: no weights"))
    for event in events:
        store.write_event(event, root)


def one_by_one(root: Path) -> None:
    """The merge as it was: each pending file in its own transaction (``_ingest_file``, as ``rebuild`` does)."""
    folder = root / "events"
    con = store._connect(root)
    try:
        for path in sorted((folder / "pending").glob("*.json")):
            store._ingest_file(con, folder, path)
    finally:
        con.close()


def twin(root: Path, tmp_path: Path, name: str) -> Path:
    """A copy of ``root``'s pending event files, to merge another way."""
    other = tmp_path / name
    shutil.copytree(root / "events" / "pending", other / "events" / "pending")
    return other


def test_a_batch_gives_the_rows_of_one_file_at_a_time_and_of_a_rebuild(tmp_path):
    root = tmp_path / "batch"
    study(root)
    reference = twin(root, tmp_path, "one_by_one")
    assert store.merge(root) == 8
    one_by_one(reference)
    assert dump(root) == dump(reference)
    report = store.rebuild(root)
    assert report.events == 8 and not report.set_aside
    assert dump(root) == dump(reference)


def test_a_batch_with_one_bad_file_rejects_that_file_only(tmp_path):
    root = tmp_path / "batch"
    study(root)
    pending = sorted((root / "events" / "pending").glob("*.json"))
    assert len(pending) == 8
    bad = pending[3]  # in the middle of the batch: its rows fail after earlier files' rows were written
    event = json.loads(bad.read_text())
    del event["run"]["run_id"]
    bad.write_text(json.dumps(event))
    (root / "events" / "pending" / "1-truncated.json").write_text('{"event_type": "COMPL')  # not even JSON
    reference = twin(root, tmp_path, "good_only")
    (reference / "events" / "pending" / bad.name).unlink()
    (reference / "events" / "pending" / "1-truncated.json").unlink()
    assert store.merge(root) == 7
    rejected = root / "events" / "rejected"
    assert sorted(p.name for p in rejected.glob("*.json")) == sorted(["1-truncated.json", bad.name])
    assert "KeyError: 'run_id'" in (rejected / f"{bad.name}.reason.txt").read_text()
    assert "JSONDecodeError" in (rejected / "1-truncated.json.reason.txt").read_text()
    assert not list((root / "events" / "pending").iterdir())
    store.merge(reference)
    assert dump(root) == dump(reference)


def test_a_batch_killed_between_its_commit_and_its_moves_ingests_nothing_twice(tmp_path):
    root = tmp_path / "killed"
    study(root)
    reference = twin(root, tmp_path, "whole")
    merger = multiprocessing.get_context("spawn").Process(target=_merge_killed, args=(str(root), "_move", 2))
    merger.start()
    merger.join(timeout=120)
    assert merger.exitcode == -9
    assert len(list((root / "events" / "merged").glob("*.json"))) == 1  # committed, 1 of 8 files moved
    assert store.merge(root) == 0  # the other 7 are moved, none ingested again
    assert len(list((root / "events" / "merged").glob("*.json"))) == 8
    store.merge(reference)
    assert dump(root) == dump(reference)


def test_the_schema_ddl_runs_only_for_a_store_that_lacks_it(tmp_path, monkeypatch):
    path = store.database_path(tmp_path)
    con = duckdb.connect(str(path))  # a store whose creation was cut short: schema_info and one table only
    con.execute(store.SCHEMA.split(";")[0])
    con.execute("INSERT INTO schema_info VALUES (?)", [store.SCHEMA_VERSION])
    con.close()
    statements: list[str] = []
    real = duckdb.connect
    monkeypatch.setattr(duckdb, "connect", lambda *args, **kwargs: _Spy(real(*args, **kwargs), statements))
    con = store._open(path)  # the missing tables are created
    try:
        assert store._has_schema(con)
        assert {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()} == set(store.TABLES)
        assert con.execute("SELECT version FROM schema_info").fetchall() == [(store.SCHEMA_VERSION,)]
    finally:
        con.close()
    assert store.SCHEMA in statements
    statements.clear()
    store._open(path).close()  # a whole store: no DDL
    assert statements and not [s for s in statements if "CREATE" in s.upper()], statements


class _Spy:
    """A connection that records the statements it executes."""

    def __init__(self, con: duckdb.DuckDBPyConnection, statements: list[str]):
        self.con, self.statements = con, statements

    def execute(self, sql: str, *args):
        self.statements.append(sql)
        return self.con.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self.con, name)
