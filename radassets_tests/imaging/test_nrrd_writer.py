"""radassets' NRRD writer (``radassets.imaging.nrrd_writer``) against ITK's: the same header, byte for byte, and
the same image read back by ``sitk.ReadImage`` (voxels, origin, spacing, direction, key/value pairs, exactly),
for the volumes and masks the pipeline writes, phantoms and regridded series included."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from radassets.demo.cases import tilted
from radassets.imaging.ct import read_ct_series
from radassets.imaging import nrrd_writer
from radassets.imaging.nrrd_writer import header, write_nrrd
from radassets.imaging.volumes import write_image
from radassets_tests.imaging.phantoms import geometry, write_phantom


def _awkward(pixel_id: int = sitk.sitkInt16) -> sitk.Image:
    """Oblique axes, spacings and an origin with no short decimal form, negative values, key/value pairs that
    need escaping: what could make a hand-written header differ from ITK's."""
    rng = np.random.default_rng(7)
    image = sitk.GetImageFromArray(rng.integers(-1024, 3000, size=(5, 7, 9)).astype(np.int16))
    image.SetSpacing((0.7000000000000001, 2 / 3, 1.2345678901234567))
    image.SetOrigin((-123.456789012345, 0.1 + 0.2, -1e-17))
    angle = np.radians(17.3)
    image.SetDirection((1.0, 0.0, 0.0, 0.0, np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle)))
    image.SetMetaData("radassets_regrid", "gantry_tilt")
    image.SetMetaData("radassets_native_grid", '{"offsets": [0.0, 2.5], "path": "a\\\\b"}')
    image.SetMetaData("note", "two\nlines")
    return sitk.Cast(image, pixel_id) if pixel_id != sitk.sitkInt16 else image


def _itk_header(path: Path) -> bytes:
    data = path.read_bytes()
    return data[:data.index(b"\n\n") + 2]


def assert_same_image(ours: sitk.Image, theirs: sitk.Image) -> None:
    """Exactly equal: voxels, pixel type, geometry (no tolerance) and every metadata key/value."""
    assert ours.GetPixelID() == theirs.GetPixelID()
    assert np.array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(theirs))
    assert ours.GetOrigin() == theirs.GetOrigin()
    assert ours.GetSpacing() == theirs.GetSpacing()
    assert ours.GetDirection() == theirs.GetDirection()
    assert {k: ours.GetMetaData(k) for k in ours.GetMetaDataKeys() if k != "NRRD_encoding"} == \
        {k: theirs.GetMetaData(k) for k in theirs.GetMetaDataKeys() if k != "NRRD_encoding"}


def _both(image: sitk.Image, folder: Path, encoding: str = "gzip") -> tuple[Path, Path, str]:
    ours, theirs = folder / "ours.nrrd", folder / "itk.nrrd"
    digest = write_nrrd(image, ours, encoding)
    sitk.WriteImage(image, str(theirs), useCompression=encoding == "gzip", imageIO="NrrdImageIO")
    return ours, theirs, digest


@pytest.mark.parametrize("pixel_id", [sitk.sitkInt16, sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16,
                                      sitk.sitkInt32, sitk.sitkFloat32, sitk.sitkFloat64])
@pytest.mark.parametrize("encoding", ["gzip", "raw"])
def test_nrrd_writer_round_trips(tmp_path, monkeypatch, pixel_id, encoding):
    monkeypatch.setattr(nrrd_writer, "_CHUNK", 100)  # several chunks, as a full-size volume is written
    image = _awkward(pixel_id)
    ours, theirs, digest = _both(image, tmp_path, encoding)
    assert _itk_header(ours) == _itk_header(theirs) == header(image, encoding)
    assert digest == hashlib.sha256(ours.read_bytes()).hexdigest()  # hashed while written, not read back
    read = sitk.ReadImage(str(ours))
    assert np.array_equal(sitk.GetArrayViewFromImage(read), sitk.GetArrayViewFromImage(image))
    assert_same_image(read, sitk.ReadImage(str(theirs)))
    if encoding == "gzip":  # a standard gzip stream, whatever wrote it
        voxels = sitk.GetArrayViewFromImage(image)
        little_endian = voxels.astype(voxels.dtype.newbyteorder("<")).tobytes()
        assert gzip.decompress(ours.read_bytes()[len(header(image)):]) == little_endian


@pytest.mark.skipif(importlib.util.find_spec("nrrd") is None, reason="pynrrd not installed")
def test_pynrrd_reads_our_files(tmp_path):
    import nrrd  # type: ignore[import-not-found]

    image = _awkward()
    write_nrrd(image, tmp_path / "ours.nrrd")
    data, fields = nrrd.read(str(tmp_path / "ours.nrrd"))
    assert np.array_equal(data.T, sitk.GetArrayViewFromImage(image))
    assert np.array_equal(np.asarray(fields["space origin"], dtype=float), image.GetOrigin())


def test_unsupported_images_are_refused(tmp_path):
    with pytest.raises(ValueError, match="scalar 3-D"):
        write_nrrd(sitk.Image(4, 4, sitk.sitkInt16), tmp_path / "flat.nrrd")
    with pytest.raises(ValueError, match="scalar 3-D"):
        write_nrrd(sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3), tmp_path / "vector.nrrd")
    image = sitk.Image([2, 2, 2], sitk.sitkInt16)
    image.SetMetaData("NRRD_kinds", "domain")
    with pytest.raises(ValueError, match="NRRD_kinds"):
        write_nrrd(image, tmp_path / "field.nrrd")


@pytest.mark.parametrize("name", ["axial", "flipped", "oblique", "anisotropic"])
def test_phantom_volumes_and_masks_read_back_as_itk_wrote_them(tmp_path, name):
    """A converted phantom series (and a mask on its grid), written by the pipeline's ``write_image`` and by ITK:
    the same image read back."""
    series = write_phantom(tmp_path / "in", geometry(name), "SEG", np.array([10.0, -20.0, -150.0]))
    volume = read_ct_series(series.ct_files).image
    mask = sitk.Cast(volume > 0, sitk.sitkUInt8)
    for image, what in ((volume, "ct"), (mask, "mask")):
        ours = write_image(image, tmp_path / f"{what}.nrrd")
        sitk.WriteImage(image, str(tmp_path / f"{what}-itk.nrrd"), useCompression=True)
        assert _itk_header(ours) == _itk_header(tmp_path / f"{what}-itk.nrrd")
        assert_same_image(sitk.ReadImage(str(ours)), sitk.ReadImage(str(tmp_path / f"{what}-itk.nrrd")))


def test_a_regridded_volume_keeps_its_header_pairs(tmp_path):
    """A tilted series' volume carries its correction as key/value pairs (JSON): read back as ITK's file."""
    case = tilted.write_tilted(tmp_path / "in", 17.5, masks=())
    image = read_ct_series(list(case.ct_files)).image
    assert "radassets_native_grid" in image.GetMetaDataKeys()
    ours, theirs, _ = _both(image, tmp_path)
    assert _itk_header(ours) == _itk_header(theirs)
    assert_same_image(sitk.ReadImage(str(ours)), sitk.ReadImage(str(theirs)))


def test_a_negative_zero_is_written_as_itk_writes_it(tmp_path):
    """ImagePositionPatient "-0.000000" gives an origin of -0.0: teem prints 0, and so must the header."""
    image = _awkward()
    image.SetOrigin((-0.0, 0.0, -0.0))
    ours, theirs, _ = _both(image, tmp_path)
    assert _itk_header(ours) == _itk_header(theirs)
    assert b"space origin: (0,0,0)" in _itk_header(ours)
