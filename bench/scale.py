"""Benchmark: the data plane (``radassets.dataplane``) on the volumes and patches steps, one worker against two.

The workload is generated: a demo collection of ``--patients`` patients (default 16, twice the tests' small one;
``--demo DIR`` reuses one), whose current CT series and masks (SEG / RTSTRUCT) are converted by
``radassets.imaging.volumes.convert_dataset``, then one 64³ patch (and mask patch) per seed cut into a Zarr store
by the patches step's tasks (``patch_tasks`` / ``extract_volume_patches``, one task per CT volume), each seed
repeated ``--patches-per-seed`` times at small offsets so that the step has some hundreds of patches.

Every configuration runs the same items, in one run of this script:

- ``in process``: ``Compute(workers=1)``, the reference path (one item after the other, no pool);
- ``pool 1`` / ``pool 2``: the local process pool with 1 and 2 processes. ``map_items`` runs one worker in
  process by design, so ``pool 1`` calls the pool path (``dataplane._in_pool``) directly: it is what the pool
  itself costs against the in-process path;
- ``ray``: with ``--ray-address ADDRESS`` (a running cluster) or ``--ray-local`` (a two-node
  ``ray.cluster_utils.Cluster`` on 127.0.0.1, one CPU per node, as the tests' ``ray_cluster`` fixture starts).

Every worker runs one thread (``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1``, ``OMP_NUM_THREADS=1`` unless set), so
that a worker is a core. The pool's forkserver (it imports SimpleITK and pydicom once; a step's process starts one)
and Ray's workers are started before the timings, and their start-up is printed on its own line.
Reported: series/s and patches/s per configuration; the speed-up of 2 processes over 1 (the issue's target: ≥ 1.8×
on a 2-core machine) and the pool's overhead with 1 process against in process (target: ≤ 10 %); a control: the
same ratio of 2 processes over 1 for a pure-Python loop, which is what the machine gives a second process while the
benchmark runs; and, for capacity planning (docs/scale-out.md): the seconds per CT series and per slice of the
conversion on one core, patches per second on one core, and the bytes written per series, per slice and per patch.
Timings are the median of ``--repeats`` runs; on a shared machine they are noisy, and a number measured here says
nothing about another machine.

Run: ``python bench/scale.py`` (``make bench`` runs it with the others), ``--ray-local`` to add Ray.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, with or without an installed package
    sys.path.insert(0, str(REPO))

# Heavy imports (SimpleITK, pydicom, ray) happen inside the functions: the demo generator's and the pool's worker
# processes must not pay for them when they import this file.

PATIENTS, PATCHES_PER_SEED, REPEATS = 16, 8, 1
OFFSET_MM = 3.0  # the repeats of a seed move by up to this much along each axis: other voxels, the same work
BURN = 20_000_000  # iterations of the control task (about 1 s)
THREAD_VARIABLES = ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS")
STEP_MODULES = ["radassets.imaging.volumes", "radassets.imaging.patches"]


@dataclass(frozen=True)
class Config:
    name: str
    workers: int = 1
    pool: bool = False
    ray_address: str | None = None


def run_items(config: Config, task: Callable, items: Sequence, progress: Callable | None = None):
    """``task`` over ``items`` where ``config`` says (see the module docstring for ``pool 1``)."""
    from radassets import dataplane

    if config.pool and config.workers == 1:
        return dataplane._in_pool(task, list(items), 1, dataplane.DEFAULT_RETRIES, progress)
    compute = dataplane.Compute(workers=config.workers, ray_address=config.ray_address)
    return dataplane.map_items(task, items, compute, progress)


@contextmanager
def volumes_running_on(config: Config) -> Iterator[None]:
    """``convert_dataset`` maps its series through ``run_items(config, ...)`` (it takes a ``Compute``, which
    cannot ask for a pool of one)."""
    from radassets.imaging import volumes

    original = volumes.map_items
    volumes.map_items = lambda task, items, compute=None, progress=None: run_items(config, task, items, progress)
    try:
        yield
    finally:
        volumes.map_items = original


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


# -- the two steps -----------------------------------------------------------------------------------------------

def convert(rows: list[dict], out: Path, config: Config):
    """The volumes step on ``config``: (report, seconds, seconds of the CT phase)."""
    from radassets.imaging.volumes import ConversionSettings, convert_dataset

    n_ct = sum(r["Modality"] == "CT" for r in rows)
    ticks: list[float] = []
    start = time.perf_counter()
    with volumes_running_on(config):
        report = convert_dataset(rows, dicom_files, out, ConversionSettings(),
                                 progress=lambda done, total, what: ticks.append(time.perf_counter()))
    seconds = time.perf_counter() - start
    return report, seconds, ticks[n_ct - 1] - start


def extract(seeds: list[dict], out: Path, config: Config) -> tuple[int, float]:
    """The patches step's tasks on ``config``: (patches written, seconds)."""
    from radassets.imaging import patch_store
    from radassets.imaging.patches import PatchSpec, extract_volume_patches, patch_tasks

    spec = PatchSpec()
    store = out / patch_store.STORE_NAME
    start = time.perf_counter()
    patch_store.create_store(store, len(seeds), spec.size)
    mapped = run_items(config, extract_volume_patches, patch_tasks(seeds, store, spec))
    patch_store.finish_store(store)
    seconds = time.perf_counter() - start
    return sum(len(rows) for rows in mapped.results), seconds


# -- start-up ----------------------------------------------------------------------------------------------------

def start_forkserver() -> float:
    """Start this process's forkserver with both steps' modules imported, and a first pool on it; seconds (what
    each step's process pays once, before its pool's first task)."""
    from multiprocessing import forkserver

    start = time.perf_counter()
    multiprocessing.get_context("forkserver").set_forkserver_preload(STEP_MODULES)
    forkserver.ensure_running()
    run_items(Config("pool 1", 1, pool=True), import_step_modules, [0])
    return time.perf_counter() - start


def burn(n: int) -> int:
    """Pure-Python work, the same on every configuration: the control for what the machine gives 2 processes."""
    total = 0
    for i in range(n):
        total += i
    return total


def cpu_ceiling(repeats: int) -> float:
    """Throughput of 2 processes ÷ 1 on ``burn``: the most any step could gain from a second worker right now
    (about 2 on an idle 2-core machine, less when other work holds the cores)."""
    ratios = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_items(Config("in process"), burn, [BURN])
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


def start_ray(args) -> tuple[str | None, Any, float]:
    """(address, the local cluster to stop or None, seconds to start and warm the workers)."""
    if not (args.ray_address or args.ray_local):
        return None, None, 0.0
    start = time.perf_counter()
    cluster = None
    address = args.ray_address
    if args.ray_local:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep 127.0.0.1 (see radassets_tests/conftest.py)
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                                "include_dashboard": False})
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        address = cluster.address
    run_items(Config("ray", ray_address=address), import_step_modules, range(4))  # workers up, modules imported
    return address, cluster, time.perf_counter() - start


# -- main --------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=PATIENTS, help=f"demo patients (default {PATIENTS})")
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
                            n_test_retest=2)
            started = time.perf_counter()
            demo = generate_demo_collection(work / "demo", spec).root
            print(f"demo collection of {args.patients} patients generated in {time.perf_counter() - started:.0f} s")
        rows = demo_rows(demo)
        cts = [r for r in rows if r["Modality"] == "CT"]
        slices = sum(len(dicom_files(r)) for r in cts)

        results["forkserver_start_s"] = round(start_forkserver(), 3)
        results["cpu_ceiling_2_over_1"] = round(cpu_ceiling(args.repeats), 2)
        address, cluster, ray_start = start_ray(args)
        configs = [Config("in process"), Config("pool 1", 1, pool=True), Config("pool 2", 2, pool=True)]
        if address:
            configs.append(Config("ray", ray_address=address))
            results["ray_start_s"] = round(ray_start, 2)
        try:
            # Volumes: every configuration converts the same rows into a folder of its own.
            loads: list[float] = []  # the 1-minute load after each timed run (this benchmark included)
            volume_times: dict[str, list[float]] = {config.name: [] for config in configs}
            reference = None
            for k in range(args.repeats):  # the configurations take turns: a change of the machine's load hits all
                for config in configs:
                    report, seconds, ct_seconds = convert(rows, work / f"volumes-{config.name}-{k}", config)
                    volume_times[config.name].append(seconds)
                    loads.append(os.getloadavg()[0])
                    if reference is None:
                        reference = (report, ct_seconds)  # the first in-process run
            report, ct_seconds = reference
            ok = [r for r in report.qc if r["status"] == "ok"]
            failed = [r for r in report.qc if r["status"] == "failed"]
            ct_bytes = sum(Path(r).stat().st_size for r in (q["path"] for q in ok if q["Modality"] == "CT") if r)
            mask_bytes = sum(Path(s["mask_path"]).stat().st_size for s in report.segments)

            # Patches: the seeds of the in-process volumes, repeated.
            seeds = repeated_seeds(seeds_from_segments(report.segments), args.patches_per_seed)
            patch_times: dict[str, list[float]] = {config.name: [] for config in configs}
            for k in range(args.repeats):
                for config in configs:
                    patch_times[config.name].append(extract(seeds, work / f"patches-{config.name}-{k}", config)[1])
                    loads.append(os.getloadavg()[0])
            store = work / "patches-in process-0" / "patches.zarr"
            store_bytes = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
        finally:
            if cluster is not None:
                import ray

                ray.shutdown()
                cluster.shutdown()

    volumes = {name: statistics.median(times) for name, times in volume_times.items()}
    patches = {name: statistics.median(times) for name, times in patch_times.items()}
    n_series = len(report.qc)
    results["load_1min_during"] = round(statistics.mean(loads), 2)
    results.update({
        "series": n_series, "ct_series": len(cts), "slices": slices, "failed": len(failed), "patches": len(seeds),
        "series_per_s": {k: round(n_series / v, 3) for k, v in volumes.items()},
        "patches_per_s": {k: round(len(seeds) / v, 2) for k, v in patches.items()},
        "volumes_speedup_2_over_1": round(volumes["pool 1"] / volumes["pool 2"], 2),
        "patches_speedup_2_over_1": round(patches["pool 1"] / patches["pool 2"], 2),
        "volumes_pool1_overhead": round(volumes["pool 1"] / volumes["in process"] - 1, 3),
        "patches_pool1_overhead": round(patches["pool 1"] / patches["in process"] - 1, 3),
        "ct_s_per_series_1core": round(ct_seconds / len(cts), 3),
        "ct_ms_per_slice_1core": round(1000 * ct_seconds / slices, 2),
        "slice_pixels": sorted({f"{q['rows']}x{q['columns']}" for q in ok if q["Modality"] == "CT"}),
        "ct_nrrd_bytes_per_series": round(ct_bytes / len(cts)), "ct_nrrd_bytes_per_slice": round(ct_bytes / slices),
        "mask_nrrd_bytes_per_segment": round(mask_bytes / max(1, len(report.segments))),
        "patch_store_bytes_per_patch": round(store_bytes / len(seeds)),
    })

    print(f"{results['cpus']} CPUs, load {results['load_1min']} at the start, {results['load_1min_during']} on average "
          "during the timings (a shared machine: numbers are noisy; above the CPU count, workers wait for a core); "
          f"{', '.join(f'{v}={os.environ[v]}' for v in THREAD_VARIABLES)}")
    print(f"volumes: {n_series} series ({len(cts)} CT of {slices} slices, {n_series - len(cts)} masks; "
          f"{len(failed)} failed), median of {args.repeats}")
    print(f"patches: {len(seeds)} of 64³ from {len(seeds) // args.patches_per_seed} seeds "
          f"× {args.patches_per_seed}, median of {args.repeats}")
    print(f"start-up (not in the timings): forkserver {results['forkserver_start_s']:.2f} s"
          + (f", Ray cluster and workers {ray_start:.1f} s" if address else ""))
    print(f"{'':12} {'series/s':>9} {'patches/s':>10}")
    for config in configs:
        print(f"{config.name:12} {n_series / volumes[config.name]:9.2f} {len(seeds) / patches[config.name]:10.1f}")
    print(f"control: a pure-Python loop, 2 processes over 1: ×{results['cpu_ceiling_2_over_1']:.2f} (the most a second "
          "worker could give on this machine now)")
    for step, key in (("volumes", "volumes"), ("patches", "patches")):
        speedup, overhead = results[f"{key}_speedup_2_over_1"], results[f"{key}_pool1_overhead"]
        print(f"{step}: 2 processes over 1: ×{speedup:.2f} (target ≥ 1.8: {'met' if speedup >= 1.8 else 'missed'}); "
              f"pool of 1 against in process: {overhead:+.1%} (target ≤ 10 %: "
              f"{'met' if overhead <= 0.10 else 'missed'})")
    print(f"one core: {results['ct_s_per_series_1core']:.2f} s per CT series "
          f"({results['ct_ms_per_slice_1core']:.1f} ms per slice), "
          f"{len(seeds) / patches['in process']:.1f} "
          f"patches/s")
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
