"""Gantry tilt and uneven slice spacing (issue 16): the series of ``radassets.demo.cases.tilted`` converted,
against the phantom's known answers and against dcm2niix (its ``_Tilt_1`` and ``_Eq_1`` files).

dcm2niix writes NIfTI with the rows reversed (its row index counts from the last DICOM row), so its
voxels are compared with ours index by index with the rows flipped. For ``_Eq_1`` its affine also places
them where ours are (checked); for ``_Tilt_1`` the affine of dcm2niix v1.0.20260724 does only for a negative
tilt (the lesion 0.1 mm from its true centre at -12°; 23-29 mm off at +16.5° to +18.5°, along the table),
so the tilt comparison is of voxels by index, and where the volume lies is checked against the phantom's
lesion instead.

Tolerances: 1 HU between the two tools (both blend the same two stored values with the same weights and
round; they differ only in the float precision of the blend); half the largest voxel edge for a lesion's
centroid (a centroid of whole voxels of a sphere).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from radassets.demo.cases import tilted
from radassets.imaging.ct import SeriesError, Tolerances, read_ct_series
from radassets.imaging.masks import MaskError, centroid_lps, read_mask_segments, read_seg_segments
from radassets.imaging.volumes import QC_COLUMNS, ConversionSettings, convert_dataset, write_image

LUNG_HU = -850.0
TILT = 17.5


def dcm2niix() -> str:
    beside = Path(sys.executable).parent / "dcm2niix"
    return str(beside) if beside.exists() else shutil.which("dcm2niix") or "dcm2niix"


def reference(case: tilted.Case, suffix: str, out: Path) -> sitk.Image:
    """dcm2niix's conversion of the case's CT: its ``1{suffix}.nii`` file (SimpleITK reads it as LPS)."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([dcm2niix(), "-z", "n", "-f", "%s", "-o", str(out), str(case.ct_folder)], check=True,
                   capture_output=True)
    return sitk.ReadImage(str(out / f"1{suffix}.nii"))


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, tilted.Case]:
    root = tmp_path_factory.mktemp("cases")
    return {"tilted": tilted.write_tilted(root, TILT, masks=("SEG", "RTSTRUCT", "LABELMAP")),
            "tilted-negative": tilted.write_tilted(root, -12.0, masks=()),
            "uneven-1-7": tilted.write_uneven(root, "1-7"),
            "uneven-5-10": tilted.write_uneven(root, "5-10", masks=("SEG", "RTSTRUCT")),
            "tilted-uneven": tilted.write_tilted_uneven(root),
            "missing": tilted.write_missing_slice(root), "regular": tilted.write_regular(root)}


def voxel_points(image: sitk.Image) -> np.ndarray:
    """LPS mm of every voxel centre, shape (slices, rows, columns, 3)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(image.GetSize())), indexing="ij")
    axes = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    return np.asarray(image.GetOrigin()) + np.stack([i, j, k], axis=-1) @ axes.T


def lesion_centroid(image: sitk.Image, case: tilted.Case) -> np.ndarray:
    """Centroid of the voxels brighter than halfway between lung and lesion, near the true lesion (its
    sphere grown by 1.5 mm: still inside the lung)."""
    points = voxel_points(image)
    near = np.linalg.norm(points - case.lesion_center, axis=-1) <= case.lesion_radius + 1.5
    bright = sitk.GetArrayViewFromImage(image) > (LUNG_HU + tilted.LESION_HU) / 2
    return points[near & bright].mean(axis=0)


def acquired(image: sitk.Image, native: dict) -> np.ndarray:
    """Which voxels of a tilt-corrected image lie within the acquired slab (inside the pixels of a slice)."""
    basis = np.column_stack([native["row_dir"], native["col_dir"], native["step_dir"]])
    local = np.linalg.solve(basis, (voxel_points(image) - native["origin"]).reshape(-1, 3).T).T
    cols, rows = native["size"]
    column, row = local[:, 0] / native["pixel_spacing"][0], local[:, 1] / native["pixel_spacing"][1]
    inside = (column >= -1e-6) & (column <= cols - 1 + 1e-6) & (row >= -1e-6) & (row <= rows - 1 + 1e-6)
    return inside.reshape(sitk.GetArrayViewFromImage(image).shape)


# -- gantry tilt --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, degrees", [("tilted", TILT), ("tilted-negative", 12.0)])
def test_a_tilted_series_becomes_an_orthogonal_volume_recording_its_tilt(cases, name, degrees):
    volume = read_ct_series(list(cases[name].ct_files))
    direction = np.array(volume.image.GetDirection()).reshape(3, 3)
    assert np.abs(direction.T @ direction - np.eye(3)).max() < 1e-7  # orthonormal, to the 8 decimals of the IOP
    assert volume.qc["tilt_degrees"] == pytest.approx(degrees, abs=0.01)
    assert volume.qc["regrid"] == "gantry_tilt" and json.loads(volume.qc["native_grid"])["size"] == [64, 64]
    # The slices keep their planes; the gap along their normal is the table step times cos(tilt).
    assert volume.image.GetSpacing()[2] == pytest.approx(2.5 * np.cos(np.radians(degrees)), rel=1e-6)
    assert float(volume.image.GetMetaData("radassets_tilt_degrees")) == pytest.approx(degrees, abs=1e-4)
    assert volume.image.GetMetaData("radassets_regrid") == "gantry_tilt"
    # The GantryDetectorTilt the scanner wrote agrees (in magnitude) with the angle from the geometry.
    tag = float(pydicom.dcmread(cases[name].ct_files[0], stop_before_pixels=True).GantryDetectorTilt)
    assert abs(tag) == pytest.approx(volume.qc["tilt_degrees"], abs=0.01)


@pytest.mark.parametrize("name", ["tilted", "tilted-negative"])
def test_tilt_corrected_hu_match_dcm2niix_voxel_by_voxel(cases, name, tmp_path):
    volume = read_ct_series(list(cases[name].ct_files))
    ref = reference(cases[name], "_Tilt_1", tmp_path)
    assert ref.GetSize() == volume.image.GetSize()
    assert np.allclose(ref.GetSpacing(), volume.image.GetSpacing(), atol=1e-4)
    ours = sitk.GetArrayFromImage(volume.image).astype(float)
    theirs = sitk.GetArrayFromImage(ref).astype(float)[:, ::-1, :]  # NIfTI rows run the other way
    both = acquired(volume.image, json.loads(volume.qc["native_grid"]))
    assert 0.5 < both.mean() < 1
    assert np.abs(ours - theirs)[both].max() <= 1
    # Outside the slab both fill with the series' lowest HU.
    assert float(volume.image.GetMetaData("radassets_fill_hu")) == ours[~both].max() == theirs[~both].max()


def test_the_tilt_corrected_lesion_is_where_the_phantom_put_it(cases):
    case = cases["tilted"]
    image = read_ct_series(list(case.ct_files)).image
    error = np.linalg.norm(lesion_centroid(image, case) - case.lesion_center)
    assert error <= 0.5 * max(image.GetSpacing()), error


def test_masks_on_a_tilted_ct_land_on_the_lesion(cases, tmp_path):
    """The whole dataset path: the CT regridded, its SEG and RTSTRUCT placed on its acquired slices and
    resampled with it, the correction in the QC table and the volume's header."""
    case = cases["tilted"]
    rows = [{"PatientID": "P", "Modality": modality, "SeriesInstanceUID": uid, "crdc_series_uuid": crdc,
             "status": "verified", "files": files}
            for modality, uid, crdc, files in [
                ("CT", case.series_uid, "ct", list(case.ct_files)),
                ("SEG", str(pydicom.dcmread(case.seg_file).SeriesInstanceUID), "seg", [case.seg_file]),
                ("RTSTRUCT", str(pydicom.dcmread(case.rtstruct_file).SeriesInstanceUID), "rt", [case.rtstruct_file]),
                # A label map's frames hold every segment: placed by position too, its own segment's voxels kept.
                ("SEG", str(pydicom.dcmread(case.labelmap_file).SeriesInstanceUID), "lm", [case.labelmap_file])]]
    report = convert_dataset(rows, lambda row: row["files"], tmp_path / "volumes", ConversionSettings())
    assert [r["status"] for r in report.qc] == ["ok"] * 4, report.qc
    ct_row = report.qc[0]
    assert ct_row["regrid"] == "gantry_tilt" and ct_row["tilt_degrees"] == pytest.approx(TILT, abs=0.01)
    assert {"tilt_degrees", "regrid", "native_grid"} <= set(QC_COLUMNS)
    ct = sitk.ReadImage(ct_row["path"])
    assert float(ct.GetMetaData("radassets_tilt_degrees")) == pytest.approx(TILT, abs=1e-4)
    sphere = 4 / 3 * np.pi * case.lesion_radius**3 / np.prod(ct.GetSpacing())
    assert sorted(s["mask_crdc_series_uuid"] for s in report.segments) == ["lm", "rt", "seg"]
    for s in report.segments:
        mask = sitk.ReadImage(s["mask_path"])
        assert mask.GetSize() == ct.GetSize() and mask.GetOrigin() == ct.GetOrigin()
        error = np.linalg.norm(centroid_lps(mask) - case.lesion_center)
        assert error <= 0.5 * max(ct.GetSpacing()), (s["mask_Modality"], error)
        assert s["voxels"] == pytest.approx(sphere, rel=0.1)


def test_a_seg_on_a_tilted_ct_needs_its_acquired_slices(cases):
    """highdicom refuses the sheared frames as a volume: without the CT's acquired slices there is no place
    for them (``no_regular_volume``), rather than a mask sheared out of place."""
    case = cases["tilted"]
    volume = read_ct_series(list(case.ct_files))
    with pytest.raises(MaskError) as err:
        read_seg_segments(case.seg_file, volume.image)
    assert err.value.code == "no_regular_volume"


def test_a_tilt_beyond_the_tolerance_or_against_its_tag_is_refused(cases, tmp_path):
    files = list(cases["tilted"].ct_files)
    with pytest.raises(SeriesError, match="exceeds the 15 degrees") as err:
        read_ct_series(files, Tolerances(max_tilt_degrees=15))
    assert err.value.code == "gantry_tilt"
    copies = []
    for f in files:
        ds = pydicom.dcmread(f)
        ds.GantryDetectorTilt = "5"
        copies.append(tmp_path / f.name)
        ds.save_as(copies[-1], enforce_file_format=True)
    with pytest.raises(SeriesError, match="GantryDetectorTilt 5 degrees contradicts") as err:
        read_ct_series(copies)
    assert err.value.code == "geometry_mismatch"


# -- uneven spacing and missing slices ---------------------------------------------------------------------

@pytest.mark.parametrize("name, spacing", [("uneven-1-7", 1.0), ("uneven-5-10", 5.0)])
def test_uneven_series_are_equalised_as_dcm2niix_does(cases, name, spacing, tmp_path):
    volume = read_ct_series(list(cases[name].ct_files))
    assert volume.qc["regrid"] == "uneven_spacing" and volume.qc["tilt_degrees"] is None
    assert volume.qc["spacing_z"] == pytest.approx(spacing)  # the smallest gap
    ref = reference(cases[name], "_Eq_1", tmp_path)
    assert ref.GetSize() == volume.image.GetSize()
    # dcm2niix's affine of an equalised volume is right: the same grid, rows reversed.
    last_row = volume.image.TransformIndexToPhysicalPoint((0, volume.image.GetSize()[1] - 1, 0))
    assert np.allclose(ref.GetOrigin(), last_row, atol=1e-3)
    assert np.allclose(ref.GetSpacing(), volume.image.GetSpacing(), atol=1e-4)
    ours = sitk.GetArrayFromImage(volume.image).astype(float)
    theirs = sitk.GetArrayFromImage(ref).astype(float)[:, ::-1, :]
    assert np.abs(ours - theirs).max() <= 1
    error = np.linalg.norm(lesion_centroid(volume.image, cases[name]) - cases[name].lesion_center)
    assert error <= 0.5 * max(volume.image.GetSpacing()), error


def test_masks_on_an_uneven_ct_land_on_the_lesion(cases):
    """SEG frames and RTSTRUCT contours on unevenly spaced slices: placed on the acquired slices, then on the
    equalised grid with the CT (nearest slice)."""
    case = cases["uneven-5-10"]
    volume = read_ct_series(list(case.ct_files))
    native = json.loads(volume.qc["native_grid"])
    for path in (case.seg_file, case.rtstruct_file):
        [segment] = read_mask_segments(path, volume.image, None, native)
        error = np.linalg.norm(centroid_lps(segment.image) - case.lesion_center)
        assert error <= 0.5 * max(volume.image.GetSpacing()), (path.parent.name, error)


def test_a_tilted_uneven_series_is_corrected_for_both(cases):
    """Tilt and uneven steps together: checked against the phantom only (dcm2niix's ``_Tilt_Eq_1`` spreads the
    extent over one slice more than the smallest gap gives, so its grid is not ours)."""
    case = cases["tilted-uneven"]
    volume = read_ct_series(list(case.ct_files))
    assert volume.qc["regrid"] == "gantry_tilt+uneven_spacing"
    assert volume.qc["tilt_degrees"] == pytest.approx(15.0, abs=0.01)
    assert volume.qc["spacing_z"] == pytest.approx(2.5 * np.cos(np.radians(15.0)), rel=1e-6)
    half_voxel = 0.5 * max(volume.image.GetSpacing())
    assert np.linalg.norm(lesion_centroid(volume.image, case) - case.lesion_center) <= half_voxel
    native = json.loads(volume.qc["native_grid"])
    for path in (case.seg_file, case.rtstruct_file):
        [segment] = read_mask_segments(path, volume.image, None, native)
        assert np.linalg.norm(centroid_lps(segment.image) - case.lesion_center) <= half_voxel, path.parent.name


def test_uneven_series_follow_their_settings(cases):
    files = list(cases["uneven-5-10"].ct_files)
    with pytest.raises(SeriesError, match=r"from 5\.000 to 10\.000 mm") as err:
        read_ct_series(files, Tolerances(resample_uneven=False))
    assert err.value.code == "non_uniform_spacing"
    with pytest.raises(SeriesError, match="wider than the 8 mm") as err:
        read_ct_series(files, Tolerances(max_interpolated_gap_mm=8))
    assert err.value.code == "non_uniform_spacing"


def test_a_regular_series_missing_one_slice_is_still_missing_slices(cases):
    with pytest.raises(SeriesError) as err:
        read_ct_series(list(cases["missing"].ct_files))
    assert err.value.code == "missing_slices" and "1 at" in str(err.value) and "spacing 2.50 mm" in str(err.value)


def test_a_regular_series_converts_as_before(cases, tmp_path):
    """No regrid, no header entry: the bytes the conversion wrote before gantry tilt was corrected."""
    case = cases["regular"]
    volume = read_ct_series(list(case.ct_files))
    assert (volume.qc["regrid"], volume.qc["tilt_degrees"], volume.qc["native_grid"]) == (None, None, None)
    assert not [k for k in volume.image.GetMetaDataKeys() if k.startswith("radassets")]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in sorted(case.ct_files, key=lambda f: float(
        pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))])
    before = sitk.Cast(sitk.Clamp(reader.Execute(), lowerBound=-32768, upperBound=32767), sitk.sitkInt16)
    assert write_image(volume.image, tmp_path / "now.nrrd").read_bytes() == \
        write_image(before, tmp_path / "before.nrrd").read_bytes()


def test_seeds_from_a_folder_with_a_tilted_ct_land_on_the_lesion(tmp_path):
    """`radassets imaging seeds` on a user's folder: the masks of a tilted CT are placed as the pipeline places
    them (on the acquired slices, then resampled), so each seed is the lesion's centre."""
    from radassets.demo.cases.tilted import write_tilted
    from radassets.imaging.folder import seeds_from_folder

    case = write_tilted(tmp_path / "folder", 17.5)
    rows, failures, _ = seeds_from_folder(tmp_path / "folder")
    assert failures == [] and len(rows) == 2  # the SEG's and the RTSTRUCT's
    for row in rows:
        seed = np.array([row["coordX"], row["coordY"], row["coordZ"]])
        assert np.linalg.norm(seed - case.lesion_center) <= max(case.geometry.row_spacing, 2.5 * np.cos(np.radians(17.5))) / 2
