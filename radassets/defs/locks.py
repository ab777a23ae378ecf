"""One run at a time per asset partition: ``@exclusive_partition``, applied by ``@recorded`` to every asset.

Two runs of the same partition (two ``pipeline run`` commands, or one and a UI launch) would write the
same files at once. The step takes a file lock, ``Layout.lock_file``: ``<home>/.locks/<asset>/<partition>.lock``,
for as long as it runs; a second run's step waits for it, with a log line naming the run and process
that holds it, and then runs in turn (the steps skip what is already done and verified, so both runs
end with the same, complete outputs). The wait is interruptible like any step (Ctrl-C, SIGTERM, or
terminating the run in the UI). The lock is the operating system's (``filelock``): a killed holder
releases it with its process, so a lock is never left behind.
"""

import functools
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from radassets.layout import Layout

WAIT_POLL_S = 0.5


def _holder(path: Path) -> str:
    try:
        owner = json.loads(path.with_suffix(".owner.json").read_text())
        return f"run {owner['run_id']} (pid {owner['pid']} on {owner['host']})"
    except (OSError, ValueError, KeyError):
        return "another run"


@contextmanager
def partition_lock(layout: Layout, asset: str, partition: str | None, run_id: str,
                   log: Callable[[str], None]) -> Iterator[None]:
    """Hold the partition's lock; if another run holds it, log who and wait for it."""
    path = layout.lock_file(asset, partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"{asset} {partition or ''} is being materialized by {_holder(path)}: waiting for it to finish")
        lock.acquire(poll_interval=WAIT_POLL_S)
        log(f"{asset} {partition or ''}: the other run is done, materializing")
    owner = path.with_suffix(".owner.json")
    try:
        owner.write_text(json.dumps({"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname()}))
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def exclusive_partition(fn):
    """Run the asset's function under its partition's lock (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(context, *args, **kwargs):
        partition = str(context.partition_key) if context.has_partition_key else None
        layout = context.resources.storage.layout()
        with partition_lock(layout, context.asset_key.to_user_string(), partition, context.run.run_id,
                            context.log.info):
            return fn(context, *args, **kwargs)

    return wrapper
