"""CT series → volume: exact geometry on varied demo series, and every malformed input recorded."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless

from radassets.demo import DemoSpec
from radassets.demo.generator import BUCKET, plan_patients
from radassets.imaging.ct import SeriesError, read_ct_series
from radassets_tests.conftest import SMALL_DEMO_SPEC


def ct_series(demo: Path) -> dict[str, tuple[str, list[Path]]]:
    """PatientID of each current CT test scan → (SeriesInstanceUID, files)."""
    rows = pq.read_table(demo / "index" / "idc_index.parquet").to_pylist()
    out = {}
    for r in rows:
        if r["Modality"] == "CT" and "retest" not in r["SeriesDescription"]:
            out[r["PatientID"]] = (r["SeriesInstanceUID"],
                                   sorted((demo / "bucket" / BUCKET / r["crdc_series_uuid"]).glob("*.dcm")))
    return out


def test_geometry_and_voxels_match_the_generator_exactly(small_demo):
    """Flipped, oblique, non-square, reversed InstanceNumber, another intercept: all exact."""
    plans = {p.patient_id: p for p in plan_patients(DemoSpec(**SMALL_DEMO_SPEC))}
    kinds = set()
    for patient, (_, files) in ct_series(small_demo).items():
        geom = plans[patient].geometry
        volume = read_ct_series(files)
        image = volume.image
        assert image.GetSize() == (geom.cols, geom.rows, geom.n_slices)
        points = geom.points()
        for k, r, c in [(0, 0, 0), (geom.n_slices - 1, geom.rows - 1, geom.cols - 1), (3, 17, 101)]:
            assert np.allclose(image.TransformIndexToPhysicalPoint((c, r, k)), points[k, r, c], atol=1e-3)
        # Voxels: slice k of the image is the file whose position is slice k of the plan.
        by_position = {}
        for f in files:
            ds = pydicom.dcmread(f)
            by_position[round(float(np.dot(geom.normal, np.array(ds.ImagePositionPatient, float))), 3)] = ds
        array = sitk.GetArrayFromImage(image)
        for k in (0, geom.n_slices // 2, geom.n_slices - 1):
            ds = by_position[round(float(np.dot(geom.normal, geom.slice_position(k))), 3)]
            hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            assert np.array_equal(array[k], hu.astype(np.int16))
        kinds.add("flipped" if geom.row_dir[0] < 0 else "oblique" if abs(geom.row_dir[1]) > 0 else "axial")
        kinds |= {"non-square"} if not geom.square_pixels else set()
        kinds |= {"descending"} if geom.descending_instances else set()
        kinds |= {"intercept-1000"} if plans[patient].intercept == -1000 else set()
    assert kinds >= {"flipped", "oblique", "axial", "non-square", "descending", "intercept-1000"}, kinds


# -- malformed inputs, each generated from a good series -----------------------------------------

def _edit(files: list[Path], edit) -> None:
    datasets = [pydicom.dcmread(f) for f in files]
    order = np.argsort([float(ds.SliceLocation) for ds in datasets])
    edit([datasets[i] for i in order], [files[i] for i in order])


def _save(ds: pydicom.Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=True)


def non_uniform(ds, paths):
    normal = np.cross(np.array(ds[0].ImageOrientationPatient[:3], float), np.array(ds[0].ImageOrientationPatient[3:], float))
    spacing = float(ds[0].SpacingBetweenSlices)
    ds[5].ImagePositionPatient = list(np.array(ds[5].ImagePositionPatient, float) + 0.3 * spacing * normal)
    _save(ds[5], paths[5])


def missing(ds, paths):
    paths[7].unlink()


def duplicate(ds, paths):
    ds[5].ImagePositionPatient = ds[6].ImagePositionPatient
    _save(ds[5], paths[5])


def tilt(ds, paths):
    """A gantry tilt of 35 degrees: beyond the 30 that are resampled (a smaller one is converted, see
    test_scanner_geometry)."""
    y = np.array(ds[0].ImageOrientationPatient[3:], float)
    spacing = float(ds[0].SpacingBetweenSlices)
    for k, (d, p) in enumerate(zip(ds, paths)):
        d.ImagePositionPatient = list(np.array(d.ImagePositionPatient, float) + k * spacing * np.tan(np.radians(35)) * y)
        _save(d, p)


def mixed(ds, paths):
    a = np.radians(20)
    ds[3].ImageOrientationPatient = [np.cos(a), np.sin(a), 0, -np.sin(a), np.cos(a), 0]
    _save(ds[3], paths[3])


def not_ct(ds, paths):
    ds[0].SOPClassUID = ds[0].file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR
    _save(ds[0], paths[0])


def no_rescale(ds, paths):
    del ds[2].RescaleSlope
    _save(ds[2], paths[2])


def undecodable(ds, paths):
    for d, p in zip(ds, paths):
        d.PixelData = encapsulate([b"\x00" * 64])
        d["PixelData"].VR = "OB"
        d.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder for CT here
        _save(d, p)


MALFORMED = {
    "non_uniform_spacing": non_uniform, "missing_slices": missing, "duplicate_positions": duplicate,
    "gantry_tilt": tilt, "mixed_orientation": mixed, "not_ct": not_ct, "missing_rescale": no_rescale,
    "undecodable": undecodable,
}


@pytest.fixture
def good_series(small_demo, tmp_path):
    """Copies of two square-pixel axial CT series."""
    series = ct_series(small_demo)
    out = {}
    for patient in ("DEMO-002", "DEMO-006"):
        uid, files = series[patient]
        folder = tmp_path / patient
        shutil.copytree(files[0].parent, folder)
        out[patient] = (uid, sorted(folder.glob("*.dcm")))
    return out


@pytest.mark.parametrize("code", sorted(MALFORMED))
def test_malformed_series_fail_with_their_cause(good_series, code):
    uid, files = good_series["DEMO-002"]
    _edit(files, MALFORMED[code])
    with pytest.raises(SeriesError) as err:
        read_ct_series(sorted(files[0].parent.glob("*.dcm")))
    assert err.value.code == code, str(err.value)
    assert uid in str(err.value)


def test_compressed_series_decode_to_the_same_volume(good_series):
    _, files = good_series["DEMO-006"]
    plain = sitk.GetArrayFromImage(read_ct_series(files).image)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(RLELossless)
        ds.save_as(f, enforce_file_format=True)
    volume = read_ct_series(files)
    assert volume.qc["transfer_syntax"] == RLELossless
    assert np.array_equal(sitk.GetArrayFromImage(volume.image), plain)
