"""Runs of the command line, submitted to the Dagster instance and followed to their end.

Design (issue 14, point 3):

- **One orchestrator.** ``radassets pipeline run`` and ``models backfill`` no longer execute runs in their own
  process (``materialize``). Each run is created in the instance as a run of Dagster's implicit asset job
  (``__ASSET_JOB``, what the UI's "Materialize" launches) with an asset selection and a partition key, from
  the code location ``radassets`` of ``workspace.yaml`` (loaded in this process, ``InProcessCodeLocationOrigin``
  with that location name, so that the daemon of ``make ui`` finds the run's code under the same name). The
  run is then *submitted*: the instance's run coordinator (``QueuedRunCoordinator``, ``dagster.yaml``) queues
  it like a UI launch.
- **With a daemon** (its queued-run heartbeat is fresh): the daemon dequeues the run under
  ``max_concurrent_runs`` and launches it through the instance's run launcher; the command only follows it.
  A daemon that comes up while the command waits takes the run over (the command checks, under its dequeue
  lock, that the run is still queued before it launches it); one that stops before it took the run leaves it
  to the command again.
- **With no daemon** (``make demo``, offline, CI): the command dequeues its own runs, one at a time, when the
  instance's ``max_concurrent_runs`` leaves room (counted under a file lock, so two commands do not both take
  the last place), and starts the run worker itself: ``dagster api execute_run`` (``ExecuteRunArgs``), the
  very process the default run launcher's code server starts. (The default launcher itself cannot be used
  here: it needs a code location *server*, a second process that imports the definitions, torch among them,
  before every command; see ``DefaultRunLauncher.launch_run``.) The run executes in that process with the
  in-process executor (one import of the definitions per run, not one per step).
- **No idle waiting** (issue 18). Between looks at its run the command waits on the run's worker (with
  ``POLL_S`` as timeout), not a fixed sleep: the run ends as its worker exits, and the command goes on at once.
  The worker (``run_worker``: ``dagster api execute_run`` and no more) exits without the interpreter's teardown
  of Dagster's modules (seconds on 2 busy cores). When another run follows, its worker is started as soon as
  the current run is STARTED and waits, its imports done, for the run on standard input (a *standby*); the
  runs themselves still follow one another, in the same order, with the same failure semantics (a failed
  dataset-version run still skips its model runs), and a standby not needed is stopped. Runs are not
  overlapped: on 2 cores the steps are CPU-bound, and the command's output and interrupt semantics are those
  of one run at a time (``docs/benchmarks.md``, "make demo").
- **Pools are the instance's.** The run worker's executor claims the ``gpu`` slot (granularity ``op``), as for
  a UI run; the private ``InstanceConcurrencyContext`` claim of the old in-process path is gone. While the run
  waits for a slot the command says who holds the pool, and frees the slots of dead runs.
- **Dead runs.** A run is created with the command's host, pid and start time as its owner tags
  (``radassets.defs.dead_runs``); when the command launches the worker, the tags name the worker and
  ``radassets/launched_by=command`` says so. So a killed worker's run, and a queued run whose command died
  (it must not start later, when a daemon comes up), is failed and its slot freed by the next command or by
  ``dead_run_sensor`` (the default launcher cannot report a dead worker to Dagster's run monitoring); a run
  the daemon launched is left to Dagster's run monitoring.
  The worker dies with its command (Linux: ``PR_SET_PDEATHSIG``), so ``kill -9`` of the command, or of the
  terminal's job, stops the run as it did when the run executed in the command's process; the next command
  fails that run. (Elsewhere the worker finishes the run, as a launched run would.)
- **Process group.** The worker is in a session of its own, so that a terminal's Ctrl-C reaches it once,
  passed on by the command (Dagster's handler would take a second SIGINT in the middle of failing the step).
- **Interrupts.** Ctrl-C, SIGTERM or SIGHUP to the command is passed to its run worker as SIGINT (Dagster
  stops the step, the run ends FAILURE); if the worker has not ended after ``STOP_GRACE_S`` (waiting for a
  pool slot, Dagster defers interrupts) it is killed, with what it started, and the run marked failed; a
  second Ctrl-C kills it at once. A run the daemon launched is terminated through the instance's run
  launcher (it ends CANCELED), one still queued is cancelled. Then ``Interrupted`` carries the run id (exit
  status 130 for Ctrl-C), and no later run starts. A run terminated from the UI (CANCELING) gets the same
  SIGINT from the command, since the default launcher cannot reach a worker it did not start. The command
  never leaves its worker behind: after the run ends, the worker has STOP_GRACE_S to exit.
- **Output.** A progress bar per run (rich: steps done of the run's plan) and one line with the result. The
  whole event log is in the instance (the UI, ``dagster run``); the worker's own output goes to
  ``$DAGSTER_HOME/radassets/runs/<run id>.log``, named in the line of a failed run with its step errors.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from dagster import _check as check
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.events import DagsterEvent
from dagster._core.execution.plan.objects import StepFailureData
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import serialize_value
from filelock import FileLock
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from radassets import interrupts, profile
from radassets.defs.dead_runs import (LAUNCHED_BY_COMMAND, LAUNCHED_BY_TAG, NOT_LAUNCHED, describe_owner, fail_dead_runs,
                                      owner_tags)

if TYPE_CHECKING:
    from dagster._core.remote_representation.external import RemoteJob
    from dagster._core.snap.execution_plan_snapshot import ExecutionPlanSnapshot
    from dagster._core.workspace.context import BaseWorkspaceRequestContext

LOCATION_NAME = "radassets"  # workspace.yaml's location name: the daemon finds a queued run's code by it
DEFINITIONS_MODULE = "radassets.definitions"
POLL_S = 0.5
POOL_WAIT_REPORT_S = 60.0  # a run waiting for a pool slot is reported again this often
STOP_GRACE_S = 30.0  # after an interrupt, how long the run worker has to end its run before it is killed
QUEUED_DAEMON = "QUEUED_RUN_COORDINATOR"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
STANDBY = "--standby"  # run_worker's argument: wait for the run on standard input
WORKER_CODE = "from radassets.defs.launch import run_worker; run_worker()"
IN_PROCESS: dict[str, Any] = {"execution": {"config": {"in_process": {}}}}  # one process per run, not per step
RESULT_WORDS = {DagsterRunStatus.SUCCESS: "succeeded", DagsterRunStatus.FAILURE: "failed",
                DagsterRunStatus.CANCELED: "was canceled"}
_UNFINISHED = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def daemon_dequeues(instance: DagsterInstance) -> bool:
    """Whether a daemon with a fresh heartbeat dequeues the instance's queued runs."""
    from dagster._daemon.controller import get_daemon_statuses

    if not isinstance(instance.run_coordinator, QueuedRunCoordinator):
        return False
    status = get_daemon_statuses(instance, [QUEUED_DAEMON], ignore_errors=True).get(QUEUED_DAEMON)
    return bool(status and status.healthy)


def _die_with_parent() -> Callable[[], None] | None:
    """For the run worker, before it starts: SIGKILL when the command that started it dies (Linux only).

    ``prctl`` is looked up here, in the command, not in the forked child (a ``dlopen`` there can deadlock in a
    process with threads, torch's among them); if the command died before the call, the child exits at once."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def in_the_child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return in_the_child


class Launcher:
    """Creates, submits, launches (when no daemon does) and follows the runs of one command."""

    def __init__(self, instance: DagsterInstance, progress: Callable[[str], None] = print):
        self.instance = instance
        self.progress = progress
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(executable_path=sys.executable, module_name=DEFINITIONS_MODULE,
                                 working_directory=os.getcwd()),
            location_name=LOCATION_NAME)
        self.location = origin.create_location(instance)
        [self.repository] = self.location.get_repositories().values()
        self.console = Console(stderr=True)
        self.worker: subprocess.Popen | None = None  # the current run's worker, when this command started it
        self.standby: subprocess.Popen | None = None  # the next run's worker, imported and waiting (prepare_next)
        self._plans: dict[tuple[AssetKey, ...], tuple[RemoteJob, ExecutionPlanSnapshot]] = {}  # _job_and_plan's

    def create_run(self, keys: Sequence[AssetKey], partition_key: str | None) -> DagsterRun:
        """A run of ``keys`` for ``partition_key`` (a ``MultiPartitionKey`` for the dataset version × model)."""
        keys = sorted(keys, key=lambda k: k.to_user_string())
        job, plan = self._job_and_plan(tuple(keys))
        # The command's identity until it launches a worker (whose identity replaces it): a run the command
        # created but never launched (the command killed while the run waited in the queue) is then failed by
        # the next command or the daemon's sensor (fail_dead_runs), not launched later by a daemon.
        tags = {**job.tags, **owner_tags()}
        if partition_key is not None:
            tags[PARTITION_NAME_TAG] = str(partition_key)
            for dimension, key in getattr(partition_key, "keys_by_dimension", {}).items():
                tags[f"{PARTITION_NAME_TAG}/{dimension}"] = key
        return self.instance.create_run(
            job_name=IMPLICIT_ASSET_JOB_NAME, run_id=None, run_config=IN_PROCESS, resolved_op_selection=None,
            step_keys_to_execute=plan.step_keys_to_execute, op_selection=None, status=None, root_run_id=None,
            parent_run_id=None, tags=tags, job_snapshot=job.job_snapshot, execution_plan_snapshot=plan,
            parent_job_snapshot=job.parent_job_snapshot, remote_job_origin=job.get_remote_origin(),
            job_code_origin=job.get_python_origin(), asset_selection=frozenset(keys), asset_check_selection=None,
            asset_graph=self.repository.asset_graph)

    def _job_and_plan(self, keys: tuple[AssetKey, ...]) -> tuple[RemoteJob, ExecutionPlanSnapshot]:
        """The asset job's subset for ``keys`` and its execution plan, computed once per selection (a second or
        more per run on 2 cores): they do not depend on the partition, so the runs of every dataset version and
        model with the same selection share them."""
        if keys not in self._plans:
            selector = JobSubsetSelector(location_name=LOCATION_NAME, repository_name=self.repository.name,
                                         job_name=IMPLICIT_ASSET_JOB_NAME, op_selection=None, asset_selection=keys)
            job = self.location.get_job(selector)
            plan = self.location.get_execution_plan(job, IN_PROCESS, step_keys_to_execute=None, known_state=None,
                                                    instance=self.instance).execution_plan_snapshot
            self._plans[keys] = (job, plan)
        return self._plans[keys]

    def run(self, keys: Sequence[AssetKey], partition_key: str | None, label: str,
            more: bool = False) -> tuple[bool, str]:
        """Create, submit and follow one run; returns whether it succeeded and its id. ``more``: another run
        may follow, whose worker is started while this one runs (``prepare_next``)."""
        self.worker = None
        run_id = None
        try:
            with profile.phase("command: fail dead runs", label=label):
                fail_dead_runs(self.instance, self.progress)  # their slots and places in the queue first
            with profile.phase("command: create run", label=label):
                run = self.create_run(keys, partition_key)
            run_id = run.run_id
            with profile.phase("command: submit and start", label=label, run_id=run_id):
                if isinstance(self.instance.run_coordinator, QueuedRunCoordinator):
                    # The queued coordinator only records the run as QUEUED: it needs no workspace. (Another
                    # coordinator would launch the run at once, with a workspace this command does not have:
                    # the command launches it itself.)
                    self.instance.submit_run(run_id, workspace=cast("BaseWorkspaceRequestContext", None))
                self._start_unless_a_daemon_does(run_id)
            with profile.phase("command: follow", label=label, run_id=run_id):
                status = self._follow(run_id, label, prepare_next=more)
        except interrupts.Interrupted as e:
            e.run_id = run_id
            if run_id is not None:
                self._stop(run_id)
            raise
        success = status == DagsterRunStatus.SUCCESS
        self.progress(f"{label}: run {run_id} {RESULT_WORDS.get(status, status.value)}"
                      + ("" if success else self._failure_summary(run_id)))
        return success, run_id

    # -- no daemon: this command dequeues and launches its own runs ------------------------------------------

    def _start_unless_a_daemon_does(self, run_id: str) -> None:
        """Wait for a place under the queue's ``max_concurrent_runs`` and start the run's worker, unless a
        daemon dequeues the instance's runs (now, or from some moment while this one waits): it launches it."""
        # The limit the daemon's dequeuer honours (dagster.yaml's concurrency: runs:), not the coordinator's own
        # run_queue_config, which keeps Dagster's default of 10 when only the former is set.
        queue = self.instance.get_concurrency_config().run_queue_config
        limit = (queue.max_concurrent_runs
                 if isinstance(self.instance.run_coordinator, QueuedRunCoordinator) and queue is not None else -1)
        reported = False
        while True:
            if daemon_dequeues(self.instance):
                return
            with FileLock(Path(self.instance.root_directory) / ".radassets-dequeue.lock"):
                if self._get(run_id).status not in NOT_LAUNCHED:
                    return  # a daemon took it after all
                running = self.instance.get_runs_count(RunsFilter(statuses=_UNFINISHED))
                if limit < 0 or running < limit:
                    self._launch(run_id)
                    return
            if fail_dead_runs(self.instance, self.progress):
                continue
            if not reported:
                self.progress(f"run {run_id} queued: {running} runs in progress, max_concurrent_runs {limit} "
                              "(Ctrl-C stops)")
                reported = True
            interrupts.raise_if_interrupted(run_id)
            time.sleep(POLL_S)

    def _launch(self, run_id: str) -> None:
        """Start the run worker, the process the default launcher's code server starts. Whatever stops the
        launch, the run does not stay STARTING."""
        self.instance.add_run_tags(run_id, {LAUNCHED_BY_TAG: LAUNCHED_BY_COMMAND})
        # What instance.launch_run records before it hands the run to the launcher.
        self.instance.report_dagster_event(
            DagsterEvent(event_type_value=DagsterEventType.PIPELINE_STARTING.value, job_name=IMPLICIT_ASSET_JOB_NAME),
            run_id=run_id)
        try:
            run = self._get(run_id)
            args = ExecuteRunArgs(job_origin=check.not_none(run.job_code_origin), run_id=run_id,
                                  instance_ref=self.instance.get_ref(), set_exit_code_on_failure=True)
            log = self._worker_log(run_id)
            log.parent.mkdir(parents=True, exist_ok=True)
            self.worker = self._hand_to_standby(log, serialize_value(args))
            if self.worker is None:
                with log.open("w") as out:
                    self.worker = self._start_worker([serialize_value(args)], stdout=out, stdin=subprocess.DEVNULL)
            self.instance.add_run_tags(run_id, owner_tags(self.worker.pid))
        except BaseException as e:
            self._end_worker()
            self.instance.report_run_failed(self._get(run_id), f"radassets: the run worker did not start ({e!r})")
            raise

    @staticmethod
    def _start_worker(argv: list[str], stdout: Any, stdin: Any) -> subprocess.Popen:
        """A run worker: ``dagster api execute_run`` (``run_worker``), with ``argv`` its arguments."""
        return subprocess.Popen(
            [sys.executable, "-c", WORKER_CODE, *argv],
            stdout=stdout, stderr=subprocess.STDOUT, stdin=stdin,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # the log is live (tail -f)
            start_new_session=True,  # interrupts reach it through this command only
            preexec_fn=_die_with_parent())

    def prepare_next(self) -> None:
        """Another run follows the current one: start its worker now (a standby), so that its imports of Python,
        Dagster and the definitions (seconds per run) overlap this run instead of following it. It waits for
        its run on standard input; a command that ends without using it closes that, and it exits."""
        if self.standby is not None or self.worker is None:
            return  # one is ready; or a daemon launches this command's runs: nothing to prepare
        with contextlib.suppress(OSError):
            self.standby = self._start_worker([STANDBY], stdout=subprocess.DEVNULL, stdin=subprocess.PIPE)

    def _hand_to_standby(self, log: Path, args: str) -> subprocess.Popen | None:
        """The standby worker, given this run (its log and its ``ExecuteRunArgs``), if one is alive."""
        standby, self.standby = self.standby, None
        if standby is None:
            return None
        try:
            if standby.poll() is not None:
                raise OSError(f"the standby worker exited with status {standby.returncode}")
            stdin = check.not_none(standby.stdin)
            stdin.write(json.dumps([str(log), args]).encode() + b"\n")
            stdin.close()
            return standby
        except OSError:  # it died (its output went nowhere): a fresh worker runs the run and logs why it fails
            self._discard(standby)
            return None

    def close(self) -> None:
        """The command's runs are over: an unused standby worker is stopped (it holds no run, slot or file)."""
        standby, self.standby = self.standby, None
        if standby is not None:
            self._discard(standby)

    @staticmethod
    def _discard(standby: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(standby.pid, signal.SIGKILL)  # at once: it may still be importing, minutes on a busy machine
        standby.wait()
        with contextlib.suppress(OSError):
            check.not_none(standby.stdin).close()

    def _end_worker(self, grace_s: float = 0.0) -> None:
        """Let this command's run worker exit within ``grace_s``, then kill it and what it started."""
        worker = self.worker
        if worker is None or worker.poll() is not None:
            return
        try:
            worker.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)  # it leads its own session: its children go with it
            worker.wait()

    def _stop(self, run_id: str) -> None:
        """After an interrupt: the run ends, its worker with it (see the module docstring)."""
        worker = self.worker
        if worker is not None and worker.poll() is None:
            self.progress(f"stopping run {run_id} (up to {STOP_GRACE_S:.0f} s; Ctrl-C again kills it)")
            worker.send_signal(signal.SIGINT)
            try:
                self._end_worker(STOP_GRACE_S)
            except interrupts.Interrupted:
                self._end_worker()
        run = self._get(run_id)
        if run.is_finished:
            return
        if run.status in NOT_LAUNCHED:  # never launched: it must not start later, when a daemon comes up
            if run.status == DagsterRunStatus.QUEUED:
                self.instance.run_coordinator.cancel_run(run_id)
            else:
                self.instance.report_run_canceled(run, "radassets: the command was interrupted before the run started")
        elif run.tags.get(LAUNCHED_BY_TAG) != LAUNCHED_BY_COMMAND:
            self.instance.run_launcher.terminate(run_id)  # launched by the daemon: its launcher stops it
        else:
            self.instance.report_run_failed(run, "radassets: the command was interrupted")
            self.instance.event_log_storage.free_concurrency_slots_for_run(run_id)

    # -- following a run -------------------------------------------------------------------------------------

    def _follow(self, run_id: str, label: str, prepare_next: bool = False) -> DagsterRunStatus:
        run = self._get(run_id)
        total = len(run.step_keys_to_execute or [])
        cursor = None
        done = 0
        pool_reported_at: float | None = None
        terminating = False
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=self.console, transient=False) as bar:
            task = bar.add_task(label, total=total)

            def say(message: str) -> None:  # above the bar, unwrapped, as written (no rich markup)
                bar.console.print(message, soft_wrap=True, markup=False, highlight=False)

            while True:
                interrupts.raise_if_interrupted(run_id)
                records = self.instance.event_log_storage.get_records_for_run(
                    run_id, cursor=cursor, of_type={DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE,
                                                    DagsterEventType.STEP_SKIPPED}, limit=100)
                cursor = records.cursor
                done += len(records.records)
                bar.update(task, completed=done)
                run = self._get(run_id)
                worker = self.worker
                if prepare_next and run.status != DagsterRunStatus.STARTING and run.status not in NOT_LAUNCHED:
                    self.prepare_next()  # once its worker has done its own imports: they do not compete
                    prepare_next = False
                if run.is_finished:
                    profile.mark("command: noticed the run's end", run_id=run_id)
                    with profile.phase("command: worker exit", run_id=run_id):
                        self._end_worker(STOP_GRACE_S)  # its last writes; it never outlives the run it ran
                    return run.status
                if worker is None and run.status in NOT_LAUNCHED and not daemon_dequeues(self.instance):
                    self._start_unless_a_daemon_does(run_id)  # the daemon stopped before it took the run
                elif worker is not None and worker.poll() is not None:
                    time.sleep(POLL_S)  # its last events may still be landing
                    run = self._get(run_id)
                    if not run.is_finished:
                        self.instance.report_run_failed(run, f"the run worker exited with status {worker.returncode}")
                        self.instance.event_log_storage.free_concurrency_slots_for_run(run_id)
                    return self._get(run_id).status
                elif worker is not None and run.status == DagsterRunStatus.CANCELING and not terminating:
                    say(f"run {run_id} is being terminated (from the UI?): stopping its worker")
                    worker.send_signal(signal.SIGINT)  # the default launcher cannot reach a worker it did not start
                    terminating = True
                waiting = self._pending_pool_steps(run_id)
                if waiting and (pool_reported_at is None or time.monotonic() - pool_reported_at > POOL_WAIT_REPORT_S):
                    fail_dead_runs(self.instance, say)
                    for step, pool in waiting:
                        say(f"{step} waits for a slot: {self._holders(pool)} (Ctrl-C stops)")
                    pool_reported_at = time.monotonic()
                self._pause(POLL_S, run_id)

    def _pause(self, seconds: float, run_id: str) -> None:
        """Until the next look at the run: ``seconds``, or less when this command's worker exits first. The run
        ends as its worker exits, so the command notices at once instead of up to ``seconds`` later."""
        worker = self.worker
        if worker is None:  # a daemon launched it: nothing of it to wait on here
            time.sleep(seconds)
            return
        # Popen.wait sleeps in steps of at most 50 ms between non-blocking waitpid calls (CPython 3.11), and a
        # signal's handler runs in those sleeps, as in time.sleep: interrupts reach the command as before.
        try:
            worker.wait(seconds)
        except subprocess.TimeoutExpired:
            return
        profile.mark("command: worker exited", run_id=run_id)

    def _worker_log(self, run_id: str) -> Path:
        return Path(self.instance.root_directory) / "radassets" / "runs" / f"{run_id}.log"

    def _get(self, run_id: str) -> DagsterRun:
        return check.not_none(self.instance.get_run_by_id(run_id), f"run {run_id} is not in the instance")

    def _pending_pool_steps(self, run_id: str) -> list[tuple[str, str]]:
        storage = self.instance.event_log_storage
        pools = [limit.name for limit in storage.get_pool_limits()]
        return [(slot.step_key, pool) for pool, info in storage.get_concurrency_infos(pools).items()
                for slot in info.pending_steps if slot.run_id == run_id and slot.assigned_timestamp is None]

    def _holders(self, pool: str) -> str:
        info = self.instance.event_log_storage.get_concurrency_info(pool)
        held = []
        for slot in info.claimed_slots:
            run = self.instance.get_run_by_id(slot.run_id)
            held.append(f"run {slot.run_id} (step {slot.step_key}; "
                        f"{describe_owner(run.tags) if run else 'being started'})")
        return f"pool {pool!r} (limit {info.limit}) is held by {', '.join(held) or 'runs queued before this one'}"

    def _failure_summary(self, run_id: str) -> str:
        errors = []
        for record in self.instance.event_log_storage.get_records_for_run(
                run_id, of_type=DagsterEventType.STEP_FAILURE).records:
            event = check.not_none(record.event_log_entry.dagster_event)
            data = event.step_failure_data
            errors.append(f"{event.step_key}: {_failure_message(data) if data else 'failed'}")
        run = self._get(run_id)
        if not errors and run.status == DagsterRunStatus.FAILURE:
            errors.append(self._run_failure_message(run_id))
        log = self._worker_log(run_id)
        return "".join(f"\n  {e}" for e in errors if e) + (f"\n  run worker output: {log}" if log.exists() else "")

    def _run_failure_message(self, run_id: str) -> str:
        records = self.instance.event_log_storage.get_records_for_run(
            run_id, of_type=DagsterEventType.PIPELINE_FAILURE).records
        return records[-1].event_log_entry.message if records else ""


def _failure_message(data: StepFailureData) -> str:
    """What a person reads of a step failure: a ``Failure``'s description (our user errors: ``user_failure``),
    else the error's message without the exception's class path."""
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description.strip()
    if data.error is None:
        return "failed"
    return data.error.message.strip()


def describe(keys: Sequence[AssetKey]) -> str:
    return ", ".join(k.to_user_string() for k in keys)



def run_worker() -> None:
    """The run worker's program: what ``python -m dagster api execute_run ARGS`` does, and two things more.

    - ``--standby`` instead of ARGS: import Dagster's run execution and the definitions first, then wait for one
      line on standard input, ``[log path, ARGS]``: the command hands over its next run as soon as it has
      created it, the imports already done (``Launcher.prepare_next``). The output then goes to the run's log.
      An empty input (the command needs no more runs) ends it.
    - After the run, the process exits without the interpreter's teardown of its modules (1-3 s for
      Dagster's thousands of objects on 2 busy cores, which the command would wait for), once every non-daemon
      thread has ended, ``atexit`` handlers have run (logging's flush, multiprocessing's children) and the
      output is flushed: what a normal exit does, minus freeing memory the OS takes back anyway.
    """
    from dagster._cli import main as dagster_main

    argv = sys.argv[1:]
    if argv == [STANDBY]:
        # What the run imports first (Python keeps the module). One that fails to import is left to the run:
        # it imports it again, fails as in a fresh worker and says why in the run's log and event log.
        with contextlib.suppress(Exception):
            importlib.import_module(DEFINITIONS_MODULE)
        line = sys.stdin.readline()
        if not line.strip():
            return
        log, args = json.loads(line)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, sys.stdout.fileno())
        os.dup2(fd, sys.stderr.fileno())
        os.close(fd)
        argv = [args]
    sys.argv = ["dagster", "api", "execute_run", *argv]
    try:
        dagster_main()
        status = 0
    except SystemExit as e:  # how click's main ends, success included
        if e.code is None or isinstance(e.code, int):
            status = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            status = 1
    # What the interpreter's exit does first: threading's own exit hooks (e.g. concurrent.futures telling its
    # pools' threads to stop), then a join of every non-daemon thread; then the atexit handlers.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()  # the handlers a normal exit runs; os._exit skips them
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
