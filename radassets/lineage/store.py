"""The lineage store: one DuckDB file, fed by event files so that concurrent runs never contend for it.

Writing: a materialization never opens the database. It writes each of its events (start, then
complete or fail) as one JSON file, atomically (temporary file, then rename), under
``events/pending/``. Any number of runs can do this at once.

Merging: ``merge()`` takes a file lock, opens the database and ingests every pending file in one
transaction, then moves the files to ``events/merged/``. The ``events`` table remembers every event
id ingested, so a merge killed between its commit and the moves ingests nothing twice. A file that
cannot be ingested (unreadable, or missing a field) makes the batch roll back and the merge go on
file by file, each in its own transaction, so that only that file is moved to ``events/rejected/``
(with the reason beside it) and the others are ingested. A materialization does not merge (its step
would pay for DuckDB's statements and commit): the command that ran it merges once its run ended
(``radassets.defs.run``), a step merges only a backlog (``radassets.defs.lineage``), and readers
merge first (waiting for the lock), then query read-only under the same lock, so no query ever
meets DuckDB's single-writer lock either, nor misses an event written before it.

Items from many workers: a step whose items are processed by data-plane workers (``radassets.dataplane``) has
each worker write its finished items as one ``ITEMS`` chunk file (``<time>-<event id>.items.json``: the lineage
run id and the items), after the outputs they describe. Chunks may be merged before or after the run's
``COMPLETE`` event (another node's clock, a later merge): a chunk waits in ``item_chunks`` until its run has an
output, then its items join that output's. The merge reads chunk files in one DuckDB ``read_json`` per merge,
through fsspec (``register_filesystem``) where the event folder is on an object store (DuckDB's httpfs extension is
not used). The event folder (``events/{pending,merged,rejected}``) may be on the artifact store (``s3://...``),
so that workers on every node write there; the database stays a local file (``Layout.lineage_dir()``), which a
``rebuild`` re-creates from the merged event files on the store.

Consistency: an event is all or nothing, so a run killed mid-way leaves its start event (the run
shows ``START``, with no outputs) and nothing half-written; outputs and items only arrive with the
``COMPLETE`` event that carries them.

Recovery: the database holds nothing the merged event files do not, so a ``lineage.duckdb`` that
DuckDB cannot read (garbage, truncated) is a ``LineageError`` naming the file and ``radassets lineage
rebuild``; ``rebuild()`` ingests every file of ``events/merged`` (in name order, i.e. event time)
into a new database beside it, then renames it into place and keeps the old file as
``lineage.duckdb.corrupt-<time>`` (``.previous-<time>`` if it was readable).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
from filelock import FileLock, Timeout

from radassets.errors import RadassetsError
from radassets.storage import atomic_write_json, is_local

SCHEMA_VERSION = 1
EVENT_TYPES = ("START", "COMPLETE", "FAIL", "ABORT")
CHUNK_SUFFIX = ".items.json"  # an ITEMS chunk file: a worker's finished items of one run
LOCK_TIMEOUT_S = 120.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_info (version INTEGER);
CREATE TABLE IF NOT EXISTS events (
    event_id VARCHAR PRIMARY KEY, event_type VARCHAR, event_time TIMESTAMPTZ, run_id VARCHAR, merged_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS jobs (
    job_name VARCHAR PRIMARY KEY, namespace VARCHAR, description VARCHAR, facets JSON);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, job_name VARCHAR, dagster_run_id VARCHAR, partition_key VARCHAR,
    partition JSON, status VARCHAR, started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ, code_version VARCHAR,
    git_commit VARCHAR, radassets_version VARCHAR, error VARCHAR, facets JSON);
CREATE TABLE IF NOT EXISTS datasets (
    dataset_name VARCHAR PRIMARY KEY, namespace VARCHAR, asset VARCHAR, partition_key VARCHAR, kind VARCHAR);
CREATE TABLE IF NOT EXISTS dataset_versions (
    version_id VARCHAR PRIMARY KEY, dataset_name VARCHAR, version VARCHAR, produced_by VARCHAR,
    created_at TIMESTAMPTZ, facets JSON);
CREATE TABLE IF NOT EXISTS run_inputs (run_id VARCHAR, version_id VARCHAR, PRIMARY KEY (run_id, version_id));
CREATE TABLE IF NOT EXISTS run_outputs (run_id VARCHAR, version_id VARCHAR, PRIMARY KEY (run_id, version_id));
CREATE TABLE IF NOT EXISTS items (
    version_id VARCHAR, item_id VARCHAR, kind VARCHAR, name VARCHAR, status VARCHAR, sha256 VARCHAR,
    path VARCHAR, attributes JSON, PRIMARY KEY (version_id, item_id));
CREATE TABLE IF NOT EXISTS item_parents (
    version_id VARCHAR, item_id VARCHAR, parent_id VARCHAR, PRIMARY KEY (version_id, item_id, parent_id));
CREATE TABLE IF NOT EXISTS item_chunks (
    event_id VARCHAR PRIMARY KEY, run_id VARCHAR, job_name VARCHAR, items JSON, attached_to VARCHAR);
"""


class LineageError(RadassetsError, RuntimeError):
    """The lineage store cannot answer: named cause."""


def database_path(root: Path) -> Path:
    """The store's database in its folder ``root`` (``Layout.lineage_dir()``)."""
    return Path(root) / "lineage.duckdb"


def _events_dir(events: Path, state: str) -> Path:
    """``events/<state>`` (``pending``, ``merged``, ``rejected``), a local folder or a folder of an object store."""
    path = events / state
    if is_local(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def _events(root: Path, events: Path | None) -> Path:
    """The event folder: ``events`` where given (on the artifact store), else ``<root>/events`` beside the database."""
    return events if events is not None else Path(root) / "events"


def _move(path: Path, folder: Path) -> None:
    """Move an event file into ``folder`` (same name): a rename on a disk, a copy then a delete on a store (a move
    cut between the two leaves the file in both: the next merge skips it as ingested, and moves it again)."""
    target = folder / path.name
    if is_local(path):
        os.replace(path, target)
    else:
        path.fs.mv(path.path, target.path)  # type: ignore[attr-defined]


def now() -> str:
    # Always with microseconds: event file names sort by this text, and a start must sort before its end.
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def version_id(asset: str, partition_key: str | None, version: str) -> str:
    """The id of one version of one asset partition: ``asset[partition]@version``."""
    return f"{asset}[{partition_key or ''}]@{version}"


def dataset_name(asset: str, partition_key: str | None) -> str:
    return f"{asset}[{partition_key or ''}]"


def write_event(event: dict[str, Any], root: Path, events: Path | None = None) -> Path:
    """Queue one event for the store: a JSON file under ``events/pending`` (atomic)."""
    if event.get("event_type") not in EVENT_TYPES:
        raise ValueError(f"event type must be one of {EVENT_TYPES}, got {event.get('event_type')!r}")
    event = {"event_id": str(uuid.uuid4()), "event_time": now(), **event}
    # Names sort by time, so a merge ingests a run's start before its end.
    name = f"{event['event_time'].replace(':', '').replace('+', '_')}-{event['event_id']}.json"
    return atomic_write_json(_events_dir(_events(root, events), "pending") / name, event)


def write_items(run_id: str, job_name: str, items: list[dict[str, Any]], events: Path) -> Path:
    """Queue one chunk of finished items of the lineage run ``run_id`` (a worker calls it after writing the outputs
    the items describe): ``events/pending/<time>-<event id>.items.json``, atomic."""
    event_id, when = str(uuid.uuid4()), now()
    name = f"{when.replace(':', '').replace('+', '_')}-{event_id}{CHUNK_SUFFIX}"
    return atomic_write_json(_events_dir(events, "pending") / name,
                             {"event_id": event_id, "event_type": "ITEMS", "event_time": when, "run_id": run_id,
                              "job_name": job_name, "items": items})


@contextmanager
def _locked(root: Path, timeout: float) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / "lineage.lock"), timeout=timeout):
        yield


# What DuckDB says of a file it cannot read (DuckDB 1.x): checked in errors raised after the file opened, where
# an IOException may also be a full disk, which a rebuild would not cure.
DAMAGE_MARKERS = ("not a valid DuckDB database file", "Could not read enough bytes", "Corrupt database file")


def _unreadable(path: Path, e: duckdb.Error) -> LineageError:
    cause = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "lock" in cause.lower():  # another program (a duckdb shell, a notebook) holds DuckDB's own lock
        return LineageError(f"{path} is open in another program ({cause}); close it there and retry")
    return LineageError(f"{path}: DuckDB cannot read the lineage store ({cause}); it can be rebuilt from the merged "
                        f"event files with `radassets lineage rebuild` (the damaged file is kept aside)")


def is_damage(e: BaseException) -> bool:
    """Whether a DuckDB error says the database file is damaged (not the query, not a full disk)."""
    return isinstance(e, duckdb.Error) and any(marker in str(e) for marker in DAMAGE_MARKERS)


TABLES = tuple(line.split()[5] for line in SCHEMA.splitlines() if line.startswith("CREATE TABLE IF NOT EXISTS"))


def _has_schema(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether every table of ``SCHEMA`` exists and ``schema_info`` holds this version: one query, where running
    the DDL costs a statement per table at every merge. (The DDL runs one statement at a time, so a store created by
    a process killed half-way has only some tables: they are counted, not just ``schema_info``.)"""
    found = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND "
                        "schema_name = 'main' AND table_name IN ?", [list(TABLES)]).fetchone()[0]
    return found == len(TABLES) and con.execute("SELECT max(version) FROM schema_info").fetchone()[0] == SCHEMA_VERSION


def _open(path: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection to the database at ``path`` (created with the schema unless read-only)."""
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as e:  # at opening, any DuckDB error is about the file
        raise _unreadable(path, e) from None
    try:
        con.execute("SET TimeZone = 'UTC'")
        if not read_only and not _has_schema(con):
            con.execute(SCHEMA)
            if not con.execute("SELECT count(*) FROM schema_info").fetchone()[0]:
                con.execute("INSERT INTO schema_info VALUES (?)", [SCHEMA_VERSION])
    except duckdb.Error as e:
        con.close()
        if is_damage(e):
            raise _unreadable(path, e) from None
        raise
    return con


def _connect(root: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    path = database_path(root)
    if read_only and not path.is_file():
        raise LineageError(f"no lineage recorded yet ({path} does not exist); materialize an asset first")
    return _open(path, read_only)


def merge(root: Path, wait: bool = True, events: Path | None = None) -> int:
    """Ingest every pending event file (chunks first, then events in name order); returns how many were ingested
    (0 if the lock was busy and ``wait`` is False)."""
    root = Path(root)
    folder = _events(root, events)
    try:
        with _locked(root, LOCK_TIMEOUT_S if wait else 0):
            pending = sorted(_events_dir(folder, "pending").glob("*.json"))
            if not pending:
                return 0
            con = _connect(root)
            try:
                chunks = [p for p in pending if p.name.endswith(CHUNK_SUFFIX)]
                ingested = _ingest_chunks(con, folder, chunks)
                return ingested + _ingest_batch(con, folder, [path for path in pending if path not in chunks])
            except duckdb.Error as e:
                if is_damage(e):  # the file opened, but its blocks cannot be read
                    raise _unreadable(database_path(root), e) from None
                raise
            finally:
                con.close()
    except Timeout:
        if wait:
            raise LineageError(f"the lineage store at {root} stayed locked for {LOCK_TIMEOUT_S:.0f} s") from None
        return 0


# A file is set aside only for what is wrong with the file; anything else (disk full, I/O) stops the merge and
# leaves every file pending for the next one.
BAD_FILE_ERRORS = (ValueError, KeyError, TypeError, duckdb.ConstraintException, duckdb.ConversionException,
                   duckdb.InvalidInputException, duckdb.BinderException)


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction: committed if the block ends, rolled back (and the error raised) if anything stops it,
    an interrupt included."""
    con.begin()
    try:
        yield
        con.commit()
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # the error may have ended the transaction already
            con.rollback()
        raise


def _reject(folder: Path, path: Path, e: BaseException) -> None:
    rejected = _events_dir(folder, "rejected")
    _move(path, rejected)
    (rejected / f"{path.name}.reason.txt").write_text(f"{type(e).__name__}: {e}\n")


def _ingest_batch(con: duckdb.DuckDBPyConnection, folder: Path, paths: list[Path]) -> int:
    """Ingest pending event files (in name order) in one transaction, then move them to ``events/merged``; returns
    how many were ingested now. A file that cannot be parsed is rejected before the batch; one whose rows cannot be
    written rolls the batch back, and the files are then ingested one by one (``_ingest_file``), so that only the bad
    one is rejected. Anything else (disk full, I/O) rolls back and raises: every file stays pending."""
    events: list[tuple[Path, dict[str, Any]]] = []
    for path in paths:
        try:
            event = json.loads(path.read_text())
            event["event_id"]  # a file without one is bad by itself
            events.append((path, event))
        except (ValueError, KeyError, TypeError) as e:  # not JSON, not an object, or no id: the file alone is bad
            _reject(folder, path, e)
    if not events:
        return 0
    try:
        ids = [event["event_id"] for _, event in events]
        known = {row[0] for row in con.execute("SELECT event_id FROM events WHERE event_id IN (SELECT unnest(?))",
                                               [ids]).fetchall()}
        new = [(path, event) for path, event in events if event["event_id"] not in known]
        with _transaction(con):
            done: set[tuple] = set()
            for _, event in new:
                ingest(con, event, done)
    except BAD_FILE_ERRORS:
        return sum(_ingest_file(con, folder, path) for path, _ in events)
    merged = _events_dir(folder, "merged")
    for path, _ in events:  # known ones too (ingested before a kill among a merge's moves); a kill
        # among these moves leaves files whose ids ``events`` holds: the next merge moves them, ingesting nothing
        _move(path, merged)
    return len(new)


def _ingest_file(con: duckdb.DuckDBPyConnection, folder: Path, path: Path, state: str = "pending") -> int:
    """Ingest one event file (from ``<folder>/<state>``) in its own transaction; 1 if it was ingested now."""
    try:
        event = json.loads(path.read_text())
        if con.execute("SELECT 1 FROM events WHERE event_id = ?", [event["event_id"]]).fetchone():
            if state == "pending":
                _move(path, _events_dir(folder, "merged"))  # ingested before the last move
            return 0
        with _transaction(con):
            ingest(con, event)
    except BAD_FILE_ERRORS as e:
        _reject(folder, path, e)
        return 0
    if state == "pending":
        _move(path, _events_dir(folder, "merged"))
    return 1


# What DuckDB's read_json says of a file's content (not of the store: an I/O error leaves every file pending).
BAD_CHUNK_ERRORS = (duckdb.InvalidInputException, duckdb.ConversionException)
CHUNK_COLUMNS = {"event_id": "VARCHAR", "event_time": "VARCHAR", "run_id": "VARCHAR", "job_name": "VARCHAR",
                 "items": "JSON"}


def _duckdb_name(con: duckdb.DuckDBPyConnection, path: Path) -> str:
    """The name DuckDB opens ``path`` by: a local path, or the URL of an fsspec file system registered with it."""
    if is_local(path):
        return str(path)
    fs = path.fs  # type: ignore[attr-defined]
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)  # s3fs: ("s3", "s3a")
    if not protocols & set(con.list_filesystems()):
        con.register_filesystem(fs)
    return str(path)


def _read_chunks(con: duckdb.DuckDBPyConnection, paths: list[Path]) -> list[tuple]:
    names = [_duckdb_name(con, p) for p in paths]
    rows = con.execute("SELECT filename, event_id, event_time, run_id, job_name, items FROM "
                       "read_json($files, columns=$columns, filename=true, format='auto')",
                       {"files": names, "columns": CHUNK_COLUMNS}).fetchall()
    by_name = {p.name: p for p in paths}
    return [(by_name[row[0].rsplit("/", 1)[-1]], *row[1:]) for row in rows]


def _ingest_chunks(con: duckdb.DuckDBPyConnection, folder: Path, paths: list[Path], state: str = "pending") -> int:
    """Ingest ITEMS chunk files, read together by DuckDB, pending ones in one transaction. A batch that cannot be
    read is read file by file, and one whose rows cannot be written is written file by file (each in its own
    transaction), so that only the bad files are set aside."""
    if not paths:
        return 0
    try:
        rows = _read_chunks(con, paths)
    except BAD_CHUNK_ERRORS:
        rows = []
        for path in paths:
            try:
                rows += _read_chunks(con, [path])
            except BAD_CHUNK_ERRORS as e:
                _reject(folder, path, ValueError(f"not an ITEMS chunk DuckDB can read: {str(e).splitlines()[0]}"))
    if state == "pending" and len(rows) > 1:  # one transaction (one commit) for them all, unless one is bad
        try:
            with _transaction(con):
                ingested = sum(_ingest_chunk(con, *row[1:]) for row in rows)
        except BAD_FILE_ERRORS:
            pass  # written file by file below
        else:
            for path, *_ in rows:  # as for events: a kill among the moves ingests nothing twice
                _move(path, _events_dir(folder, "merged"))
            return ingested
    ingested = 0
    for path, *row in rows:
        try:
            with _transaction(con):
                written = _ingest_chunk(con, *row)
        except BAD_FILE_ERRORS as e:
            _reject(folder, path, e)
            continue
        ingested += written
        if state == "pending":
            _move(path, _events_dir(folder, "merged"))
    return ingested


def _ingest_chunk(con: duckdb.DuckDBPyConnection, event_id: str | None, when: str | None, run_id: str | None,
                  job_name: str | None, items: str | None) -> int:
    """One chunk's rows (inside the caller's transaction); 1 if it was not ingested before."""
    if None in (event_id, run_id, job_name, items):
        raise ValueError("an ITEMS chunk needs event_id, run_id, job_name and items")
    if con.execute("SELECT 1 FROM events WHERE event_id = ?", [event_id]).fetchone():
        return 0
    con.execute("INSERT INTO events VALUES (?, 'ITEMS', ?, ?, ?)", [event_id, when, run_id, now()])
    con.execute("INSERT INTO item_chunks VALUES (?, ?, ?, ?, NULL)", [event_id, run_id, job_name, items])
    _attach_chunks(con, str(run_id))
    return 1


def _attach_chunks(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Give the run's waiting chunks to its output, once the run has one (its COMPLETE event was ingested)."""
    output = con.execute("SELECT version_id FROM run_outputs WHERE run_id = ?", [run_id]).fetchone()
    if output is None:
        return
    for event_id, items in con.execute("SELECT event_id, items FROM item_chunks WHERE run_id = ? AND attached_to IS "
                                       "NULL ORDER BY event_id", [run_id]).fetchall():
        _items(con, output[0], json.loads(items))
        con.execute("UPDATE item_chunks SET attached_to = ? WHERE event_id = ?", [output[0], event_id])


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


def _once(done: set[tuple] | None, key: tuple) -> bool:
    """Whether a statement that changes nothing when repeated (an insert ``ON CONFLICT DO NOTHING``, an upsert with
    the values it set last) must run: not if it already ran in this batch's transaction (``done``). It saves a
    DuckDB statement each time: a run's end repeats its start's job and inputs."""
    if done is None:
        return True
    if key in done:
        return False
    done.add(key)
    return True


def ingest(con: duckdb.DuckDBPyConnection, event: dict[str, Any], done: set[tuple] | None = None) -> None:
    """Write one event's rows (inside the caller's transaction; ``done``: the statements already run in it)."""
    run, job = event["run"], event["job"]
    kind, when = event["event_type"], event["event_time"]
    con.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?)", [event["event_id"], kind, when, run["run_id"], now()])
    values = [job["name"], job.get("namespace", "radassets"), job.get("description"), _json(job.get("facets"))]
    if done is not None:  # only the values set last make the upsert a no-op
        done -= {key for key in done if key[:2] == ("jobs", job["name"]) and key[2:] != tuple(values[1:])}
    if _once(done, ("jobs", *values)):
        con.execute("INSERT INTO jobs VALUES (?, ?, ?, ?) ON CONFLICT (job_name) DO UPDATE SET "
                    "description = excluded.description, facets = excluded.facets", values)
    if kind == "START":  # (its end may have been ingested first: then only the start time is missing)
        con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, 'START', ?, NULL, ?, ?, ?, NULL, ?) ON CONFLICT (run_id) "
                    "DO UPDATE SET started_at = coalesce(runs.started_at, excluded.started_at)",
                    [run["run_id"], job["name"], run.get("dagster_run_id"), run.get("partition_key"),
                     _json(run.get("partition")), when, run.get("code_version"), run.get("git_commit"),
                     run.get("radassets_version"), _json(run.get("facets"))])
    else:
        # An end without its start (the start was rejected or lost) still records the run.
        con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE "
                    "SET status = excluded.status, ended_at = excluded.ended_at, error = excluded.error, "
                    "facets = coalesce(excluded.facets, runs.facets)",
                    [run["run_id"], job["name"], run.get("dagster_run_id"), run.get("partition_key"),
                     _json(run.get("partition")), kind, when, run.get("code_version"), run.get("git_commit"),
                     run.get("radassets_version"), run.get("error"), _json(run.get("facets"))])
    for role, table in (("inputs", "run_inputs"), ("outputs", "run_outputs")):
        for ds in event.get(role, []):
            vid = _dataset_version(con, ds, run["run_id"] if role == "outputs" else None, when, done)
            if _once(done, (table, run["run_id"], vid)):
                con.execute(f"INSERT INTO {table} VALUES (?, ?) ON CONFLICT DO NOTHING", [run["run_id"], vid])
            if role == "outputs":
                _items(con, vid, ds.get("items", []))
    if kind == "COMPLETE":
        _attach_chunks(con, run["run_id"])


def _dataset_version(con: duckdb.DuckDBPyConnection, ds: dict[str, Any], produced_by: str | None, when: str,
                     done: set[tuple] | None = None) -> str:
    name = dataset_name(ds["asset"], ds.get("partition_key"))
    vid = version_id(ds["asset"], ds.get("partition_key"), ds["version"])
    if _once(done, ("datasets", name)):
        con.execute("INSERT INTO datasets VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [name, ds.get("namespace", "radassets"), ds["asset"], ds.get("partition_key"),
                     ds.get("kind", "asset")])
    if produced_by:
        if done is not None:
            done.add(("dataset_versions", vid))  # it exists now: an input of it inserts nothing
        # An output. The same version made again (a rerun to the same bytes, or the same inputs under new code)
        # is described by its latest run: the one whose files are on disk now. A version first seen as an
        # input gets its producer here.
        con.execute("INSERT INTO dataset_versions VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (version_id) DO UPDATE SET "
                    "produced_by = excluded.produced_by, created_at = excluded.created_at, facets = excluded.facets",
                    [vid, name, ds["version"], produced_by, when, _json(ds.get("facets"))])
        con.execute("DELETE FROM item_parents WHERE version_id = ?", [vid])
        con.execute("DELETE FROM items WHERE version_id = ?", [vid])
    elif _once(done, ("dataset_versions", vid)):  # an input: known from its own output event, or (recorded before
        # this store existed) by its id only
        con.execute("INSERT INTO dataset_versions VALUES (?, ?, ?, NULL, NULL, ?) ON CONFLICT (version_id) DO NOTHING",
                    [vid, name, ds["version"], _json(ds.get("facets"))])
    return vid


def _items(con: duckdb.DuckDBPyConnection, vid: str, items: list[dict[str, Any]]) -> None:
    if not items:
        return
    import pyarrow as pa

    rows = pa.table({
        "version_id": [vid] * len(items), "item_id": [i["item_id"] for i in items],
        "kind": [i["kind"] for i in items], "name": [i.get("name") for i in items],
        "status": [i.get("status", "ok") for i in items], "sha256": [i.get("sha256") for i in items],
        "path": [i.get("path") for i in items], "attributes": [_json(i.get("attributes")) for i in items],
    })
    parents = pa.table({
        "version_id": [vid for i in items for _ in i.get("parents", [])],
        "item_id": [i["item_id"] for i in items for _ in i.get("parents", [])],
        "parent_id": [p for i in items for p in i.get("parents", [])],
    })
    con.register("new_items", rows)
    con.register("new_parents", parents)
    try:
        con.execute("INSERT INTO items SELECT version_id, item_id, kind, name, status, sha256, path, "
                    "attributes::JSON FROM new_items ON CONFLICT DO NOTHING")  # an id listed twice: the first
        con.execute("INSERT INTO item_parents SELECT DISTINCT * FROM new_parents ON CONFLICT DO NOTHING")
    finally:
        con.unregister("new_items")
        con.unregister("new_parents")


@contextmanager
def reader(root: Path, events: Path | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the store, after merging what is pending (under the lock)."""
    root = Path(root)
    merge(root, events=events)
    with _locked(root, LOCK_TIMEOUT_S):
        con = _connect(root, read_only=True)
        try:
            yield con
        except duckdb.Error as e:
            if is_damage(e):  # the file opened, but a query met blocks that cannot be read
                raise _unreadable(database_path(root), e) from None
            raise
        finally:
            con.close()


@dataclass
class RebuildReport:
    database: Path
    events: int  # merged event files ingested
    set_aside: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason): moved to events/rejected
    kept: Path | None = None  # the file replaced, renamed
    pending: int = 0  # pending event files merged afterwards


def _readable(path: Path) -> bool:
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return False
    try:
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            cursor = con.execute(f'SELECT * FROM "{table}"')  # every block read, a chunk of rows at a time
            while cursor.fetchmany(10_000):
                pass
        return True
    except duckdb.Error:
        return False
    finally:
        con.close()


def _aside_name(path: Path, state: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate, n = path.with_name(f"{path.name}.{state}-{stamp}"), 1
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}.{state}-{stamp}-{n}"), n + 1
    return candidate


def rebuild(root: Path, events: Path | None = None) -> RebuildReport:
    """Re-create ``lineage.duckdb`` from ``events/merged``, atomically; the old file is kept aside, never deleted.

    Each merged file is ingested as a merge ingests it, in name (event time) order. A file that can no longer be
    ingested (damaged since its merge) is moved to ``events/rejected`` with its reason and named in the report.
    Pending files are merged afterwards, as any reader would.
    """
    root = Path(root)
    folder = _events(root, events)
    database = database_path(root)
    with _locked(root, LOCK_TIMEOUT_S):
        merged = sorted(_events_dir(folder, "merged").glob("*.json"))
        if not merged:
            raise LineageError(f"no merged event files under {folder / 'merged'}: nothing to rebuild "
                               f"{database} from")
        # DuckDB creates the file itself (an empty file is not a database): a unique name, not mkstemp.
        building = database.with_name(f".{database.name}.rebuilding-{uuid.uuid4().hex}")
        try:
            con = _open(building)
            report = RebuildReport(database, 0)
            try:
                chunks = [p for p in merged if p.name.endswith(CHUNK_SUFFIX)]
                report.events += _ingest_chunks(con, folder, chunks, state="merged")
                for path in merged:
                    if path in chunks:
                        continue
                    if _ingest_file(con, folder, path, state="merged"):
                        report.events += 1
                for path in merged:
                    if (_events_dir(folder, "rejected") / path.name).is_file():
                        reason = (_events_dir(folder, "rejected") / f"{path.name}.reason.txt").read_text().strip()
                        report.set_aside.append((path.name, reason))
            finally:
                con.close()  # checkpoints: the new file is whole, with no write-ahead log beside it
            if database.exists():
                report.kept = _aside_name(database, "previous" if _readable(database) else "corrupt")
                os.replace(database, report.kept)
                wal = database.with_name(database.name + ".wal")  # belongs to the old file: never replay it
                if wal.exists():
                    os.replace(wal, report.kept.with_name(report.kept.name + ".wal"))
            os.replace(building, database)
        finally:
            for leftover in (building, building.with_name(building.name + ".wal")):
                if leftover.exists():
                    leftover.unlink()
    report.pending = merge(root, events=events)
    return report
