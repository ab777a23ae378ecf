"""Seed points: from masks against the analytic truth, comparison with a published table (distance,
10 mm flag), published points assigned to their CT, and `radassets imaging seeds` on a user's folder."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from radassets.dataplane import Compute
from radassets.imaging.folder import SEED_CSV_COLUMNS
from radassets.imaging.seeds import (
    NO_CONVERTED_CT,
    ReferenceTable,
    compare_with_reference,
    failure_record,
    outside_volume,
    seeds_from_reference,
    seeds_from_segments,
)
from radassets.reports import ItemFailure
from radassets.imaging.volumes import ConversionSettings, SegmentSelection, convert_dataset
from radassets_tests.imaging.test_volumes import _files, _index_rows
from radassets_tests.test_cli import run_cli


@pytest.fixture(scope="module")
def converted(small_demo, tmp_path_factory):
    """Every current test-scan CT and mask of the small demo, converted with GTV-1 selected."""
    rows = list(_index_rows(small_demo).values())
    settings = ConversionSettings(selection=SegmentSelection(("GTV-1",), "labels"))
    return convert_dataset(rows, _files, tmp_path_factory.mktemp("volumes"), settings)


def _truth(demo: Path) -> pd.DataFrame:
    truth = pd.read_csv(demo / "truth" / "lesions.csv")
    return truth[truth.scan == "test"]


def test_mask_seeds_are_the_true_lesion_centres(converted, small_demo):
    seeds = seeds_from_segments(converted.segments)
    truth = _truth(small_demo)
    assert len(seeds) == converted.ct_converted == 8
    assert {s["mask_Modality"] for s in seeds} == {"SEG", "RTSTRUCT"}
    for seed in seeds:
        row = truth[(truth.SeriesInstanceUID == seed["SeriesInstanceUID"]) & (truth.segment_label == "GTV-1")].iloc[-1]
        error = np.linalg.norm([seed["coordX"] - row.coordX, seed["coordY"] - row.coordY, seed["coordZ"] - row.coordZ])
        assert error < 0.5, (seed["PatientID"], seed["mask_Modality"], error)
        assert seed["volume_ml"] == pytest.approx(row.mask_volume_ml, rel=0.01, abs=0.005)
        assert seed["source"] == "mask" and len(seed["seed_id"]) == 16


def test_seeds_from_a_pool_of_processes_are_the_ones_made_here(converted):
    """The masks' centroids and the volumes' bounds are data-plane tasks: two processes give the same seeds, in
    the same order, and the same points outside their volume."""
    here = seeds_from_segments(converted.segments)
    pooled = seeds_from_segments(converted.segments, Compute(workers=2))
    assert pooled == here and len(here) == 8
    moved = [dict(s, coordZ=s["coordZ"] + 1000.0) if i % 3 == 1 else s for i, s in enumerate(here)]
    moved += [dict(moved[1], seed_id="again"), dict(here[1], seed_id="inside")]  # a volume's seeds, not in a row
    expected = [s["seed_id"] for i, s in enumerate(here) if i % 3 == 1] + ["again"]
    assert [s["seed_id"] for s in outside_volume(moved)] == expected
    assert [s["seed_id"] for s in outside_volume(moved, Compute(workers=2))] == expected


def test_distance_to_published_points_and_the_10mm_flag(converted, small_demo, tmp_path):
    truth = _truth(small_demo)
    # A published table: the true centres, one of them moved 12 mm and another 6 mm.
    table = truth[truth.segment_label == "GTV-1"][["PatientID", "coordX", "coordY", "coordZ"]].drop_duplicates("PatientID")
    table = table.reset_index(drop=True)
    table.loc[0, "coordX"] += 12.0
    table.loc[1, "coordY"] -= 6.0
    table = table[table.PatientID != "DEMO-008"]  # a patient without a published point
    path = tmp_path / "published.csv"
    table.to_csv(path, index=False)
    seeds = compare_with_reference(seeds_from_segments(converted.segments),
                                   ReferenceTable.read(path, "PatientID", "PatientID"))
    by_patient = {s["PatientID"]: s for s in seeds}
    moved, nudged = table.PatientID.iloc[0], table.PatientID.iloc[1]
    assert by_patient[moved]["reference_distance_mm"] == pytest.approx(12.0, abs=0.5)
    assert by_patient[moved]["reference_disagrees"] is True
    assert by_patient[nudged]["reference_distance_mm"] == pytest.approx(6.0, abs=0.5)
    assert by_patient[nudged]["reference_disagrees"] is False
    assert by_patient["DEMO-008"]["reference_distance_mm"] is None and by_patient["DEMO-008"]["reference_disagrees"] is None
    assert sum(bool(s["reference_disagrees"]) for s in seeds) == 1


def test_published_points_are_assigned_to_their_ct(converted, small_demo, tmp_path):
    truth = _truth(small_demo)
    gtv = truth[truth.segment_label == "GTV-1"].drop_duplicates("SeriesInstanceUID")
    path = tmp_path / "points.csv"
    rows = gtv[["SeriesInstanceUID", "coordX", "coordY", "coordZ"]].reset_index(drop=True)
    rows.loc[len(rows)] = ["1.2.3.unknown", 0.0, 0.0, 0.0]
    rows.to_csv(path, index=False)
    cts = [r for r in converted.qc if r["Modality"] == "CT"]
    seeds, failures = seeds_from_reference(ReferenceTable.read(path, "SeriesInstanceUID", "SeriesInstanceUID"), cts)
    assert len(seeds) == len(gtv) and {s["source"] for s in seeds} == {"reference"}
    assert failures == [ItemFailure("seeds", str(len(gtv)), "its CT series is not in this dataset version",
                                    series="1.2.3.unknown", code=NO_CONVERTED_CT)]
    # The manifest records it as it always has: the table row, the table's id, the reason.
    assert [failure_record(f) for f in failures] == [{"reference_row": len(gtv), "id": "1.2.3.unknown",
                                                       "reason": "its CT series is not in this dataset version"}]
    # By PatientID, a patient with two CT series (test and re-scan) is ambiguous: recorded, not guessed.
    two = [dict(c, SeriesInstanceUID=c["SeriesInstanceUID"] + ".9", crdc_series_uuid="x") for c in cts[:1]]
    by_patient = ReferenceTable.read(_write(tmp_path / "p.csv", [{"PatientID": cts[0]["PatientID"], "coordX": 1,
                                                                   "coordY": 2, "coordZ": 3}]), "PatientID", "PatientID")
    seeds, failures = seeds_from_reference(by_patient, cts + two)
    assert not seeds and "2 converted CT series" in failures[0].reason
    assert failure_record(failures[0])["id"] == cts[0]["PatientID"] and failures[0].patient == cts[0]["PatientID"]


def _write(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_reference_table_errors_name_the_problem(tmp_path):
    path = _write(tmp_path / "bad.csv", [{"PatientID": "A", "coordX": 1, "coordY": "n/a", "coordZ": 3}])
    with pytest.raises(ValueError, match=r"without numeric coordinates.*'A'"):
        ReferenceTable.read(path, "PatientID", "PatientID")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['Case ID'\]"):
        ReferenceTable.read(path, "Case ID", "PatientID")


# -- radassets imaging seeds --------------------------------------------------------------------

@pytest.fixture
def user_folder(small_demo, tmp_path) -> Path:
    """Three patients' CT and masks under arbitrary names and nesting, plus files that are not DICOM."""
    index = pq.read_table(small_demo / "index" / "idc_index.parquet").to_pylist()
    folder = tmp_path / "my study"
    for n, patient in enumerate(("DEMO-002", "DEMO-005", "DEMO-006")):
        for r in index:
            if r["PatientID"] != patient or "retest" in r["SeriesDescription"]:
                continue
            source = small_demo / "bucket" / "radassets-demo-data" / r["crdc_series_uuid"]
            for i, f in enumerate(sorted(source.glob("*.dcm"))):
                dest = folder / f"site{n}" / ("scans" if r["Modality"] == "CT" else "contours") / f"IMG{i:04d}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, dest)
    (folder / "notes.txt").write_text("not DICOM")
    (folder / "site0" / "DICOMDIR.bak").write_bytes(b"\x00" * 200)
    return folder


def test_cli_writes_one_row_per_lesion(user_folder, small_demo, tmp_path):
    out = tmp_path / "seeds.csv"
    result = run_cli("imaging", "seeds", str(user_folder), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "2 other file(s) skipped" in result.stderr
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == SEED_CSV_COLUMNS
    truth = _truth(small_demo)
    assert len(rows) == len(truth[truth.PatientID.isin(["DEMO-002", "DEMO-005", "DEMO-006"])]
                                 .drop_duplicates(["SeriesInstanceUID", "segment_label"]))
    for row in rows:
        t = truth[(truth.SeriesInstanceUID == row["SeriesInstanceUID"]) & (truth.segment_label == row["segment_label"])]
        assert len(t), row
        error = np.linalg.norm([float(row[c]) - t.iloc[-1][c] for c in ("coordX", "coordY", "coordZ")])
        assert error < 0.5, (row, error)
    only = run_cli("imaging", "seeds", str(user_folder), "--out", "-", "--label", "GTV-1")
    assert only.returncode == 0 and {r["segment_label"] for r in csv.DictReader(only.stdout.splitlines())} == {"GTV-1"}


def test_cli_errors_are_clear(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    result = run_cli("imaging", "seeds", str(empty), "--out", str(tmp_path / "s.csv"))
    assert result.returncode == 2 and "no CT, SEG or RTSTRUCT files under" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "s.csv").exists()
