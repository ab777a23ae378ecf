"""Benchmark: the data plane (``radassets.dataplane``) on the volumes, patches and embeddings steps, 1 worker
against 2, and the pool's overhead against the in-process path.

The workload is generated: a demo collection of ``--patients`` patients (default 8, plus 2 added in its second
release) whose CT slices have a clinical matrix, 512 × 512 (``--slice-matrix``; the demo's own 128 makes a series
take 0.1 s, and a step of a few seconds measures the start-up of processes, not the throughput); ``--demo DIR``
reuses a collection. Its current CT series and masks (SEG / RTSTRUCT) are converted by
``radassets.imaging.volumes.convert_dataset``; then one 64³ patch (and mask patch) per seed is cut into a patches
partition by ``radassets.imaging.patches.write_patches`` (one task per CT volume), each seed repeated
``--patches-per-seed`` times at small offsets; then that partition is embedded by the registry's ``untrained_cnn``
(a 3-D CNN with random weights, fixed seed: a torch model that needs no download; the FLOPs, not the weights, set
its speed).

Every timed step runs in a fresh Python process (``spawn``), as a Dagster step does, so that every configuration
starts as cold as a real step: the libraries a step imports lazily (highdicom and its tables, zarr) and the first
call's caches cost the in-process path what they cost a pool's process. What a step's process does before its
items run (importing radassets; starting the forkserver of a pool, which imports the step's module; joining a Ray
cluster and starting its workers) is not timed, and is printed as start-up on its own line. Configurations:

- ``in process``: ``Compute(workers=1)``, the reference path (one item after the other, no pool);
- ``pool 1`` / ``pool 2``: the local process pool with 1 and 2 processes. ``map_items`` runs one worker in
  process by design, so ``pool 1`` calls the pool path (``dataplane._in_pool``) directly: it is what the pool
  itself costs against the in-process path;
- ``ray``: with ``--ray-address ADDRESS`` (a running cluster) or ``--ray-local`` (a two-node
  ``ray.cluster_utils.Cluster`` on 127.0.0.1, one CPU per node, as the tests' ``ray_cluster`` fixture starts).

Embeddings run in the step's process on torch's threads (``run_embeddings``), so their workers are threads: 1 and
2 (``torch.set_num_threads``); with Ray, ``embed_on_ray``'s actors (one per CPU of the cluster, one thread each).

Every imaging worker runs one thread (``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1``, ``OMP_NUM_THREADS=1`` unless
set), so that a worker is a core. Reported: series/s, patches/s per configuration; the speed-up of 2 workers
over 1 (the issue's target: ≥ 1.8× on a 2-core machine) and the pool's overhead with 1 process against in process
(target: ≤ 10 %); a control: the same ratio of 2 processes over 1 for a pure-Python loop, which is what the
machine gives a second process while the benchmark runs; and, for capacity planning (docs/scale-out.md): the
seconds per CT series and per slice of the conversion on one core, patches per second on one core, and the bytes
written per series, per slice and per patch. Timings are the median of ``--repeats`` runs, the configurations
taking turns; on a shared machine they are noisy, and a number measured here says nothing about another machine.

Run: ``python bench/scale.py`` (``make bench`` runs it with the others), ``--ray-local`` to add Ray.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, with or without an installed package
    sys.path.insert(0, str(REPO))

# Heavy imports (SimpleITK, pydicom, ray) happen inside the functions: the demo generator's and the pool's worker
# processes must not pay for them when they import this file.

PATIENTS, SLICE_MATRIX, PATCHES_PER_SEED, REPEATS = 8, 512, 8, 3
OFFSET_MM = 3.0  # the repeats of a seed move by up to this much along each axis: other voxels, the same work
BURN = 40_000_000  # iterations of the control task (about 2 s)
THREAD_VARIABLES = ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS")
STEP_MODULES = ["radassets.imaging.volumes", "radassets.imaging.patches"]
MODEL, BATCH_SIZE = "untrained_cnn", 8


@dataclass(frozen=True)
class Config:
    name: str
    workers: int = 1  # processes, or torch threads for the embeddings
    pool: bool = False
    ray_address: str | None = None
    ray_local: bool = False  # a local two-node cluster, started for each of this configuration's timings


def run_items(config: Config, task: Callable, items: Sequence, progress: Callable | None = None,
              cost: Callable | None = None):
    """``task`` over ``items`` where ``config`` says (see the module docstring for ``pool 1``)."""
    from radassets import dataplane

    if config.pool and config.workers == 1:
        return dataplane._in_pool(task, list(items), 1, dataplane.DEFAULT_RETRIES, progress,
                                  order=dataplane.start_order(items, cost))
    compute = dataplane.Compute(workers=config.workers, ray_address=config.ray_address)
    return dataplane.map_items(task, items, compute, progress, cost)


@contextmanager
def steps_running_on(config: Config) -> Iterator[None]:
    """The volumes and patches steps map their items through ``run_items(config, ...)`` (they take a ``Compute``,
    which cannot ask for a pool of one)."""
    from radassets.imaging import patches, volumes

    originals = volumes.map_items, patches.map_items
    volumes.map_items = patches.map_items = (  # type: ignore[assignment]
        lambda task, items, compute=None, progress=None, cost=None: run_items(config, task, items, progress, cost))
    try:
        yield
    finally:
        volumes.map_items, patches.map_items = originals


# -- the workload ------------------------------------------------------------------------------------------------

def demo_rows(demo: Path) -> list[dict]:
    """The current test scan of each patient (no retests), CT and masks, as rows of a ``dicom`` manifest."""
    import pyarrow.parquet as pq

    rows: dict[tuple[str, str], dict] = {}
    for r in pq.read_table(demo / "index" / "idc_index.parquet").to_pylist():
        if "retest" in (r["SeriesDescription"] or "") or r["Modality"] not in ("CT", "SEG", "RTSTRUCT"):
            continue
        rows[(r["PatientID"], r["Modality"])] = {
            "PatientID": r["PatientID"], "Modality": r["Modality"], "SeriesInstanceUID": r["SeriesInstanceUID"],
            "crdc_series_uuid": r["crdc_series_uuid"], "status": "verified",
            "folder": str(demo / "bucket" / r["aws_bucket"] / r["crdc_series_uuid"])}
    return [rows[k] for k in sorted(rows)]


def dicom_files(row: dict) -> list[Path]:
    return sorted(Path(row["folder"]).glob("*.dcm"))


def repeated_seeds(seeds: list[dict], n: int) -> list[dict]:
    """Each seed ``n`` times, moved by a few millimetres each time (deterministic offsets)."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    for seed in seeds:
        for k in range(n):
            dx, dy, dz = rng.uniform(-OFFSET_MM, OFFSET_MM, 3) if k else (0.0, 0.0, 0.0)
            out.append(dict(seed, seed_id=f"{seed['seed_id']}-{k}", coordX=seed["coordX"] + dx,
                            coordY=seed["coordY"] + dy, coordZ=seed["coordZ"] + dz))
    return out


# -- the three steps, each timed in a fresh process --------------------------------------------------------------

def convert(rows: list[dict], out: Path, config: Config) -> dict:
    """The volumes step on ``config``: its report, and the seconds of the CT phase."""
    from radassets.imaging.volumes import ConversionSettings, convert_dataset

    n_ct = sum(r["Modality"] == "CT" for r in rows)
    ticks: list[float] = []
    start = time.perf_counter()
    with steps_running_on(config):
        report = convert_dataset(rows, dicom_files, out, ConversionSettings(),
                                 progress=lambda done, total, what: ticks.append(time.perf_counter()))
    return {"report": report, "ct_seconds": ticks[n_ct - 1] - start}


def extract(seeds: list[dict], out: Path, config: Config) -> dict:
    """The patches step on ``config``: a patches partition under ``out``."""
    from radassets.imaging.patches import PatchSpec, write_patches

    with steps_running_on(config):
        report = write_patches(seeds, out, PatchSpec())
    return {"patches": len(report.rows)}


def embed(patches_dir: Path, out: Path, config: Config) -> dict:
    """The embeddings step on ``config``: in this process on ``config.workers`` torch threads, or on Ray."""
    import torch

    from radassets.dataplane import Compute
    from radassets.imaging.patches import load_patches
    from radassets.models import registry
    from radassets.models.embed import run_embeddings
    from radassets.models.extractors import load_extractor

    entry = registry.get(MODEL)
    if config.ray_address:
        from radassets.models.embed_ray import RegistryExtractor, embed_on_ray

        report = embed_on_ray(RegistryExtractor(entry, None, None), entry, patches_dir, out,
                              compute=Compute(ray_address=config.ray_address), batch_size=BATCH_SIZE, device="cpu")
    else:
        torch.set_num_threads(config.workers)
        patches, masks, rows = load_patches(patches_dir)
        extractor = load_extractor(entry, torch.device("cpu"), False)
        report = run_embeddings(extractor, patches, masks, rows, out, batch_size=BATCH_SIZE)
    return {"embedded": report.embedded, "places": dict(report.places)}


STEPS: dict[str, Callable[[Any, Path, Config], dict]] = {"volumes": convert, "patches": extract, "embeddings": embed}


def timed_step(step: str, inputs: Any, out: Path, config: Config) -> dict:
    """Run in a fresh process: get ready as a step's process does (not timed: ``startup_s``), then time the step."""
    for variable in THREAD_VARIABLES:  # inherited, but say it: a worker is a core
        os.environ.setdefault(variable, "1")
    import_step_modules(0)  # what the code location has imported when a step starts

    start = time.perf_counter()
    if config.ray_address:
        import ray.cloudpickle

        # This file is the fresh process's ``__mp_main__``, which Ray's workers cannot import: send its function.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        run_items(config, import_step_modules, range(4))  # join the cluster; workers up, modules imported
    elif config.pool:
        start_forkserver()
    startup = time.perf_counter() - start
    start = time.perf_counter()
    result = STEPS[step](inputs, out, config)
    return {**result, "seconds": time.perf_counter() - start, "startup_s": startup}


def in_fresh_process(step: str, inputs: Any, out: Path, config: Config) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as process:
        return process.submit(timed_step, step, inputs, out, config).result()


# -- start-up and the control ------------------------------------------------------------------------------------

def start_forkserver() -> None:
    """Start this process's forkserver with the steps' modules imported, and a first pool on it (what a step's
    process does before its pool's first task)."""
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(STEP_MODULES)
    forkserver.ensure_running()
    run_items(Config("pool 1", 1, pool=True), import_step_modules, [0])


def burn(n: int) -> int:
    """Pure-Python work, the same on every configuration: the control for what the machine gives 2 processes."""
    total = 0
    for i in range(n):
        total += i
    return total


def cpu_ceiling(repeats: int) -> float:
    """Throughput of 2 processes ÷ 1 on ``burn``, both in a pool (so that the pool's own cost is on both sides):
    the most any step could gain from a second worker right now (about 2 on an idle 2-core machine, less when
    other work holds the cores, or when the machine's two CPUs share a physical core)."""
    ratios = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_items(Config("pool 1", 1, pool=True), burn, [BURN])
        one = time.perf_counter() - start
        start = time.perf_counter()
        run_items(Config("pool 2", 2, pool=True), burn, [BURN, BURN])
        ratios.append(2 * one / (time.perf_counter() - start))
    return statistics.median(ratios)


def import_step_modules(_: int) -> int:
    import importlib

    for module in STEP_MODULES:
        importlib.import_module(module)
    return os.getpid()


@contextmanager
def ray_for(config: Config) -> Iterator[Config]:
    """``config`` as it runs: with ``ray_local``, on a two-node ``ray.cluster_utils.Cluster`` on 127.0.0.1 (one CPU
    per node) started for this timing and stopped after it, so that its idle processes do not take the cores
    while the other configurations run."""
    if not config.ray_local:
        yield config
        return
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep 127.0.0.1 (see radassets_tests/conftest.py)
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        yield replace(config, ray_address=cluster.address)
    finally:
        cluster.shutdown()


# -- main --------------------------------------------------------------------------------------------------------

@dataclass
class Timings:
    seconds: dict[str, float]  # median per configuration
    startup: dict[str, float]  # median start-up of the step's process per configuration (not in ``seconds``)
    control: float  # median of the control (``cpu_ceiling``) measured between the repeats
    first: dict  # the first in-process run's result


def timings(step: str, inputs: Any, work: Path, configs: list[Config], repeats: int,
            loads: list[float]) -> Timings:
    """The configurations take turns, so that a change of the machine's load hits all of them; the control runs
    after each turn, so that it is measured on the same machine, as loaded, as the step."""
    seconds: dict[str, list[float]] = {c.name: [] for c in configs}
    startup: dict[str, list[float]] = {c.name: [] for c in configs}
    controls: list[float] = []
    first: dict = {}
    for k in range(repeats):
        for config in configs:
            with ray_for(config) as runnable:
                result = in_fresh_process(step, inputs, work / f"{step}-{config.name}-{k}", runnable)
            seconds[config.name].append(result["seconds"])
            startup[config.name].append(result["startup_s"])
            loads.append(os.getloadavg()[0])
            first = first or result
        controls.append(cpu_ceiling(1))
    return Timings({n: statistics.median(v) for n, v in seconds.items()},
                   {n: statistics.median(v) for n, v in startup.items()}, statistics.median(controls), first)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=PATIENTS, help=f"demo patients (default {PATIENTS})")
    parser.add_argument("--slice-matrix", type=int, default=SLICE_MATRIX,
                        help=f"rows and columns of the demo's CT slices (default {SLICE_MATRIX})")
    parser.add_argument("--demo", type=Path, default=None, help="use this demo collection instead of generating one")
    parser.add_argument("--patches-per-seed", type=int, default=PATCHES_PER_SEED,
                        help=f"patches cut per seed (default {PATCHES_PER_SEED})")
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"timed runs, median kept (default {REPEATS})")
    parser.add_argument("--ray-address", default=None, help="also run on the Ray cluster at this address")
    parser.add_argument("--ray-local", action="store_true", help="also run on a two-node local Ray cluster")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    # One thread per worker, inherited by every worker process: "workers" then counts cores (ITK's filters would
    # otherwise use every core already in one process).
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")

    from radassets.demo import DemoSpec, generate_demo_collection
    from radassets.imaging.seeds import seeds_from_segments

    results: dict[str, Any] = {"cpus": len(os.sched_getaffinity(0)), "load_1min": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="radassets-bench-") as work_dir:
        work = Path(work_dir)
        demo = args.demo
        if demo is None:
            spec = DemoSpec(n_patients=args.patients, n_added_in_release_2=2, n_revised_in_release_2=2,
                            n_test_retest=2, slice_matrix=args.slice_matrix)
            started = time.perf_counter()
            demo = generate_demo_collection(work / "demo", spec).root
            print(f"demo collection of {args.patients} patients ({args.slice_matrix}² slices) generated in "
                  f"{time.perf_counter() - started:.0f} s")
        rows = demo_rows(demo)
        cts = [r for r in rows if r["Modality"] == "CT"]
        slices = sum(len(dicom_files(r)) for r in cts)

        configs = [Config("in process"), Config("pool 1", 1, pool=True), Config("pool 2", 2, pool=True)]
        embed_configs = [Config("1 thread", 1), Config("2 threads", 2)]
        address = args.ray_address or args.ray_local
        if address:
            ray = Config("ray", ray_address=args.ray_address, ray_local=args.ray_local)
            configs.append(ray)
            embed_configs.append(ray)
        loads: list[float] = []  # the 1-minute load after each timed run (this benchmark included)
        measured = {"volumes": timings("volumes", rows, work, configs, args.repeats, loads)}
        report, ct_seconds = measured["volumes"].first["report"], measured["volumes"].first["ct_seconds"]
        ok = [r for r in report.qc if r["status"] == "ok"]
        failed = [r for r in report.qc if r["status"] == "failed"]
        ct_root = work / "volumes-in process-0"
        ct_bytes = sum((ct_root / q["path"]).stat().st_size for q in ok if q["Modality"] == "CT" and q["path"])
        mask_bytes = sum((ct_root / s["mask_path"]).stat().st_size for s in report.segments)

        # Patches: the seeds of the in-process volumes, repeated; paths made absolute for the fresh processes.
        seeds = [dict(s, ct_path=str(ct_root / s["ct_path"]), mask_path=str(ct_root / s["mask_path"]))
                 for s in repeated_seeds(seeds_from_segments(report.segments), args.patches_per_seed)]
        measured["patches"] = timings("patches", seeds, work, configs, args.repeats, loads)
        partition = work / "patches-in process-0"
        store_bytes = sum(f.stat().st_size for f in (partition / "patches.zarr").rglob("*") if f.is_file())

        measured["embeddings"] = timings("embeddings", partition, work, embed_configs, args.repeats, loads)

    volumes, patches, embeddings = (measured[step].seconds for step in ("volumes", "patches", "embeddings"))
    n_series = len(report.qc)
    results["load_1min_during"] = round(statistics.mean(loads), 2)
    results.update({
        "series": n_series, "ct_series": len(cts), "slices": slices, "failed": len(failed), "patches": len(seeds),
        "series_per_s": {k: round(n_series / v, 3) for k, v in volumes.items()},
        "patches_per_s": {k: round(len(seeds) / v, 2) for k, v in patches.items()},
        "embeddings_patches_per_s": {k: round(len(seeds) / v, 2) for k, v in embeddings.items()},
        "startup_s": {step: {k: round(v, 2) for k, v in m.startup.items()} for step, m in measured.items()},
        "control_2_over_1": {step: round(m.control, 2) for step, m in measured.items()},
        "volumes_speedup_2_over_1": round(volumes["pool 1"] / volumes["pool 2"], 2),
        "patches_speedup_2_over_1": round(patches["pool 1"] / patches["pool 2"], 2),
        "embeddings_speedup_2_over_1": round(embeddings["1 thread"] / embeddings["2 threads"], 2),
        "volumes_pool1_overhead": round(volumes["pool 1"] / volumes["in process"] - 1, 3),
        "patches_pool1_overhead": round(patches["pool 1"] / patches["in process"] - 1, 3),
        "ct_s_per_series_1core": round(ct_seconds / len(cts), 3),
        "ct_ms_per_slice_1core": round(1000 * ct_seconds / slices, 2),
        "slice_pixels": sorted({f"{q['rows']}x{q['columns']}" for q in ok if q["Modality"] == "CT"}),
        "ct_nrrd_bytes_per_series": round(ct_bytes / len(cts)), "ct_nrrd_bytes_per_slice": round(ct_bytes / slices),
        "mask_nrrd_bytes_per_segment": round(mask_bytes / max(1, len(report.segments))),
        "patch_store_bytes_per_patch": round(store_bytes / len(seeds)),
    })
    if address:
        results["embeddings_ray_over_1_thread"] = round(embeddings["1 thread"] / embeddings["ray"], 2)

    print(f"{results['cpus']} CPUs, load {results['load_1min']} at the start, {results['load_1min_during']} on average "
          "during the timings (a shared machine: numbers are noisy; above the CPU count, workers wait for a core); "
          f"{', '.join(f'{v}={os.environ[v]}' for v in THREAD_VARIABLES)}")
    print(f"volumes: {n_series} series ({len(cts)} CT of {slices} slices, {n_series - len(cts)} masks; "
          f"{len(failed)} failed); patches: {len(seeds)} of 64³ from {len(seeds) // args.patches_per_seed} seeds "
          f"× {args.patches_per_seed}; embeddings: {MODEL}, batches of {BATCH_SIZE}; each timing the median of "
          f"{args.repeats}, each in a fresh process")
    print("start-up of a step's process, not in the timings (median s): "
          + "; ".join(f"{step}: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items() if v)
                      for step, times in results["startup_s"].items() if any(times.values()))
          + ("; and the local Ray cluster's start for each Ray timing" if args.ray_local else ""))
    print(f"{'':12} {'series/s':>9} {'patches/s':>10}    {'':10} {'embedded/s':>10}")
    for config, embed_config in itertools.zip_longest(configs, embed_configs):
        left = (f"{config.name:12} {n_series / volumes[config.name]:9.2f} {len(seeds) / patches[config.name]:10.1f}"
                if config else " " * 33)
        right = (f"{embed_config.name:10} {len(seeds) / embeddings[embed_config.name]:10.1f}" if embed_config else "")
        print(f"{left}    {right}")
    print("2 workers over 1, against the control (a pure-Python loop on 2 processes over 1, measured between the "
          "repeats: the most a second worker could give on this machine then); target ≥ 1.8:")
    for step, workers in (("volumes", "processes"), ("patches", "processes"), ("embeddings", "threads")):
        speedup, control = results[f"{step}_speedup_2_over_1"], results["control_2_over_1"][step]
        line = (f"  {step}: 2 {workers} over 1: ×{speedup:.2f} ({'met' if speedup >= 1.8 else 'missed'}); control "
                f"×{control:.2f}, so {speedup / control:.0%} of what the machine gave")
        if step != "embeddings":
            overhead = results[f"{step}_pool1_overhead"]
            line += (f"; pool of 1 against in process: {overhead:+.1%} (target ≤ 10 %: "
                     f"{'met' if overhead <= 0.10 else 'missed'})")
        elif address:
            line += f"; Ray's actors over 1 thread: ×{results['embeddings_ray_over_1_thread']:.2f}"
        print(line)
    print(f"one core: {results['ct_s_per_series_1core']:.2f} s per CT series "
          f"({results['ct_ms_per_slice_1core']:.1f} ms per slice), "
          f"{len(seeds) / patches['in process']:.1f} patches/s cut, "
          f"{len(seeds) / embeddings['1 thread']:.1f} patches/s embedded ({MODEL})")
    print(f"bytes: CT NRRD {results['ct_nrrd_bytes_per_series'] / 1e6:.2f} MB per series "
          f"({results['ct_nrrd_bytes_per_slice'] / 1e3:.1f} kB per slice of {', '.join(results['slice_pixels'])} "
          f"pixels), mask NRRD "
          f"{results['mask_nrrd_bytes_per_segment'] / 1e3:.1f} kB per segment, patch store "
          f"{results['patch_store_bytes_per_patch'] / 1e3:.1f} kB per patch (64³ int16 + uint8 mask, raw)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
