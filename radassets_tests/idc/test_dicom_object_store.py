"""The ingest steps (cohort, dicom) on an artifact root on an object store (moto's S3 server, the real s3fs): the
same bytes under the same relative names as on a local root, series reused on a rerun, a series whose put was
cut short before its record fetched again, a series of wrong content quarantined, series fetched by pool processes
(data-plane tasks), and the demo collection put to the store."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from radassets import datasets
from radassets.dataplane import Compute
from radassets.demo import DemoSpec, ensure_demo_source
from radassets.idc.cohort import Cohort, series_hash
from radassets.idc.cohorts import cohort_for, write_cohort
from radassets.idc.dicom import fetch_dataset_dicom, series_files
from radassets.idc.download import SERIES_RECORD, Mirror
from radassets.layout import Layout
from radassets.storage import sha256_file
from radassets_tests.conftest import SMALL_DEMO_SPEC, copy_to_store

# moto's S3 server with whole steps on it: minutes, so with the other services tests (make test-services).
pytestmark = pytest.mark.services

DEMO_BUCKET = "radassets-demo-data"


def files_under(root: Path, folder: str) -> dict[str, bytes]:
    """Every file under ``root/folder``, by its name relative to ``root`` (on a store: one listing, one batch read)."""
    base = root / folder
    if isinstance(base, Path):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}
    store = base.fs
    contents = store.cat(store.find(base.path)) if store.exists(base.path) else {}
    prefix = root.path.rstrip("/") + "/"
    return {name[len(prefix):]: data for name, data in contents.items()}


def lockfile_without_time(layout: Layout, dataset_version: str) -> dict:
    """A lockfile's content less ``created_at``, the one field that differs between two builds of a cohort."""
    content = json.loads(layout.cohort_lockfile(dataset_version).read_text())
    content.pop("created_at")
    return content


def few_series(cohort: Cohort) -> Cohort:
    """Three series of the cohort (two CT, one mask): enough for every case, and seconds on moto."""
    ct = [s for s in cohort.series if s["Modality"] == "CT"][:2]
    series = [*ct, next(s for s in cohort.series if s["Modality"] != "CT")]
    return dataclasses.replace(cohort, series=series, content_hash=series_hash(cohort.idc_version, series))


@pytest.fixture
def two_roots(small_demo, demo_layout, s3_root) -> tuple[Layout, Layout]:
    """A local root and an s3:// root (its own local state folder), both over the small demo collection, with the
    demo_v1 cohort built and written on each. The collection is put on the store as ``ensure_demo_source`` puts it,
    less the bucket folders of the series that ``few_series`` leaves out."""
    remote = Layout(s3_root, state_dir=demo_layout.root.parent / "s3-state")
    definition = datasets.get("demo_v1")
    ensure_demo_source(definition, demo_layout, DemoSpec(**SMALL_DEMO_SPEC))
    write_cohort(cohort_for(definition, demo_layout), demo_layout)
    wanted = few_series(Cohort.read(demo_layout.cohort_lockfile("demo_v1")))
    demo = small_demo.name
    copy_to_store(small_demo.parent, s3_root, f"{demo}/index", f"{demo}/truth",
                  *(f"{demo}/bucket/{DEMO_BUCKET}/{s['crdc_series_uuid']}" for s in wanted.series))
    for name in ("clinical.csv", "demo_manifest.json"):
        (remote.demo_root() / name).write_bytes((small_demo / name).read_bytes())
    generated: list[str] = []
    ensure_demo_source(definition, remote, DemoSpec(**SMALL_DEMO_SPEC), progress=generated.append)
    assert generated == []  # the collection on the store is reused, not generated again
    write_cohort(cohort_for(definition, remote), remote)
    return demo_layout, remote


def fetch(layout: Layout, mirror: Mirror | None = None):
    cohort = few_series(Cohort.read(layout.cohort_lockfile("demo_v1")))
    return fetch_dataset_dicom(datasets.get("demo_v1"), cohort, layout, mirror=mirror, attempts=1)


def test_cohort_and_dicom_on_s3_are_the_bytes_of_a_local_root_and_a_rerun_reuses_every_series(two_roots):
    local, remote = two_roots
    assert not remote.is_local
    assert lockfile_without_time(remote, "demo_v1") == lockfile_without_time(local, "demo_v1")

    on_disk, on_store = fetch(local), fetch(remote)
    assert on_store.failed == 0 and on_store.series == 3
    assert on_store.rows == on_disk.rows and {r["how"] for r in on_store.rows} == {"downloaded"}
    local_files, remote_files = files_under(local.root, "dicom"), files_under(remote.root, "dicom")
    assert sorted(remote_files) == sorted(local_files)
    assert [name for name in remote_files if remote_files[name] != local_files[name]] == []
    assert sum(name.endswith("/" + SERIES_RECORD) for name in remote_files) == on_store.series
    manifest = json.loads(remote_files["dicom/demo_v1/manifest.json"])
    assert {row["folder"] for row in manifest["series"]} == {f"dicom/series/{row['crdc_series_uuid']}"
                                                             for row in manifest["series"]}
    assert manifest["summary"]["manifest"] == "dicom/demo_v1/manifest.json"
    assert list(remote.dicom_work_dir().glob(".partial/*")) == []  # the local copies are gone once put

    files_of = series_files(datasets.get("demo_v1"), remote)
    first = manifest["series"][0]
    paths = files_of(first)
    assert paths and all(str(p).startswith(f"{remote.root}/dicom/series/{first['crdc_series_uuid']}/") for p in paths)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in series_files(datasets.get("demo_v1"), local)(
        json.loads(local.dicom_manifest("demo_v1").read_text())["series"][0])]

    again = fetch(remote)
    assert {r["how"] for r in again.rows} == {"present"}  # reused: nothing fetched
    assert files_under(remote.root, "dicom/series") == files_under(local.root, "dicom/series")


def test_a_series_whose_put_stopped_before_its_record_is_fetched_again_and_completed(two_roots):
    local, remote = two_roots
    fetch(local)
    first = fetch(remote)
    uuid = first.rows[0]["crdc_series_uuid"]
    folder = remote.dicom_series_dir() / uuid
    # What a put cut short leaves: some of the files, no record (it is put last).
    (folder / SERIES_RECORD).unlink()
    sorted(folder.glob("*.dcm"))[-1].unlink()

    again = fetch(remote)
    assert {r["crdc_series_uuid"]: r["how"] for r in again.rows if r["how"] != "present"} == {uuid: "downloaded"}
    assert files_under(remote.root, "dicom/series") == files_under(local.root, "dicom/series")


def test_a_series_of_wrong_content_is_quarantined_on_the_store_as_on_a_disk(two_roots, small_demo, tmp_path):
    local, remote = two_roots
    mirror = tmp_path / "mirror"
    shutil.copytree(small_demo / "bucket", mirror)
    rows = [r for r in few_series(Cohort.read(local.cohort_lockfile("demo_v1"))).series if r["Modality"] == "CT"]
    # A file of another series in this one's folder: wrong content, which no retry can fix.
    intruder = sorted((mirror / DEMO_BUCKET / rows[1]["crdc_series_uuid"]).glob("*.dcm"))[0]
    victim = sorted((mirror / DEMO_BUCKET / rows[0]["crdc_series_uuid"]).glob("*.dcm"))[0]
    shutil.copyfile(intruder, victim)

    on_disk, on_store = fetch(local, Mirror.local_folder(mirror)), fetch(remote, Mirror.local_folder(mirror))
    uuid = rows[0]["crdc_series_uuid"]
    [failed] = on_store.failures
    assert failed.item == rows[0]["SeriesInstanceUID"] and failed.reason.startswith("quarantined: ")
    assert on_store.rows == on_disk.rows
    quarantined = files_under(remote.root, f"dicom/series/.quarantine/{uuid}")
    assert quarantined == files_under(local.root, f"dicom/series/.quarantine/{uuid}")
    assert f"dicom/series/.quarantine/{uuid}/_reason.txt" in quarantined
    assert not (remote.dicom_series_dir() / uuid / SERIES_RECORD).exists()
    assert files_under(remote.root, "dicom/demo_v1") == files_under(local.root, "dicom/demo_v1")


def test_the_demo_collection_is_generated_once_and_put_to_the_store(s3_root, tmp_path):
    remote = Layout(s3_root, state_dir=tmp_path / "state")
    definition = datasets.get("demo_v1")
    spec = DemoSpec(n_patients=1, n_added_in_release_2=0, n_revised_in_release_2=0, n_test_retest=0)
    told: list[str] = []
    ensure_demo_source(definition, remote, spec, progress=told.append)
    assert told  # generated
    demo = remote.demo_root()
    manifest = json.loads((demo / "demo_manifest.json").read_text())
    assert {name: sha256_file(demo / name) for name in manifest["sha256"]} == manifest["sha256"]
    assert len(list((demo / "bucket" / DEMO_BUCKET).iterdir())) == manifest["counts"]["series_current"]

    told.clear()
    ensure_demo_source(definition, remote, spec, progress=told.append)
    assert told == []  # found on the store: not generated again
    cohort = cohort_for(definition, remote)
    assert len(cohort.series) == manifest["counts"]["series_current"]


def test_series_fetched_by_a_pool_of_processes_are_put_to_the_store_as_in_process(two_roots):
    local, remote = two_roots
    in_process = fetch(local)
    cohort = few_series(Cohort.read(remote.cohort_lockfile("demo_v1")))
    told: list[tuple[int, int]] = []
    pooled = fetch_dataset_dicom(datasets.get("demo_v1"), cohort, remote, attempts=1, compute=Compute(workers=2),
                                 progress=lambda done, total, message: told.append((done, total)))
    assert pooled.rows == in_process.rows and {r["how"] for r in pooled.rows} == {"downloaded"}
    assert sorted(told) == [(1, 3), (2, 3), (3, 3)]
    assert files_under(remote.root, "dicom") == files_under(local.root, "dicom")


def test_series_files_resolve_relative_folders_and_the_absolute_ones_of_earlier_manifests(demo_layout, small_demo):
    bucket = small_demo / "bucket" / DEMO_BUCKET
    uuid = sorted(p.name for p in bucket.iterdir())[0]
    shutil.copytree(bucket / uuid, demo_layout.dicom_series_dir() / uuid)
    files_of = series_files(datasets.get("demo_v1"), demo_layout)
    now = files_of({"crdc_series_uuid": uuid, "folder": f"dicom/series/{uuid}"})
    earlier = files_of({"crdc_series_uuid": uuid, "folder": str(demo_layout.dicom_series_dir() / uuid)})
    assert now and now == earlier == sorted((demo_layout.dicom_series_dir() / uuid).glob("*.dcm"))
