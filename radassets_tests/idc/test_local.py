"""`radassets datasets add-local`: series identified by content, files edited in place noticed and converted
again after re-indexing, file names that are not UTF-8, and an index that is written whole or not at all.
The steps run through the same library calls as the assets (cohort → dicom → volumes)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import SimpleITK as sitk

from radassets import datasets
from radassets.idc.cohorts import cohort_for, write_cohort
from radassets.idc.dicom import fetch_dataset_dicom
from radassets.idc.local import LocalIndexError, add_local_dataset
from radassets.imaging.ct import read_ct_series
from radassets.imaging.pipeline import run_volumes
from radassets_tests.conftest import REPO

PATIENTS = ("DEMO-005", "DEMO-006")  # a CT with a RTSTRUCT, a CT with a SEG


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A copy of data/ (add-local writes definitions there); the tests' artifact root is ``layout``."""
    data = tmp_path / "data"
    shutil.copytree(REPO / "data", data)
    return data


@pytest.fixture
def user_folder(small_demo, tmp_path) -> Path:
    """Two patients' current CT and masks under names of the user's choosing."""
    index = pq.read_table(small_demo / "index" / "idc_index.parquet").to_pylist()
    folder = tmp_path / "study"
    for r in index:
        if r["PatientID"] in PATIENTS and "retest" not in r["SeriesDescription"]:
            source = small_demo / "bucket" / "radassets-demo-data" / r["crdc_series_uuid"]
            for i, f in enumerate(sorted(source.glob("*.dcm"))):
                dest = folder / r["PatientID"] / r["Modality"] / f"IM{i:04d}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dest)
    return folder


def materialize_volumes(name: str, data_dir: Path, layout):
    """cohort → dicom → volumes, as the assets call them."""
    definition = datasets.get(name, data_dir)
    cohort = cohort_for(definition, layout)
    write_cohort(cohort, layout)
    assert not fetch_dataset_dicom(definition, cohort, layout).failed
    return run_volumes(definition, layout)


def ct_row(report, patient: str) -> dict:
    return next(r for r in report.qc if r["PatientID"] == patient and r["Modality"] == "CT")


def test_a_file_edited_in_place_is_noticed_and_converted_again(data_dir, layout, user_folder):
    add_local_dataset("my_study_v1", user_folder, layout, data_root=data_dir)
    first = materialize_volumes("my_study_v1", data_dir, layout)
    assert first.failed == 0
    old = ct_row(first, "DEMO-005")
    # Edit one slice's pixels in place (same size). The mtime is set one second later explicitly: file
    # systems with coarse timestamps could otherwise give the edit the mtime of the indexing.
    victim = sorted((user_folder / "DEMO-005" / "CT").iterdir())[7]
    ds = pydicom.dcmread(victim)
    pixels = ds.pixel_array.copy()
    pixels[100:150, 100:150] += 300
    ds.PixelData = pixels.tobytes()
    ds.save_as(victim)
    indexed_mtime = victim.stat().st_mtime_ns
    os.utime(victim, ns=(indexed_mtime + 10**9, indexed_mtime + 10**9))

    # Not indexed again: the series is refused by name, never reused from the old pixels.
    stale = materialize_volumes("my_study_v1", data_dir, layout)
    row = ct_row(stale, "DEMO-005")
    assert (row["status"], row["code"], row.get("reused")) == ("failed", "changed_since_indexed", None), row
    assert str(victim) in row["message"] and "radassets datasets add-local my_study_v1" in row["message"]
    assert ct_row(stale, "DEMO-006")["status"] == "ok"

    # Indexed again (same name, same folder): a new series version, converted afresh.
    again = add_local_dataset("my_study_v1", user_folder, layout, data_root=data_dir)
    assert again.reindexed
    second = materialize_volumes("my_study_v1", data_dir, layout)
    new = ct_row(second, "DEMO-005")
    assert new["status"] == "ok" and not new["reused"]
    assert new["crdc_series_uuid"] != old["crdc_series_uuid"] and new["sha256"] != old["sha256"]
    assert ct_row(second, "DEMO-006")["reused"]  # untouched series keep their id and volume
    assert second.content_hash != first.content_hash  # the volumes data version (lineage version) changes
    fresh = read_ct_series(sorted((user_folder / "DEMO-005" / "CT").iterdir())).image
    stored = sitk.ReadImage(layout.resolve(new["path"]))  # recorded relative to the root
    assert np.array_equal(sitk.GetArrayViewFromImage(stored), sitk.GetArrayViewFromImage(fresh))
    assert stored.GetOrigin() == fresh.GetOrigin() and stored.GetSpacing() == fresh.GetSpacing()


def test_reindexing_another_folder_under_a_taken_name_is_refused(data_dir, layout, user_folder, tmp_path):
    add_local_dataset("my_study_v1", user_folder, layout, data_root=data_dir)
    other = tmp_path / "other"
    shutil.copytree(user_folder / "DEMO-006", other)
    with pytest.raises(LocalIndexError, match="already exists"):
        add_local_dataset("my_study_v1", other, layout, data_root=data_dir)
    with pytest.raises(LocalIndexError, match="already exists"):
        add_local_dataset("demo_v1", other, layout, data_root=data_dir)


def test_a_file_name_that_is_not_utf8_is_indexed_and_read(data_dir, layout, user_folder):
    ct = sorted((user_folder / "DEMO-006" / "CT").iterdir())
    odd = ct[3].parent / os.fsdecode(b"ct_\xff.dcm")
    ct[3].rename(odd)
    result = add_local_dataset("odd_names_v1", user_folder, layout, data_root=data_dir)
    assert result.linked == [str(user_folder / "DEMO-006" / "CT") + "/ct_\\xff.dcm"]
    report = materialize_volumes("odd_names_v1", data_dir, layout)
    row = ct_row(report, "DEMO-006")
    assert row["status"] == "ok" and row["slices"] == len(ct)  # the odd slice is part of the volume


def test_a_failed_add_local_leaves_nothing_behind(data_dir, layout, user_folder, storage):
    # A staging folder of a killed add-local is cleared by the next one.
    (storage / "local" / ".my_study_v1.0123456789ab.staging" / "index").mkdir(parents=True)
    # The definition cannot be written (data/datasets/my_study_v1.yaml's folder is a file): after the index
    # was built and put in place, everything this run made is removed again.
    definitions = data_dir / "datasets"
    kept = data_dir / "kept_datasets"
    definitions.rename(kept)
    definitions.write_text("not a folder")
    with pytest.raises(OSError):
        add_local_dataset("my_study_v1", user_folder, layout, data_root=data_dir)
    assert not (storage / "local").exists() or not any((storage / "local").iterdir())
    definitions.unlink()
    kept.rename(definitions)
    assert not (definitions / "my_study_v1.yaml").exists()
    # And it works once the cause is gone.
    assert add_local_dataset("my_study_v1", user_folder, layout, data_root=data_dir).series == 4
    assert sorted(p.name for p in (storage / "local").iterdir()) == ["my_study_v1"]
    assert json.loads(json.dumps(datasets.get("my_study_v1", data_dir).source.model_dump()))["kind"] == "local"
