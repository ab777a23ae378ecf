"""Runs whose process died: found, marked failed, and their pool slots given back.

A run worker started by the CLI (``radassets pipeline run``, ``models backfill``: ``radassets.defs.launch``)
that is killed with SIGKILL, or dies with its command, cannot report its own end: Dagster keeps the run
STARTED and keeps the pool slots it claimed (the only ``gpu`` slot), so every later run of that pool waits
for ever. Dagster's run monitoring does not see it: it asks the run launcher whether a run's worker is
alive, and the default run launcher cannot answer that (see ``dagster.yaml``).

So each run worker the CLI starts carries the identity of its process in its run's tags (``owner_tags``: host,
pid and the process's start time, which tells a reused pid from the original process), and ``fail_dead_runs``
(a function of the instance only, so that any caller can use it: the CLI before each run and while it waits
for a slot, the sensor ``dead_run_sensor`` in the daemon) reports every unfinished run of this host whose
process is gone as failed and frees its slots. Runs of other hosts are left alone: their processes cannot be
checked from here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

import psutil
from dagster import (DagsterInstance, DagsterRunStatus, DefaultSensorStatus, RunsFilter, SensorEvaluationContext,
                     SkipReason, sensor)

HOST_TAG = "radassets/host"
PID_TAG = "radassets/pid"
PID_STARTED_TAG = "radassets/pid_started"  # the process's start time (seconds since the epoch, from the OS)
# Set by the command when it launches a run's worker itself: the pid tags then name that worker. A run of the
# command that the daemon launched has the command's pid tags but not this one: Dagster's run monitoring
# watches its worker, and the command's death says nothing about it.
LAUNCHED_BY_TAG = "radassets/launched_by"
LAUNCHED_BY_COMMAND = "command"
NOT_LAUNCHED = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED]
UNFINISHED = [*NOT_LAUNCHED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def owner_tags(pid: int | None = None) -> dict[str, str]:
    """Tags naming the process that executes a run (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid),
            PID_STARTED_TAG: repr(psutil.Process(pid).create_time())}


def owner_alive(tags: Mapping[str, str]) -> bool | None:
    """Whether the process named by ``owner_tags`` still runs: None when it cannot be told (another host, or
    no owner recorded). A pid now used by another process (a later start time) or a zombie is dead."""
    if tags.get(HOST_TAG) != socket.gethostname() or PID_TAG not in tags:
        return None
    try:
        process = psutil.Process(int(tags[PID_TAG]))
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        started = process.create_time()
    except psutil.NoSuchProcess:
        return False
    # The OS reports start times in clock ticks; a reused pid starts at least a tick later.
    return abs(started - float(tags.get(PID_STARTED_TAG, started))) < 0.5


def describe_owner(tags: Mapping[str, str]) -> str:
    if PID_TAG not in tags:
        return "not started by the radassets command line (the UI or a schedule)"
    return f"radassets pid {tags[PID_TAG]} on {tags.get(HOST_TAG, '?')}"


def _slot_holders(instance: DagsterInstance) -> set[str]:
    """Run ids that hold, or wait for, a slot of any pool."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return set()
    pools = [limit.name for limit in storage.get_pool_limits()]
    holders = set(storage.get_concurrency_run_ids())
    for info in storage.get_concurrency_infos(pools).values():
        holders.update(slot.run_id for slot in info.claimed_slots)
    return holders


def fail_dead_runs(instance: DagsterInstance, log: Callable[[str], None] | None = None) -> list[str]:
    """Report every unfinished run of this host whose process is gone as failed, and free the pool slots
    held by such runs, by finished runs of ours, and by runs no longer in the instance (deleted).

    Returns the ids of the runs whose slots were freed or that were marked failed."""
    freed: list[str] = []
    for run in instance.get_runs(RunsFilter(statuses=UNFINISHED, tags={HOST_TAG: socket.gethostname()})):
        ours = run.status in NOT_LAUNCHED or run.tags.get(LAUNCHED_BY_TAG) == LAUNCHED_BY_COMMAND
        if not ours or owner_alive(run.tags) is not False:
            continue
        message = (f"The process of this run ({describe_owner(run.tags)}) is gone (killed, or its terminal "
                   "closed): marked failed by radassets and its pool slots freed.")
        instance.report_run_failed(run, message)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        freed.append(run.run_id)
        if log:
            log(f"run {run.run_id}: {message}")
    for run_id in sorted(_slot_holders(instance) - set(freed)):
        holder = instance.get_run_by_id(run_id)
        if holder is not None and not (holder.is_finished and HOST_TAG in holder.tags):
            continue  # running, or not ours: Dagster's run monitoring frees slots of the runs it launched
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        freed.append(run_id)
        if log:
            log(f"run {run_id}: freed the pool slots it held after its end")
    return freed


@sensor(
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Marks failed the runs started by the radassets command line whose process died (killed, or its "
                "terminal closed) and frees their pool slots, so they neither hold the gpu pool nor count against "
                "the queue's max_concurrent_runs.",
)
def dead_run_sensor(context: SensorEvaluationContext):
    freed = fail_dead_runs(context.instance, context.log.warning)
    return SkipReason(f"{len(freed)} dead run(s) failed or slots freed: {', '.join(freed)}" if freed
                      else "no dead runs")
