"""Local copies of artifact-store files, for the libraries that open local paths only.

SimpleITK, pydicom's series readers, DuckDB's and pyarrow's file readers and ``torch.load`` take a file name.
Under a local artifact root the paths are the files themselves and nothing is copied. Under a URL root
(``s3://``, ``gs://``, ``memory://``; ``radassets.layout``) the files are downloaded into a scratch folder (the
system's temporary folder, ``TMPDIR``) that is removed when the block ends: a worker keeps on its disk only what
it is working on (a series, a volume), whatever the size of the dataset version.

Writing goes the other way through ``radassets.storage`` (``atomic_path`` writes a local file and puts it whole);
``put_folder`` puts a folder written locally (a DICOM series) with its record file last, so a reader that finds
the record finds every file.

Downloads use the file system's batch ``get`` (s3fs and gcsfs fetch the files of one call concurrently).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import cast

from upath import UPath

from radassets.storage import is_local


@contextmanager
def local_files(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """Local paths with the bytes of ``paths``, in their order: the paths themselves where they are local,
    else copies in a scratch folder (each keeps its name, under a folder of its own: names may repeat)."""
    if all(is_local(p) for p in paths):
        yield list(paths)
        return
    with tempfile.TemporaryDirectory(prefix="radassets-stage-") as scratch:
        local: list[Path] = []
        by_fs: dict[int, tuple[object, list[str], list[str]]] = {}
        for i, path in enumerate(paths):
            if is_local(path):
                local.append(path)
                continue
            remote = cast(UPath, path)
            target = Path(scratch) / f"{i:06d}" / remote.name
            target.parent.mkdir()
            local.append(target)
            fs, sources, targets = by_fs.setdefault(id(remote.fs), (remote.fs, [], []))
            sources.append(remote.path)
            targets.append(str(target))
        for fs, sources, targets in by_fs.values():
            fs.get(sources, targets)  # type: ignore[attr-defined]
        yield local


@contextmanager
def local_file(path: Path) -> Iterator[Path]:
    """A local path with the bytes of ``path`` (``path`` itself where it is local)."""
    with local_files([path]) as (local,):
        yield local


def put_folder(local: Path, remote: Path, last: str | None = None) -> list[Path]:
    """Put every file under the local folder ``local`` at the same relative path under ``remote`` (a folder of
    the artifact store), ``last`` (a relative path: the folder's record) after all the others; returns the
    remote paths in the order they were written. Each put is whole (an object store shows no partial object)."""
    files = sorted(p for p in local.rglob("*") if p.is_file())
    if last is not None:
        files.sort(key=lambda p: p.relative_to(local).as_posix() == last)  # stable: the record goes last
    written = []
    for file in files:
        target = remote / file.relative_to(local).as_posix()
        if is_local(target):
            raise ValueError(f"put_folder writes to an object store; {target} is a local path")
        store = cast(UPath, target)
        store.fs.put_file(str(file), store.path)
        written.append(target)
    return written
