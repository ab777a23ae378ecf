"""Multi-frame CT: one file holding a whole series, as newer scanners and PACS conversions deliver it.

A case is a single-frame CT series (the demo's phantom written with ``write_ct_series``) and two multi-frame
files holding the same slices:

- an Enhanced CT Image (1.2.840.10008.5.1.4.1.1.2.1) written with pydicom, with the functional groups of
  PS3.3 A.38: shared Pixel Measures, Plane Orientation, CT Pixel Value Transformation (the rescale), CT Image
  Frame Type and Frame VOI LUT; per-frame Plane Position and Frame Content (stack 1, in-stack position and
  dimension index values). The rescale may be made per-frame (``per_frame_rescale``): each frame then has its
  own intercept, with its stored values offset to match, so the HU are the same.
- a Legacy Converted Enhanced CT Image (1.2.840.10008.5.1.4.1.1.2.2) made by highdicom from the single-frame
  datasets, as a PACS would.

Either file's frames can be stored in any order (``frame_order``): a reader must place them by their
PlanePositionSequence, not by their frame number. UIDs derive from the case's name and dates are fixed
(``dicom_writer``'s canonical values), so the files are byte-identical from run to run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (UID, EnhancedCTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid)

from radassets.demo.dicom_writer import (DEMO_DATE, DEMO_TIME, Geometry, SeriesIds,
                                         canonicalize, write_ct_series)
from radassets.demo.phantom import Body, Phantom, random_lesion, xyz

UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root, as the demo generator uses
VARIANTS = ("axial", "flipped", "oblique", "nonsquare")
INTERCEPT = -1024.0


def geometry(variant: str, size: int = 64, n_slices: int = 24) -> Geometry:
    """A small geometry centred at (5, -10, -150) mm: axial; flipped (columns to the patient's right, slices
    from head to feet); oblique (rotated 20° about z and 10° about x); non-square pixels and 2.5 mm slices."""
    x, y = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    row_spacing = col_spacing = 4.0
    slice_spacing, descending = 3.0, False
    if variant == "flipped":
        x, descending = -x, True
    elif variant == "oblique":
        a, b = np.radians(20.0), np.radians(10.0)
        rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
        x, y = rx @ rz @ x, rx @ rz @ y
    elif variant == "nonsquare":
        row_spacing, col_spacing, slice_spacing = 4.6, 3.7, 2.5
    elif variant != "axial":
        raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
    normal = np.cross(x, y)
    center = np.array([5.0, -10.0, -150.0])
    origin = (center - (size - 1) / 2 * col_spacing * x - (size - 1) / 2 * row_spacing * y
              - (n_slices - 1) / 2 * slice_spacing * normal)
    return Geometry(rows=size, cols=size, row_spacing=row_spacing, col_spacing=col_spacing,
                    slice_spacing=slice_spacing, n_slices=n_slices, row_dir=xyz(x),
                    col_dir=xyz(y), origin=xyz(origin),
                    descending_instances=descending)


def phantom() -> Phantom:
    """The demo's body with one lesion of 24 mm in the left lung, 5 mm above the volume's centre."""
    rng = np.random.default_rng(16)
    body = Body(torso=(115.0, 85.0), lung_center_x=50.0, lung_axes=(35.0, 50.0), spine_radius=14.0)
    lesion = random_lesion(rng, "GTV-1", np.array([50.0, -12.0, -145.0]), 24.0, heterogeneity=0.5)
    return Phantom(body=body, lesions=(lesion,))


@dataclass(frozen=True)
class MultiframeCase:
    variant: str
    geometry: Geometry
    series_uid: str  # of the single-frame series
    single_frame: list[Path]  # its files, in slice order k
    enhanced: Path
    legacy: Path
    lesion_center: np.ndarray  # LPS mm, the phantom's true centre


def _uid(variant: str, name: str) -> str:
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=["radassets multiframe case", variant, name])


def _ids(variant: str, n_slices: int) -> SeriesIds:
    return SeriesIds(patient_id=f"MULTIFRAME-{variant.upper()}", patient_sex="O", patient_age="060Y",
                     study_uid=_uid(variant, "study"), series_uid=_uid(variant, "series"),
                     frame_of_reference_uid=_uid(variant, "frame-of-reference"), series_number=1,
                     series_description=f"multi-frame case {variant}",
                     sop_uids=tuple(_uid(variant, f"sop-{k}") for k in range(n_slices)))


def _item(**values) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _copy(source: Dataset, target: Dataset, keywords: Sequence[str]) -> None:
    for keyword in keywords:
        if keyword in source:
            setattr(target, keyword, source[keyword].value)


PATIENT_STUDY_SERIES = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyInstanceUID", "StudyID",
    "AccessionNumber", "ReferringPhysicianName", "StudyDate", "StudyTime", "StudyDescription", "Modality",
    "SeriesDate", "SeriesTime", "BodyPartExamined", "PatientPosition", "FrameOfReferenceUID",
    "PositionReferenceIndicator", "Manufacturer", "ManufacturerModelName", "SamplesPerPixel",
    "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
)


def enhanced_ct(slices: Sequence[Dataset], sop_uid: str, series_uid: str, frame_order: Sequence[int],
                per_frame_rescale: bool = False) -> Dataset:
    """An Enhanced CT Image holding ``slices`` (single-frame CT datasets in slice order k); frame f of the file
    is slice ``frame_order[f]``."""
    first = slices[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    _copy(first, ds, PATIENT_STUDY_SERIES)
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 2
    ds.SeriesDescription = "enhanced CT"
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]  # Enhanced CT: four values (C.8.15.2.1.1)
    ds.ContentDate, ds.ContentTime = DEMO_DATE, DEMO_TIME
    ds.AcquisitionDateTime = DEMO_DATE + DEMO_TIME
    ds.AcquisitionNumber = 1
    ds.AcquisitionDuration = 1.0
    ds.ContentQualification = "PRODUCT"
    ds.ImageComments = "radassets multi-frame case"
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = "radassets demo"
    ds.PresentationLUTShape = "IDENTITY"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.AcquisitionContextSequence = []
    ds.NumberOfFrames = len(frame_order)
    # One stack; frames indexed by (StackID, InStackPositionNumber), positions increasing along the normal.
    ds.DimensionOrganizationType = "3D"
    organisation = _uid(series_uid, "dimension-organization")
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=organisation)]
    ds.DimensionIndexSequence = [
        _item(DimensionOrganizationUID=organisation, DimensionIndexPointer=0x00209056,
              FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel="Stack ID"),
        _item(DimensionOrganizationUID=organisation, DimensionIndexPointer=0x00209057,
              FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel="In-Stack Position Number"),
    ]
    shared = _item(
        PixelMeasuresSequence=[_item(PixelSpacing=first.PixelSpacing, SliceThickness=first.SliceThickness,
                                     SpacingBetweenSlices=first.SpacingBetweenSlices)],
        PlaneOrientationSequence=[_item(ImageOrientationPatient=first.ImageOrientationPatient)],
        CTImageFrameTypeSequence=[_item(FrameType=["ORIGINAL", "PRIMARY", "AXIAL", "NONE"],
                                        PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
                                        VolumeBasedCalculationTechnique="NONE")],
        FrameVOILUTSequence=[_item(WindowCenter=first.WindowCenter, WindowWidth=first.WindowWidth)],
    )
    rescale = [float(first.RescaleIntercept), float(first.RescaleSlope)]
    if not per_frame_rescale:
        shared.PixelValueTransformationSequence = [_rescale_item(*rescale)]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames, per_frame = [], []
    for f, k in enumerate(frame_order):
        source = slices[k]
        stored = source.pixel_array.astype(np.int32)
        item = _item(
            PlanePositionSequence=[_item(ImagePositionPatient=source.ImagePositionPatient)],
            FrameContentSequence=[_item(StackID="1", InStackPositionNumber=k + 1, DimensionIndexValues=[1, k + 1],
                                        FrameAcquisitionDateTime=DEMO_DATE + DEMO_TIME,
                                        FrameReferenceDateTime=DEMO_DATE + DEMO_TIME, FrameAcquisitionDuration=1.0)],
        )
        if per_frame_rescale:
            # Each frame its own intercept, its stored values shifted by as much: the same HU, stored otherwise.
            offset = 7 * (f % 5) - 14
            stored = stored - offset
            item.PixelValueTransformationSequence = [_rescale_item(rescale[0] + offset, rescale[1])]
        frames.append(stored.astype("<i2"))
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.stack(frames).tobytes()
    return ds


def _rescale_item(intercept: float, slope: float) -> Dataset:
    return _item(RescaleIntercept=f"{intercept:g}", RescaleSlope=f"{slope:g}", RescaleType="HU")


def legacy_ct(slices: Sequence[Dataset], sop_uid: str, series_uid: str, frame_order: Sequence[int]) -> Dataset:
    """A Legacy Converted Enhanced CT Image made by highdicom from ``slices`` taken in ``frame_order``; without
    a dimension index, so that highdicom keeps that order (with one it sorts the frames spatially)."""
    image = hd.legacy.LegacyConvertedEnhancedCTImage(
        [slices[k] for k in frame_order], series_instance_uid=series_uid, series_number=3,
        sop_instance_uid=sop_uid, instance_number=1, include_dimension_index=False)
    keep = {str(slices[0].StudyInstanceUID), str(slices[0].FrameOfReferenceUID), series_uid, sop_uid,
            *(str(s.SOPInstanceUID) for s in slices)}
    counter = iter(range(1_000_000))
    canonicalize(image, keep, lambda i: _uid(series_uid, f"generated-{i}-{next(counter)}"))
    return image


def write_case(folder: Path, variant: str = "axial", frame_order: Sequence[int] | None = None,
               per_frame_rescale: bool = False) -> MultiframeCase:
    """Write ``variant``'s single-frame series to ``folder/single``, its Enhanced CT to ``folder/enhanced.dcm``
    and its Legacy Converted Enhanced CT to ``folder/legacy.dcm``; frames in ``frame_order`` (default: slice
    order)."""
    geom = geometry(variant)
    ids = _ids(variant, geom.n_slices)
    truth = phantom()
    hu, _ = truth.render(geom.points())
    names = [f"slice-{k:03d}.dcm" for k in range(geom.n_slices)]
    slices = write_ct_series(folder / "single", geom, ids, hu, names, intercept=INTERCEPT)
    order = list(range(geom.n_slices)) if frame_order is None else [int(k) for k in frame_order]
    if sorted(order) != list(range(geom.n_slices)):
        raise ValueError(f"frame_order must be a permutation of 0..{geom.n_slices - 1}")
    enhanced = enhanced_ct(slices, _uid(variant, "enhanced-sop"), _uid(variant, "enhanced-series"), order,
                           per_frame_rescale)
    enhanced.save_as(folder / "enhanced.dcm", enforce_file_format=True)
    legacy = legacy_ct(slices, _uid(variant, "legacy-sop"), _uid(variant, "legacy-series"), order)
    legacy.save_as(folder / "legacy.dcm", enforce_file_format=True)
    return MultiframeCase(variant, geom, ids.series_uid, [folder / "single" / n for n in names],
                          folder / "enhanced.dcm", folder / "legacy.dcm", np.asarray(truth.lesions[0].center))
