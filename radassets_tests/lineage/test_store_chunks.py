"""Items written by many workers as ITEMS chunks, and an event folder on an object store (moto's S3 server, through
s3fs; DuckDB reads the chunks through fsspec): every item reaches its run's output once, in whatever order the
chunks and the run's end are merged, and nothing is lost with many writers."""

from __future__ import annotations

import multiprocessing
import uuid

import pytest
from upath import UPath

from radassets.layout import as_path
from radassets.lineage import store
from radassets_tests.lineage.test_store import run_events


def items(run: str, n: int, start: int = 0) -> list[dict]:
    return [{"item_id": f"volume:{run}-{k}", "kind": "volume", "name": str(k), "sha256": f"{k:064x}",
             "parents": [f"dicom:{k}"], "attributes": {"PatientID": f"P{k}"}} for k in range(start, start + n)]


def rows(root, events=None) -> list[tuple]:
    with store.reader(root, events=events) as con:
        return con.execute("SELECT version_id, item_id, status FROM items ORDER BY item_id").fetchall()


def test_chunks_merged_before_and_after_the_runs_end_all_join_its_output(tmp_path):
    events = tmp_path / "events"
    start, complete = run_events("volumes", "v1", "c1")
    run_id = start["run"]["run_id"]
    store.write_event(start, tmp_path)
    store.write_items(run_id, "volumes", items("a", 3), events)
    assert store.merge(tmp_path) == 2  # the start and a chunk: the chunk waits for the run's output
    with store.reader(tmp_path) as con:
        assert con.execute("SELECT count(*) FROM items").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM item_chunks WHERE attached_to IS NULL").fetchone() == (1,)
    store.write_event(complete, tmp_path)
    store.merge(tmp_path)
    store.write_items(run_id, "volumes", items("a", 2, start=3), events)  # merged after the end (another clock)
    found = rows(tmp_path)
    assert [r[1] for r in found] == [f"volume:a-{k}" for k in range(5)]
    assert {r[0] for r in found} == {"volumes[v1]@c1"}
    with store.reader(tmp_path) as con:
        assert con.execute("SELECT count(*) FROM item_parents").fetchone() == (5,)
        assert con.execute("SELECT count(*) FROM events WHERE event_type = 'ITEMS'").fetchone() == (2,)
    assert not list((events / "pending").iterdir())


def test_a_chunk_written_twice_by_a_retried_task_adds_no_item_and_an_aborted_runs_chunks_join_nothing(tmp_path):
    events = tmp_path / "events"
    start, complete = run_events("volumes", "v1", "c1")
    aborted, _ = run_events("volumes", "v1", "c0")
    for event in (aborted, start):
        store.write_event(event, tmp_path)
    store.write_items(aborted["run"]["run_id"], "volumes", items("killed", 2), events)
    for _ in range(2):  # the worker died after writing its chunk, and the retry wrote it again
        store.write_items(start["run"]["run_id"], "volumes", items("a", 4), events)
    store.write_event(complete, tmp_path)
    assert [r[1] for r in rows(tmp_path)] == [f"volume:a-{k}" for k in range(4)]


def test_a_rebuild_from_the_merged_files_gives_the_same_items(tmp_path):
    events = tmp_path / "events"
    start, complete = run_events("volumes", "v1", "c1")
    store.write_event(start, tmp_path)
    store.write_items(start["run"]["run_id"], "volumes", items("a", 7), events)
    store.write_event(complete, tmp_path)
    before = rows(tmp_path)
    report = store.rebuild(tmp_path)
    assert report.events == 3 and not report.set_aside
    assert rows(tmp_path) == before and len(before) == 7


def test_a_bad_chunk_is_set_aside_and_the_others_are_ingested(tmp_path):
    events = tmp_path / "events"
    start, complete = run_events("volumes", "v1", "c1")
    for event in (start, complete):
        store.write_event(event, tmp_path)
    store.write_items(start["run"]["run_id"], "volumes", items("a", 2), events)
    (events / "pending" / f"0-half{store.CHUNK_SUFFIX}").write_text('{"event_id": "x", "ite')
    store.merge(tmp_path)
    assert len(rows(tmp_path)) == 2
    rejected = sorted(p.name for p in (events / "rejected").iterdir())
    assert rejected == [f"0-half{store.CHUNK_SUFFIX}", f"0-half{store.CHUNK_SUFFIX}.reason.txt"]


def test_a_chunk_whose_rows_cannot_be_written_is_set_aside_alone_from_its_batch(tmp_path):
    events = tmp_path / "events"
    start, complete = run_events("volumes", "v1", "c1")
    for event in (start, complete):
        store.write_event(event, tmp_path)
    run_id = start["run"]["run_id"]
    store.write_items(run_id, "volumes", items("a", 2), events)
    bad = store.write_items(run_id, "volumes", items("b", 2), events)  # readable, but no run: fails when written
    bad.write_text(bad.read_text().replace(f'"run_id": "{run_id}"', '"run_id": null'))
    store.write_items(run_id, "volumes", items("c", 2), events)
    store.merge(tmp_path)
    assert [r[1] for r in rows(tmp_path)] == [f"volume:{w}-{k}" for w in "ac" for k in range(2)]
    assert sorted(p.name for p in (events / "rejected").glob("*.json")) == [bad.name]
    assert not list((events / "pending").iterdir())


def _worker(events: str, run_id: str, worker: int, chunks: int) -> None:
    folder = as_path(events)
    for c in range(chunks):
        store.write_items(run_id, "patches", items(f"w{worker}c{c}", 25), folder)


@pytest.mark.services  # moto's S3 server and three writer processes: with the services tests
def test_workers_on_an_object_store_lose_no_item(tmp_path, s3_root):
    """Three processes write chunks to the event folder on S3 at once while the run's own events are written and
    merged beside them; the database is local. Every one of the 3 × 5 × 25 items is there once."""
    events = as_path(s3_root) / "lineage" / "events"
    assert isinstance(events, UPath)
    start, complete = run_events("patches", "v1", "p1")
    run_id = start["run"]["run_id"]
    store.write_event(start, tmp_path, events=events)
    writers = [multiprocessing.get_context("spawn").Process(target=_worker, args=(str(events), run_id, w, 5))
               for w in range(3)]
    for w in writers:
        w.start()
    store.merge(tmp_path, events=events)  # while the workers write
    for w in writers:
        w.join(timeout=180)
        assert w.exitcode == 0
    store.write_event(complete, tmp_path, events=events)
    found = rows(tmp_path, events=events)
    assert len(found) == 3 * 5 * 25 == len({r[1] for r in found})
    assert {r[0] for r in found} == {"patches[v1]@p1"}
    assert not list((events / "pending").glob("*.json"))
    assert len(list((events / "merged").glob(f"*{store.CHUNK_SUFFIX}"))) == 15
    assert store.rebuild(tmp_path, events=events).events == 17


def test_an_event_folder_in_memory_is_read_through_fsspec(tmp_path):
    events = as_path(f"memory://lineage-{uuid.uuid4().hex}/events")
    start, complete = run_events("volumes", "v1", "c1")
    store.write_event(start, tmp_path, events=events)
    store.write_items(start["run"]["run_id"], "volumes", items("m", 3), events)
    store.write_event(complete, tmp_path, events=events)
    assert len(rows(tmp_path, events=events)) == 3
