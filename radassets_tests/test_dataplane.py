"""The data plane (radassets.dataplane): the same task over the same items gives the same results, in the items'
order, and the same files, in this process, in a pool of local processes, and on a two-node Ray cluster on
loopback; a process killed mid-task is retried and leaves the bytes a clean run writes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from radassets.dataplane import Compute, DataPlaneError, map_items, start_order
from radassets.storage import remove_stale_temporaries
from radassets_tests import dataplane_tasks as tasks

ITEMS = 6


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def run(task, folder: Path, compute: Compute, n: int = ITEMS):
    folder.mkdir()
    seen = []
    mapped = map_items(task, [(str(folder), i) for i in range(n)], compute,
                       progress=lambda done, total, result: seen.append((done, total, result["n"])))
    return mapped, seen


@pytest.fixture
def reference(tmp_path):
    mapped, _ = run(tasks.digest, tmp_path / "in_process", Compute(workers=1))
    return mapped.results, files(tmp_path / "in_process")


def test_a_pool_gives_the_in_process_results_in_the_items_order(tmp_path, reference):
    results, written = reference
    mapped, seen = run(tasks.digest, tmp_path / "pool", Compute(workers=2))
    assert mapped.results == results
    assert [r["n"] for r in mapped.results] == list(range(ITEMS))
    assert files(tmp_path / "pool") == written
    assert sorted(done for done, _, _ in seen) == list(range(1, ITEMS + 1))  # one tick per item
    assert {total for _, total, _ in seen} == {ITEMS}
    assert sum(mapped.places.values()) == ITEMS
    assert all(place.startswith("pid ") and place != f"pid {os.getpid()}" for place in mapped.places)  # not here
    assert mapped.retried == 0


def test_the_costliest_items_start_first_and_the_results_keep_the_items_order(tmp_path, reference):
    """``cost``: longest processing time first on many workers (ties in the items' order); the results and the
    files are those of the items' order."""
    costs = [1, 5, 2, 6, 3, 5]
    assert start_order(range(6), lambda i: costs[i]) == [3, 1, 5, 4, 2, 0]
    assert start_order(range(6), None) == list(range(6))
    results, written = reference
    folder = tmp_path / "pool"
    folder.mkdir()
    mapped = map_items(tasks.digest, [(str(folder), i) for i in range(ITEMS)], Compute(workers=2),
                       cost=lambda item: costs[item[1]])
    assert mapped.results == results and files(folder) == written


def test_a_pool_process_killed_mid_task_is_retried_and_the_files_are_a_clean_runs(tmp_path, reference):
    results, written = reference
    mapped, _ = run(tasks.dies_once, tmp_path / "pool", Compute(workers=2))
    assert (tmp_path / "pool" / ".3.tried").exists()  # the first try did die
    (tmp_path / "pool" / ".3.tried").unlink()
    assert mapped.results == results
    assert mapped.retried >= 1
    # The half-written file was replaced. A sibling task caught mid-write when the broken pool was stopped may have
    # left its atomic write's temporary (never a final name): what every step sweeps where it starts.
    remove_stale_temporaries(tmp_path / "pool")
    assert files(tmp_path / "pool") == written


def test_a_task_that_keeps_killing_its_process_gives_up_naming_the_item(tmp_path):
    with pytest.raises(DataPlaneError, match=r"item 2 of 6 \(always_dies\), 3 times: giving up after 2 retries"):
        run(tasks.always_dies, tmp_path / "pool", Compute(workers=2, retries=2))


def test_a_pool_that_breaks_while_its_items_are_handed_out_is_retried(tmp_path, reference, monkeypatch):
    """A process that dies at once (its first item kills it) breaks the pool while the later items are still
    being submitted: ``submit`` then raises BrokenProcessPool, which is a lost pool like any other (it made the
    CI fail once, on a loaded machine, where the death came before the last submit). Forced here on the third
    submit of the first pool."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    results, written = reference
    real_submit, calls = ProcessPoolExecutor.submit, []

    def submit(pool, *args, **kwargs):
        calls.append(pool)
        if len(calls) == 3:
            raise BrokenProcessPool("a child process terminated abruptly")
        return real_submit(pool, *args, **kwargs)

    monkeypatch.setattr(ProcessPoolExecutor, "submit", submit)
    mapped, _ = run(tasks.digest, tmp_path / "pool", Compute(workers=2))
    assert len(set(map(id, calls))) == 2  # a second pool took the items over
    assert mapped.results == results and mapped.retried >= 1
    remove_stale_temporaries(tmp_path / "pool")
    assert files(tmp_path / "pool") == written


@pytest.mark.parametrize("workers", [1, 2])
def test_a_task_error_is_raised_as_it_is_not_retried(tmp_path, workers):
    with pytest.raises(ValueError, match="item 2 is bad"):
        run(tasks.raises, tmp_path / "out", Compute(workers=workers))


def test_fewer_items_than_workers_and_no_items(tmp_path):
    mapped, _ = run(tasks.digest, tmp_path / "one", Compute(workers=4), n=1)
    assert mapped.places == {"local": 1}  # one item needs no pool
    assert map_items(tasks.digest, [], Compute(workers=4)).results == []


def test_workers_and_retries_are_checked():
    with pytest.raises(DataPlaneError, match="workers must be at least 1, got 0"):
        Compute(workers=0)
    with pytest.raises(DataPlaneError, match="retries must be at least 0"):
        Compute(retries=-1)
    assert Compute(workers=None).resolved_workers >= 1


@pytest.mark.parametrize("workers", [1, 2])
def test_each_result_is_recorded_where_its_task_ran_after_its_output(tmp_path, workers):
    folder = tmp_path / "out"
    mapped, _ = run(tasks.digest, folder, Compute(workers=workers, record=tasks.WriteWhere(str(folder))))
    recorded = [(folder / f"{i}.recorded").read_text().split() for i in range(ITEMS)]
    assert all(output_there == "True" for _, output_there in recorded)
    pids = {f"pid {pid}" for pid, _ in recorded}
    if workers == 1:
        assert pids == {f"pid {os.getpid()}"}
    else:
        assert pids == set(mapped.places) and f"pid {os.getpid()}" not in pids


def test_pool_processes_get_the_storage_settings_the_step_has_now(monkeypatch):
    """The pool's processes are forked from a forkserver started once per process, with the environment of then:
    the artifact store's settings set since (a test's moto server, a user's new credentials) reach them too."""
    map_items(tasks.environment, ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL"], Compute(workers=2))  # the forkserver runs
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    mapped = map_items(tasks.environment, ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL"], Compute(workers=2))
    assert mapped.results == ["http://127.0.0.1:9"] * 2
    assert all(place.startswith("pid ") and place != f"pid {os.getpid()}" for place in mapped.places)


# -- Ray ------------------------------------------------------------------------------------------------------

@pytest.mark.services
def test_on_a_two_node_ray_cluster_items_run_on_both_nodes_with_the_same_results(tmp_path, reference, ray_cluster):
    results, written = reference
    mapped, seen = run(tasks.digest, tmp_path / "ray", Compute(ray_address=ray_cluster.address))
    assert mapped.results == results
    assert files(tmp_path / "ray") == written
    assert len(seen) == ITEMS
    assert len(mapped.places) == 2, mapped.places  # SPREAD: both nodes took items
    assert all(place.startswith("node ") for place in mapped.places)


@pytest.mark.services
def test_on_ray_the_costliest_first_keeps_the_items_order(tmp_path, reference, ray_cluster):
    results, written = reference
    folder = tmp_path / "ray"
    folder.mkdir()
    mapped = map_items(tasks.digest, [(str(folder), i) for i in range(ITEMS)],
                       Compute(ray_address=ray_cluster.address), cost=lambda item: item[1] % 3)
    assert mapped.results == results and files(folder) == written


def test_on_ray_each_result_is_recorded_on_its_worker(tmp_path, ray_cluster):
    folder = tmp_path / "ray"
    run(tasks.digest, folder, Compute(ray_address=ray_cluster.address, record=tasks.WriteWhere(str(folder))))
    recorded = [(folder / f"{i}.recorded").read_text().split() for i in range(ITEMS)]
    assert all(output_there == "True" for _, output_there in recorded)
    assert str(os.getpid()) not in {pid for pid, _ in recorded}  # in the Ray workers, not in the driver


@pytest.mark.services
def test_on_ray_a_worker_killed_mid_task_is_retried_and_the_files_are_a_clean_runs(tmp_path, reference, ray_cluster):
    results, written = reference
    mapped, _ = run(tasks.dies_once, tmp_path / "ray", Compute(ray_address=ray_cluster.address))
    assert (tmp_path / "ray" / ".3.tried").exists()
    (tmp_path / "ray" / ".3.tried").unlink()
    assert mapped.results == results
    assert files(tmp_path / "ray") == written


@pytest.mark.services
def test_on_ray_a_task_error_is_raised_as_it_is(tmp_path, ray_cluster):
    with pytest.raises(ValueError, match="item 2 is bad"):
        run(tasks.raises, tmp_path / "ray", Compute(ray_address=ray_cluster.address))


def test_an_unreachable_ray_cluster_is_one_clear_error(tmp_path):
    """In a process of its own: a driver joins one cluster for its life, and the services tests' cluster may be
    joined already in this one."""
    probe = ("from radassets.dataplane import Compute, DataPlaneError, map_items, start_order\n"
             "from radassets_tests.dataplane_tasks import digest\n"
             "try:\n"
             f"    map_items(digest, [({str(tmp_path)!r}, 1), ({str(tmp_path)!r}, 2)], Compute(ray_address='127.0.0.1:9'))\n"
             "except DataPlaneError as e:\n"
             "    print(e)\n")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert done.stdout.startswith("cannot join the Ray cluster at '127.0.0.1:9' (setting ray_address"), \
        done.stdout + done.stderr[-2000:]


def running(pid: int) -> tuple[bool, int]:
    """Whether process ``pid`` still runs (an exited one waiting to be reaped does not), and its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False, 0
    state, parent = stat.rpartition(")")[2].split()[:2]
    return state not in ("Z", "X"), int(parent)


def wait_for(condition, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {timeout_s:.0f} s for {what}"
        time.sleep(0.1)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pool processes watch the run through a Linux pidfd")
def test_a_run_killed_mid_step_leaves_no_pool_process_behind(tmp_path):
    """``kill -9`` of the process running a pool (the OOM killer, a lost pod): its pool processes, caught mid-task,
    and their forkserver exit too. They did not: each pool process waited for its parent, the forkserver, which
    waits for every process it forked, so both lived on for ever."""
    probe = ("from radassets.dataplane import Compute, map_items\n"
             "from radassets_tests import dataplane_tasks as tasks\n"
             "if __name__ == '__main__':\n"
             f"    map_items(tasks.blocks, [({str(tmp_path)!r}, n) for n in range(2)], Compute(workers=2))\n")
    (tmp_path / "probe.py").write_text(probe)
    repository = str(Path(__file__).parents[1])
    path = os.pathsep.join(filter(None, [repository, os.environ.get("PYTHONPATH")]))
    run = subprocess.Popen([sys.executable, str(tmp_path / "probe.py")], env={**os.environ, "PYTHONPATH": path})
    try:
        wait_for(lambda: len(list(tmp_path.glob("*.pid"))) == 2 or run.poll() is not None, "both tasks to start")
        assert run.poll() is None, "the probe stopped before its tasks started"
        workers = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
        forkservers = {running(pid)[1] for pid in workers}
        assert run.pid not in forkservers  # forked from the forkserver, not from the run's process
        stragglers = set(workers) | forkservers
        assert all(running(pid)[0] for pid in stragglers)
    finally:
        run.kill()
        run.wait()
    wait_for(lambda: not any(running(pid)[0] for pid in stragglers), f"processes {sorted(stragglers)} to exit")


def test_pool_processes_run_their_libraries_on_one_thread(monkeypatch):
    """A process per CPU already: N processes of N ITK or OpenMP threads each would oversubscribe the machine."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", raising=False)
    assert map_items(tasks.library_threads, [1, 2, 3], Compute(workers=2)).results == [(1, "1")] * 3


@pytest.mark.services
def test_ray_workers_get_the_drivers_storage_settings(ray_cluster):
    """A driver (here a fresh process, as a run worker is) hands its artifact store's client settings to the job's
    workers: the cluster's nodes were started without them."""
    probe = ("import os, ray\n"
             "from radassets.dataplane import connect_ray\n"
             f"connect_ray({ray_cluster.address!r})\n"
             "f = ray.remote(lambda: (os.environ.get('AWS_ENDPOINT_URL'), os.environ.get('SECRET_ELSEWHERE')))\n"
             "print(ray.get(f.remote()))\n")
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "SECRET_ELSEWHERE": "kept"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "('http://127.0.0.1:9', None)"
