"""Where the per-item work of a step runs: in this process, in a pool of local processes, or on a Ray cluster.

Dagster is the control plane: one run per dataset version (× model), whose steps are the assets. Inside a step the
items (the series to convert, the seeds to cut patches for) are independent, and ``map_items(task, items,
compute)`` runs ``task(item)`` for each of them where ``Compute`` says:

- ``workers=1``: in this process, one item after the other. The reference path, and what the benchmark
  (``bench/scale.py``) measures the others' overhead against.
- the default, ``workers=N`` (N: the CPUs this process may use): a pool of N local processes
  (``concurrent.futures.ProcessPoolExecutor``). The processes are forked from a ``forkserver`` that has imported
  the task's module once, so a pool starts in milliseconds rather than in the seconds each fresh interpreter
  would take to import SimpleITK and pydicom; and nothing is forked from the run's own process, whose threads
  (Dagster's) make a plain ``fork`` unsafe.
- ``ray_address`` set (``auto``, ``host:6379``, ``ray://host:10001``): Ray tasks on that cluster, which this process
  joins as a driver (``ray.init``). A cluster is the user's (KubeRay, ``ray start``): radassets starts none.

Whichever runs them, the results come back in the items' order, so what a step writes from them is the same bytes
on one core or a hundred. A step that can tell which items are big (a series' slices, a volume's seeds) passes
``cost``: the pool and Ray then start the costliest items first (longest processing time first, the classic rule
for independent jobs on identical workers), so that the step does not wait at its end for one worker still busy
with a big item that happened to come last. Tasks get plain data and write their own outputs to their final
names atomically (``radassets.storage``): only small records return to the driver, which writes the step's
manifest last.

Recording. ``Compute.record``, if set, is called where the task ran, with its result, right after the task returned
(so after the outputs it wrote): the lineage layer's chunk writer (``radassets.lineage.chunks``), which puts the
item's lineage beside its outputs from the worker itself, so that no node's items go through the driver's memory.
An error there is the step's, as a task's own.

Retries. A task whose process dies (``kill -9``, the OOM killer, a lost node) runs again, at most ``retries``
times: Ray retries its own tasks (``max_retries``); a local pool that loses a process cannot go on
(``BrokenProcessPool`` fails every task in flight), so a new pool runs the items not finished yet, each in-flight
item counting one try. A task is idempotent (same inputs, same bytes, written atomically), so a retry changes
nothing that a reader can see. An exception the task raises is not retried: it is the task's bug, not the
machine's, and it stops the step (tasks record an item's expected failures in their result instead).

A worker dies with the run: each pool process watches the process that started its pool (a Linux pidfd, no
polling) and kills itself when that one is gone, so a run killed with ``kill -9`` leaves no process writing behind
it. Not its parent: a pool process is forked from the forkserver, which by design lives as long as any process
it forked (each holds its liveness pipe), so a process that waited for its parent would keep both alive for
ever; with the pool processes gone the forkserver sees its pipe close and exits too.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from radassets.errors import RadassetsError

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[int, int, Any], None]  # (done, total, the result just finished)

DEFAULT_RETRIES = 3


class DataPlaneError(RadassetsError, RuntimeError):
    """The work of a step could not be run where the settings say (a cluster not reachable, tasks that kept dying)."""


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, which a container or ``taskset`` limits), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Compute:
    """Where a step's items run (``Settings.compute()``): see the module docstring."""

    workers: int | None = None  # None: available_cpus()
    ray_address: str | None = None
    retries: int = DEFAULT_RETRIES
    ray_gpu_resource: str = "GPU"  # the cluster's resource that stands for an accelerator (the embeddings' actors)
    record: Callable[[Any], None] | None = None  # called with each result where its task ran (module docstring)

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise DataPlaneError(f"workers must be at least 1, got {self.workers}")
        if self.retries < 0:
            raise DataPlaneError(f"retries must be at least 0, got {self.retries}")

    @property
    def resolved_workers(self) -> int:
        return self.workers if self.workers is not None else available_cpus()

    def describe(self) -> str:
        if self.ray_address:
            return f"Ray cluster at {self.ray_address}"
        n = self.resolved_workers
        return "this process" if n == 1 else f"{n} local processes"


IN_PROCESS = Compute(workers=1)


@dataclass
class Mapped(Generic[R]):
    """The results of ``map_items`` in the items' order, and where the tasks ran (a place per finished task:
    ``local`` / ``pid <n>`` / ``node <Ray node id>``), which the run's metadata shows and no output records."""

    results: list[R]
    places: Counter[str] = field(default_factory=Counter)
    retried: int = 0  # tasks run again after their process died


def map_items(task: Callable[[T], R], items: Sequence[T], compute: Compute = IN_PROCESS,
              progress: Progress | None = None, cost: Callable[[T], float] | None = None) -> Mapped[R]:
    """``task(item)`` for every item, where ``compute`` says; results in the items' order. ``task`` must be a
    module-level function (it is pickled by name) and its items and results plain, picklable data. ``cost``: an
    estimate of an item's work, to start the costliest first on many workers (module docstring)."""
    items = list(items)
    order = start_order(items, cost)
    if compute.ray_address:
        return _on_ray(task, items, compute, progress, order)
    workers = min(compute.resolved_workers, len(items))
    if workers <= 1:
        return _in_process(task, items, progress, compute.record)
    return _in_pool(task, items, workers, compute.retries, progress, compute.record, order)


def start_order(items: Sequence[T], cost: Callable[[T], float] | None) -> list[int]:
    """The items' indices in the order their tasks start on many workers: costliest first, ties (and every item
    when there is no ``cost``) in the items' order."""
    if cost is None:
        return list(range(len(items)))
    costs = [cost(item) for item in items]
    return sorted(range(len(items)), key=lambda i: -costs[i])  # stable: ties keep the items' order


def _run(task: Callable[[T], R], item: T, record: Callable[[Any], None] | None) -> R:
    result = task(item)
    if record is not None:
        record(result)
    return result


def _in_process(task: Callable[[T], R], items: list[T], progress: Progress | None,
                record: Callable[[Any], None] | None = None) -> Mapped[R]:
    results = []
    for done, item in enumerate(items, start=1):
        results.append(_run(task, item, record))
        if progress:
            progress(done, len(items), results[-1])
    return Mapped(results, Counter({"local": len(items)}))


# -- a pool of local processes --------------------------------------------------------------------------------

def _init_pool_process(storage: dict[str, str] | None = None, driver: int | None = None) -> None:
    """Pool process initializer. Dies with ``driver``, the process that started the pool (module docstring). One
    thread for the libraries that start their own (ITK, OpenMP), unless the user set them: the pool already has a
    process per CPU, and N processes of N threads each would oversubscribe the machine. ``storage``: the artifact
    store's client settings as the step's process has them now (``storage_environment``), as Ray's workers get
    them: a pool process is forked from the forkserver, whose environment is the one of its start."""
    os.environ.update(storage or {})
    for variable in ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    if driver is not None:
        die_with(driver)


def die_with(pid: int) -> None:
    """Kill this process (SIGKILL: no clean-up, as ``kill -9`` of the run would) as soon as process ``pid`` has
    exited, whichever way. A daemon thread waits on the process's pidfd (Linux 5.3+), which becomes readable when
    it exits; where pidfds are missing (not Linux), nothing is watched."""
    try:
        watched = os.pidfd_open(pid)
    except ProcessLookupError:  # gone already
        os.kill(os.getpid(), signal.SIGKILL)
    except (AttributeError, OSError):  # pragma: no cover - no pidfd here
        return

    def wait_then_die() -> None:
        poller = select.poll()  # not select.select: no limit on the descriptor's number
        poller.register(watched, select.POLLIN)
        poller.poll()
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait_then_die, name="radassets-die-with-run", daemon=True).start()


def _placed(task: Callable[[T], R], item: T, record: Callable[[Any], None] | None) -> tuple[str, R]:
    return f"pid {os.getpid()}", _run(task, item, record)


def _pool_context(module: str) -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover - not POSIX
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # Effective when this process starts its forkserver (its first pool); later pools import their module in
    # each process they fork.
    context.set_forkserver_preload([module])
    return context


def _in_pool(task: Callable[[T], R], items: list[T], workers: int, retries: int,
             progress: Progress | None, record: Callable[[Any], None] | None = None,
             order: list[int] | None = None) -> Mapped[R]:
    results: dict[int, R] = {}
    places: Counter[str] = Counter()
    tries: Counter[int] = Counter()  # pools lost while an item was unfinished
    context = _pool_context(task.__module__)
    while len(results) < len(items):
        todo = [i for i in (order or range(len(items))) if i not in results]
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context,
                                 initializer=_init_pool_process,
                                 initargs=(storage_environment(), os.getpid())) as pool:
            futures: dict[Future, int] = {}
            try:
                handed_out = _submit(pool, futures, task, items, todo, record)
                complete = _collect(futures, results, places, len(items), progress) and handed_out
            except BaseException:  # the task's error or an interrupt: its siblings must not write on
                _kill_pool(pool)
                raise
            if not complete:
                _kill_pool(pool)
                for i in todo:
                    if i not in results:
                        tries[i] += 1
                worst = max(todo, key=lambda i: tries[i])
                if tries[worst] > retries:
                    raise DataPlaneError(f"a worker process died while running item {worst + 1} of {len(items)} "
                                         f"({task.__name__}), {tries[worst]} times: giving up after {retries} "
                                         "retries")
    retried = sum(tries.values())
    return Mapped([results[i] for i in range(len(items))], places, retried)


def _submit(pool: ProcessPoolExecutor, futures: dict[Future, int], task: Callable[[T], R], items: list[T],
            todo: list[int], record: Callable[[Any], None] | None) -> bool:
    """Hand the ``todo`` items to the pool, filling ``futures``; False when the pool broke meanwhile (a process
    that already died, e.g. killed by its first item, breaks the pool for the submissions after it)."""
    try:
        for i in todo:
            futures[pool.submit(_placed, task, items[i], record)] = i
    except BrokenProcessPool:
        return False
    return True


def _collect(futures: dict[Future, int], results: dict, places: Counter[str], total: int,
             progress: Progress | None) -> bool:
    """Gather the pool's results as they finish; False when the pool broke (a process died)."""
    pending = set(futures)
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        for future in finished:
            try:
                place, result = future.result()
            except BrokenProcessPool:
                return False
            results[futures[future]] = result
            places[place] += 1
            if progress:
                progress(len(results), total, result)
    return True


def _kill_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool at once (an error, an interrupt, a dead process): its processes may be mid-task."""
    for process in list(getattr(pool, "_processes", {}).values()):
        with contextlib.suppress(ProcessLookupError, AttributeError):
            process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


# -- Ray -----------------------------------------------------------------------------------------------------

def _node_placed(task: Callable[[T], R], item: T, record: Callable[[Any], None] | None) -> tuple[str, R]:
    import ray

    return f"node {ray.get_runtime_context().get_node_id()}", _run(task, item, record)


def connect_ray(address: str) -> None:
    """Join the Ray cluster at ``address`` as a driver (once per process)."""
    import ray

    if ray.is_initialized():
        return
    _require_listening(address)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": storage_environment()})
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise DataPlaneError(f"cannot join the Ray cluster at {address!r} (setting ray_address / "
                             f"RADASSETS_RAY_ADDRESS): {e}") from None


# The variables that tell fsspec's clients where the artifact store is and who asks (AWS_ENDPOINT_URL and the keys
# for s3fs, GOOGLE_APPLICATION_CREDENTIALS for gcsfs, fsspec's own FSSPEC_* configuration).
STORAGE_VARIABLE_PREFIXES = ("AWS_", "GOOGLE_", "FSSPEC_")


def storage_environment() -> dict[str, str]:
    """What this driver's Ray workers get of its environment (the job's ``runtime_env``): the artifact store's
    client settings, so that a worker reads and writes the store the run does. Set them on the nodes instead (a
    KubeRay pod's service account) and leave them unset here, where credentials must not travel with the job."""
    return {k: v for k, v in os.environ.items() if k.startswith(STORAGE_VARIABLE_PREFIXES)}


def _require_listening(address: str, timeout_s: float = 10.0) -> None:
    """A clear error at once when nothing listens at ``host:port`` (``ray.init`` would retry for minutes);
    ``auto`` (the cluster this machine's ``ray start`` wrote down) is left to Ray."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise DataPlaneError(f"cannot join the Ray cluster at {address!r} (setting ray_address / "
                             f"RADASSETS_RAY_ADDRESS): {e}") from None


def _on_ray(task: Callable[[T], R], items: list[T], compute: Compute, progress: Progress | None,
            order: list[int] | None = None) -> Mapped[R]:
    import ray

    assert compute.ray_address is not None
    connect_ray(compute.ray_address)
    # SPREAD: a step's items go to every node, not first to fill one (each item reads and writes its own files).
    remote: Any = ray.remote(num_cpus=1, max_retries=compute.retries, retry_exceptions=False,
                        scheduling_strategy="SPREAD")(_node_placed)
    index = {remote.remote(task, items[i], compute.record): i for i in (order or range(len(items)))}
    refs = list(index)
    results: dict[int, R] = {}
    places: Counter[str] = Counter()
    pending = list(refs)
    try:
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            for ref in finished:
                try:
                    place, result = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    raise e.as_instanceof_cause() from None  # the task's own exception, as in the other paths
                except ray.exceptions.WorkerCrashedError as e:
                    raise DataPlaneError(f"a Ray worker died more than {compute.retries} times while running item "
                                         f"{index[ref] + 1} of {len(items)} ({task.__name__}): {e}") from None
                results[index[ref]] = result
                places[place] += 1
                if progress:
                    progress(len(results), len(items), result)
    except BaseException:
        for ref in pending:
            with contextlib.suppress(Exception):  # best effort: the step is failing anyway
                ray.cancel(ref, force=True)
        raise
    return Mapped([results[i] for i in range(len(items))], places)
