"""Writing the demo's CT series, SEG (highdicom) and RTSTRUCT (rt-utils) as real DICOM files.

CT: one CT Image Storage file per slice, Explicit VR Little Endian, signed 16-bit stored values
with ``HU = stored * RescaleSlope + RescaleIntercept``; geometry as in ``radassets.demo.geometry``.

SEG: a BINARY Segmentation (highdicom) over the CT's slices, one segment per lesion label
(``GTV-1``, ``GTV-2``), coded as Morphologically abnormal structure / Neoplasm.

RTSTRUCT: one ROI per lesion label (rt-utils), contoured on the CT slices. rt-utils 1.2.7
handles oblique and flipped orientations (it maps contours with the full 3-D direction
vectors and sorts slices along the normal), but it is only right for square pixels on square
images: it scales the column index by PixelSpacing[0] (the row spacing) instead of
PixelSpacing[1], and allocates its masks as (Columns, Rows). The generator therefore gives
RTSTRUCT masks only to series with square pixels and Rows == Columns; ``write_rtstruct``
refuses anything else. Its output is re-encoded as Explicit VR Little Endian, like the rest.

Determinism: highdicom and rt-utils put the current time and random UIDs into what they
write (creation dates and times, DimensionOrganizationUID, rt-utils' SOP and series UIDs);
each such value is overwritten with one derived from the demo seed, so files are
byte-identical from one generation to the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from radassets.demo.geometry import Geometry

MANUFACTURER = "radassets"
MODEL_NAME = "radassets demo phantom"
SOFTWARE_VERSION = "radassets demo generator"
STUDY_DESCRIPTION = "Demo chest CT"
# ROI display colours (RGB) by label, so RTSTRUCT viewers show GTV-1 and GTV-2 apart.
ROI_COLORS = {"GTV-1": [255, 0, 0], "GTV-2": [0, 160, 255]}


@dataclass(frozen=True)
class SeriesIds:
    """Identity and dates of one CT series and of the study it belongs to."""

    patient_id: str
    patient_sex: str
    patient_age: str  # DICOM AS, e.g. "063Y"
    study_uid: str
    study_date: str  # DICOM DA (YYYYMMDD); also the series, acquisition and content date
    study_time: str  # DICOM TM (HHMMSS)
    series_uid: str
    frame_of_reference_uid: str
    series_number: int
    series_description: str
    sop_uids: tuple[str, ...]  # one per slice k


@dataclass(frozen=True)
class Rescale:
    """Stored value to HU: ``HU = stored * slope + intercept``."""

    intercept: float = -1024.0
    slope: float = 1.0

    def to_stored(self, hu: np.ndarray) -> np.ndarray:
        """HU rounded to the nearest representable value, as int16 stored values."""
        stored = np.rint((hu - self.intercept) / self.slope)
        return np.clip(stored, -32768, 32767).astype("<i2")


def _ct_template(geom: Geometry, ids: SeriesIds, rescale: Rescale) -> Dataset:
    """Every attribute that is the same for all slices of the series."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Modality = "CT"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.SoftwareVersions = SOFTWARE_VERSION
    ds.PatientName = f"Demo^{ids.patient_id}"
    ds.PatientID = ids.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ids.patient_sex
    ds.PatientAge = ids.patient_age
    ds.StudyInstanceUID = ids.study_uid
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ids.study_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = ids.study_time
    ds.StudyDescription = STUDY_DESCRIPTION
    ds.SeriesInstanceUID = ids.series_uid
    ds.SeriesNumber = ids.series_number
    ds.SeriesDescription = ids.series_description
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = ids.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*geom.row_dir, *geom.col_dir)]
    ds.PixelSpacing = [f"{geom.row_spacing:g}", f"{geom.col_spacing:g}"]
    ds.SliceThickness = f"{geom.slice_thickness:g}"
    ds.SpacingBetweenSlices = f"{geom.slice_spacing:g}"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = geom.rows, geom.cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = f"{rescale.intercept:g}"
    ds.RescaleSlope = f"{rescale.slope:g}"
    ds.RescaleType = "HU"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    return ds


def write_ct_series(folder: Path, geom: Geometry, ids: SeriesIds, hu: np.ndarray, file_names: list[str],
                    rescale: Rescale) -> list[Path]:
    """Write slice k of ``hu`` (slices, rows, cols) to ``folder / file_names[k]``; returns the paths in k order."""
    folder.mkdir(parents=True, exist_ok=True)
    stored = rescale.to_stored(hu)
    ds = _ct_template(geom, ids, rescale)
    paths = []
    for k in range(geom.n_slices):
        # The slice-specific attributes replace the previous slice's on the same dataset.
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = ids.sop_uids[k]
        ds.InstanceNumber = geom.instance_number(k)
        position = geom.slice_position(k)
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.SliceLocation = f"{position[2]:.6f}"
        ds.PixelData = stored[k].tobytes()
        path = folder / file_names[k]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _set_dates(ds: Dataset, ids: SeriesIds) -> None:
    """Date every SEG/RTSTRUCT like its CT: the libraries would put the current time there."""
    ds.InstanceCreationDate = ds.SeriesDate = ids.study_date
    ds.InstanceCreationTime = ds.SeriesTime = ids.study_time
    for name in ("Content", "StructureSet"):
        if f"{name}Date" in ds:
            setattr(ds, f"{name}Date", ids.study_date)
            setattr(ds, f"{name}Time", ids.study_time)


def write_seg(path: Path, ct_paths: list[Path], ids: SeriesIds, masks: dict[str, np.ndarray], series_uid: str,
              sop_uid: str, dimension_organization_uid: str, series_number: int, series_description: str) -> Dataset:
    """A BINARY DICOM SEG (highdicom) with one segment per label in ``masks``, on the CT files ``ct_paths``.

    ``masks`` are boolean arrays (slices, rows, cols) in the CT's k order (``ct_paths`` order).
    """
    labels = sorted(masks)
    label_map = np.zeros(masks[labels[0]].shape, dtype=np.uint8)
    for number, label in enumerate(labels, start=1):
        label_map[masks[label]] = number
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, label in enumerate(labels, start=1)
    ]
    source_images = [pydicom.dcmread(p, stop_before_pixels=True) for p in ct_paths]
    seg = hd.seg.Segmentation(
        source_images=source_images,
        pixel_array=label_map,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=SOFTWARE_VERSION,
        device_serial_number="0",
        content_description="Lesion segmentation",
        content_creator_name="radassets^demo",
        series_description=series_description,
        content_date=ids.study_date,
        content_time=ids.study_time,
        series_date=ids.study_date,
        series_time=ids.study_time,
    )
    _set_dates(seg, ids)
    seg.BodyPartExamined = "CHEST"
    for item in [*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence]:
        item.DimensionOrganizationUID = dimension_organization_uid
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = ids.study_date + ids.study_time
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path, enforce_file_format=True)
    return seg


def write_rtstruct(path: Path, ct_folder: Path, geom: Geometry, ids: SeriesIds, masks: dict[str, np.ndarray],
                   series_uid: str, sop_uid: str, series_number: int, series_description: str) -> Dataset:
    """An RTSTRUCT (rt-utils) with one ROI per label in ``masks``, contoured on the CT in ``ct_folder``.

    ``masks`` are boolean arrays (slices, rows, cols) in the CT's k order. rt-utils sorts the
    slices by position along the normal too (its slice i is our k) but wants (rows, cols, slices).
    """
    from rt_utils import RTStructBuilder

    if not geom.square_pixels or geom.rows != geom.cols:
        raise ValueError("rt-utils writes wrong contours unless pixels and images are square (see module docstring)")
    rt = RTStructBuilder.create_new(dicom_series_path=str(ct_folder))
    for label in sorted(masks):
        rt.add_roi(mask=np.moveaxis(masks[label], 0, -1), color=ROI_COLORS[label], name=label)
    ds = rt.ds
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.StructureSetLabel = "GTV"
    ds.BodyPartExamined = "CHEST"
    ds.Manufacturer = ds.InstitutionName = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.SoftwareVersions = SOFTWARE_VERSION
    _set_dates(ds, ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return ds
