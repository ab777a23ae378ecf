"""Benchmark: tracing a figure in a lineage store of 10⁶ item rows, and what recording costs a materialization.

1. Trace latency. A store is built through the real path (event files, then ``merge``) with a
   synthetic study at scale: one cohort of ``--series`` series (default 111,112), their volumes,
   seeds and patches, the embeddings of ``--models`` models (default 5), an evaluation per model
   and a comparison; with the defaults that is 1.0 million item rows and 1.4 million parent rows.
   Timed: ``radassets lineage trace`` of the comparison's figure, as the CLI runs it (open the
   store read-only, resolve the figure, walk the chain, gather the facets and count the series),
   in a fresh process state each time but with the file in the OS cache (median of ``--repeats``).
   Target: under 1 s. Peer, timed in the same run on the same store: the item-level walk a store
   without run-level lineage would need, a recursive query over ``item_parents`` from the figure
   down to every series (it touches every parent row); RATIO = peer / trace.
2. Recording overhead. The small demo collection (8 patients) runs through every asset from the
   cohort to the comparison with one model (radiomics) in a fresh instance, materialized in-process
   run by run as ``radassets pipeline run`` does, with the real ``@recorded`` wrapper's phases timed
   inside each step (git commit, the upstream inputs, the two event files, items and settings, any
   merge) beside Dagster's step time (STEP_START to STEP_SUCCESS). Printed per step: its seconds,
   each phase and the hot path (what the step waits for), then the median share of a step, the
   target's measure, and apart from it the merges into DuckDB that the command makes
   after each run, between runs, amortised over the materializations.

Run: ``python bench/lineage.py`` (``make bench`` runs it with the others).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def synthetic_store(root: Path, n_series: int, n_models: int) -> str:
    """Events of a study at scale, merged into a store under ``root``; returns the comparison figure's item id."""
    from radassets.lineage import store

    def run(asset, partition, version, inputs, items, settings):
        r = {"run_id": str(uuid.uuid4()), "dagster_run_id": str(uuid.uuid4()), "partition_key": partition,
             "code_version": f"{asset}-1", "git_commit": "bench",
             "partition": {"dataset_version": partition.split("|")[0],
                           **({"model": partition.split("|")[1]} if "|" in partition else {})}}
        job = {"namespace": "radassets", "name": asset}
        store.write_event({"event_type": "START", "run": r, "job": job}, root)
        store.write_event({"event_type": "COMPLETE", "run": r, "job": job, "inputs": inputs,
                           "outputs": [{"asset": asset, "partition_key": partition, "version": version,
                                        "items": items, "facets": {"settings": {"content": settings}}}]}, root)
        return {"asset": asset, "partition_key": partition, "version": version}

    dv = "bench_v1"
    ids = [f"{i:08d}" for i in range(n_series)]
    cohort = run("cohort", dv, "c" * 64, [], [{"item_id": f"series:{i}", "kind": "series", "name": f"1.2.{i}"}
                                              for i in ids], {"idc_version": 21, "idc_release_date": "2025-01-01"})
    volumes = run("volumes", dv, "v" * 64, [cohort], [{"item_id": f"volume:{i}", "kind": "volume",
                                                       "parents": [f"series:{i}"]} for i in ids],
                  {"settings": {"ct_reader": "bench"}})
    seeds = run("seeds", dv, "s" * 64, [volumes], [{"item_id": f"seed:{i}", "kind": "seed", "parents": [f"volume:{i}"]}
                                                   for i in ids], {"source": "mask"})
    patches = run("patches", dv, "p" * 64, [seeds], [{"item_id": f"patch:{i}", "kind": "patch",
                                                      "parents": [f"seed:{i}"]} for i in ids], {"spec": {"size": 64}})
    evaluations = []
    for m in range(n_models):
        model = f"model{m}"
        emb = run("embeddings", f"{dv}|{model}", f"e{m}" * 32, [patches],
                  [{"item_id": f"embedding:{model}:{i}", "kind": "embedding", "parents": [f"patch:{i}"]} for i in ids],
                  {"weights_sha256": f"{m}" * 64})
        lid = f"{m:016d}"
        evaluations.append(run("evaluation", f"{dv}|{model}", lid, [emb, seeds],
                               [{"item_id": f"report:{lid}", "kind": "report",
                                 "parents": [f"embedding:{model}:{i}" for i in ids]}], {"lineage_id": lid}))
    comparison_id = "f" * 16
    run("comparison", dv, comparison_id, evaluations,
        [{"item_id": f"report:{comparison_id}", "kind": "report", "parents": [f"report:{e['version']}" for e in evaluations]},
         {"item_id": f"figure:{comparison_id}/auc.png", "kind": "figure", "parents": [f"report:{comparison_id}"]}],
        {"lineage_id": comparison_id})
    store.merge(root)
    return f"figure:{comparison_id}/auc.png"


ITEM_WALK = """
WITH RECURSIVE walk(version_id, item_id) AS (
    SELECT version_id, item_id FROM items WHERE item_id = ?
    UNION
    SELECT pv.version_id, p.parent_id
    FROM walk w JOIN item_parents p ON p.version_id = w.version_id AND p.item_id = w.item_id
    JOIN dataset_versions v ON v.version_id = w.version_id
    JOIN items pv ON pv.item_id = p.parent_id
        AND (pv.version_id = w.version_id
             OR pv.version_id IN (SELECT ri.version_id FROM run_inputs ri WHERE ri.run_id = v.produced_by))
)
SELECT count(*) FILTER (WHERE item_id LIKE 'series:%') FROM walk
"""


def bench_trace(n_series: int, n_models: int, repeats: int) -> None:
    import duckdb

    from radassets.lineage import store
    from radassets.lineage.trace import trace

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        figure = synthetic_store(root, n_series, n_models)
        built = time.perf_counter() - started
        con = duckdb.connect(str(store.database_path(root)), read_only=True)
        items, parents = (con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("items", "item_parents"))
        con.close()
        print(f"store: {items:,} item rows, {parents:,} parent rows ({n_series:,} series, {n_models} models); "
              f"written and merged in {built:.1f} s")
        ours, peer = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            with store.reader(root) as con:
                result = trace(con, figure)
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            with store.reader(root) as con:
                walked = con.execute(ITEM_WALK, [figure]).fetchone()[0]
            peer.append(time.perf_counter() - started)
        assert result["series_count"] == n_series == walked, (result["series_count"], walked)
        t, p = statistics.median(ours), statistics.median(peer)
        print(f"trace of the comparison figure: {t:.3f} s median of {repeats} (min {min(ours):.3f}); target < 1 s: "
              f"{'met' if t < 1 else 'NOT MET'}")
        print(f"peer, item-level walk to every series: {p:.3f} s; RATIO peer / trace = {p / t:.1f}")


def bench_recording() -> None:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        home, dagster_home = Path(tmp) / "home", Path(tmp) / "dagster"
        dagster_home.mkdir()
        (dagster_home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
        spec = {"n_patients": 6, "n_added_in_release_2": 2, "n_revised_in_release_2": 2, "n_test_retest": 2}
        env.update(RADASSETS_HOME=str(home), DAGSTER_HOME=str(dagster_home), RADASSETS_DEMO_SPEC=json.dumps(spec))
        subprocess.run([sys.executable, "-m", "radassets.cli", "demo", "generate"], env=env, check=True,
                       capture_output=True)
        out = subprocess.run([sys.executable, __file__, "--recording-worker"], env=env, check=True,
                             capture_output=True, text=True)
        print(out.stdout, end="")


# The phases of ``@recorded`` (radassets.defs.lineage), by the module attribute the wrapper calls.
RECORDING_PHASES = {"git": "git_commit", "inputs": "_inputs", "items": "output_record", "merge": "_merge"}


def _timed_phases(spans: list[tuple[str, float, float]]) -> None:
    """Wrap each phase the real ``@recorded`` wrapper calls with a timer appending (phase, start, end) to ``spans``
    (the wrapper looks these names up in its module at each call, so the wrapped ones are the ones it runs)."""
    import functools

    import radassets.defs.lineage as recorder
    from radassets.lineage import store

    def timer(phase: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            started = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                spans.append((phase, started, time.time()))
        return timed

    for phase, name in RECORDING_PHASES.items():
        setattr(recorder, name, timer(phase, getattr(recorder, name)))
    store.write_event = timer("events", store.write_event)  # the wrapper calls it as store.write_event
    store.merge = timer("store_merge", store.merge)  # inside _merge, and after each run (below)


def recording_worker() -> None:
    """In the bench's instance: materialize the demo (every asset, one model) in-process with Dagster, as a
    ``radassets pipeline run`` does run by run, the real ``@recorded`` wrapper's phases timed; then, per
    materialization, the hot path of recording (git commit, inputs, the event files, items and settings, and any
    merge inside the step) beside Dagster's step time (STEP_START to STEP_SUCCESS), and the merges that ran after
    the runs, amortised over the materializations."""
    from dagster import DagsterEventType, DagsterInstance, MultiPartitionKey, materialize

    from radassets.definitions import defs
    from radassets.defs.run import DEFAULT_SELECTION, _split, sync_model_partitions
    from radassets.lineage import store
    from radassets.settings import Settings

    spans: list[tuple[str, float, float]] = []
    _timed_phases(spans)
    layout = Settings.load().layout()
    unpartitioned, single, multi, after = _split(DEFAULT_SELECTION)
    runs = [(unpartitioned, None), (single, "demo_v1"),
            (multi, MultiPartitionKey({"dataset_version": "demo_v1", "model": "radiomics"})), (after, "demo_v1")]
    after_run_merges = 0.0
    assets: list[Any] = list(defs.assets or [])
    with DagsterInstance.get() as instance:
        sync_model_partitions(instance)
        dagster_runs = []
        for keys, partition_key in runs:
            if not keys:
                continue
            result = materialize(assets, instance=instance, selection=keys, resources=defs.resources,
                                 partition_key=partition_key, raise_on_error=True)
            dagster_runs.append(result.run_id)
            started = time.perf_counter()  # what the command does once a run ended (radassets.defs.run)
            store.merge(layout.lineage_dir(), events=layout.lineage_events_dir())
            after_run_merges += time.perf_counter() - started
        steps = []  # (asset, start, end) of each step
        for run_id in dagster_runs:
            times: dict[str, list[float]] = {}
            for entry in instance.all_logs(run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}):
                times.setdefault(str(entry.step_key), []).append(entry.timestamp)
            steps += [(step, min(t), max(t)) for step, t in times.items()]
    in_step_merges = sum(end - start for phase, start, end in spans if phase == "merge")
    merge_amortised = (in_step_merges + after_run_merges) / len(steps)
    phases = [*RECORDING_PHASES, "events"]
    print(f"{'asset':<20}{'step':>9}" + "".join(f"{p:>9}" for p in phases) + f"{'hot path':>10}{'share':>8}")
    print("(hot path: every phase but the merge, what the step waits for; share: hot path of the step)")
    shares, with_merge, hot_paths, step_seconds = [], [], [], []
    for step, start, end in sorted(steps, key=lambda s: s[1]):
        mine = [(p, e - s) for p, s, e in spans if start <= s and e <= end and p != "store_merge"]
        by_phase = {p: sum(t for q, t in mine if q == p) for p in phases}
        hot = sum(t for p, t in by_phase.items() if p != "merge")  # a merge inside the step: counted amortised
        seconds = end - start
        shares.append(hot / seconds)
        with_merge.append((hot + merge_amortised) / seconds)
        hot_paths.append(hot)
        step_seconds.append(seconds)
        print(f"{step:<20}{seconds:>7.3f} s" + "".join(f"{by_phase[p] * 1000:>7.1f}ms" for p in phases)
              + f"{hot * 1000:>8.1f}ms{shares[-1]:>8.1%}")
    print(f"{len(steps)} materializations; hot path per materialization: median {statistics.median(hot_paths) * 1000:.1f} ms"
          f" (max {max(hot_paths) * 1000:.1f} ms); merge amortised: {merge_amortised * 1000:.1f} ms per materialization "
          f"({in_step_merges:.3f} s inside steps, {after_run_merges:.3f} s after the runs); median step "
          f"{statistics.median(step_seconds):.3f} s")
    share = statistics.median(shares)
    print(f"recording overhead: median {share:.1%} of a Dagster step's time (the hot path: what a step waits for), "
          f"max {max(shares):.1%}; target <= 5 %: {'met' if share <= 0.05 else 'NOT MET'}")
    print(f"  the merges too, as if a step waited for them: median {statistics.median(with_merge):.1%} (the command "
          "merges between runs, radassets.defs.run: no step waits for it)")
    print(f"RATIO lineage_step_over_recording = {1 / share:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=111_112)  # 9 items each: 1.0 million
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=("trace", "recording"), help="run one of the two benchmarks")
    parser.add_argument("--recording-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recording_worker:
        recording_worker()
        return
    if args.only != "recording":
        bench_trace(args.series, args.models, args.repeats)
    if args.only != "trace":
        bench_recording()


if __name__ == "__main__":
    main()
