"""A folder as a real CT study is: volumes with the series around them, through the command line a user runs.

``datasets add-local`` then ``pipeline run … --select "key:cohort or key:dicom or key:volumes"`` (a real Dagster
run): the partition completes, and the QC table gives every series its status (``ok``, ``excluded``, ``failed``)
and its reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest

from radassets.demo.cases import multiframe, non_volume
from radassets_tests.test_cli import REPO, run_cli

pytestmark = pytest.mark.integration


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def _study_folder(root: Path) -> dict[str, tuple[str, str | None]]:
    """Writes the study; returns SeriesInstanceUID -> the status and code expected for it."""
    expected = {}
    for name, status, code in (("localizer", "excluded", "localizer"),
                               ("dose_screen", "excluded", "excluded_by_index"),  # Secondary Capture: the index tells
                               ("protocol_page", "excluded", "excluded_by_index"),  # one instance: the index tells
                               ("two_phases", "failed", "several_stacks"),
                               ("sequential", "ok", None)):
        files = non_volume.write_case(name, root / "study" / name)
        expected[_uid(files[0])] = (status, code)
    case = multiframe.write_case(root / "multiframe", "oblique")
    for path in (case.single_frame[0], case.enhanced, case.legacy):
        expected[_uid(path)] = ("ok", None)
    return expected


def test_a_folder_of_a_real_study_completes_its_partition_with_every_series_accounted_for(tmp_path):
    folder = tmp_path / "folder"
    expected = _study_folder(folder)
    data = tmp_path / "data"
    shutil.copytree(REPO / "data", data)
    env = {"RADASSETS_DATA_DIR": str(data), "RADASSETS_HOME": str(tmp_path / "home"),
           "DAGSTER_HOME": str(tmp_path / "dagster")}
    (tmp_path / "dagster").mkdir()
    added = run_cli("datasets", "add-local", "scanner_v1", str(folder), env=env)
    assert added.returncode == 0, added.stderr
    run = run_cli("pipeline", "run", "scanner_v1", "--select", "key:cohort or key:dicom or key:volumes", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    qc = pq.read_table(tmp_path / "home" / "volumes" / "scanner_v1" / "qc.parquet").to_pylist()
    assert {r["SeriesInstanceUID"]: (r["status"], r["code"]) for r in qc} == expected
    assert all(r["message"] for r in qc if r["status"] != "ok")  # every exclusion and failure says why
    # The multi-frame files give the single-frame series' volume, byte for byte in HU.
    volumes = {r["sop_class"] or "CT Image Storage": r for r in qc if r["status"] == "ok" and r["slices"] == 24}
    assert set(volumes) == {"CT Image Storage", "Enhanced CT Image Storage", "Legacy Converted Enhanced CT Image Storage"}
