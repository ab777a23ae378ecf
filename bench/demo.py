"""Benchmark: where the wall time of ``make demo`` goes, per run, per asset and per phase.

Runs what ``make demo`` runs (``radassets demo generate``, then ``radassets pipeline run demo_v1 demo_v2``) in a
temporary ``RADASSETS_HOME`` and ``DAGSTER_HOME`` (``dagster.yaml`` copied in, the ``gpu`` pool set to 1, as
``make install`` does), with ``RADASSETS_PROFILE`` set so that the command and its run workers append their
phases (``radassets.profile``) to one file. Then it reads Dagster's event log of every run and prints:

- per run: queue (created → the command starts the worker), worker start (→ the worker's first event: Python
  and Dagster imported), job load (→ RUN_START: the definitions imported), first step (→ first STEP_START),
  steps (→ last step's end), run end (→ RUN_SUCCESS/FAILURE), and the tail: run end → the command noticed
  (and the worker's exit) → the next run created;
- per asset: steps, seconds (STEP_START → STEP_SUCCESS) and, where profile lines name the asset, its phases
  (the asset function, lineage recording, ...);
- the sum of idle gaps (the command noticing a run's end later than the run ended and its worker exited:
  polling), Dagster and process overhead against step compute, and the wall total.

No ratio: the target is no idle waiting and a breakdown. ``--analyse DAGSTER_HOME [--profile FILE]`` prints the
same for an instance that ``make demo`` (or an older checkout) filled; without profile lines the tail is
measured from the event log alone (run end → next run created).

Run: ``python bench/demo.py`` (``make bench`` runs it with the others; about 2-3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the checkout's radassets, also when run as a script from elsewhere

COMMAND_NOTICED = "command: noticed the run's end"
COMMAND_WORKER_EXITED = "command: worker exited"
COMMAND_FOLLOW = "command: follow"
COMMAND_EXIT_WAIT = "command: worker exit"
BLOCKED_S = 0.01  # a wait for the worker's exit longer than this: the command was blocked on the process, not idle


def run_demo(work: Path) -> tuple[Path, Path, dict[str, float]]:
    """``make demo``'s two commands in fresh homes under ``work``; returns the Dagster home, the profile file
    and the commands' wall seconds."""
    home, dagster_home, profile_file = work / "home", work / "dagster_home", work / "profile.jsonl"
    dagster_home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    empty_settings = work / "radassets.toml"  # not the checkout's radassets.toml (its var/data)
    empty_settings.write_text("")
    env = {**os.environ, "RADASSETS_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
           "RADASSETS_CONFIG": str(empty_settings), "RADASSETS_PROFILE": str(profile_file),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    bin_dir = Path(sys.executable).parent
    dagster = bin_dir / "dagster"
    subprocess.run([str(dagster) if dagster.exists() else "dagster", "instance", "concurrency", "set", "gpu", "1"],
                   env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    walls = {}
    for name, args in (("demo generate", ["demo", "generate"]),
                       ("pipeline run demo_v1 demo_v2", ["pipeline", "run", "demo_v1", "demo_v2"])):
        t = time.perf_counter()
        with (work / f"{args[0]}.log").open("w") as log:
            done = subprocess.run([sys.executable, "-m", "radassets.cli", *args], env=env, cwd=REPO,
                                  stdout=log, stderr=subprocess.STDOUT)
        walls[name] = time.perf_counter() - t
        if done.returncode:
            sys.exit(f"{name} failed (status {done.returncode}); its output: {work / (args[0] + '.log')}")
    return dagster_home, profile_file, walls


@dataclass
class Run:
    run_id: str
    label: str
    created: float
    events: dict[str, float] = field(default_factory=dict)  # first time of each milestone
    steps: list[tuple[str, float, float, bool]] = field(default_factory=list)  # (step, start, end, succeeded)
    noticed: float | None = None  # the command saw the run's end (profile)
    worker_exited: float | None = None  # the command saw its worker exit (profile)
    command_resumed: float | None = None  # the command's follow of this run returned (profile)
    exit_wait: float | None = None  # the command waited this long for the worker to exit after it saw the end

    @property
    def end(self) -> float:
        return self.events.get("end", max((e for _, _, e, _ in self.steps), default=self.created))

    def compute(self) -> float:
        return sum(e - s for _, s, e, _ in self.steps)


def read_runs(dagster_home: Path, profile_lines: list[dict[str, Any]]) -> list[Run]:
    """Every run of the instance, oldest first, with its milestones from the event log and the profile."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    from dagster import DagsterEventType, DagsterInstance

    milestones = {DagsterEventType.PIPELINE_STARTING.value: "starting", DagsterEventType.ENGINE_EVENT.value: "worker",
                  DagsterEventType.PIPELINE_START.value: "start", DagsterEventType.PIPELINE_SUCCESS.value: "end",
                  DagsterEventType.PIPELINE_FAILURE.value: "end", DagsterEventType.PIPELINE_CANCELED.value: "end"}
    instance = DagsterInstance.get()
    runs = []
    for record in sorted(instance.get_run_records(), key=lambda r: r.create_timestamp):
        tags = record.dagster_run.tags
        assets = sorted(k.to_user_string() for k in record.dagster_run.asset_selection or ())
        run = Run(record.dagster_run.run_id, tags.get("dagster/partition", "-") + ": " + ", ".join(assets),
                  record.create_timestamp.timestamp())
        open_steps: dict[str, float] = {}
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            kind = event.event_type_value
            if kind in milestones:
                run.events.setdefault(milestones[kind], entry.timestamp)
            elif kind == DagsterEventType.STEP_START.value:
                open_steps[event.step_key or "?"] = entry.timestamp
                run.events.setdefault("first_step", entry.timestamp)
            elif kind in (DagsterEventType.STEP_SUCCESS.value, DagsterEventType.STEP_FAILURE.value):
                key = event.step_key or "?"
                run.steps.append((key, open_steps.pop(key, entry.timestamp), entry.timestamp,
                                  kind == DagsterEventType.STEP_SUCCESS.value))
        runs.append(run)
    by_id = {r.run_id: r for r in runs}
    for line in profile_lines:
        run = by_id.get(line.get("run_id", ""))
        if run is None:
            continue
        end = line["start"] + line["seconds"]
        if line["phase"] == COMMAND_NOTICED:
            run.noticed = line["start"]
        elif line["phase"] == COMMAND_WORKER_EXITED:
            run.worker_exited = line["start"]
        elif line["phase"] == COMMAND_FOLLOW:
            run.command_resumed = end
        elif line["phase"] == COMMAND_EXIT_WAIT:
            run.exit_wait = line["seconds"]
    return runs


def _span(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _cell(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def idle_gap(run: Run) -> float | None:
    """The command's lag in going on after a run it could already leave: the run ended and its worker exited.
    A command that then still waited for the worker's exit (a blocking wait, which returns as the process
    exits) was not idle: that time is the worker's teardown. None without profile lines."""
    if run.noticed is None:
        return None
    if run.exit_wait is not None and run.exit_wait > BLOCKED_S:
        return 0.0
    ready = max(run.end, run.worker_exited or run.end)
    return max(0.0, run.noticed - ready)


def report(runs: list[Run], profile_lines: list[dict[str, Any]], walls: dict[str, float] | None) -> None:
    if not runs:
        sys.exit("no runs in the instance")
    print("per run (seconds): queue = created → command starts the worker; worker = → the worker's first event "
          "(python, dagster imported); load = → RUN_START (definitions); first = → first STEP_START; "
          "steps = → last step end; end = → RUN_SUCCESS; tail = run end → the command resumed (the worker's exit, "
          "and any polling lag); next = run end → the next run created; idle = the polling lag in tail")
    header = ["queue", "worker", "load", "first", "steps", "end", "tail", "next", "idle", "compute"]
    print(f"{'run':58s} " + " ".join(f"{h:>7s}" for h in header))
    totals: dict[str, float] = defaultdict(float)
    for i, run in enumerate(runs):
        e = run.events
        nxt = runs[i + 1].created if i + 1 < len(runs) else None
        last_step = max((end for _, _, end, _ in run.steps), default=None)
        cells = {"queue": _span(run.created, e.get("starting")), "worker": _span(e.get("starting"), e.get("worker")),
                 "load": _span(e.get("worker"), e.get("start")), "first": _span(e.get("start"), e.get("first_step")),
                 "steps": _span(e.get("first_step"), last_step), "end": _span(last_step, e.get("end")),
                 "tail": _span(run.end, run.command_resumed), "next": _span(run.end, nxt), "idle": idle_gap(run),
                 "compute": run.compute()}
        for k, v in cells.items():
            totals[k] += v or 0.0
        print(f"{run.label[:58]:58s} " + " ".join(f"{_cell(cells[h]):>7s}" for h in header))
    print(f"{'total':58s} " + " ".join(f"{totals[h]:7.2f}" for h in header))

    steps: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for key, start, end, _ in run.steps:
            steps[key].append(end - start)
    phases: dict[tuple[str, str], list[float]] = defaultdict(list)
    other: dict[str, list[float]] = defaultdict(list)
    for line in profile_lines:
        if line["phase"].startswith("command:"):
            other[line["phase"]].append(line["seconds"])
        elif "asset" in line:
            phases[(str(line["asset"]), line["phase"])].append(line["seconds"])
        else:
            other[line["phase"]].append(line["seconds"])
    print()
    print("per asset: steps (Dagster's STEP_START → STEP_SUCCESS), seconds in all, median; then its profile phases")
    for key in sorted(steps, key=lambda k: -sum(steps[k])):
        s = steps[key]
        print(f"  {key:28s} {len(s):3d} steps {sum(s):8.2f} s  median {statistics.median(s):6.2f} s")
        for (asset, name), secs in sorted(phases.items()):
            if asset == key:
                print(f"      {name:32s} {len(secs):4d} × {sum(secs):8.3f} s  "
                      f"({100 * sum(secs) / sum(s):.1f} % of the steps)")
    for (asset, name), secs in sorted(phases.items()):
        if asset not in steps:
            print(f"  {asset}: {name:32s} {len(secs):4d} × {sum(secs):8.3f} s")
    if other:
        print("other phases (profile lines without an asset), seconds in all:")
        for name, secs in sorted(other.items()):
            print(f"  {name:40s} {len(secs):4d} × {sum(secs):8.3f} s")

    wall = max(r.end for r in runs) - runs[0].created
    if runs[-1].command_resumed is not None:
        wall = runs[-1].command_resumed - runs[0].created
    compute = totals["compute"]
    print()
    idle = [g for g in (idle_gap(r) for r in runs) if g is not None]
    if idle:
        print(f"idle waiting: {sum(idle):.2f} s over {len(idle)} runs (max {max(idle):.2f} s): the command noticing "
              "a run's end after the run ended and its worker exited")
    else:
        print("idle waiting: not measured (no profile lines); run end → next run created, in all: "
              f"{totals['next']:.2f} s over {len(runs) - 1} gaps")
    print(f"runs: {len(runs)}; first run created → last run followed: {wall:.1f} s; step compute {compute:.1f} s "
          f"({100 * compute / wall:.0f} %), Dagster, process and command overhead {wall - compute:.1f} s "
          f"({100 * (wall - compute) / wall:.0f} %): worker start + definitions {totals['worker'] + totals['load']:.1f} "
          f"s, run end → next run {totals['next']:.1f} s")
    if walls:
        for name, seconds in walls.items():
            print(f"wall: radassets {name}: {seconds:.1f} s")
        print(f"wall: make demo's two commands: {sum(walls.values()):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--analyse", type=Path, metavar="DAGSTER_HOME",
                        help="only print the breakdown of this instance's runs (no demo run)")
    parser.add_argument("--profile", type=Path, help="with --analyse: the RADASSETS_PROFILE file of those runs")
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it, e.g. for tools/demo_digest.py")
    args = parser.parse_args()
    from radassets import profile

    if args.analyse:
        lines = profile.read(args.profile) if args.profile else []
        report(read_runs(args.analyse, lines), lines, None)
        return
    if args.keep:
        args.keep.mkdir(parents=True)
        work = args.keep
        dagster_home, profile_file, walls = run_demo(work)
        report(read_runs(dagster_home, profile.read(profile_file)), profile.read(profile_file), walls)
        print(f"outputs kept in {work / 'home'}")
        return
    with tempfile.TemporaryDirectory(prefix="radassets-bench-demo-") as tmp:
        dagster_home, profile_file, walls = run_demo(Path(tmp))
        lines = profile.read(profile_file)
        report(read_runs(dagster_home, lines), lines, walls)


if __name__ == "__main__":
    main()
