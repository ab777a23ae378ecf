"""How generated artifacts are written (``radassets.layout`` says where).

Every write is atomic, so a crash leaves either the old file or the new one, never half of one. On a
local file system: a temporary file ``.<name>.<random>.tmp`` in the same folder, then ``os.replace``. On
an object store (a ``UPath`` such as ``s3://...``): one put of the whole object, which the store makes
visible only once complete (objects are written once, never appended to); ``atomic_path`` writes a local
temporary file and uploads it in one put. The
temporary file is created with mode 0666 less the process's umask, as ``open()`` would create the
file itself: outputs are 0644 under umask 022 and 0664 under 002, so collaborators on a shared
server can read them (``tempfile.mkstemp`` would make every output 0600).

A process killed mid-write leaves its temporary file behind; ``remove_stale_temporaries`` removes
them from a step's own output folder when the step starts again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from upath import UPath


def is_local(path: Path) -> bool:
    """A path of this machine's file system (``pathlib.Path``); a ``UPath`` of an object store is not."""
    return isinstance(path, Path)


TEMPORARY_RE = re.compile(r"^\..+\.tmp$")  # .<name>.<random>.tmp (and schema.write_table's .<name>.tmp)


def _create_temporary(path: Path) -> Path:
    """A new empty file ``.<name>.<random>.tmp`` beside ``path``, created with mode 0666 so that the
    kernel applies the umask (no umask is read or changed: that would race with other threads)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a local temporary path; on success it becomes ``path``: renamed onto it (beside it, on the same
    file system), or uploaded in one put to an object store."""
    if not is_local(path):
        with tempfile.TemporaryDirectory(prefix="radassets-upload-") as folder:
            tmp_path = Path(folder) / path.name
            yield tmp_path
            remote = cast(UPath, path)
            remote.fs.put_file(str(tmp_path), remote.path)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temporary(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files (``.<name>.*.tmp``) that killed writers left under ``folder``.

    Call it only where no other process can be writing: at the start of a step, in the step's own
    output folder of its own partition. That holds because one run at a time materializes a
    partition (Dagster runs a step once per run, and concurrent runs of one partition are refused
    by the partition lock), so every temporary file there belongs to a writer that is gone.
    """
    if not is_local(folder):
        return []  # an object store keeps no partial objects: a put is whole or absent
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for tmp in sorted(folder.rglob(".*.tmp")):
        if TEMPORARY_RE.match(tmp.name) and (tmp.is_file() or tmp.is_symlink()):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    if not is_local(path):
        remote = cast(UPath, path)
        remote.fs.pipe_file(remote.path, data)  # one put of the whole object
        return path
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with (open(path, "rb") if is_local(path) else path.open("rb")) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-serialisable object in a canonical form (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


@contextmanager
def removable_lock(path: Path, on_wait: Callable[[], None] | None = None, poll_s: float = 0.5) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (the OS's ``flock``: a killed holder releases it with its process),
    and remove the file when done, so that one lock per item (a series among 200,000) leaves no file behind.

    ``filelock`` keeps its lock files, because removing one is unsafe with its protocol: a waiter may hold
    the old, removed file open and lock it while a newcomer locks a new file of the same name. Here a
    holder checks that the file it locked is still the one at ``path`` and starts again if not, and the
    file is removed while still locked, so no two processes ever hold the lock at once. ``on_wait`` is
    called once if the lock is held by another process; the wait polls, so Ctrl-C interrupts it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    told = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if on_wait and not told:
                on_wait()
                told = True
            time.sleep(poll_s)
            continue
        except BaseException:
            os.close(fd)
            raise
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # the holder before us removed that file: lock the one now at ``path``
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # still locked: a waiter on this file finds it gone and starts again
        os.close(fd)
