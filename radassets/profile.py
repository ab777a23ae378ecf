"""Phase timings for the benchmarks (``bench/demo.py``): one JSON line per phase, appended to a file.

Off unless the edge of a process (the CLI, the code location ``radassets.definitions``) calls ``enable`` with
the ``profile`` setting (``RADASSETS_PROFILE``); library code only opens phases, it never reads the
environment. Nothing of it reaches an output or the lineage store: the lines go to that file alone, so the
bytes of ``make demo`` are the same with and without it.

Each line is written with one ``write`` on a file opened ``O_APPEND``: the kernel appends it whole, so the
command and its run workers (several processes) can share one file without a lock. A line:
``{"phase": ..., "seconds": ..., "start": <epoch s>, "pid": ..., "error": <only when the phase raised>,
<labels>}``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_path: str | None = None


def enable(path: str | os.PathLike[str] | None) -> None:
    """Append this process's phases to ``path`` from now on; ``None`` turns them off."""
    global _path
    _path = None if path is None else os.fspath(path)
    if _path is not None:
        Path(_path).parent.mkdir(parents=True, exist_ok=True)


def enabled() -> bool:
    return _path is not None


@contextmanager
def phase(name: str, **labels: Any) -> Iterator[None]:
    """Time the block as phase ``name`` with ``labels`` (asset, partition, run id ...: JSON values, else their
    ``str``). When profiling is off this costs one check."""
    path = _path
    if path is None:
        yield
        return
    start = time.time()
    began = time.perf_counter()
    error: str | None = None
    try:
        yield
    except BaseException as e:
        error = type(e).__name__
        raise
    finally:
        record: dict[str, Any] = {"phase": name, "seconds": time.perf_counter() - began, "start": start,
                                  "pid": os.getpid(), **labels}
        if error is not None:
            record["error"] = error
        _append(path, json.dumps(record, default=str, sort_keys=True) + "\n")


def mark(name: str, **labels: Any) -> None:
    """A moment rather than a span (a phase of 0 s), such as "the command noticed the run ended"."""
    with phase(name, **labels):
        pass


def _append(path: str, line: str) -> None:
    # os.write on an O_APPEND descriptor, not a buffered file: one system call per line, so lines of several
    # processes never interleave. A profile that cannot be written must not fail the step it measures.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return
    try:
        os.write(fd, line.encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The lines of a profile file (for the bench); a missing file has none."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
