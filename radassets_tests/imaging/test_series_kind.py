"""Series that are not volumes are excluded (not failed); series with several stacks are refused, never merged."""

from __future__ import annotations

from pathlib import Path

import idc_index_data
import pyarrow.parquet as pq
import pytest

from radassets.demo.cases import non_volume
from radassets.idc.cohort import non_volume_reason
from radassets.imaging.ct import SeriesError, SeriesExcluded, read_ct_series
from radassets.imaging.volumes import convert_dataset

EXCLUDED = {"localizer": "localizer", "dose_screen": "not_ct_image", "protocol_page": "screen_capture",
            "single_axial": "single_image"}


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("cases")
    return {name: non_volume.write_case(name, root / name) for name in non_volume.CASES}


@pytest.mark.parametrize("name", sorted(EXCLUDED))
def test_a_series_that_is_not_a_volume_is_excluded_with_its_reason(cases, name):
    with pytest.raises(SeriesExcluded) as raised:
        read_ct_series(cases[name])
    assert raised.value.code == EXCLUDED[name]
    assert "not a volume" in str(raised.value)


def test_a_localizer_is_named_by_its_image_type(cases):
    with pytest.raises(SeriesExcluded, match=r"ImageType ORIGINAL\\PRIMARY\\LOCALIZER"):
        read_ct_series(cases["localizer"])


def test_a_dose_screen_names_its_sop_class(cases):
    with pytest.raises(SeriesExcluded, match="Secondary Capture Image Storage, not a CT image"):
        read_ct_series(cases["dose_screen"])


def test_two_acquisitions_over_the_same_positions_are_refused_as_several_stacks(cases):
    with pytest.raises(SeriesError) as raised:
        read_ct_series(cases["two_phases"])
    assert raised.value.code == "several_stacks"
    assert "told apart by AcquisitionNumber (AcquisitionNumber 1: 10 slices, AcquisitionNumber 2: 10 slices)" \
        in str(raised.value)


def test_two_orientations_in_one_series_are_refused_as_several_stacks(cases):
    with pytest.raises(SeriesError) as raised:
        read_ct_series(cases["two_orientations"])
    assert raised.value.code == "several_stacks"
    assert "2 orientations (8 slices at" in str(raised.value)


def test_a_sequential_scan_with_an_acquisition_number_per_rotation_is_one_volume(cases):
    """Step-and-shoot scans number each rotation: AcquisitionNumber alone must not split a series."""
    volume = read_ct_series(cases["sequential"])
    assert volume.image.GetSize() == (32, 32, 16)
    assert volume.qc["spacing_z"] == pytest.approx(2.5)


def test_a_localizer_slice_inside_an_axial_series_is_not_dropped_silently(cases, tmp_path):
    """Exclusion is for whole series: one odd file in a volume makes the series fail with a code, never vanish."""
    files = non_volume.write_case("sequential", tmp_path / "mixed")
    files += non_volume.write_localizer(tmp_path / "mixed-scout", images=1)
    with pytest.raises(SeriesError) as raised:
        read_ct_series(files)
    assert raised.value.code == "several_stacks"
    assert "holds 1 image(s) that are a localizer (ImageType ORIGINAL\\PRIMARY\\LOCALIZER) among 16 volume slice(s)" \
        in str(raised.value)


def _rows(cases) -> tuple[list[dict], dict[str, list[Path]]]:
    rows, files = [], {}
    for name in non_volume.CASES:
        uid = f"uuid-{name}"
        rows.append({"PatientID": "SCANNER-001", "Modality": "CT", "SeriesInstanceUID": name,
                     "crdc_series_uuid": uid, "status": "verified"})
        files[uid] = cases[name]
    return rows, files


def test_a_partition_of_real_study_contents_completes_and_excluded_series_do_not_count_as_failures(cases, tmp_path):
    rows, files = _rows(cases)
    index_excluded = [{"PatientID": "SCANNER-001", "Modality": "CT", "SeriesInstanceUID": "scout-from-index",
                       "crdc_series_uuid": "uuid-scout", "reason": "one single-frame CT image (IDC index)"}]
    report = convert_dataset(rows, lambda row: files[row["crdc_series_uuid"]], tmp_path / "volumes",
                             excluded=index_excluded)
    status = {r["SeriesInstanceUID"]: (r["status"], r["code"]) for r in report.qc}
    assert status == {
        "localizer": ("excluded", "localizer"), "dose_screen": ("excluded", "not_ct_image"),
        "protocol_page": ("excluded", "screen_capture"), "single_axial": ("excluded", "single_image"),
        "two_phases": ("failed", "several_stacks"), "two_orientations": ("failed", "several_stacks"),
        "sequential": ("ok", None), "scout-from-index": ("excluded", "excluded_by_index"),
    }
    # 2 failures among the 3 series meant to be volumes; the 5 excluded ones are not in the fraction.
    assert (report.series, report.excluded, report.failed) == (8, 5, 2)
    assert report.failed_fraction == pytest.approx(2 / 3)
    assert report.excluded_by_code == {"localizer": 1, "not_ct_image": 1, "screen_capture": 1, "single_image": 1,
                                       "excluded_by_index": 1}
    assert [f.series for f in report.failures] == ["two_phases", "two_orientations"]
    summary = report.summary()
    assert summary["excluded"] == 5 and summary["failed"] == 2


def test_the_index_tells_screens_and_single_images_apart_from_volumes():
    ct, sc, enhanced = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.2.1"
    assert non_volume_reason({"Modality": "CT", "SOPClassUID": ct, "instanceCount": 120}) is None
    assert "single-frame" in non_volume_reason({"Modality": "CT", "SOPClassUID": ct, "instanceCount": 1})
    assert non_volume_reason({"Modality": "CT", "SOPClassUID": enhanced, "instanceCount": 1}) is None  # multi-frame
    assert "Secondary Capture" in non_volume_reason({"Modality": "CT", "SOPClassUID": sc, "instanceCount": 3,
                                                     "sop_class_name": "Secondary Capture Image Storage"})
    assert non_volume_reason({"Modality": "SEG", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.66.4",
                              "instanceCount": 1}) is None
    assert non_volume_reason({"Modality": "CT", "SOPClassUID": None, "instanceCount": 1}) is None  # unknown: kept


def test_the_real_idc_index_holds_such_series_and_the_rule_finds_them():
    """IDC's own index (idc-index-data, shipped): CT series of one instance and Secondary Captures exist."""
    import duckdb

    rows = duckdb.sql(f"""SELECT Modality, SOPClassUID, sop_class_name, instanceCount
                          FROM '{idc_index_data.IDC_INDEX_PARQUET_FILEPATH}'
                          WHERE collection_id = 'nsclc_radiogenomics' AND Modality = 'CT'""").fetchall()
    reasons = [non_volume_reason(dict(zip(("Modality", "SOPClassUID", "sop_class_name", "instanceCount"), r)))
               for r in rows]
    single = sum(r[3] == 1 for r in rows)
    assert single > 0
    assert sum(reason is not None for reason in reasons) == single


def test_an_enhanced_ct_localizer_is_excluded_too(tmp_path):
    """Enhanced CT's ImageType has four values (ORIGINAL\\PRIMARY\\LOCALIZER\\NONE): one file, still no volume."""
    import pydicom

    from radassets.demo.cases import multiframe

    case = multiframe.write_case(tmp_path / "case", "axial")
    ds = pydicom.dcmread(case.enhanced)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER", "NONE"]
    ds.save_as(tmp_path / "scout.dcm", enforce_file_format=True)
    with pytest.raises(SeriesExcluded) as raised:
        read_ct_series([tmp_path / "scout.dcm"])
    assert raised.value.code == "localizer"


def test_a_derived_secondary_multiframe_volume_is_converted_not_excluded(tmp_path):
    """A Legacy Converted Enhanced CT of reformatted slices (DERIVED\\SECONDARY\\AXIAL) places its frames in its
    functional groups: it is a volume, not a screen without a position."""
    import pydicom

    from radassets.demo.cases import multiframe

    case = multiframe.write_case(tmp_path / "case", "axial")
    ds = pydicom.dcmread(case.legacy)
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.save_as(tmp_path / "reformat.dcm", enforce_file_format=True)
    assert read_ct_series([tmp_path / "reformat.dcm"]).image.GetSize() == read_ct_series(case.single_frame).image.GetSize()


def test_a_low_dose_series_is_a_volume_however_its_image_type_reads(tmp_path):
    """Screens are told by whole ImageType values: DERIVED\\SECONDARY\\LOW DOSE slices with positions are a CT."""
    import pydicom

    files = non_volume.write_case("sequential", tmp_path / "scan")
    for path in files:
        ds = pydicom.dcmread(path)
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL", "LOW DOSE"]
        ds.save_as(path, enforce_file_format=True)
    assert read_ct_series(files).image.GetSize() == (32, 32, 16)


def test_two_phases_in_one_enhanced_ct_file_are_several_stacks(tmp_path):
    """The frames of one file may hold two temporal positions over the same planes: refused as several stacks."""
    import copy

    import pydicom

    from radassets.demo.cases import multiframe

    case = multiframe.write_case(tmp_path / "case", "axial")
    ds = pydicom.dcmread(case.enhanced)
    frames = len(ds.PerFrameFunctionalGroupsSequence)
    second = [copy.deepcopy(item) for item in ds.PerFrameFunctionalGroupsSequence]
    for phase, items in ((1, ds.PerFrameFunctionalGroupsSequence), (2, second)):
        for item in items:
            item.FrameContentSequence[0].TemporalPositionIndex = phase
    ds.PerFrameFunctionalGroupsSequence = list(ds.PerFrameFunctionalGroupsSequence) + second
    ds.NumberOfFrames = 2 * frames
    ds.PixelData = ds.PixelData * 2
    ds.save_as(tmp_path / "phases.dcm", enforce_file_format=True)
    with pytest.raises(SeriesError) as raised:
        read_ct_series([tmp_path / "phases.dcm"])
    assert raised.value.code == "several_stacks"
    assert f"told apart by TemporalPositionIndex (TemporalPositionIndex 1: {frames} slices" in str(raised.value)


def test_a_series_of_several_multiframe_files_is_refused_as_several_stacks(tmp_path):
    from radassets.demo.cases import multiframe

    case = multiframe.write_case(tmp_path / "case", "axial")
    with pytest.raises(SeriesError) as raised:
        read_ct_series([case.enhanced, case.legacy])
    assert raised.value.code == "several_stacks" and "2 multi-frame CT file(s)" in str(raised.value)


def test_a_local_series_mixing_sop_classes_is_left_to_the_volumes_step(tmp_path):
    """The cohort excludes by the index's SOP class only where every file of the series has it."""
    import pydicom

    from radassets.idc.local import index_folder

    files = non_volume.write_case("sequential", tmp_path / "folder" / "scan")
    ds = pydicom.dcmread(files[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # one Secondary Capture
    ds.save_as(files[0], enforce_file_format=True)
    index_folder(tmp_path / "folder", "mixed", tmp_path / "out")
    rows = pq.read_table(tmp_path / "out" / "index" / "idc_index.parquet").to_pylist()
    assert [(r["SOPClassUID"], non_volume_reason(r)) for r in rows] == [(None, None)]
