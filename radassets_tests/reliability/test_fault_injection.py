"""A real `radassets pipeline run` killed at seeded points spread over every asset, then run again: nothing hangs,
nothing needs a manual step, nothing is lost, nothing is silently different (issue 13).

The scenario is the user's: ``radassets pipeline run demo_v1 --models radiomics`` on the small demo collection
is stopped by SIGKILL (a crash, the OOM killer, ``kill -9``) or SIGINT (Ctrl-C), sent to its process group as a
terminal does, and the same command is run again at once, on the same storage and Dagster instance. Each kill
point starts from an empty workspace at the same path, so each is one user's story:

- the interrupted run: with SIGINT it exits with status 130 within SIGINT_GRACE_S and leaves no process behind;
- the rerun exits 0 within RERUN_TIMEOUT_S (no hang, no manual step);
- every output file has the bytes of the clean reference run's; no file or folder is missing or extra, and
  nothing temporary, partial or staged is left anywhere (``LITTER``);
- the lineage store is consistent (``lineage_problems``): every event ingested once, every item's parents
  exist, no run left START except by a SIGKILLed process (documented: it cannot record its end; an
  interrupted one records ABORT); and the rerun recorded every asset partition once, COMPLETE, with the
  clean run's data version, items and parents;
- the Dagster instance shows no run still active and no gpu pool slot claimed or waited for.

Kill points. The clean reference run is recorded: the files it wrote and its log. A candidate trigger is "the k-th
file matching a pattern exists" (a count, so files written in parallel do not change the list; ids in names become
``*``) or "the k-th log line of an asset's step, or the line announcing its Dagster run, has been written" (step
lines are in the run workers' logs). Candidates belong to the asset that writes them; lineage merging owns
``lineage/`` (the store and ``events/merged``, where the merge moves each file it ingested).
``numpy.random.default_rng(SEED)`` picks ``QUOTA[asset]`` of each asset's candidates and, for each, SIGINT with
probability SIGINT_SHARE, else SIGKILL. The list depends only on what the clean run writes, so it is the same on
every run of the same code; it is printed with the verdict of each point (``RADASSETS_KILL_POINTS=4,16`` runs only
those). Where a point fires is exact; what the process does in the few milliseconds before the signal lands (the
harness polls every POLL_S) varies a little between runs, as it does for real crashes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from radassets_tests.reliability.conftest import (Finished, Workspace, compare_lineage, compare_outputs,
                                                  dagster_problems, dagster_run_ids, group_alive, kill_group,
                                                  lineage_outputs, lineage_problems, litter, merge_lineage,
                                                  output_digests, output_with_workers, say, tree)

pytestmark = pytest.mark.reliability

COMMAND = ("pipeline", "run", "demo_v1", "--models", "radiomics")
SEED = 13
# Points per asset, in pipeline order (20 in all, the minimum: each point costs a killed run and a rerun,
# about 80 s on 2 cores, and the suite must leave CI room for the browser journeys). Embeddings gets one more: it
# holds the gpu pool slot, where issue 13's worst failure was. hosny2018_figure2 is part of every `pipeline run`.
QUOTA = {"hosny2018_figure2": 1, "cohort": 2, "dicom": 2, "volumes": 2, "seeds": 2, "patches": 2, "embeddings": 3,
         "evaluation": 2, "comparison": 2, "lineage merge": 2}
ASSET_OF_FOLDER = {"reports": "hosny2018_figure2", "cohort": "cohort", "dicom": "dicom", "volumes": "volumes",
                   "seeds": "seeds", "patches": "patches", "embeddings": "embeddings", "evaluation": "evaluation",
                   "comparison": "comparison", "lineage": "lineage merge"}
SIGINT_SHARE = 0.3
POLL_S = 0.01
REFERENCE_TIMEOUT_S = 600
# A clean run takes about 50 s on 2 cores; six times that is a hang, not a slow machine.
RERUN_TIMEOUT_S = 300
SIGINT_GRACE_S = 60

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STEP_LINE = re.compile(r" - dagster - [A-Z]+ - \S+ - [0-9a-f-]{36} - (\w+) - ")
CLI_LINE = re.compile(r"^materializing (.+?) for ", re.MULTILINE)


@dataclass(frozen=True, order=True)
class Trigger:
    # "file": `count` files match the glob `what` (relative to RADASSETS_HOME);
    # "log": `count` lines match the regex `what`
    kind: str
    what: str
    count: int

    def reached(self, home: Path, log: Path) -> bool:
        if self.kind == "file":
            return sum(1 for _ in home.glob(self.what)) >= self.count
        return len(re.findall(self.what, output_with_workers(log), re.MULTILINE)) >= self.count

    def __str__(self) -> str:
        if self.kind == "file":
            return f"{self.count} file(s) match {self.what}"
        return f"{self.count} log line(s) match /{self.what}/"


@dataclass(frozen=True)
class KillPoint:
    number: int
    asset: str
    trigger: Trigger
    signal: signal.Signals

    def __str__(self) -> str:
        return f"#{self.number:02d} {self.signal.name:7s} {self.asset:17s} when {self.trigger}"


@dataclass
class Reference:
    seconds: float
    digests: dict[str, str]
    tree: set[str]
    lineage: dict[str, dict]
    candidates: dict[str, list[Trigger]]
    problems: list[str]


@dataclass
class Outcome:
    point: KillPoint
    killed_after_s: float | None = None  # None: the run ended before the trigger fired
    killed_status: int | None = None
    rerun: Finished | None = None
    problems: list[str] = field(default_factory=list)
    kept: Path | None = None

    def line(self) -> str:
        killed = (f"killed after {self.killed_after_s:.1f} s (status {self.killed_status})"
                  if self.killed_after_s is not None else f"ended first (status {self.killed_status})")
        rerun = ("no rerun" if self.rerun is None else
                 f"rerun {'HUNG' if self.rerun.returncode is None else f'status {self.rerun.returncode}'} "
                 f"in {self.rerun.seconds:.1f} s")
        verdict = "ok" if not self.problems else f"FAILED ({len(self.problems)} problem(s))"
        return f"{self.point}: {killed}; {rerun}; {verdict}"


def file_pattern(rel: str) -> str:
    if rel.startswith("lineage/events/"):
        return str(Path(rel).parent / "*.json")
    return UUID.sub("*", rel)


def candidates(home: Path, log: str) -> dict[str, list[Trigger]]:
    """Every trigger the clean run offers, by the asset it belongs to, sorted."""
    found: dict[str, set[Trigger]] = defaultdict(set)
    files = [rel for rel in tree(home) if not rel.endswith("/")]
    files += [f"lineage/events/merged/{p.name}" for p in (home / "lineage" / "events" / "merged").glob("*.json")]
    for pattern, n in Counter(file_pattern(rel) for rel in files).items():
        asset = ASSET_OF_FOLDER.get(pattern.split("/")[0])
        if asset:
            found[asset] |= {Trigger("file", pattern, k) for k in range(1, n + 1)}
    for step, n in Counter(m.group(1) for m in STEP_LINE.finditer(log)).items():
        if step in QUOTA:
            found[step] |= {Trigger("log", f" - {step} - ", k) for k in range(1, n + 1)}
    for m in CLI_LINE.finditer(log):  # the announcement of a Dagster run: its first asset's point
        assets = [a.strip() for a in m.group(1).split(",")]
        first = next(a for a in QUOTA if a in assets)
        found[first].add(Trigger("log", "^" + re.escape(m.group(0)), 1))
    return {asset: sorted(triggers) for asset, triggers in found.items()}


def choose(candidates: dict[str, list[Trigger]]) -> list[KillPoint]:
    """``QUOTA[asset]`` points per asset, one from each of that many equal slices of its sorted candidates
    (so they spread over its files and log, e.g. early and late event merges), and each point's signal."""
    rng = np.random.default_rng(SEED)
    points = []
    for asset, quota in QUOTA.items():
        offered = candidates.get(asset, [])
        for stratum in np.array_split(np.arange(len(offered)), min(quota, len(offered))):
            trigger = offered[int(rng.choice(stratum))]
            sig = signal.SIGINT if rng.random() < SIGINT_SHARE else signal.SIGKILL
            points.append(KillPoint(len(points) + 1, asset, trigger, sig))
    return points


def selected(points: list[KillPoint]) -> list[KillPoint]:
    """``RADASSETS_KILL_POINTS=4,16`` reruns only those points (to reproduce one); default, all."""
    wanted = os.environ.get("RADASSETS_KILL_POINTS")
    return [p for p in points if p.number in {int(n) for n in wanted.split(",")}] if wanted else points


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fault_injection")


@pytest.fixture(scope="module")
def reference(base, reliability_demo, pytestconfig) -> Reference:
    """The clean run: its outputs, lineage and candidate kill points (its workspace then moves aside, so every
    kill point's workspace has the same path as this one had)."""
    ws = Workspace.at(base / "ws", reliability_demo)
    done = ws.run(*COMMAND, name="reference", timeout=REFERENCE_TIMEOUT_S)
    assert done.returncode == 0, f"the clean run failed (status {done.returncode}):\n{done.tail()}"
    say(pytestconfig, f"\nclean reference run: {done.seconds:.1f} s, Dagster runs {done.dagster_run_ids}")
    problems = [f"litter: {p}" for p in litter(ws.home)] + merge_lineage(ws)
    if not problems:
        problems += lineage_problems(ws.home) + dagster_problems(ws.dagster_home)
    ref = Reference(done.seconds, output_digests(ws.home), tree(ws.home), lineage_outputs(ws.home, done.dagster_run_ids),
                    candidates(ws.home, done.worker_text), problems)
    ws.root.rename(base / "reference")
    return ref


def test_a_clean_run_is_consistent(reference):
    """The baseline the kill points are judged against: complete, no litter, a consistent store."""
    assert not reference.problems, "\n".join(reference.problems)
    assert set(reference.lineage) >= {f"{a}[demo_v1]" for a in ("cohort", "dicom", "volumes", "seeds", "patches",
                                                                 "comparison")}
    assert {"embeddings[demo_v1|radiomics]", "evaluation[demo_v1|radiomics]"} <= set(reference.lineage)


def test_the_kill_points_are_seeded_and_cover_every_asset(reference, pytestconfig):
    points = choose(reference.candidates)
    assert choose(reference.candidates) == points  # the same list every time
    assert len(points) >= 20
    assert {p.asset for p in points} == set(QUOTA), f"assets without a kill point: {set(QUOTA) - {p.asset for p in points}}"
    assert {p.signal for p in points} == {signal.SIGKILL, signal.SIGINT}


def run_point(point: KillPoint, reference: Reference, base: Path, demo: Path) -> Outcome:
    outcome = Outcome(point)
    ws = Workspace.at(base / "ws", demo)
    started = time.monotonic()
    process, log = ws.start(*COMMAND, name="killed")
    while process.poll() is None:
        if point.trigger.reached(ws.home, log):
            kill_group(process.pid, point.signal)
            outcome.killed_after_s = time.monotonic() - started
            break
        if time.monotonic() - started > RERUN_TIMEOUT_S:
            outcome.problems.append(f"the run to be killed neither reached its trigger nor ended in {RERUN_TIMEOUT_S} s")
            kill_group(process.pid, signal.SIGKILL)
            break
        time.sleep(POLL_S)
    try:
        outcome.killed_status = process.wait(timeout=SIGINT_GRACE_S)
    except subprocess.TimeoutExpired:
        outcome.problems.append(f"{point.signal.name}: the run was still running {SIGINT_GRACE_S} s later "
                                f"(log tail:\n{Finished(COMMAND, None, 0, log).tail(15)})")
        kill_group(process.pid, signal.SIGKILL)
        outcome.killed_status = process.wait()
    if outcome.killed_after_s is not None and point.signal == signal.SIGINT and outcome.killed_status != 130:
        outcome.problems.append(f"SIGINT: the run exited with status {outcome.killed_status}, not 130 "
                                f"(log tail:\n{Finished(COMMAND, None, 0, log).tail(8)})")
    if group_alive(process.pid):
        outcome.problems.append("processes of the interrupted run were still running after it exited")
        kill_group(process.pid, signal.SIGKILL)
    killed_runs = dagster_run_ids(ws.dagster_home)

    outcome.rerun = rerun = ws.run(*COMMAND, name="rerun", timeout=RERUN_TIMEOUT_S)
    if rerun.returncode is None:
        outcome.problems.append(f"the rerun hung: no exit within {RERUN_TIMEOUT_S} s; log tail:\n{rerun.tail(15)}")
    elif rerun.returncode != 0:
        outcome.problems.append(f"the rerun exited with status {rerun.returncode}; log tail:\n{rerun.tail(15)}")
    else:
        outcome.problems += compare_outputs(reference.digests, ws.home)
    now = tree(ws.home)
    structure = {e for e in reference.tree | now if e.endswith("/") or e.startswith("lineage/")}
    outcome.problems += [f"left behind (not in a clean run): {e}" for e in sorted((now - reference.tree) & structure)]
    outcome.problems += [f"missing (a clean run has it): {e}" for e in sorted((reference.tree - now) & structure)]
    outcome.problems += [f"litter: {p}" for p in litter(ws.home)]
    merge = merge_lineage(ws)
    outcome.problems += merge
    if not merge and (ws.home / "lineage" / "lineage.duckdb").is_file():
        sigkilled = killed_runs if point.signal == signal.SIGKILL else set()
        outcome.problems += lineage_problems(ws.home, may_be_unfinished=sigkilled)
        if rerun.returncode == 0:
            outcome.problems += compare_lineage(reference.lineage, lineage_outputs(ws.home, rerun.dagster_run_ids))
    outcome.problems += dagster_problems(ws.dagster_home)
    if outcome.problems:  # kept for whoever reads the failure
        outcome.kept = base / f"point{point.number:02d}"
        ws.root.rename(outcome.kept)
    else:
        shutil.rmtree(ws.root)
    return outcome


def test_a_killed_run_recovers_on_rerun(reference, base, reliability_demo, pytestconfig):
    points = selected(choose(reference.candidates))
    say(pytestconfig, f"\n{len(points)} kill points (seed {SEED}; SIGKILL or SIGINT to the process group of "
                      f"`radassets {' '.join(COMMAND)}`):")
    for point in points:
        say(pytestconfig, f"  {point}")
    started = time.monotonic()
    outcomes = []
    for point in points:
        outcomes.append(run_point(point, reference, base, reliability_demo))
        say(pytestconfig, f"  {outcomes[-1].line()}")
    say(pytestconfig, f"fault injection: {len(points)} kill points in {time.monotonic() - started:.0f} s "
                      f"(clean run {reference.seconds:.1f} s)")
    failed = [o for o in outcomes if o.problems]
    assert not failed, f"{len(failed)} of {len(outcomes)} kill points failed:\n\n" + "\n\n".join(
        f"{o.line()}\n  workspace kept at {o.kept}\n  " + "\n  ".join(o.problems) for o in failed)
