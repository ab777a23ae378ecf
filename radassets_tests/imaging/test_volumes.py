"""A whole partition: every malformed input of the issue recorded with its cause while the rest converts;
masks on their CT's grid; failures of masks; a rerun reuses finished volumes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
import SimpleITK as sitk

from radassets.dataplane import Compute
from radassets.imaging.volumes import ConversionSettings, SegmentSelection, convert_dataset
from radassets_tests.imaging.test_ct import MALFORMED, _edit

SELECT_GTV1 = ConversionSettings(selection=SegmentSelection(("GTV-1",), "labels"))


def _index_rows(demo: Path) -> dict[tuple[str, str], dict]:
    """(PatientID, Modality) of each current test scan → a dicom-manifest-like row."""
    rows = pq.read_table(demo / "index" / "idc_index.parquet").to_pylist()
    out = {}
    for r in rows:
        if "retest" in r["SeriesDescription"]:
            continue
        out[(r["PatientID"], r["Modality"])] = {
            "PatientID": r["PatientID"], "Modality": r["Modality"], "SeriesInstanceUID": r["SeriesInstanceUID"],
            "crdc_series_uuid": r["crdc_series_uuid"], "status": "verified",
            "folder": str(demo / "bucket" / "radassets-demo-data" / r["crdc_series_uuid"]),
        }
    return out


def _files(row: dict) -> list[Path]:
    return sorted(Path(row["folder"]).glob("*.dcm"))


def _copy(row: dict, folder: Path, **changes) -> dict:
    shutil.copytree(row["folder"], folder)
    return dict(row, folder=str(folder), **changes)


@pytest.fixture
def partition(small_demo, tmp_path) -> list[dict]:
    """Good CT + SEG (DEMO-006) and CT + RTSTRUCT (DEMO-005); one copy of DEMO-002's CT per malformation,
    and DEMO-002's SEG (its CT is among the broken ones); a RTSTRUCT on a foreign frame of reference."""
    index = _index_rows(small_demo)
    rows = [index[("DEMO-006", "CT")], index[("DEMO-006", "SEG")], index[("DEMO-005", "CT")],
            index[("DEMO-005", "RTSTRUCT")]]
    for code, edit in MALFORMED.items():
        bad = _copy(index[("DEMO-002", "CT")], tmp_path / code, crdc_series_uuid=f"broken-{code}")
        _edit(_files(bad), edit)
        rows.append(bad)
    rows.append(index[("DEMO-002", "SEG")])
    foreign = _copy(index[("DEMO-001", "RTSTRUCT")], tmp_path / "foreign-rtstruct", crdc_series_uuid="foreign-rtstruct")
    [path] = _files(foreign)
    ds = pydicom.dcmread(path)
    for roi in ds.StructureSetROISequence:
        roi.ReferencedFrameOfReferenceUID = "1.2.3.4.5"
    ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3.4.5"
    ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
        .SeriesInstanceUID = index[("DEMO-005", "CT")]["SeriesInstanceUID"]  # claims DEMO-005's CT
    ds.save_as(path, enforce_file_format=True)
    rows.append(foreign)
    rows.append(dict(index[("DEMO-003", "CT")], status="failed", reason="3 instances, the cohort expects 52"))
    return rows


def test_every_malformed_series_is_recorded_and_the_rest_converts(partition, tmp_path):
    out = tmp_path / "volumes"
    report = convert_dataset(partition, _files, out, SELECT_GTV1)
    qc = {r["crdc_series_uuid"]: r for r in report.qc}
    for code in MALFORMED:
        row = qc[f"broken-{code}"]
        assert (row["status"], row["code"]) == ("failed", code), row
        assert row["SeriesInstanceUID"] in row["message"] and row["PatientID"] == "DEMO-002"
    good = [r for r in partition if r["PatientID"] in ("DEMO-005", "DEMO-006")]
    for row in good:
        assert qc[row["crdc_series_uuid"]]["status"] == "ok", qc[row["crdc_series_uuid"]]
    # Masks: the SEG of a broken CT, a RTSTRUCT on a foreign frame, a series whose DICOM never arrived.
    seg_002 = next(r for r in partition if r["PatientID"] == "DEMO-002" and r["Modality"] == "SEG")
    assert qc[seg_002["crdc_series_uuid"]]["code"] == "no_reference"
    assert "could not be converted" in qc[seg_002["crdc_series_uuid"]]["message"]
    assert qc["foreign-rtstruct"]["code"] == "frame_of_reference"
    missing = next(r for r in partition if r["status"] == "failed")
    assert qc[missing["crdc_series_uuid"]]["code"] == "not_downloaded"
    assert report.failed == len(MALFORMED) + 3 and report.ct_converted == 2 and report.masks_converted == 2
    # The good series' volumes and GTV-1 masks are on disk; nothing half-written anywhere.
    assert {s["PatientID"] for s in report.segments} == {"DEMO-005", "DEMO-006"}
    assert {s["segment_label"] for s in report.segments} == {"GTV-1"}
    for s in report.segments:
        ct, mask = sitk.ReadImage(s["ct_path"]), sitk.ReadImage(s["mask_path"])
        assert ct.GetSize() == mask.GetSize() and ct.GetOrigin() == mask.GetOrigin()
        assert sitk.GetArrayViewFromImage(mask).sum() == s["voxels"] > 0
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
    assert len(pq.read_table(out / "qc.parquet")) == len(partition)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["failures_by_code"]["gantry_tilt"] == 1


def test_rerun_reuses_finished_volumes(partition, tmp_path):
    out = tmp_path / "volumes"
    first = convert_dataset(partition, _files, out, SELECT_GTV1)
    ct = next(r for r in first.qc if r["Modality"] == "CT" and r["status"] == "ok")
    mtime = Path(ct["path"]).stat().st_mtime_ns
    second = convert_dataset(partition, _files, out, SELECT_GTV1)
    assert second.reused == 2
    assert Path(ct["path"]).stat().st_mtime_ns == mtime
    assert second.content_hash == first.content_hash
    # A tampered volume is converted again, not trusted.
    Path(ct["path"]).write_bytes(b"not a volume")
    third = convert_dataset(partition, _files, out, SELECT_GTV1)
    assert third.reused == 1
    assert sitk.ReadImage(ct["path"]).GetSize()[2] == ct["slices"]
    # Other settings: nothing is reused.
    other = ConversionSettings(selection=SegmentSelection(None, "all"))
    assert convert_dataset(partition, _files, out, other).reused == 0


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_pool_of_processes_writes_the_bytes_one_process_writes(partition, tmp_path):
    """The series are data-plane tasks: two local processes give every file (volumes, masks, QC, manifest) the
    bytes of the in-process run at the same path, failures and the manifest's order included."""
    out = tmp_path / "volumes"
    alone = convert_dataset(partition, _files, out, SELECT_GTV1, compute=Compute(workers=1))
    expected = _tree(out)
    shutil.rmtree(out)
    ticks = []
    pooled = convert_dataset(partition, _files, out, SELECT_GTV1, compute=Compute(workers=2),
                             progress=lambda done, total, what: ticks.append((done, total)))
    assert _tree(out) == expected
    assert [(r["SeriesInstanceUID"], r["status"], r.get("code")) for r in pooled.qc] == \
        [(r["SeriesInstanceUID"], r["status"], r.get("code")) for r in alone.qc]
    assert pooled.failed == alone.failed > 0 and pooled.segments == alone.segments
    assert alone.places.keys() == {"local"}
    # Each phase (CTs, then masks) ran in a pool, never here (which process took which series is the pool's call).
    assert pooled.places and all(p.startswith("pid ") and p != f"pid {os.getpid()}" for p in pooled.places)
    assert sorted(ticks) == [(n, len(ticks)) for n in range(1, len(ticks) + 1)]
