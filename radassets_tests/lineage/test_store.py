"""The lineage store without Dagster: events in, rows out; a merge that dies or meets a bad file loses and
duplicates nothing; writers in several processes at once lose no row."""

from __future__ import annotations

import multiprocessing
import shutil
import uuid

import pytest

from radassets.lineage import store


def run_events(asset: str, partition: str, version: str, inputs=(), items=(), fail: str | None = None) -> list[dict]:
    run = {"run_id": str(uuid.uuid4()), "dagster_run_id": str(uuid.uuid4()), "partition_key": partition,
           "partition": {"dataset_version": partition}, "code_version": f"{asset}-1", "git_commit": "abc"}
    job = {"namespace": "radassets", "name": asset}
    start = {"event_type": "START", "run": run, "job": job}
    if fail:
        return [start, {"event_type": "FAIL", "run": {**run, "error": fail}, "job": job, "inputs": list(inputs)}]
    output = {"asset": asset, "partition_key": partition, "version": version, "items": list(items),
              "facets": {"settings": {"content": {"spec": {"size": 64}}}}}
    return [start, {"event_type": "COMPLETE", "run": run, "job": job, "inputs": list(inputs), "outputs": [output]}]


def counts(root) -> dict[str, int]:
    with store.reader(root) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("events", "runs", "dataset_versions", "run_inputs", "run_outputs", "items", "item_parents")}


def test_events_become_rows_with_the_chain_of_versions(tmp_path):
    seeds = [{"item_id": f"seed:{i}", "kind": "seed", "name": str(i), "parents": [f"volume:{i}"]} for i in range(3)]
    patches = [{"item_id": f"patch:{i}", "kind": "patch", "name": str(i), "parents": [f"seed:{i}"]} for i in range(3)]
    for event in (run_events("seeds", "v1", "s1", items=seeds)
                  + run_events("patches", "v1", "p1", inputs=[{"asset": "seeds", "partition_key": "v1", "version": "s1"}],
                               items=patches)
                  + run_events("embeddings", "v1", "", fail="Failure: weights not in the cache")):
        store.write_event(event, tmp_path)
    assert store.merge(tmp_path) == 6
    assert counts(tmp_path) == {"events": 6, "runs": 3, "dataset_versions": 2, "run_inputs": 1, "run_outputs": 2,
                                "items": 6, "item_parents": 6}
    with store.reader(tmp_path) as con:
        assert con.execute("SELECT job_name, status, error IS NOT NULL FROM runs ORDER BY job_name").fetchall() == [
            ("embeddings", "FAIL", True), ("patches", "COMPLETE", False), ("seeds", "COMPLETE", False)]
        # The patches version was produced by a run that read the seeds version.
        assert con.execute("SELECT i.version_id FROM dataset_versions v JOIN run_inputs i ON i.run_id = v.produced_by "
                           "WHERE v.version_id = 'patches[v1]@p1'").fetchall() == [("seeds[v1]@s1",)]
        assert con.execute("SELECT started_at < ended_at FROM runs WHERE job_name = 'seeds'").fetchone() == (True,)
    assert not list((tmp_path / "events" / "pending").iterdir())


def test_a_merge_killed_before_moving_its_files_ingests_nothing_twice(tmp_path):
    for event in run_events("seeds", "v1", "s1", items=[{"item_id": "seed:0", "kind": "seed"}]):
        store.write_event(event, tmp_path)
    store.merge(tmp_path)
    before = counts(tmp_path)
    for path in (tmp_path / "events" / "merged").iterdir():  # as if the merge died after its commits
        shutil.copy(path, tmp_path / "events" / "pending" / path.name)
    assert store.merge(tmp_path) == 0
    assert counts(tmp_path) == before
    assert not (tmp_path / "events" / "rejected").exists()  # skipped as already in, not refused
    assert len(list((tmp_path / "events" / "merged").iterdir())) == 2


def test_a_version_seen_first_as_an_input_gets_its_producer(tmp_path):
    seeds = run_events("seeds", "v1", "s1")
    patches = run_events("patches", "v1", "p1", inputs=[{"asset": "seeds", "partition_key": "v1", "version": "s1"}])
    for event in patches + seeds:  # the seeds run recorded after the patches run that read its output
        store.write_event(event, tmp_path)
    store.merge(tmp_path)
    with store.reader(tmp_path) as con:
        producer = con.execute("SELECT r.job_name FROM dataset_versions v JOIN runs r ON r.run_id = v.produced_by "
                               "WHERE v.version_id = 'seeds[v1]@s1'").fetchone()
    assert producer == ("seeds",)


def test_the_latest_run_describes_a_version_made_again(tmp_path):
    """Same inputs under new code can give the same version id (a lineage id hashes the inputs): the version
    then describes the run whose files are on disk now, and every run that wrote it stays in run_outputs."""
    first = run_events("evaluation", "v1", "lid", items=[{"item_id": "figure:lid/km.png", "kind": "figure",
                                                           "sha256": "old", "parents": ["report:lid"]}])
    again = run_events("evaluation", "v1", "lid", items=[{"item_id": "figure:lid/km.png", "kind": "figure",
                                                           "sha256": "new", "parents": ["report:lid", "report:lid"]}])
    again[1]["run"]["code_version"] = "evaluation-2"
    for event in first + again:
        store.write_event(event, tmp_path)
    store.merge(tmp_path)
    with store.reader(tmp_path) as con:
        assert con.execute("SELECT sha256 FROM items").fetchall() == [("new",)]
        assert con.execute("SELECT count(*) FROM item_parents").fetchone() == (1,)  # listed twice, stored once
        assert con.execute("SELECT r.run_id FROM dataset_versions v JOIN runs r ON r.run_id = v.produced_by"
                           ).fetchone() == (again[0]["run"]["run_id"],)
        assert con.execute("SELECT count(*) FROM run_outputs").fetchone() == (2,)


def _merge_killed(root: str, where: str, at: int) -> None:
    """Merge, SIGKILLed at the ``at``-th call of ``store.<where>``: ``ingest`` (inside the batch's transaction) or
    ``_move`` (after its commit, among the moves): a crash at an exact point, not one raced by a timer."""
    import os
    import signal

    real, calls = getattr(store, where), []

    def then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(store, where, then_die)
    store.merge(root)


@pytest.mark.parametrize("where", ["ingest", "_move"])
def test_a_merge_killed_mid_way_leaves_the_store_whole(tmp_path, where):
    n_events, n_items = 8, 2_000
    for i in range(n_events // 2):
        for event in run_events("seeds", f"v{i}", f"s{i}", items=[{"item_id": f"seed:{k}", "kind": "seed",
                                                                    "parents": [f"volume:{k}"]} for k in range(n_items)]):
            store.write_event(event, tmp_path)
    merger = multiprocessing.get_context("spawn").Process(target=_merge_killed, args=(str(tmp_path), where, 4))
    merger.start()
    merger.join(timeout=120)
    merged = tmp_path / "events" / "merged"
    assert merger.exitcode == -9  # SIGKILLed: in the transaction (nothing moved), or after 3 of the 8 moves
    assert len(list(merged.glob("*.json"))) == (0 if where == "ingest" else 3)
    store.merge(tmp_path)
    c = counts(tmp_path)
    assert (c["events"], c["runs"], c["items"], c["item_parents"]) == (n_events, n_events // 2,
                                                                         n_events // 2 * n_items, n_events // 2 * n_items)
    assert len(list(merged.glob("*.json"))) == n_events
    assert not (tmp_path / "events" / "rejected").exists()


def test_a_bad_event_file_is_set_aside_whole_and_the_others_proceed(tmp_path):
    good = run_events("seeds", "v1", "s1")
    bad = run_events("patches", "v1", "p1")
    del bad[1]["outputs"][0]["version"]  # fails after the run and job rows of this event were written
    for event in good + bad:
        store.write_event(event, tmp_path)
    (tmp_path / "events" / "pending" / "0-truncated.json").write_text('{"event_type": "COMPL')  # half a file
    assert store.merge(tmp_path) == 3  # both starts and the good end
    rejected = sorted(p.name for p in (tmp_path / "events" / "rejected").iterdir())
    assert len(rejected) == 4 and sum(name.endswith(".reason.txt") for name in rejected) == 2
    reasons = " ".join(p.read_text() for p in (tmp_path / "events" / "rejected").glob("*.reason.txt"))
    assert "JSONDecodeError" in reasons and "KeyError: 'version'" in reasons
    with store.reader(tmp_path) as con:  # the bad end event left no row: the patches run is still at its start
        assert con.execute("SELECT job_name, status FROM runs ORDER BY job_name").fetchall() == [
            ("patches", "START"), ("seeds", "COMPLETE")]
        assert con.execute("SELECT count(*) FROM run_outputs").fetchone()[0] == 1


def _writer(root: str, n: int) -> None:
    for i in range(n):
        for event in run_events("seeds", f"v{i}", f"s{uuid.uuid4().hex}",
                                items=[{"item_id": f"seed:{k}", "kind": "seed"} for k in range(20)]):
            store.write_event(event, root)
        store.merge(root, wait=False)  # as the recorder does: never waits for the lock


def test_concurrent_writers_lose_no_rows(tmp_path):
    processes = [multiprocessing.get_context("spawn").Process(target=_writer, args=(str(tmp_path), 10))
                 for _ in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
        assert p.exitcode == 0
    c = counts(tmp_path)
    assert (c["events"], c["runs"], c["run_outputs"], c["items"]) == (80, 40, 40, 800)
    assert not (tmp_path / "events" / "rejected").exists()


def test_reading_an_empty_store_is_a_clear_error(tmp_path):
    with pytest.raises(store.LineageError, match="no lineage recorded yet"), store.reader(tmp_path):
        pass


def test_unknown_event_types_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="event type must be one of"):
        store.write_event({"event_type": "RUNNING", "run": {}, "job": {}}, tmp_path)
    assert not (tmp_path / "events").exists()
