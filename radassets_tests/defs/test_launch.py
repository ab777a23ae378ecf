"""The launcher's run workers (radassets.defs.launch): a command with several runs starts the next run's
worker while the current run executes (a standby that has done its imports), which runs that run exactly as a
fresh worker would: its own log, its own pid in the run's tags, the same results in the same order; a standby
that is not needed is stopped; a worker's exit status is Dagster's (1 for a failed run). No timing is asserted.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from dagster import DagsterRunStatus

import radassets.defs.launch as launch
from radassets.defs.dead_runs import PID_TAG
from radassets.defs.run import materialize_dataset_versions
from radassets.settings import Settings

pytestmark = [pytest.mark.integration]


@pytest.fixture
def started(monkeypatch) -> list[tuple[list[str], subprocess.Popen]]:
    """The launcher's run workers as they are started: (argv, process), in order; the launcher is the real one."""
    started: list[tuple[list[str], subprocess.Popen]] = []
    real_start = launch.Launcher._start_worker

    def recording_start(argv, stdout, stdin):
        process = real_start(argv, stdout, stdin)
        started.append((argv, process))
        return process

    monkeypatch.setattr(launch.Launcher, "_start_worker", staticmethod(recording_start))
    return started


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_runs_after_the_first_go_to_a_standby_worker_with_the_same_results(small_demo_home, instance, started):
    lines: list[str] = []
    assert materialize_dataset_versions(["demo_v1", "demo_v2"], settings=Settings.load(), selection="key:cohort",
                                        models=[], progress=lines.append)
    lines = [line for line in lines if not line.startswith("model partitions added")]
    runs = sorted(instance.get_runs(), key=lambda r: r.tags["dagster/partition"])
    assert [r.tags["dagster/partition"] for r in runs] == ["demo_v1", "demo_v2"]
    assert all(r.status == DagsterRunStatus.SUCCESS for r in runs)
    # One selection: the second run reuses the first's job subset and plan, which are the same snapshots.
    assert runs[0].execution_plan_snapshot_id == runs[1].execution_plan_snapshot_id
    assert runs[0].job_snapshot_id == runs[1].job_snapshot_id
    # The first run's worker was started fresh with its arguments, the second's as a standby during the first.
    assert [argv == [launch.STANDBY] for argv, _ in started] == [False, True]
    assert [int(r.tags[PID_TAG]) for r in runs] == [p.pid for _, p in started]
    # The command's lines: the same, in the same order, as with fresh workers.
    assert [line.split(": run ")[0] if ": run " in line else line for line in lines] == [
        "materializing cohort for demo_v1 ...", "demo_v1", "materializing cohort for demo_v2 ...", "demo_v2"]
    for run in runs:  # each worker's Dagster output is in its own run's log
        log = Path(instance.root_directory) / "radassets" / "runs" / f"{run.run_id}.log"
        assert f"{run.run_id} - " in log.read_text() and "RUN_SUCCESS" in log.read_text()
    assert not any(_alive(p.pid) for _, p in started)
    assert (small_demo_home / "cohort" / "demo_v2").is_dir()


def test_a_standby_not_needed_is_stopped_and_a_failed_run_skips_its_model_runs(small_demo_home, instance, started):
    lines: list[str] = []
    # The seeds need volumes, which are not materialized: the run fails, so its model runs are skipped, and
    # the standby started for the next of them is stopped.
    assert not materialize_dataset_versions(["demo_v1"], settings=Settings.load(),
                                            selection="key:seeds or key:embeddings", models=["radiomics"],
                                            progress=lines.append)
    lines = [line for line in lines if not line.startswith("model partitions added")]
    [run] = instance.get_runs()
    assert run.status == DagsterRunStatus.FAILURE
    assert lines[0] == "materializing seeds for demo_v1 ..."
    assert lines[1].splitlines()[0] == f"demo_v1: run {run.run_id} failed"
    assert not any(line.startswith("materializing embeddings") for line in lines)
    assert [argv == [launch.STANDBY] for argv, _ in started] == [False, True]
    assert started[0][1].returncode == 1  # Dagster's status for a failed run, kept by the fast exit
    assert not any(_alive(p.pid) for _, p in started)
    log = Path(instance.root_directory) / "radassets" / "runs" / f"{run.run_id}.log"
    assert "Steps failed: ['seeds']" in log.read_text()
