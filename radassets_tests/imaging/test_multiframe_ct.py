"""Multi-frame CT (Enhanced, Legacy Converted Enhanced) → the volume its slices give as single-frame files.

Known answers: the single-frame series read by ``read_ct_series`` (the existing path), the case's analytic
geometry and the phantom rendered at the converted image's own voxel centres. Reference tool: dcm2niix on the
enhanced file alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from radassets.demo.cases.multiframe import VARIANTS, MultiframeCase, phantom, write_case
from radassets.imaging.ct import SeriesError, read_ct_series
from radassets.imaging.volumes import convert_dataset

GEOMETRY_MM = 1e-4  # our two readers: the same headers, parsed the same way
DCM2NIIX_MM = 1e-3  # NIfTI stores its affine in float32: ~1e-5 mm at 200 mm from the origin
DCM2NIIX = Path(sys.executable).parent / "dcm2niix"


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, MultiframeCase]:
    root = tmp_path_factory.mktemp("multiframe")
    return {v: write_case(root / v, v) for v in VARIANTS}


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory) -> MultiframeCase:
    """The oblique case with its frames stored in a random order, each frame with its own intercept."""
    order = np.random.default_rng(16).permutation(24)
    return write_case(tmp_path_factory.mktemp("shuffled"), "oblique", frame_order=order, per_frame_rescale=True)


def assert_same_volume(image: sitk.Image, reference: sitk.Image) -> None:
    assert np.array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(reference))
    assert image.GetPixelID() == sitk.sitkInt16 and image.GetSize() == reference.GetSize()
    for ours, theirs in [(image.GetOrigin(), reference.GetOrigin()), (image.GetSpacing(), reference.GetSpacing()),
                         (image.GetDirection(), reference.GetDirection())]:
        assert np.abs(np.subtract(ours, theirs)).max() <= GEOMETRY_MM


def voxel_centres(image: sitk.Image) -> np.ndarray:
    """LPS of every voxel centre, shape (slices, rows, columns, 3), from the image's own geometry."""
    k, r, c = np.meshgrid(*(np.arange(n) for n in reversed(image.GetSize())), indexing="ij")
    index = np.stack([c, r, k], axis=-1).astype(float)
    matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    return np.asarray(image.GetOrigin()) + index @ matrix.T


@pytest.mark.parametrize("variant", VARIANTS)
def test_enhanced_and_legacy_files_convert_to_the_single_frame_series_volume(cases, variant):
    case = cases[variant]
    single = read_ct_series(case.single_frame)
    for path, sop_class in [(case.enhanced, "Enhanced CT Image Storage"),
                            (case.legacy, "Legacy Converted Enhanced CT Image Storage")]:
        volume = read_ct_series([path])
        assert_same_volume(volume.image, single.image)
        assert volume.series_uid == str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
        assert volume.qc["sop_class"] == sop_class and "sop_class" not in single.qc
        # The grid as each path reads it (SimpleITK: its slice spacing from the slice positions; the frames: their
        # median gap) agrees to well below a micrometre; every other QC value is the same.
        ours = {k: v for k, v in volume.qc.items() if k not in ("SeriesInstanceUID", "seconds", "sop_class")}
        theirs = {k: v for k, v in single.qc.items() if k not in ("SeriesInstanceUID", "seconds")}
        grid = ("spacing_x", "spacing_y", "spacing_z", "origin", "direction")
        for key in grid:
            assert np.ravel(ours.pop(key)) == pytest.approx(np.ravel(theirs.pop(key)), abs=1e-6), key
        assert ours == theirs


@pytest.mark.parametrize("variant", VARIANTS)
def test_enhanced_file_has_the_analytic_grid_and_the_phantom_at_every_voxel(cases, variant):
    """Known answer: the case's geometry (slices along +X × Y), and the phantom rendered at the image's own
    voxel centres equals its voxels up to the 1 HU storage rounding."""
    case, geom = cases[variant], cases[variant].geometry
    image = read_ct_series([case.enhanced]).image
    assert image.GetSize() == (geom.cols, geom.rows, geom.n_slices)
    assert np.abs(np.subtract(image.GetOrigin(), geom.origin)).max() <= GEOMETRY_MM
    direction = np.column_stack([geom.row_dir, geom.col_dir, geom.normal])
    assert np.abs(np.array(image.GetDirection()) - direction.ravel()).max() <= GEOMETRY_MM
    assert np.allclose(image.GetSpacing(), (geom.col_spacing, geom.row_spacing, geom.slice_spacing), atol=GEOMETRY_MM)
    truth, masks = phantom().render(voxel_centres(image))
    # Stored as whole HU: at most 0.5 HU off (measured 0.4997), plus float32 noise in the phantom's HU.
    assert np.abs(sitk.GetArrayViewFromImage(image) - truth).max() <= 0.5 + 1e-3
    # The lesion's centroid on the image, against the phantom's true centre: the lesion is symmetric about its
    # centre, so on a grid of voxels the error is a fraction of a voxel (measured: 0.26 to 0.39 mm at 3.7 to
    # 4.6 mm voxels); half the largest spacing bounds it.
    centroid = voxel_centres(image)[masks["GTV-1"]].mean(axis=0)
    assert np.linalg.norm(centroid - case.lesion_center) < 0.5 * max(image.GetSpacing())


def test_frames_stored_in_shuffled_order_with_their_own_rescale_convert_to_the_same_volume(shuffled):
    frames = pydicom.dcmread(shuffled.enhanced).PerFrameFunctionalGroupsSequence
    heights = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in frames]
    assert heights != sorted(heights) and heights != sorted(heights, reverse=True)
    assert len({f.PixelValueTransformationSequence[0].RescaleIntercept for f in frames}) > 1
    single = read_ct_series(shuffled.single_frame)
    for path in (shuffled.enhanced, shuffled.legacy):
        assert_same_volume(read_ct_series([path]).image, single.image)


def test_the_case_files_are_byte_identical_from_run_to_run(cases, tmp_path):
    again = write_case(tmp_path, "oblique")
    for ours, theirs in [(cases["oblique"].enhanced, again.enhanced), (cases["oblique"].legacy, again.legacy)]:
        assert ours.read_bytes() == theirs.read_bytes()


# -- malformed multi-frame files, each with its own code -----------------------------------------

def _shift_frame(ds: pydicom.Dataset) -> None:
    """Frame 5 moved by 0.3 of a slice along the normal: irregular spacing."""
    position = ds.PerFrameFunctionalGroupsSequence[4].PlanePositionSequence[0]
    position.ImagePositionPatient = [float(v) for v in position.ImagePositionPatient[:2]] + \
                                    [float(position.ImagePositionPatient[2]) + 0.9]


def _drop_position(ds: pydicom.Dataset) -> None:
    del ds.PerFrameFunctionalGroupsSequence[6].PlanePositionSequence


def _duplicate_position(ds: pydicom.Dataset) -> None:
    frames = ds.PerFrameFunctionalGroupsSequence
    frames[3].PlanePositionSequence = frames[2].PlanePositionSequence


def _drop_rescale(ds: pydicom.Dataset) -> None:
    del ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence


def _tilt_one_frame(ds: pydicom.Dataset) -> None:
    orientation = pydicom.Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 0.99, 0.141067]
    ds.PerFrameFunctionalGroupsSequence[8].PlaneOrientationSequence = [orientation]


def _one_frame(ds: pydicom.Dataset) -> None:
    ds.NumberOfFrames = 2
    ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:2]
    ds.PixelData = ds.PixelData[:2 * ds.Rows * ds.Columns * 2]


@pytest.mark.parametrize("edit, code, cause", [
    (_shift_frame, "non_uniform_spacing", "slice gaps from 2.100 to 3.900 mm"),
    (_drop_position, "missing_geometry", "frame 7 has no PlanePositionSequence"),
    (_duplicate_position, "duplicate_positions", "frame 3 and frame 4 lie at the same position"),
    (_drop_rescale, "missing_rescale", "frame 1 has no PixelValueTransformationSequence"),
    (_tilt_one_frame, "mixed_orientation", "frame 9's ImageOrientationPatient"),
    (_one_frame, "too_few_slices", "2 frames; at least 3 are needed"),
])
def test_a_malformed_multiframe_file_gets_its_own_code(cases, tmp_path, edit, code, cause):
    ds = pydicom.dcmread(cases["axial"].enhanced)
    edit(ds)
    path = tmp_path / "edited.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(SeriesError) as raised:
        read_ct_series([path])
    assert raised.value.code == code
    assert str(ds.SeriesInstanceUID) in str(raised.value) and cause in str(raised.value), str(raised.value)


def test_a_multiframe_file_whose_frames_cannot_be_decoded_is_undecodable(cases, tmp_path):
    ds = pydicom.dcmread(cases["axial"].enhanced)
    ds.PixelData = encapsulate([bytes(64)] * int(ds.NumberOfFrames))  # not JPEG 2000 streams
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(tmp_path / "bad.dcm", enforce_file_format=True)
    with pytest.raises(SeriesError) as raised:
        read_ct_series([tmp_path / "bad.dcm"])
    message = str(raised.value)
    assert raised.value.code == "undecodable" and "JPEG 2000 Image Compression (Lossless Only)" in message, message
    assert str(ds.SeriesInstanceUID) in message and " at 0x" not in message


# -- reference tool --------------------------------------------------------------------------------

def dcm2niix(dicom: Path, out: Path) -> sitk.Image:
    """dcm2niix's NIfTI of one file, alone in its folder (dcm2niix reads every file of a folder), read by
    SimpleITK: LPS, with its scl_slope/scl_inter applied."""
    folder = out / "in"
    folder.mkdir(parents=True)
    shutil.copy(dicom, folder / dicom.name)
    subprocess.run([str(DCM2NIIX), "-z", "n", "-f", "%s_%d", "-o", str(out), str(folder)], check=True,
                   capture_output=True, timeout=60)
    [nifti] = out.glob("*.nii")
    return sitk.ReadImage(str(nifti), sitk.sitkFloat64)


def corners(image: sitk.Image) -> np.ndarray:
    """The LPS centres of the 8 corner voxels, sorted: the grid's extent whatever the axes' order and sign."""
    size = image.GetSize()
    points = [image.TransformContinuousIndexToPhysicalPoint([float(i * (n - 1)) for i, n in zip(bits, size)])
              for bits in np.ndindex(2, 2, 2)]
    return np.array(sorted(points, key=lambda p: tuple(np.round(p, 2))))  # sorted by 0.01 mm: far above the noise


@pytest.mark.parametrize("variant", VARIANTS)
def test_enhanced_file_matches_dcm2niix(cases, tmp_path, variant):
    """dcm2niix flips the rows (NIfTI's convention): the same grid shows as the same corners and spacings,
    and its voxels, taken at our voxel centres, are ours (max |ΔHU| measured: 0)."""
    ours = read_ct_series([cases[variant].enhanced]).image
    theirs = dcm2niix(cases[variant].enhanced, tmp_path)
    assert np.abs(corners(ours) - corners(theirs)).max() <= DCM2NIIX_MM
    assert sorted(ours.GetSpacing()) == pytest.approx(sorted(theirs.GetSpacing()), abs=DCM2NIIX_MM)
    # Our voxel centres in dcm2niix's index space are whole numbers: the grids coincide voxel for voxel.
    index = [theirs.TransformPhysicalPointToContinuousIndex(ours.TransformIndexToPhysicalPoint(i))
             for i in [(0, 0, 0), (63, 0, 0), (0, 63, 0), (0, 0, 23), (63, 63, 23), (17, 40, 11)]]
    spacing = np.array(theirs.GetSpacing())
    assert (np.abs(np.array(index) - np.round(index)) * spacing).max() <= DCM2NIIX_MM
    on_ours = sitk.Resample(theirs, ours, sitk.Transform(), sitk.sitkNearestNeighbor, -5000.0, sitk.sitkFloat64)
    delta = np.abs(sitk.GetArrayViewFromImage(on_ours) - sitk.GetArrayViewFromImage(ours))
    assert delta.max() <= 0.5  # the 1 HU rounding of storage is all that may differ


# -- end to end -------------------------------------------------------------------------------------

def test_convert_dataset_writes_a_multiframe_series_as_its_single_frame_volume(cases, tmp_path):
    case = cases["flipped"]
    uid = str(pydicom.dcmread(case.enhanced, stop_before_pixels=True).SeriesInstanceUID)
    rows = [{"PatientID": "MULTIFRAME-FLIPPED", "Modality": "CT", "SeriesInstanceUID": uid,
             "crdc_series_uuid": "enhanced", "status": "ok"},
            {"PatientID": "MULTIFRAME-FLIPPED", "Modality": "CT", "SeriesInstanceUID": case.series_uid,
             "crdc_series_uuid": "single", "status": "ok"}]
    files = {"enhanced": [case.enhanced], "single": case.single_frame}
    report = convert_dataset(rows, lambda row: files[row["crdc_series_uuid"]], tmp_path / "volumes")
    assert report.ct_converted == 2, report.failures
    out = tmp_path / "volumes" / "ct"
    assert_same_volume(sitk.ReadImage(str(out / "enhanced.nrrd")), sitk.ReadImage(str(out / "single.nrrd")))
    qc = {r["crdc_series_uuid"]: r for r in pq.read_table(tmp_path / "volumes" / "qc.parquet").to_pylist()}
    assert qc["enhanced"]["sop_class"] == "Enhanced CT Image Storage" and qc["single"]["sop_class"] is None
    assert qc["enhanced"]["slices"] == qc["single"]["slices"] == 24
