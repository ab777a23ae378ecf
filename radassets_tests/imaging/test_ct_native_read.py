"""``read_ct_series`` decodes plain series itself from the pixel data read with the headers (``ct._native_hu``)
rather than having GDCM parse every file again: the volume, its geometry and its QC row must be exactly what the
ITK path gives, on the demo's series and every phantom geometry; and any series outside the plain case (a
fractional rescale, a stored value outside BitsStored, a compressed file, a regridded series) goes through ITK."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from radassets.demo.cases import tilted
from radassets.imaging import ct
from radassets_tests.imaging.phantoms import geometry, write_phantom
from radassets_tests.imaging.test_nrrd_writer import assert_same_image


def _both(files: list[Path], monkeypatch) -> tuple[ct.CTVolume, ct.CTVolume, bool]:
    """The volume read as ``read_ct_series`` reads it, the one ITK's series reader gives, and whether the native
    path was taken."""
    taken = []
    native_hu = ct._native_hu

    def spy(*args):
        hu = native_hu(*args)
        taken.append(hu is not None)
        return hu
    with monkeypatch.context() as m:
        m.setattr(ct, "_native_hu", spy)
        ours = ct.read_ct_series(files)
    with monkeypatch.context() as m:
        m.setattr(ct, "_native_hu", lambda *args: None)
        itk = ct.read_ct_series(files)
    return ours, itk, bool(taken and taken[0])


def assert_same_volume(ours: ct.CTVolume, itk: ct.CTVolume) -> None:
    assert_same_image(ours.image, itk.image)
    assert {k: v for k, v in ours.qc.items() if k != "seconds"} == {k: v for k, v in itk.qc.items() if k != "seconds"}
    assert (ours.series_uid, ours.frame_of_reference) == (itk.series_uid, itk.frame_of_reference)


def test_demo_series_read_natively_equal_itk(small_demo, monkeypatch):
    folders = sorted({p.parent for p in (small_demo / "bucket").rglob("*.dcm")})
    cts = [f for f in folders if pydicom.dcmread(next(f.glob("*.dcm")), stop_before_pixels=True).Modality == "CT"]
    assert cts
    for folder in cts[:6]:
        ours, itk, native = _both(sorted(folder.glob("*.dcm")), monkeypatch)
        assert native, folder
        assert_same_volume(ours, itk)


@pytest.mark.parametrize("name", ["axial", "flipped", "oblique", "anisotropic"])
def test_phantoms_read_natively_equal_itk(tmp_path, monkeypatch, name):
    series = write_phantom(tmp_path, geometry(name), "SEG", np.array([10.0, -20.0, -150.0]))
    ours, itk, native = _both(series.ct_files, monkeypatch)
    assert native
    assert_same_volume(ours, itk)


def _rewrite(files: list[Path], folder: Path, edit) -> list[Path]:
    folder.mkdir()
    out = []
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        edit(k, ds)
        ds.save_as(folder / path.name, enforce_file_format=True)
        out.append(folder / path.name)
    return out


def _fractional(k, ds):
    ds.RescaleSlope = "0.5"


def _outside_bits_stored(k, ds):
    ds.BitsStored, ds.HighBit = 12, 11
    if k == 3:  # one stored value that 12 bits cannot hold: whether a reader masks it is not ours to guess
        stored = np.frombuffer(ds.PixelData, "<i2" if ds.PixelRepresentation else "<u2").copy()
        stored[0] = 3000 if ds.PixelRepresentation else 5000
        ds.PixelData = stored.tobytes()


def _one_compressed(k, ds):
    if k == 0:
        ds.compress(pydicom.uid.RLELossless)


def _other_intercept(k, ds):
    if k == 5:
        ds.RescaleIntercept = str(float(ds.RescaleIntercept) + 1)


def _slope_two(k, ds):
    ds.RescaleSlope = "2"


def _beyond_int16(k, ds):
    ds.RescaleIntercept = "32000"  # HU above 32767: clamped, as ITK's path clamps


@pytest.mark.parametrize("edit", [_slope_two, _beyond_int16])
def test_integer_rescales_read_natively_equal_itk(tmp_path, monkeypatch, edit):
    series = write_phantom(tmp_path / "in", geometry("oblique"), "SEG", np.array([10.0, -20.0, -150.0]))
    files = _rewrite(series.ct_files, tmp_path / "edited", edit)
    ours, itk, native = _both(files, monkeypatch)
    assert native
    assert_same_volume(ours, itk)
    if edit is _beyond_int16:
        assert sitk.GetArrayViewFromImage(ours.image).max() == 32767


def _slope_zero(k, ds):
    ds.RescaleSlope = "0"  # GDCM reads it as 1 ("can't have slope == 0"): stored + intercept, not the intercept


def _empty_slope(k, ds):
    ds.RescaleSlope = ""  # present and empty: GDCM's default


@pytest.mark.parametrize("edit", [_fractional, _outside_bits_stored, _one_compressed, _other_intercept, _slope_zero,
                                  _empty_slope])
def test_other_series_go_through_itk(tmp_path, monkeypatch, edit):
    series = write_phantom(tmp_path / "in", geometry("axial"), "SEG", np.array([10.0, -20.0, -150.0]))
    files = _rewrite(series.ct_files, tmp_path / "edited", edit)
    ours, itk, native = _both(files, monkeypatch)
    assert not native
    assert_same_volume(ours, itk)


def test_a_regridded_series_goes_through_itk(tmp_path, monkeypatch):
    case = tilted.write_tilted(tmp_path, 17.5, masks=())
    ours, itk, native = _both(list(case.ct_files), monkeypatch)
    assert not native and ours.qc["regrid"] == "gantry_tilt"
    assert_same_volume(ours, itk)
    assert sitk.GetArrayViewFromImage(ours.image).dtype == np.int16
