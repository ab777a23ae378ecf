"""Runs that die, interrupts and concurrent runs, with real `radassets pipeline run` processes on the small
demo: a run whose worker is killed with SIGKILL while it holds the gpu pool is failed and its slot freed by
the next command, which says what it waits for and can be interrupted; SIGINT, SIGTERM and SIGHUP stop a command
as a whole; two commands of one partition on a fresh DAGSTER_HOME both complete with identical outputs.

The tests make a step wait deterministically by holding, in the test process, the partition lock the
step takes (``radassets.defs.locks``), and they wait for conditions (a line of a run's event log or of a
command's output, a claimed slot) with a timeout, never for a fixed time. Signals go only to the processes
the tests start, and to the run workers those started (their pids are in the runs' tags).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from filelock import FileLock

from radassets.defs.dead_runs import PID_TAG, owner_alive
from radassets.layout import Layout
from radassets.settings import Settings
from radassets.defs.run import materialize_dataset_versions
from radassets_tests.conftest import REPO

# In `make test-reliability`: each test starts `radassets` commands whose runs start worker processes (minutes).
pytestmark = [pytest.mark.integration, pytest.mark.reliability]

CONDITION_TIMEOUT_S = 300  # generous: a loaded 2-core machine starts a Dagster process in 10-30 s
EMBED = ["pipeline", "run", "demo_v1", "--models", "radiomics", "--select",
         "key:embeddings+ and not tag:radassets/opt_in=true"]  # embeddings, evaluation; then the comparison


class Command:
    """A `radassets ...` subprocess whose standard error goes to a file the test can read while it runs."""

    def __init__(self, tmp_path: Path, name: str, *args: str, env: dict | None = None):
        self.log = tmp_path / f"{name}.log"
        self._log_file = self.log.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "radassets.cli", *args], cwd=REPO,
                                        stdout=self._log_file, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})})

    def text(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = CONDITION_TIMEOUT_S) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log_file.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def commands():
    started: list[Command] = []
    yield started
    for command in started:  # a failed assertion leaves no process behind
        command.kill()


def wait_for(condition, what: str, timeout: float = CONDITION_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def logged(instance: DagsterInstance, text: str) -> list[str]:
    """Ids of the runs whose event log has a message containing ``text`` (a step's log lines are there: the
    step runs in the run's worker process, not in the command)."""
    return [run.run_id for run in instance.get_runs()
            if any(text in (entry.user_message or "") for entry in instance.all_logs(run.run_id))]


def worker_lines(dagster_home: Path, text: str) -> list[str]:
    """Lines containing ``text`` in the output of the run workers of the instance at ``dagster_home``
    (``radassets.defs.launch`` writes it to ``radassets/runs/<run id>.log``)."""
    return [line for log in sorted((dagster_home / "radassets" / "runs").glob("*.log"))
            for line in log.read_text(errors="replace").splitlines() if text in line]


def worker_pid(instance: DagsterInstance, run_id: str) -> int:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return int(run.tags[PID_TAG])


def gpu_holders(instance: DagsterInstance) -> list[str]:
    return [slot.run_id for slot in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots]


@pytest.fixture
def patched_demo(small_demo_home, instance):
    """The small demo's demo_v1 up to its patches, so that the commands below start at the embeddings."""
    assert materialize_dataset_versions(["demo_v1"], settings=Settings.load(), selection="+key:patches",
                                        models=["radiomics"], progress=lambda message: None)
    return small_demo_home


def test_a_killed_run_is_failed_and_its_gpu_slot_freed_by_the_next_command(patched_demo, instance, tmp_path,
                                                                            commands):
    waiting = "embeddings demo_v1|radiomics is being materialized by"
    embeddings_lock = FileLock(Layout(patched_demo).lock_file("embeddings", "demo_v1|radiomics"))
    with embeddings_lock:  # the first command's embeddings step claims the gpu slot, then waits for this lock
        first = Command(tmp_path, "first", *EMBED)
        commands.append(first)
        wait_for(lambda: logged(instance, waiting), "the first command's embeddings step to wait for the partition lock")
        [dead_run] = gpu_holders(instance)
        dead_worker = worker_pid(instance, dead_run)

        # A second command waits for the pool, says who holds it, and stops on Ctrl-C.
        second = Command(tmp_path, "second", *EMBED)
        commands.append(second)
        wait_for(lambda: "embeddings waits for a slot" in second.text(), "the second command to wait for the pool")
        assert f"pool 'gpu' (limit 1) is held by run {dead_run} (step embeddings; radassets pid " \
               f"{dead_worker} on" in second.text()
        second.process.send_signal(signal.SIGINT)
        assert second.wait() == 130
        assert "radassets: interrupted by SIGINT during run " in second.text()
        assert "Traceback" not in second.text()

        first.process.kill()  # SIGKILL while its run holds the only gpu slot: its run worker dies with it
        first.wait()
        wait_for(lambda: owner_alive(instance.get_run_by_id(dead_run).tags) is False, "the run worker to die")
    assert instance.get_run_by_id(dead_run).status == DagsterRunStatus.STARTED
    assert gpu_holders(instance) == [dead_run]

    third = Command(tmp_path, "third", *EMBED)
    commands.append(third)
    assert third.wait() == 0, third.text()
    assert f"run {dead_run}: The process of this run (radassets pid {dead_worker} on" in third.text()
    assert instance.get_run_by_id(dead_run).status == DagsterRunStatus.FAILURE
    assert gpu_holders(instance) == []
    assert not instance.event_log_storage.get_concurrency_info("gpu").pending_steps
    assert "demo_v1 (every model): run" in third.text()  # and on to the comparison


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_an_interrupt_stops_the_command_and_fails_the_run(patched_demo, instance, tmp_path, commands, signum):
    before = {r.run_id for r in instance.get_runs()}
    lock = Layout(patched_demo).lock_file("embeddings", "demo_v1|radiomics")
    with FileLock(lock):  # holds the run inside its embeddings step
        command = Command(tmp_path, "interrupted", *EMBED)
        commands.append(command)
        wait_for(lambda: logged(instance, "embeddings demo_v1|radiomics is being materialized by"),
                 "the embeddings step to start")
        [run_id] = gpu_holders(instance)
        command.process.send_signal(signum)
        status = command.wait()
    name = signal.Signals(signum).name
    assert status == 128 + signum  # 130 for Ctrl-C
    last_line = command.text().strip().splitlines()[-1]
    assert last_line == f"radassets: interrupted by {name} during run {run_id} (marked failed): stopped, " \
                        "no later run started"
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
    assert gpu_holders(instance) == []
    # No later run: the comparison of every model (the command's next run) never started.
    assert [r.run_id for r in instance.get_runs() if r.run_id not in before] == [run_id]
    assert not (patched_demo / "comparison" / "demo_v1").exists()


def _files(root: Path) -> dict[str, str | None]:
    """Every output file (not the lineage store, the locks or the demo source) with the sha256 of its data;
    manifests (JSON, parquet) record their storage root's absolute paths and times, so only their presence
    is compared."""
    return {str(p.relative_to(root)): None if p.suffix in (".json", ".parquet") else
            hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()
            and p.relative_to(root).parts[0] not in ("lineage", ".locks", "demo")}


def test_two_commands_of_one_partition_on_a_fresh_dagster_home(small_demo_home, small_demo, tmp_path, commands):
    home = Path(os.environ["DAGSTER_HOME"])
    fresh = tmp_path / "fresh_dagster_home"
    fresh.mkdir()
    shutil.copy(home / "dagster.yaml", fresh / "dagster.yaml")
    env = {"DAGSTER_HOME": str(fresh)}
    select = ["pipeline", "run", "demo_v1", "--models", "radiomics", "--select", "+key:patches"]
    # Both commands are held where they would race, and let go together: opening the fresh instance (creating
    # its SQLite schema), then the first step of the partition.
    instance_lock = FileLock(fresh / ".radassets-instance.lock")
    cohort_lock = FileLock(Layout(small_demo_home).lock_file("cohort", "demo_v1"))
    with cohort_lock:
        with instance_lock:
            both = [Command(tmp_path, f"concurrent{i}", *select, env=env) for i in (1, 2)]
            commands.extend(both)
            for command in both:
                wait_for(lambda command=command: "waiting for another radassets command to open the Dagster instance"
                         in command.text(),
                         "both commands to wait for the instance")
        # Read from the run workers' logs, not the instance: opening the fresh instance here would race the
        # commands creating its schema, which is what this test leaves to them.
        wait_for(lambda: len(worker_lines(fresh, "cohort demo_v1 is being materialized by")) == 2,
                 "both commands' runs to wait for the cohort partition")
    for command in both:
        assert command.wait() == 0, command.text()
        assert "Traceback" not in command.text()
    concurrent = _files(small_demo_home)

    # The same selection once, alone, in another storage root and instance.
    alone_home, alone_dagster = tmp_path / "alone", tmp_path / "alone_dagster_home"
    alone_home.mkdir()
    (alone_home / "demo").symlink_to(small_demo)
    alone_dagster.mkdir()
    shutil.copy(home / "dagster.yaml", alone_dagster / "dagster.yaml")
    alone = Command(tmp_path, "alone", *select,
                    env={"DAGSTER_HOME": str(alone_dagster), "RADASSETS_HOME": str(alone_home)})
    commands.append(alone)
    assert alone.wait() == 0, alone.text()
    single = _files(alone_home)
    assert sorted(concurrent) == sorted(single)
    assert sum(digest is not None for digest in single.values()) > 100  # DICOM, NRRD, seeds, patches
    assert [path for path in single if concurrent[path] != single[path]] == []


@pytest.mark.parametrize("selection, message", [
    ("key:(((", "radassets: error: invalid asset selection 'key:(((': Syntax error at line 1, column 4"),
    ("key:no_such_asset", "radassets: error: the asset selection 'key:no_such_asset' matches no asset; the assets "
                          "are: cohort, comparison, dicom, embeddings, evaluation, hosny2018_figure2, patches"),
])
def test_a_bad_selection_is_one_line_before_anything_runs(small_demo_home, instance, tmp_path, selection, message):
    command = Command(tmp_path, "selection", "pipeline", "run", "demo_v1", "--select", selection)
    assert command.wait() == 2
    assert command.text().strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in command.text()
    assert instance.get_runs() == [] and not (small_demo_home / "cohort").exists()


def test_the_daemon_sensor_fails_a_dead_command_run_and_frees_its_slot(instance):
    """With no later command, the sensor the daemon runs (``make ui``) frees what a killed command held, so
    UI runs are not queued behind it; a live owner's run is left alone."""
    from dagster import DagsterRun, build_sensor_context

    from radassets.defs.dead_runs import LAUNCHED_BY_COMMAND, LAUNCHED_BY_TAG, dead_run_sensor, owner_tags

    instance.event_log_storage.set_concurrency_slots("gpu", 1)
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone_tags = owner_tags(gone.pid)  # the identity of a process that is then killed
    tags = {**gone_tags, LAUNCHED_BY_TAG: LAUNCHED_BY_COMMAND}  # ... as the worker the command launched
    gone.kill()
    gone.wait()
    dead = DagsterRun(job_name="__ephemeral_asset_job__", status=DagsterRunStatus.STARTED, tags=tags)
    alive = DagsterRun(job_name="__ephemeral_asset_job__", status=DagsterRunStatus.STARTED,
                       tags={**owner_tags(), LAUNCHED_BY_TAG: LAUNCHED_BY_COMMAND})
    # A run of that command which the daemon launched: its worker is the daemon's to watch.
    by_daemon = DagsterRun(job_name="__ephemeral_asset_job__", status=DagsterRunStatus.STARTED, tags=gone_tags)
    # A run of that command not launched yet (NOT_STARTED; QUEUED is the same case, but a QUEUED run needs a
    # code origin to be added): it must not start later, when a daemon comes up.
    queued = DagsterRun(job_name="__ephemeral_asset_job__", status=DagsterRunStatus.NOT_STARTED, tags=gone_tags)
    for run in (dead, alive, by_daemon, queued):
        instance.add_run(run)
    assert instance.event_log_storage.claim_concurrency_slot("gpu", dead.run_id, "embeddings").is_claimed
    dead_run_sensor(build_sensor_context(instance=instance))
    assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive.run_id).status == DagsterRunStatus.STARTED
    assert instance.get_run_by_id(by_daemon.run_id).status == DagsterRunStatus.STARTED
    assert instance.get_run_by_id(queued.run_id).status == DagsterRunStatus.FAILURE
    assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []


def test_a_run_left_in_the_queue_by_a_killed_command_is_failed_not_launched_later(small_demo_home, instance,
                                                                                   tmp_path, commands):
    """A command killed (SIGKILL: no handler runs) while its run waits in the queue for a place leaves the run
    QUEUED; the run carries the command's identity, so the next command (or the daemon's sensor) fails it
    rather than a daemon launching it later, with nobody following it."""
    from dagster import DagsterRun

    from radassets.defs.dead_runs import LAUNCHED_BY_COMMAND, LAUNCHED_BY_TAG, fail_dead_runs, owner_tags

    # Two runs in progress, owned by this (live) process: the queue's max_concurrent_runs (2) is reached.
    busy = [DagsterRun(job_name="__ephemeral_asset_job__", status=DagsterRunStatus.STARTED,
                       tags={**owner_tags(), LAUNCHED_BY_TAG: LAUNCHED_BY_COMMAND}) for _ in range(2)]
    for run in busy:
        instance.add_run(run)
    command = Command(tmp_path, "queued", "pipeline", "run", "demo_v1", "--models", "radiomics", "--select",
                      "key:cohort")
    commands.append(command)
    wait_for(lambda: "runs in progress, max_concurrent_runs 2" in command.text(), "the command's run to queue")
    [run] = [r for r in instance.get_runs() if r.run_id not in {b.run_id for b in busy}]
    assert run.status == DagsterRunStatus.QUEUED
    assert int(run.tags[PID_TAG]) == command.process.pid and LAUNCHED_BY_TAG not in run.tags
    command.kill()

    assert fail_dead_runs(instance) == [run.run_id]  # the busy runs' owner lives: they are left alone
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    assert [instance.get_run_by_id(b.run_id).status for b in busy] == [DagsterRunStatus.STARTED] * 2


def test_pipeline_run_submits_its_runs_to_the_queue_and_reports_each_in_one_line(small_demo_home, instance, tmp_path,
                                                                                   commands):
    """No daemon: the command queues each run as a UI launch would, dequeues it and starts its worker (another
    process), follows it with a progress bar, and ends it with one line; a failed step's line is the user's
    error, not a Dagster class path."""
    from radassets.defs.dead_runs import LAUNCHED_BY_COMMAND, LAUNCHED_BY_TAG

    command = Command(tmp_path, "queued", "pipeline", "run", "demo_v1", "--models", "radiomics", "--select",
                      "key:seeds")  # the seeds need volumes, which are not materialized: a user error
    commands.append(command)
    assert command.wait() == 1, command.text()
    [run] = instance.get_runs()
    events = [e.dagster_event.event_type_value for e in instance.all_logs(run.run_id)
              if e.dagster_event and e.dagster_event.event_type_value.startswith("PIPELINE_")]
    # Through the run coordinator's queue, then started by the command: enqueued, starting, start, failure.
    assert events == ["PIPELINE_ENQUEUED", "PIPELINE_STARTING", "PIPELINE_START", "PIPELINE_FAILURE"]
    assert run.job_name == "__ASSET_JOB" and run.tags["dagster/partition"] == "demo_v1"
    assert run.tags[LAUNCHED_BY_TAG] == LAUNCHED_BY_COMMAND
    assert int(run.tags[PID_TAG]) != command.process.pid  # the run worker, not the command
    lines = command.text().splitlines()
    # The run's bar, as rich leaves it: the label, steps ended of the run's plan (the failed one counts), time.
    assert any(re.match(r"demo_v1\s.*\s1/1\s+\d+:\d\d:\d\d$", line) for line in lines), lines
    result = lines.index(f"demo_v1: run {run.run_id} failed")
    assert lines[result + 1] == ("  seeds: seeds of 'demo_v1' needs 'volumes', which is not materialized (no "
                                 f"{small_demo_home}/volumes/demo_v1/manifest.json); materialize 'volumes' first")
    log = Path(instance.root_directory) / "radassets" / "runs" / f"{run.run_id}.log"
    assert lines[result + 2] == f"  run worker output: {log}"
    assert "Steps failed: ['seeds']" in log.read_text()
