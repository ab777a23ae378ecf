"""cohort and dicom materialized through Dagster on the demo, in a real (temporary) instance."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from dagster import AssetKey, materialize

from radassets.defs.resources import IdcResource
from radassets.definitions import defs
from radassets.idc.cohort import Cohort
from radassets.layout import Layout

pytestmark = pytest.mark.integration


def run(instance, partition: str, resources: dict | None = None, raise_on_error: bool = True):
    """Materialize the ingest assets only (the imaging assets have tests of their own)."""
    return materialize(list(defs.assets), instance=instance, partition_key=partition, selection=["cohort", "dicom"],
                       resources={**defs.resources, **(resources or {})}, raise_on_error=raise_on_error)


def latest(instance, key: str, partition: str):
    return instance.get_latest_materialization_event(AssetKey(key)).asset_materialization


def test_demo_v1_cohort_and_dicom(instance, default_demo_home):
    result = run(instance, "demo_v1")
    assert result.success
    cohort = Cohort.read(Layout(default_demo_home).cohort_lockfile("demo_v1"))
    stats = cohort.stats()
    assert (stats.patients, stats.series) == (60, 144)
    meta = latest(instance, "cohort", "demo_v1").metadata
    assert meta["series"].value == 144 and meta["content_hash"].value == cohort.content_hash
    assert latest(instance, "cohort", "demo_v1").tags["dagster/data_version"] == cohort.content_hash
    manifest = json.loads(Layout(default_demo_home).dicom_manifest("demo_v1").read_text())
    assert manifest["summary"]["verified"] == 144 and manifest["summary"]["failed"] == 0
    assert manifest["cohort_hash"] == cohort.content_hash
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("all_series_verified", True)]
    # demo_v2 shares every unrevised series with demo_v1: those are present, not copied again.
    assert run(instance, "demo_v2").success
    manifest2 = json.loads(Layout(default_demo_home).dicom_manifest("demo_v2").read_text())
    hows = {row["how"] for row in manifest2["series"]}
    assert hows == {"present", "downloaded"}
    assert sum(row["how"] == "downloaded" for row in manifest2["series"]) == 16 + 8  # added + revised


def _broken_mirror(demo: Path, target: Path, home: Path) -> tuple[Path, str]:
    """A hard-linked copy of the demo bucket in which one CT series has an unreadable file."""
    for f in (demo / "bucket").rglob("*.dcm"):
        dest = target / f.relative_to(demo / "bucket")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, dest)
    cohort = Cohort.read(Layout(home).cohort_lockfile("demo_v1"))
    victim = next(s for s in cohort.series if s["Modality"] == "CT")
    bad = sorted((target / "radassets-demo-data" / victim["crdc_series_uuid"]).glob("*.dcm"))[0]
    bad.unlink()  # a new inode: the original stays intact
    bad.write_bytes(b"truncated")
    return target, victim["SeriesInstanceUID"]


def test_one_bad_series_is_recorded_and_the_partition_completes(instance, default_demo_home, demo_collection, tmp_path):
    assert run(instance, "demo_v1").success  # the cohort lockfile, and a first verified copy
    shutil.rmtree(default_demo_home / "dicom")  # forget the verified copies
    mirror, victim = _broken_mirror(demo_collection, tmp_path / "mirror", default_demo_home)
    result = run(instance, "demo_v1", {"idc": IdcResource(mirror=str(mirror), attempts=1, max_failed_fraction=0.1)})
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.severity.value == "WARN"
    assert victim in check.metadata["failures"].value  # the Checks tab names the series
    meta = latest(instance, "dicom", "demo_v1").metadata
    assert meta["failed"].value == 1 and meta["verified"].value == 143
    assert victim in meta["failures"].value and "unreadable DICOM" in meta["failures"].value


def test_partition_fails_above_the_failure_ratio(instance, default_demo_home, demo_collection, tmp_path):
    assert run(instance, "demo_v1").success
    shutil.rmtree(default_demo_home / "dicom")
    mirror, _ = _broken_mirror(demo_collection, tmp_path / "mirror", default_demo_home)
    result = run(instance, "demo_v1", {"idc": IdcResource(mirror=str(mirror), attempts=1, max_failed_fraction=0.0)},
                 raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "1 of 144 series could not be completed" in failure.event_specific_data.error.message
    assert instance.get_latest_materialization_event(AssetKey("dicom")) is not None  # from the first run only
