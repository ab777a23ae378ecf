"""volumes, seeds and patches materialized through Dagster on the small demo, in a real instance."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, materialize

from radassets.defs.imaging import ImagingResource
from radassets.definitions import defs
from radassets.idc.dicom import read_manifest
from radassets.imaging import patch_store
from radassets.imaging.patches import load_patches
from radassets.layout import Layout
from radassets_tests.imaging.test_ct import _edit, tilt

pytestmark = pytest.mark.integration
IMAGING = ["volumes", "seeds", "patches"]


def run(instance, selection: list[str] | None = None, resources: dict | None = None, raise_on_error: bool = True):
    """Materialize demo_v1's assets partitioned by dataset version (by default ingest and imaging)."""
    return materialize(list(defs.assets), instance=instance, partition_key="demo_v1",
                       selection=selection or ["cohort", "dicom", *IMAGING],
                       resources={**defs.resources, **(resources or {})}, raise_on_error=raise_on_error)


def metadata(instance, key: str) -> dict:
    return instance.get_latest_materialization_event(AssetKey(key)).asset_materialization.metadata


def test_demo_v1_volumes_seeds_patches(instance, small_demo_home):
    result = run(instance)
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"all_series_verified": True, "all_series_converted": True, "seeds_agree_with_reference": True}
    n_ct = 6 + 2  # six patients and two re-scans in release 1 of the small demo
    volumes = metadata(instance, "volumes")
    assert volumes["ct_converted"].value == n_ct and volumes["failed"].value == 0
    seeds = metadata(instance, "seeds")
    assert seeds["seeds"].value == n_ct and seeds["reference_disagreements"].value == 0
    assert seeds["reference_distance_max_mm"].value < 1.0  # GTV-1 centroids against the analytic centres
    patches_meta = metadata(instance, "patches")
    assert patches_meta["montage"].value.startswith("![QC montage](data:image/png;base64,")
    patches, masks, rows = load_patches(Layout(small_demo_home).asset_dir("patches", "demo_v1"))
    # A local store's patches are read from their chunk files (radassets.imaging.patch_store.RawChunkReader).
    assert isinstance(patches, patch_store.RawChunkReader)
    assert patches.shape == (n_ct, 64, 64, 64) and patches.dtype == np.int16
    for i, row in enumerate(rows):
        k, j, l = np.nonzero(masks[i])
        assert np.abs(np.array([l.mean(), j.mean(), k.mean()]) - 31.5).max() < 1.0, row  # lesion at the centre
        assert patches[i][masks[i] > 0].mean() > -200  # soft tissue inside the mask, not lung or air
    montage = Layout(small_demo_home).asset_dir("patches", "demo_v1") / "montage.png"
    assert montage.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Data versions chain: the same inputs give the same versions on a rerun.
    versions = {k: instance.get_latest_materialization_event(AssetKey(k)).asset_materialization.tags["dagster/data_version"]
                for k in IMAGING}
    assert run(instance, IMAGING).success
    assert versions == {k: instance.get_latest_materialization_event(AssetKey(k)).asset_materialization
                        .tags["dagster/data_version"] for k in IMAGING}
    assert metadata(instance, "volumes")["reused"].value == n_ct
    # A stricter threshold flags seeds: the check fails, and its own metadata (the Checks tab) names them.
    threshold = seeds["reference_distance_max_mm"].value / 2
    result = run(instance, ["seeds"], {"imaging": ImagingResource(seed_disagreement_mm=threshold)})
    [check] = result.get_asset_check_evaluations()
    seeds_csv = Layout(small_demo_home).asset_dir("seeds", "demo_v1") / "seeds.csv"
    flagged = pd.read_csv(seeds_csv).query("reference_distance_mm > @threshold")
    assert not check.passed and check.metadata["disagreements"].value == len(flagged) > 0
    assert all(uid in check.metadata["disagreeing seeds"].value for uid in flagged["SeriesInstanceUID"])


def _break_one_ct(layout: Layout) -> str:
    """Tilt one downloaded CT series. The local mirror hard-links files, so each is first replaced by
    a copy of its own: the shared demo collection must stay intact."""
    series = next(r for r in read_manifest("demo_v1", layout)["series"] if r["Modality"] == "CT")
    files = sorted(layout.resolve(series["folder"]).glob("*.dcm"))
    for f in files:
        shutil.copy(f, f.with_suffix(".tmp"))
        f.with_suffix(".tmp").replace(f)
    _edit(files, tilt)
    return series["SeriesInstanceUID"]


def test_one_bad_series_is_quarantined_and_the_partition_completes(instance, small_demo_home):
    assert run(instance, ["cohort", "dicom"]).success
    victim = _break_one_ct(Layout(small_demo_home))
    # 2 of 16 series (the CT and its mask) fail: above the default 10 %, within 20 %.
    result = run(instance, IMAGING, {"imaging": ImagingResource(max_failed_fraction=0.2)})
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["all_series_converted"].passed and checks["all_series_converted"].severity.value == "WARN"
    assert victim in checks["all_series_converted"].metadata["failures"].value  # the Checks tab names the series
    volumes = metadata(instance, "volumes")
    assert volumes["failed"].value == 2  # the CT and the mask drawn on it
    assert victim in volumes["failures"].value and "gantry_tilt" in volumes["failures"].value
    assert metadata(instance, "seeds")["seeds"].value == 7
    assert load_patches(Layout(small_demo_home).asset_dir("patches", "demo_v1"))[0].shape[0] == 7


def test_volumes_fail_above_the_failure_ratio(instance, small_demo_home):
    assert run(instance, ["cohort", "dicom"]).success
    _break_one_ct(Layout(small_demo_home))
    result = run(instance, IMAGING, {"imaging": ImagingResource(max_failed_fraction=0.0)}, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "2 of 16 series could not be converted" in failure.event_specific_data.error.message
    assert instance.get_latest_materialization_event(AssetKey("patches")) is None
