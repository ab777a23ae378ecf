"""Task functions for the data plane's tests. Module-level, so that pool processes and Ray workers import them by
name; each writes its output atomically to its final name, as the imaging tasks do."""

from __future__ import annotations

import hashlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from radassets.storage import atomic_write_text


def digest(item: tuple[str, int]) -> dict:
    """Write ``<folder>/<n>.txt`` (a value that depends only on ``n``) and return a small record of it."""
    folder, n = item
    text = hashlib.sha256(str(n).encode()).hexdigest() * 64
    path = Path(folder) / f"{n}.txt"
    atomic_write_text(path, text)
    return {"n": n, "sha256": hashlib.sha256(text.encode()).hexdigest()}


def dies_once(item: tuple[str, int]) -> dict:
    """``digest``, except that the first try of item 3 kills its own process mid-task (after a partial write),
    as the OOM killer or ``kill -9`` would; the marker file says a try has happened."""
    folder, n = item
    marker = Path(folder) / f".{n}.tried"
    if n == 3 and not marker.exists():
        marker.touch()
        (Path(folder) / f"{n}.txt").write_text("half a wr")  # what a crash mid-write of a non-atomic writer leaves
        os.kill(os.getpid(), signal.SIGKILL)
    return digest(item)


def always_dies(item: tuple[str, int]) -> dict:
    _, n = item
    if n == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return digest(item)


def raises(item: tuple[str, int]) -> dict:
    _, n = item
    if n == 2:
        raise ValueError(f"item {n} is bad")
    return digest(item)


def library_threads(_: int) -> tuple[int, str | None]:
    """How many threads ITK would use here, and OpenMP's setting."""
    import SimpleITK as sitk

    return sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(), os.environ.get("OMP_NUM_THREADS")


@dataclass(frozen=True)
class WriteWhere:
    """A ``Compute.record``: writes ``<folder>/<n>.recorded`` with the process that recorded the result and
    whether the task's output was there already."""

    folder: str

    def __call__(self, result: dict) -> None:
        output = Path(self.folder) / f"{result['n']}.txt"
        atomic_write_text(Path(self.folder) / f"{result['n']}.recorded", f"{os.getpid()} {output.is_file()}")


def environment(name: str) -> str | None:
    return os.environ.get(name)


def blocks(item: tuple[str, int]) -> dict:
    """Writes ``<folder>/<n>.pid`` (this process's id), then waits for ever: a task caught mid-way by the run's
    death."""
    folder, n = item
    atomic_write_text(Path(folder) / f"{n}.pid", str(os.getpid()))
    signal.pause()
    return {"n": n}
