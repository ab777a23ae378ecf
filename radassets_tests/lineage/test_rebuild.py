"""A lineage.duckdb that DuckDB cannot read is a one-line error naming `radassets lineage rebuild`; the rebuild
re-creates the store from the merged event files, answering the same queries, and keeps the damaged file aside."""

from __future__ import annotations

import pytest

from radassets.cli import main as cli_main
from radassets.lineage import store
from radassets.lineage.trace import trace
from radassets_tests.lineage.test_store import run_events

# Every column but events.merged_at, which records when an event was ingested (the rebuild's own time).
COLUMNS = {"events": "event_id, event_type, event_time, run_id"}


def _items(kind: str, parent: str | None, n: int = 4) -> list[dict]:
    return [{"item_id": f"{kind}:{i}", "kind": kind, "name": str(i), "sha256": f"{kind}{i}",
             "attributes": {"i": i}, "parents": [f"{parent}:{i}"] if parent else []} for i in range(n)]


def record_a_chain(root) -> None:
    """cohort → seeds → patches → embeddings, a failed run and a version made again, merged in three merges."""
    cohort = run_events("cohort", "v1", "c1", items=_items("series", None))
    cohort[1]["outputs"][0]["facets"] = {"settings": {"content": {"idc_version": 16, "idc_release_date": "2023-09-14"}}}
    seeds = run_events("seeds", "v1", "s1", inputs=[{"asset": "cohort", "partition_key": "v1", "version": "c1"}],
                       items=_items("seed", "series"))
    patches = run_events("patches", "v1", "p1", inputs=[{"asset": "seeds", "partition_key": "v1", "version": "s1"}],
                         items=_items("patch", "seed"))
    failed = run_events("embeddings", "v1|tiny", "", fail="Failure: weights not in the cache")
    embeddings = run_events("embeddings", "v1|tiny", "e1", items=_items("embedding:tiny", "patch"),
                            inputs=[{"asset": "patches", "partition_key": "v1", "version": "p1"}])
    again = run_events("embeddings", "v1|tiny", "e1", items=_items("embedding:tiny", "patch", n=3),
                       inputs=[{"asset": "patches", "partition_key": "v1", "version": "p1"}])
    for batch in (cohort + seeds, patches + failed, embeddings + again):
        for event in batch:
            store.write_event(event, root)
        store.merge(root)


def snapshot(root) -> dict[str, list]:
    """Every row of every table (sorted), and a trace of the last embedding back to the cohort."""
    with store.reader(root) as con:
        tables = sorted(t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall())
        rows = {t: sorted(con.execute(f"SELECT {COLUMNS.get(t, '*')} FROM {t}").fetchall(), key=repr) for t in tables}
        rows["trace"] = trace(con, "embedding:tiny:2")
    return rows


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not a database " * 1000, "empty": b"",
                      "truncated": data[:4096],  # inside DuckDB's file header: no version can read it
                      "half": data[:len(data) // 2]}[how])


@pytest.mark.parametrize("how", ["garbage", "empty", "truncated", "half"])
def test_a_damaged_store_is_one_line_naming_the_file_and_the_rebuild(storage, capsys, how):
    root = storage / "lineage"
    record_a_chain(root)
    _damage(store.database_path(root), how)
    for argv in (["lineage", "sql", "SELECT count(*) FROM runs"], ["lineage", "trace", "embedding:tiny:2"]):
        with pytest.raises(SystemExit) as exit_:
            cli_main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert str(store.database_path(root)) in err and "radassets lineage rebuild" in err, err
    # A merge of new events (what every materialization tries) says the same, and leaves the events pending...
    for event in run_events("seeds", "v2", "s2"):
        store.write_event(event, root)
    with pytest.raises(store.LineageError, match="radassets lineage rebuild"):
        store.merge(root)
    assert len(list((root / "events" / "pending").glob("*.json"))) == 2
    # ... which the rebuild merges after the merged ones.
    cli_main(["lineage", "rebuild"])
    out = capsys.readouterr().out
    assert "from 12 merged event files" in out and "then merged 2 pending" in out, out
    with store.reader(root) as con:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (14,)
        assert con.execute("SELECT count(*) FROM runs WHERE partition_key = 'v2'").fetchone() == (1,)


def test_rebuild_recreates_the_store_exactly_and_keeps_the_damaged_file(storage, capsys):
    root = storage / "lineage"
    record_a_chain(root)
    before = snapshot(root)
    assert len(before["events"]) == 12 and len(before["items"]) == 4 + 4 + 4 + 3 and len(before["runs"]) == 6
    assert [r["asset"] for r in before["trace"]["runs"]] == ["cohort", "seeds", "patches", "embeddings"]
    database = store.database_path(root)
    _damage(database, "garbage")
    damaged = database.read_bytes()
    cli_main(["lineage", "rebuild"])
    out = capsys.readouterr().out
    kept = list(root.glob("lineage.duckdb.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged and str(kept[0]) in out, out  # aside, untouched
    assert snapshot(root) == before
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("lineage.duckdb")) == \
        ["lineage.duckdb", kept[0].name]  # no temporary file left behind


def test_rebuilding_a_readable_store_keeps_it_as_the_previous_one(storage):
    root = storage / "lineage"
    record_a_chain(root)
    before = snapshot(root)
    report = store.rebuild(root)
    assert report.events == 12 and report.kept.name.startswith("lineage.duckdb.previous-")
    assert snapshot(root) == before


def test_an_event_file_damaged_after_its_merge_is_set_aside_and_named(storage, capsys):
    root = storage / "lineage"
    record_a_chain(root)
    bad = sorted((root / "events" / "merged").glob("*.json"))[-1]  # the last COMPLETE of the embeddings
    bad.write_text('{"event_type": "COMPL')
    _damage(store.database_path(root), "garbage")
    cli_main(["lineage", "rebuild"])
    out = capsys.readouterr().out
    assert "from 11 merged event files" in out and bad.name in out and "JSONDecodeError" in out, out
    assert (root / "events" / "rejected" / bad.name).is_file() and not bad.exists()


def test_nothing_to_rebuild_from_is_an_error(storage):
    with pytest.raises(store.LineageError, match="no merged event files"):
        store.rebuild(storage / "lineage")
