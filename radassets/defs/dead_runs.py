"""Runs whose process died: found, marked failed, and their pool slots given back.

A run that the CLI executes in its own process (``radassets pipeline run``, ``models backfill``) and that
is killed with SIGKILL, or loses its terminal, cannot report its own end: Dagster keeps it STARTED and
keeps the pool slots it claimed (the only ``gpu`` slot), so every later run of that pool waits for ever.
Dagster's run monitoring does not see it: it asks the run launcher whether a run's worker is alive, and
neither the CLI's in-process runs nor the default run launcher can answer that (see ``dagster.yaml``).

So each run the CLI starts carries the identity of its process in its tags (``OWNER_TAGS``: host, pid and
the process's start time, which tells a reused pid from the original process), and ``fail_dead_runs``
(a function of the instance only, so that any caller can use it: the CLI before each run and while it
waits for a slot, the sensor ``dead_run_sensor`` in the daemon) reports every unfinished run of this host
whose process is gone as failed and frees its slots. Runs of other hosts are left alone: their processes
cannot be checked from here.

A slot is claimed before its run is created (``radassets.defs.run`` claims pool slots itself, so that the
wait can be logged and interrupted); for that moment the owner is written to a file under
``$DAGSTER_HOME/radassets/owners/<run_id>.json``, removed when the command is done with the run.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil
from dagster import (DagsterInstance, DagsterRunStatus, DefaultSensorStatus, RunsFilter, SensorEvaluationContext,
                     SkipReason, sensor)

HOST_TAG = "radassets/host"
PID_TAG = "radassets/pid"
PID_STARTED_TAG = "radassets/pid_started"  # the process's start time (seconds since the epoch, from the OS)
UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
              DagsterRunStatus.CANCELING]


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


def _owners_dir(instance: DagsterInstance) -> Path:
    return Path(instance.root_directory) / "radassets" / "owners"


def write_owner_file(instance: DagsterInstance, run_id: str) -> Path:
    """Record this process as the owner of ``run_id`` before the run exists (see the module docstring)."""
    path = _owners_dir(instance) / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(owner_tags()))
    os.replace(tmp, path)
    return path


def remove_owner_file(instance: DagsterInstance, run_id: str) -> None:
    (_owners_dir(instance) / f"{run_id}.json").unlink(missing_ok=True)


def _owner_file_tags(instance: DagsterInstance, run_id: str) -> dict[str, str]:
    try:
        return json.loads((_owners_dir(instance) / f"{run_id}.json").read_text())
    except (OSError, ValueError):
        return {}


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
    held by such runs, by finished runs of ours, and by runs never created whose owner is gone.

    Returns the ids of the runs whose slots were freed or that were marked failed."""
    freed: list[str] = []
    for run in instance.get_runs(RunsFilter(statuses=UNFINISHED, tags={HOST_TAG: socket.gethostname()})):
        if owner_alive(run.tags) is not False:
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
        if holder is None:  # a slot claimed before its run was created
            owner = _owner_file_tags(instance, run_id)
            if owner and owner_alive(owner) is not False:
                continue  # its command still runs, or runs on another host
            remove_owner_file(instance, run_id)
        elif not (holder.is_finished and HOST_TAG in holder.tags):
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
