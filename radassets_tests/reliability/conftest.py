"""The harness of the reliability tests: real `radassets` processes over a private storage root and Dagster home,
and the checks every scenario ends with.

Everything runs as a user runs it: the venv's ``radassets`` command in its own process group (so a signal
reaches it the way Ctrl-C or ``kill -9`` of a terminal's job does), with ``RADASSETS_HOME`` and ``DAGSTER_HOME``
of its own. The harness never imports radassets: it reads what the runs leave behind (files, the lineage
DuckDB file after ``radassets lineage sql`` has merged, the Dagster instance), so it judges the product, not
its internals.

A workspace always lives at the same path (``Workspace.at``) when its outputs are compared with another's:
artifacts record absolute paths (seeds.parquet holds the CT and mask paths, lineage items their files), and
a rerun on the user's machine happens in the same place, so same path is the faithful comparison.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from radassets_tests.conftest import REPO, SMALL_DEMO_SPEC

RADASSETS = str(Path(sys.executable).parent / "radassets")  # the venv's, whatever PATH says
# Names that only a crashed or unfinished write leaves behind (atomic writes use ".<name>.<random>.tmp");
# none may survive a completed run. Downloads stage each series in ".partial/<series>/" beside its lock file; zarr's
# LocalStore writes a patch's chunk to "<chunk>.<uuid>.partial" and renames it (radassets/imaging/patch_store.py).
LITTER = re.compile(r"(\.tmp$|\.part$|\.[0-9a-f]{32}\.partial$|\.incomplete$|staging)")
PARTIAL = ".partial"
# Dagster run states a finished `radassets` process must not leave behind.
ACTIVE_DAGSTER_STATES = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING", "MANAGED"}
# Fields that record when or how fast a run went, or what it could reuse, not what it made: a rerun differs there
# by design. "created_at" of cohort.lock.json (radassets/idc/cohort.py); "seconds" and "patches_per_second"
# (the volumes' QC rows and manifest, the embeddings' manifest); "reused" (a volume kept from an earlier run:
# RUN_ONLY in radassets/imaging/volumes.py). Found by comparing clean runs and reruns; every other byte and
# value of every output is compared.
RUN_ONLY_FIELDS = frozenset({"created_at", "seconds", "patches_per_second", "reused"})
# And values: the DICOM manifest's "how" says whether this run downloaded a series or found it verified on
# disk (radassets/idc/dicom.py); either way the series is there ("failed" is still a difference).
RUN_ONLY_VALUES = {"how": {"downloaded": "on disk", "present": "on disk"}}
RUN_LINE = re.compile(r": run ([0-9a-f-]{36}) (succeeded|failed|was canceled)")


def say(config: pytest.Config, line: str = "") -> None:
    """A line on the terminal even when pytest captures output: the kill points and timings are the report."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        if reporter is not None:
            reporter.write_line(line)
        else:
            print(line, flush=True)


@dataclass
class Finished:
    """A `radassets` process that has exited (or was stopped by the harness)."""

    args: tuple[str, ...]
    returncode: int | None  # None: it hung and the harness killed it
    seconds: float
    log: Path

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text.splitlines()[-lines:])

    @property
    def worker_text(self) -> str:
        """The command's output and its run workers' (their step logs: ``radassets.defs.launch``)."""
        return output_with_workers(self.log)

    @property
    def dagster_run_ids(self) -> list[str]:
        """The Dagster runs this `pipeline run` reported (one line per run it launched)."""
        return [m.group(1) for m in RUN_LINE.finditer(self.text)]


@dataclass
class Workspace:
    """A private RADASSETS_HOME (the demo collection linked in) and DAGSTER_HOME (the repository's dagster.yaml)."""

    root: Path
    demo: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @classmethod
    def at(cls, root: Path, demo: Path, **extra_env: str) -> Workspace:
        """A fresh workspace at ``root`` (whatever was there is removed)."""
        if root.exists():
            shutil.rmtree(root)
        ws = cls(root, demo, dict(extra_env))
        ws.home.mkdir(parents=True)
        (ws.home / "demo").symlink_to(demo)
        ws.dagster_home.mkdir()
        shutil.copy(REPO / "dagster.yaml", ws.dagster_home / "dagster.yaml")
        ws.logs.mkdir()
        return ws

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("RADASSETS_IDC_MIRROR", "RADASSETS_GCP_PROJECT", "RADASSETS_DATA_DIR",
                            "RADASSETS_MODELS_DIR", "RADASSETS_WEIGHTS_DIR")}
        env.update(RADASSETS_HOME=str(self.home), DAGSTER_HOME=str(self.dagster_home),
                   RADASSETS_DEMO_SPEC=json.dumps(SMALL_DEMO_SPEC), **self.extra_env)
        return env

    def start(self, *args: str, name: str) -> tuple[subprocess.Popen, Path]:
        """``radassets ARGS`` in a new session (its own process group), output to ``logs/<name>.log``."""
        log = self.logs / f"{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen([RADASSETS, *args], cwd=self.root, env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        return process, log

    def run(self, *args: str, name: str, timeout: float) -> Finished:
        """``radassets ARGS`` to its end; past ``timeout`` seconds it has hung: killed, returncode None."""
        started = time.monotonic()
        process, log = self.start(*args, name=name)
        return wait_or_kill(process, log, args, started, timeout)


def output_with_workers(log: Path) -> str:
    """A command's output (``<ws>/logs/<name>.log``) followed by every run worker's output of its workspace
    (``<ws>/dagster_home/radassets/runs/<run id>.log``), where Dagster's step log lines are."""
    workers = sorted((log.parent.parent / "dagster_home" / "radassets" / "runs").glob("*.log"))
    return "\n".join(p.read_text(errors="replace") for p in [log, *workers])


def wait_or_kill(process: subprocess.Popen, log: Path, args: tuple[str, ...], started: float,
                 timeout: float) -> Finished:
    try:
        returncode: int | None = process.wait(timeout=max(0.0, timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        kill_group(process.pid, signal.SIGKILL)
        process.wait()
        returncode = None
    return Finished(tuple(args), returncode, time.monotonic() - started, log)


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def group_alive(pgid: int, grace_s: float = 10.0) -> bool:
    """Whether any process of the group (the run's children included) is still there ``grace_s`` after its
    leader exited (children of a killed process die too, but are reaped by init a moment later)."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)


# -- what a run leaves on disk ----------------------------------------------------------------------------

def tree(home: Path) -> set[str]:
    """Every file and folder under ``home`` (relative), except the linked demo collection and the lineage event
    files, whose names carry times and ids (they are checked through the store)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(home):
        rel = Path(dirpath).relative_to(home)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d != "demo"]
            filenames = [f for f in filenames if f != "demo"]
        if rel.parts[:2] == ("lineage", "events") and len(rel.parts) >= 3:
            dirnames[:] = []
            continue
        for name in dirnames:
            found.add(f"{(rel / name).as_posix()}/")
        for name in filenames:
            found.add((rel / name).as_posix())
    return found


def litter(home: Path) -> list[str]:
    """What a finished run must not leave anywhere under ``home`` (event folders included): temporary or staging
    files and folders, anything in a ``.partial`` folder but its lock files, and lock files that someone still
    holds. (A lock file itself may stay: flock-based locks leave their empty file, which blocks no one.)"""
    out = []
    for dirpath, dirnames, filenames in os.walk(home):
        rel = Path(dirpath).relative_to(home)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d != "demo"]
        in_partial = PARTIAL in rel.parts
        for name in dirnames + filenames:
            if LITTER.search(name) or (in_partial and not name.endswith(".lock")):
                out.append((rel / name).as_posix())
            elif name.endswith(".lock") and name in filenames and lock_held(Path(dirpath) / name):
                out.append(f"{(rel / name).as_posix()} (still locked)")
    return sorted(out)


def lock_held(path: Path) -> bool:
    """Whether another process holds an flock on ``path`` (what filelock's FileLock takes on Unix)."""
    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _without_run_only(value):
    if isinstance(value, dict):
        return {k: RUN_ONLY_VALUES[k].get(v, v) if k in RUN_ONLY_VALUES and isinstance(v, str) else _without_run_only(v)
                for k, v in value.items() if k not in RUN_ONLY_FIELDS}
    if isinstance(value, list):
        return [_without_run_only(v) for v in value]
    return value


def content_digest(path: Path) -> str:
    """sha256 of the file's bytes; for a JSON or parquet file with RUN_ONLY_FIELDS (or RUN_ONLY_VALUES), of the
    rest of its content."""
    if path.suffix == ".json":
        try:
            content = json.loads(path.read_text())
        except ValueError:
            return sha256(path)
        if _without_run_only(content) != content:
            return "content " + hashlib.sha256(json.dumps(_without_run_only(content), sort_keys=True).encode()).hexdigest()
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        if RUN_ONLY_FIELDS & set(frame.columns):
            rest = frame.drop(columns=sorted(RUN_ONLY_FIELDS & set(frame.columns)))
            return "content " + hashlib.sha256(rest.to_csv(index=False).encode()).hexdigest()
    return sha256(path)


def output_digests(home: Path) -> dict[str, str]:
    """The digest (``content_digest``) of every output file: everything but the demo collection and the lineage
    store."""
    return {rel: content_digest(home / rel) for rel in sorted(tree(home))
            if not rel.endswith("/") and not rel.startswith("lineage/")}


def compare_outputs(reference: dict[str, str], home: Path) -> list[str]:
    """Differences from the reference outputs: files missing, extra or with other bytes."""
    found = output_digests(home)
    problems = [f"output missing: {rel}" for rel in sorted(set(reference) - set(found))]
    problems += [f"output not in the clean run: {rel}" for rel in sorted(set(found) - set(reference))]
    problems += [f"output differs from the clean run: {rel}" for rel in sorted(set(found) & set(reference))
                 if found[rel] != reference[rel]]
    return problems


# -- the lineage store ----------------------------------------------------------------------------------------

def merge_lineage(ws: Workspace, timeout: float = 180) -> list[str]:
    """Let radassets merge what is pending (every `radassets lineage` command does, under its lock)."""
    done = ws.run("lineage", "sql", "SELECT count(*) AS runs FROM runs", name="lineage-merge", timeout=timeout)
    if done.returncode != 0:
        return [f"`radassets lineage sql` (which merges pending events) "
                f"{'hung' if done.returncode is None else f'exited {done.returncode}'}:\n{done.tail(15)}"]
    return []


def lineage_rows(home: Path, sql: str, params: list | None = None) -> list[dict]:
    con = duckdb.connect(str(home / "lineage" / "lineage.duckdb"), read_only=True)
    try:
        cursor = con.execute(sql, params or [])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
    finally:
        con.close()


def lineage_problems(home: Path, may_be_unfinished: set[str] = frozenset()) -> list[str]:
    """What is inconsistent in the store (after a merge). ``may_be_unfinished``: Dagster run ids killed with
    SIGKILL, whose asset runs may show START (documented: a run killed mid-way leaves its start)."""
    problems = []
    events = home / "lineage" / "events"
    for state in ("pending", "rejected"):
        left = sorted(p.name for p in (events / state).glob("*")) if (events / state).is_dir() else []
        if left:
            problems.append(f"{len(left)} event file(s) left in events/{state} after a merge: {left[:3]}")
    merged = len(list((events / "merged").glob("*.json"))) if (events / "merged").is_dir() else 0
    [ingested] = [r["n"] for r in lineage_rows(home, "SELECT count(*) AS n FROM events")]
    if ingested != merged:
        problems.append(f"{merged} event files merged but {ingested} events in the store")
    checks = {
        "runs left in START (never ended) by runs that were not SIGKILLed":
            "SELECT job_name, partition_key, dagster_run_id FROM runs WHERE status = 'START' "
            "AND NOT list_contains(?, dagster_run_id)",
        "COMPLETE runs without exactly one output version":
            "SELECT r.run_id, r.job_name, r.partition_key, count(o.version_id) AS outputs FROM runs r "
            "LEFT JOIN run_outputs o USING (run_id) WHERE r.status = 'COMPLETE' GROUP BY ALL "
            "HAVING count(o.version_id) <> 1",
        "runs that are not COMPLETE but have outputs":
            "SELECT r.job_name, r.partition_key, r.status FROM runs r JOIN run_outputs o USING (run_id) "
            "WHERE r.status <> 'COMPLETE'",
        "versions produced by a run that is missing or not COMPLETE":
            "SELECT v.version_id, r.status FROM dataset_versions v LEFT JOIN runs r ON r.run_id = v.produced_by "
            "WHERE v.produced_by IS NOT NULL AND (r.run_id IS NULL OR r.status <> 'COMPLETE')",
        "versions read by a run but never produced by a recorded run":
            "SELECT version_id FROM dataset_versions WHERE produced_by IS NULL",
        "run inputs or outputs naming an unknown run or version":
            "SELECT 'input' AS role, x.run_id, x.version_id FROM run_inputs x WHERE x.run_id NOT IN "
            "(SELECT run_id FROM runs) OR x.version_id NOT IN (SELECT version_id FROM dataset_versions) "
            "UNION ALL SELECT 'output', x.run_id, x.version_id FROM run_outputs x WHERE x.run_id NOT IN "
            "(SELECT run_id FROM runs) OR x.version_id NOT IN (SELECT version_id FROM dataset_versions)",
        "items of unknown versions":
            "SELECT version_id, item_id FROM items WHERE version_id NOT IN (SELECT version_id FROM dataset_versions)",
        "parent rows of items that do not exist":
            "SELECT p.version_id, p.item_id FROM item_parents p LEFT JOIN items i USING (version_id, item_id) "
            "WHERE i.item_id IS NULL",
        "parents that are neither in the item's version nor in a version its run read":
            "SELECT p.version_id, p.item_id, p.parent_id FROM item_parents p "
            "JOIN dataset_versions v ON v.version_id = p.version_id "
            "WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.version_id = p.version_id AND i.item_id = p.parent_id) "
            "AND NOT EXISTS (SELECT 1 FROM run_inputs ri JOIN items i ON i.version_id = ri.version_id "
            "WHERE ri.run_id = v.produced_by AND i.item_id = p.parent_id)",
    }
    for what, sql in checks.items():
        rows = lineage_rows(home, sql, [sorted(may_be_unfinished) or [""]] if "list_contains" in sql else None)
        if rows:
            problems.append(f"lineage: {len(rows)} {what}: {rows[:3]}")
    return problems


def lineage_outputs(home: Path, dagster_run_ids: list[str]) -> dict[str, dict]:
    """Per asset partition, what the given Dagster runs recorded as its output: status, version, items, parents.
    (An asset partition the runs recorded twice shows as a list, which no reference has.)"""
    runs = lineage_rows(home, "SELECT run_id, job_name, partition_key, status FROM runs "
                              "WHERE list_contains(?, dagster_run_id)", [dagster_run_ids])
    out: dict[str, dict] = {}
    for run in runs:
        key = f"{run['job_name']}[{run['partition_key'] or ''}]"
        [version] = lineage_rows(home, "SELECT v.version_id, v.version FROM run_outputs o JOIN dataset_versions v "
                                       "USING (version_id) WHERE o.run_id = ?", [run["run_id"]]) or [None]
        record = {"status": run["status"], "version": version and version["version"]}
        if version:
            record["items"] = sorted(
                (r["item_id"], r["kind"], r["name"], r["status"], r["sha256"], r["path"])
                for r in lineage_rows(home, "SELECT * FROM items WHERE version_id = ?", [version["version_id"]]))
            record["parents"] = sorted(
                (r["item_id"], r["parent_id"])
                for r in lineage_rows(home, "SELECT * FROM item_parents WHERE version_id = ?", [version["version_id"]]))
        out[key] = [out[key], record] if key in out else record
    return out


def compare_lineage(reference: dict[str, dict], found: dict[str, dict]) -> list[str]:
    problems = []
    for key in sorted(set(reference) | set(found)):
        ref, got = reference.get(key), found.get(key)
        if got is None:
            problems.append(f"lineage: no run recorded for {key}")
        elif ref is None:
            problems.append(f"lineage: a run of {key}, which the clean run did not have")
        elif isinstance(got, list):
            problems.append(f"lineage: {len(got)} runs recorded for {key} by one `pipeline run`")
        elif got["status"] != "COMPLETE":
            problems.append(f"lineage: {key} is {got['status']} after the rerun")
        elif got["version"] != ref["version"]:
            problems.append(f"lineage: {key} is version {got['version']}, the clean run's {ref['version']}")
        elif got["items"] != ref["items"] or got["parents"] != ref["parents"]:
            missing = sorted(set(ref["items"]) - set(got["items"]))[:2]
            extra = sorted(set(got["items"]) - set(ref["items"]))[:2]
            problems.append(f"lineage: the items of {key} differ from the clean run's "
                            f"({len(got['items'])} items vs {len(ref['items'])}, {len(got['parents'])} parent rows "
                            f"vs {len(ref['parents'])}; e.g. missing {missing}, extra {extra})")
    return problems


# -- the Dagster instance ----------------------------------------------------------------------------------

def dagster_problems(dagster_home: Path) -> list[str]:
    """Runs the instance still shows as active, and gpu pool slots still claimed or waited for."""
    from dagster import DagsterInstance

    problems = []
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        active = [(r.run_id, r.status.value) for r in instance.get_runs() if r.status.value in ACTIVE_DAGSTER_STATES]
        if active:
            problems.append(f"Dagster: {len(active)} run(s) left active: {active}")
        info = instance.event_log_storage.get_concurrency_info("gpu")
        if info.claimed_slots:
            problems.append(f"Dagster: gpu pool slot(s) still claimed by {sorted(info.active_run_ids)}")
        if info.pending_steps:
            problems.append(f"Dagster: {len(info.pending_steps)} step(s) still waiting for the gpu pool: "
                            f"{sorted({s.run_id for s in info.pending_steps})}")
    return problems


def dagster_run_ids(dagster_home: Path) -> set[str]:
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        return {r.run_id for r in instance.get_runs()}


# -- fixtures -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def reliability_demo(tmp_path_factory) -> Path:
    """The small demo collection (SMALL_DEMO_SPEC), generated once per session by `radassets demo generate`."""
    root = tmp_path_factory.mktemp("reliability_demo") / "demo"
    env = {**os.environ, "RADASSETS_DEMO_SPEC": json.dumps(SMALL_DEMO_SPEC)}
    done = subprocess.run([RADASSETS, "demo", "generate", "--root", str(root)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return root
