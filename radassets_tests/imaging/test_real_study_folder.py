"""A folder as a real CT study is: volumes with the series around them, through the command line a user runs.

``datasets add-local`` then ``pipeline run … --select "key:cohort or key:dicom or key:volumes"`` (a real Dagster
run): the partition completes, and the QC table gives every series its status (``ok``, ``excluded``, ``failed``)
and its reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import SimpleITK as sitk

from radassets.demo.cases import clinic_masks, multiframe, non_volume
from radassets.demo.cases import tilted as tilted_cases
from radassets.imaging.masks import centroid_lps
from radassets_tests.test_cli import REPO, run_cli

pytestmark = pytest.mark.integration


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def _study_folder(root: Path) -> tuple[dict[str, tuple[str, str | None]], dict[str, np.ndarray]]:
    """Writes the study; returns SeriesInstanceUID -> the status and code expected for it, and the masks'
    SeriesInstanceUID -> the true centre of the lesion they outline (LPS mm)."""
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
    # Gantry tilt (with a SEG and an RTSTRUCT drawn on the tilted slices) and uneven gaps: resampled, not refused.
    tilted = tilted_cases.write_tilted(root / "tilted", 17.5)
    assert tilted.seg_file and tilted.rtstruct_file
    for path in (tilted.ct_files[0], tilted.seg_file, tilted.rtstruct_file):
        expected[_uid(path)] = ("ok", None)
    for kind in ("1-7", "5-10"):
        expected[_uid(tilted_cases.write_uneven(root / f"uneven-{kind}", kind).ct_files[0])] = ("ok", None)
    # A planning system's structure set: open and point contours among the closed ones (skipped and counted).
    clinic = clinic_masks.rtstruct_open_and_point(root / "planning")
    for folder in clinic.ct.values():
        expected[_uid(sorted(folder.iterdir())[0])] = ("ok", None)
    for path in clinic.masks.values():
        expected[_uid(path)] = ("ok", None)
    centres = {_uid(tilted.seg_file): tilted.lesion_center, _uid(tilted.rtstruct_file): tilted.lesion_center}
    centres |= {_uid(path): clinic.lesions["GTV-1"].center for path in clinic.masks.values()}
    return expected, centres


def test_a_folder_of_a_real_study_completes_its_partition_with_every_series_accounted_for(tmp_path):
    folder = tmp_path / "folder"
    expected, centres = _study_folder(folder)
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
    ok = [r for r in qc if r["status"] == "ok" and r["Modality"] == "CT"]
    # The multi-frame files are read as such; the tilted and uneven series say what was corrected.
    assert sorted(r["sop_class"] for r in ok if r["sop_class"]) == ["Enhanced CT Image Storage",
                                                                    "Legacy Converted Enhanced CT Image Storage"]
    assert sorted(r["regrid"] for r in ok if r["regrid"]) == ["gantry_tilt", "uneven_spacing", "uneven_spacing"]
    assert [round(r["tilt_degrees"], 2) for r in ok if r["tilt_degrees"]] == [17.5]
    assert [r["contours_skipped"] for r in qc if r["contours_skipped"]] == [7]
    segments = pq.read_table(tmp_path / "home" / "volumes" / "scanner_v1" / "segments.parquet").to_pylist()
    # Every mask lands on its CT's (corrected) grid where its lesion is: within half the CT's largest voxel edge.
    gtv = [r for r in segments if r["segment_label"] in ("GTV-1", "lesion")]
    assert {r["mask_SeriesInstanceUID"] for r in gtv} == set(centres)
    for row in gtv:
        mask = sitk.ReadImage(str(tmp_path / "home" / row["mask_path"]))
        distance = np.linalg.norm(centroid_lps(mask) - centres[row["mask_SeriesInstanceUID"]])
        assert distance <= max(mask.GetSpacing()) / 2, (row["segment_label"], distance)
