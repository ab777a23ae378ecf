"""Damaged files are their own item's recorded failure: a RTSTRUCT whose ContourData was cut to a length
that is not a multiple of 3, and a CT slice truncated to 600 bytes, in a partition of 16 series
(the small demo) and in a user's folder for `radassets imaging seeds`. The rest completes."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pydicom
import pytest

from radassets.imaging.ct import SeriesError, read_ct_series
from radassets.imaging.volumes import ConversionSettings, SegmentSelection, convert_dataset
from radassets_tests.imaging.test_volumes import _copy, _files, _index_rows
from radassets_tests.test_cli import run_cli

SELECT_GTV1 = ConversionSettings(selection=SegmentSelection(("GTV-1",), "labels"))


def cut_contour_data(path: Path) -> None:
    """Drop the last coordinate of the first contour: 3n - 1 values, as a truncated transfer leaves them."""
    ds = pydicom.dcmread(path)
    contour = ds.ROIContourSequence[0].ContourSequence[0]
    contour.ContourData = list(contour.ContourData)[:-1]
    ds.save_as(path, enforce_file_format=True)


def truncate_middle_slice(files: list[Path]) -> Path:
    """Cut the slice in the middle of the series (by InstanceNumber) to its first 600 bytes."""
    by_number = sorted(files, key=lambda f: int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber))
    victim = by_number[len(by_number) // 2]
    victim.write_bytes(victim.read_bytes()[:600])
    return victim


@pytest.fixture
def damaged_partition(small_demo, tmp_path) -> tuple[list[dict], Path, Path]:
    """Every current series of the small demo (16), DEMO-001's RTSTRUCT and DEMO-002's CT replaced by
    damaged copies. Returns the rows, the damaged RTSTRUCT and the truncated slice."""
    index = _index_rows(small_demo)
    rtstruct = _copy(index[("DEMO-001", "RTSTRUCT")], tmp_path / "rtstruct")
    [rtstruct_file] = _files(rtstruct)
    cut_contour_data(rtstruct_file)
    ct = _copy(index[("DEMO-002", "CT")], tmp_path / "ct")
    truncated = truncate_middle_slice(_files(ct))
    index[("DEMO-001", "RTSTRUCT")], index[("DEMO-002", "CT")] = rtstruct, ct
    return list(index.values()), rtstruct_file, truncated


def test_damaged_files_fail_only_their_items(damaged_partition, tmp_path):
    rows, rtstruct_file, truncated = damaged_partition
    assert len(rows) == 16
    report = convert_dataset(rows, _files, tmp_path / "volumes", SELECT_GTV1)
    modality = {r["SeriesInstanceUID"]: r["Modality"] for r in rows}
    failed = {(f.patient, modality[f.item]): f for f in report.failures}
    assert set(failed) == {("DEMO-001", "RTSTRUCT"), ("DEMO-002", "CT"), ("DEMO-002", "SEG")}, failed
    rt = failed[("DEMO-001", "RTSTRUCT")]
    assert rt.code == "mask_unreadable" and rt.stage == "volumes"
    assert str(rtstruct_file) in rt.reason and "not a multiple of 3" in rt.reason
    ct = failed[("DEMO-002", "CT")]
    assert ct.code == "unreadable_file" and str(truncated) in ct.reason and "600 bytes" in ct.reason
    assert failed[("DEMO-002", "SEG")].code == "no_reference"  # drawn on the CT that failed
    assert report.ct_converted == 7 and report.masks_converted == 6
    assert {s["PatientID"] for s in report.segments} == {f"DEMO-00{i}" for i in (3, 4, 5, 6, 7, 8)}


def test_cli_seeds_writes_the_healthy_lesions_and_names_the_damaged_files(damaged_partition, tmp_path):
    rows, rtstruct_file, truncated = damaged_partition
    folder = tmp_path / "user folder"
    for row in rows:
        shutil.copytree(row["folder"], folder / f"{row['PatientID']}-{row['Modality']}")
    out = tmp_path / "seeds.csv"
    result = run_cli("imaging", "seeds", str(folder), "--out", str(out), "--label", "GTV-1")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    written = list(csv.DictReader(out.open()))
    healthy = {r["SeriesInstanceUID"] for r in rows
               if r["Modality"] == "CT" and r["PatientID"] not in ("DEMO-001", "DEMO-002")}
    assert {r["SeriesInstanceUID"] for r in written} == healthy and len(written) == 6
    failures = [line for line in result.stderr.splitlines() if "failed:" in line]
    copied_rtstruct = folder / "DEMO-001-RTSTRUCT" / rtstruct_file.name
    copied_slice = folder / "DEMO-002-CT" / truncated.name
    assert any(str(copied_rtstruct) in f and "not a multiple of 3" in f for f in failures), failures
    assert any(str(copied_slice) in f and "600 bytes" in f for f in failures), failures
    # The CT lost its middle slice, so the SEG drawn on it cannot be placed: listed too.
    assert any("DEMO-002-SEG" in f and "cannot be converted" in f for f in failures), failures
    assert len(failures) == 3


def test_a_slice_cut_inside_its_pixel_data_is_named(small_demo, tmp_path):
    ct = _copy(_index_rows(small_demo)[("DEMO-006", "CT")], tmp_path / "ct")
    files = _files(ct)
    victim = files[len(files) // 2]
    victim.write_bytes(victim.read_bytes()[:-1000])
    with pytest.raises(SeriesError) as raised:
        read_ct_series(files)
    assert raised.value.code == "undecodable" and str(victim) in str(raised.value)
    assert "0x" not in str(raised.value)  # no object address: the same message on every run
