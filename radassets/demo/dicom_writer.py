"""Writing the demo's CT series, SEG (highdicom) and RTSTRUCT (rt-utils) as real DICOM files.

Geometry follows DICOM PS3.3 C.7.6.2.1.1: the pixel at row r, column c of slice k lies at
``IPP_k + c * PixelSpacing[1] * X + r * PixelSpacing[0] * Y`` where X and Y are the first and
last three values of ImageOrientationPatient, and ``IPP_k = IPP_0 + k * spacing * (X × Y)``.

RTSTRUCT: rt-utils 1.2.7 builds the structure set (references, ROI sequences), but its contours
are replaced. rt-utils traces contours through the centres of the boundary pixels
(cv2.findContours), so a reader that fills polygons by pixel-centre inclusion, as DICOM readers
do, loses part of the boundary ring: on the demo that was 20-35 % of a lesion's volume and a
1-1.5 mm centroid shift. The contours written here are the 0.5 iso-lines of each slice's mask
(marching squares, scikit-image), i.e. the boundary between inside and outside pixel centres,
which a pixel-centre fill reproduces exactly; they are placed with the series' own geometry, so
non-square pixels are right too (rt-utils' own contours scale the row direction by
PixelSpacing[0]). The generator still gives RTSTRUCT only to square-pixel series, as before.

highdicom and rt-utils put the current time and random UIDs into what they write; every such
value is replaced by one derived from the demo seed, so the collection is byte-identical from
one generation to the next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID, UID_dictionary, CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

DEMO_DATE = "20200101"
DEMO_TIME = "120000"
MANUFACTURER = "radassets"
MODEL_NAME = "radassets demo phantom"


@dataclass(frozen=True)
class Geometry:
    rows: int
    cols: int
    row_spacing: float  # PixelSpacing[0]: distance between rows (along Y)
    col_spacing: float  # PixelSpacing[1]: distance between columns (along X)
    slice_spacing: float
    n_slices: int
    row_dir: tuple[float, float, float]  # X: direction of increasing column index
    col_dir: tuple[float, float, float]  # Y: direction of increasing row index
    origin: tuple[float, float, float]  # ImagePositionPatient of slice k = 0
    descending_instances: bool  # InstanceNumber 1 at the last slice instead of the first
    # Real-scanner cases only (radassets.demo.cases; the demo leaves both unset): each slice's own
    # ImagePositionPatient, for slices that do not step ``slice_spacing`` along the normal (gantry tilt: along
    # the table; uneven gaps), and the GantryDetectorTilt value to write (degrees).
    positions: tuple[tuple[float, float, float], ...] | None = None
    gantry_tilt: float | None = None

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    @property
    def square_pixels(self) -> bool:
        return abs(self.row_spacing - self.col_spacing) < 1e-9

    def slice_position(self, k: int) -> np.ndarray:
        if self.positions is not None:
            return np.asarray(self.positions[k], dtype=float)
        return np.asarray(self.origin) + k * self.slice_spacing * self.normal

    def points(self) -> np.ndarray:
        """Physical LPS coordinates of every voxel centre, shape (slices, rows, cols, 3)."""
        k = np.arange(self.n_slices)[:, None, None, None]
        r = np.arange(self.rows)[None, :, None, None]
        c = np.arange(self.cols)[None, None, :, None]
        X, Y = np.asarray(self.row_dir), np.asarray(self.col_dir)
        if self.positions is not None:
            origins = np.asarray(self.positions, dtype=float)[:, None, None, :]
            return origins + c * self.col_spacing * X + r * self.row_spacing * Y
        return (np.asarray(self.origin) + k * self.slice_spacing * self.normal
                + c * self.col_spacing * X + r * self.row_spacing * Y)


@dataclass(frozen=True)
class SeriesIds:
    patient_id: str
    patient_sex: str
    patient_age: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    series_number: int
    series_description: str
    sop_uids: tuple[str, ...]  # one per slice k


def _ct_dataset(geom: Geometry, ids: SeriesIds, k: int, pixels: np.ndarray, intercept: float,
                slope: float) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(ids.sop_uids[k])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ids.sop_uids[k]
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Modality = "CT"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.PatientName = f"Demo^{ids.patient_id}"
    ds.PatientID = ids.patient_id
    ds.PatientSex = ids.patient_sex
    ds.PatientAge = ids.patient_age
    ds.PatientBirthDate = ""
    ds.StudyInstanceUID = ids.study_uid
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = DEMO_DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = DEMO_TIME
    ds.StudyDescription = "Demo chest CT"
    ds.SeriesInstanceUID = ids.series_uid
    ds.SeriesNumber = ids.series_number
    ds.SeriesDescription = ids.series_description
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = ids.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = (geom.n_slices - k) if geom.descending_instances else (k + 1)
    position = geom.slice_position(k)
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*geom.row_dir, *geom.col_dir)]
    ds.SliceLocation = f"{float(position @ geom.normal):.6f}"
    ds.PixelSpacing = [f"{geom.row_spacing:.6f}", f"{geom.col_spacing:.6f}"]
    ds.SliceThickness = f"{geom.slice_spacing:.6f}"
    ds.SpacingBetweenSlices = f"{geom.slice_spacing:.6f}"
    if geom.gantry_tilt is not None:
        ds.GantryDetectorTilt = f"{geom.gantry_tilt:g}"
    ds.KVP = "120"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = geom.rows, geom.cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleType = "HU"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    ds.PixelData = pixels.astype("<i2").tobytes()
    return ds


def write_ct_series(folder: Path, geom: Geometry, ids: SeriesIds, hu: np.ndarray, file_names: list[str],
                    intercept: float = -1024.0, slope: float = 1.0) -> list[Dataset]:
    """Write one CT slice per file; returns the datasets (pixel data included) in slice order k."""
    folder.mkdir(parents=True, exist_ok=True)
    stored = np.clip(np.rint((hu - intercept) / slope), -32768, 32767).astype(np.int16)
    datasets = []
    for k in range(geom.n_slices):
        ds = _ct_dataset(geom, ids, k, stored[k], intercept, slope)
        ds.save_as(folder / file_names[k], enforce_file_format=True)
        datasets.append(ds)
    return datasets


def canonicalize(ds: Dataset, keep: set[str], make_uid: Callable[[int], str]) -> None:
    """Replace generated UIDs and timestamps by deterministic ones (in place, recursively)."""
    mapping: dict[str, str] = {}

    def new_uid(old: str) -> str:
        if old in keep or old in UID_dictionary:
            return old
        if old not in mapping:
            mapping[old] = make_uid(len(mapping))
        return mapping[old]

    def walk(d: Dataset) -> None:
        for elem in d:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.VR == "UI" and elem.value:
                if elem.VM > 1:
                    elem.value = [new_uid(str(v)) for v in elem.value]
                else:
                    elem.value = new_uid(str(elem.value))
            elif elem.VR == "DA" and elem.value:
                elem.value = DEMO_DATE
            elif elem.VR == "TM" and elem.value:
                elem.value = DEMO_TIME
            elif elem.VR == "DT" and elem.value:
                elem.value = DEMO_DATE + DEMO_TIME

    walk(ds)
    if hasattr(ds, "file_meta"):
        walk(ds.file_meta)


def _label_frames(masks: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    labels = sorted(masks)
    label_map = np.zeros(next(iter(masks.values())).shape, dtype=np.uint8)
    for number, label in enumerate(labels, start=1):
        label_map[masks[label]] = number
    return label_map, labels


def write_seg(path: Path, ct: list[Dataset], masks: dict[str, np.ndarray], series_uid: str, sop_uid: str,
              keep: set[str], make_uid: Callable[[int], str], segmentation_type: str = "BINARY") -> Dataset:
    """A DICOM SEG (highdicom) with one segment per lesion label, on the CT's frames: binary, or a label map
    (``segmentation_type="LABELMAP"``, Label Map Segmentation Storage)."""
    label_map, labels = _label_frames(masks)
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
    seg = hd.seg.Segmentation(
        source_images=ct,
        pixel_array=label_map,
        segmentation_type=hd.seg.SegmentationTypeValues(segmentation_type),
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=100,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions="radassets demo",
        device_serial_number="0",
        content_description="Demo lesion segmentation",
        content_creator_name="radassets^demo",
        series_description="Lesion SEG",
    )
    # pydicom 3.0 does not name the Label Map Segmentation Storage class: highdicom's SEG classes are kept as they are.
    canonicalize(seg, keep | {series_uid, sop_uid, *hd.seg.SOP_CLASS_UIDS}, make_uid)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path, enforce_file_format=True)
    return seg


def boundary_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed (row, col) polygons along the 0.5 iso-line of a 2-D binary mask (outer and hole boundaries)."""
    from skimage import measure

    padded = np.pad(mask.astype(np.float32), 1)  # so that contours touching the edge close
    polygons = []
    for contour in measure.find_contours(padded, 0.5):
        contour = contour - 1.0
        if np.allclose(contour[0], contour[-1]):
            contour = contour[:-1]
        if len(contour) >= 3:
            polygons.append(contour)
    return polygons


def contour_item(geom: Geometry, k: int, polygon: np.ndarray, ct_sop_uid: str, geometric_type: str = "CLOSED_PLANAR",
                  plane_offset: float = 0.0) -> Dataset:
    """One ContourSequence item: ``polygon`` (row, col) on slice ``k``, moved ``plane_offset`` mm along the
    slice normal (a contour drawn on another reconstruction's plane; 0 for the demo)."""
    X, Y = np.asarray(geom.row_dir), np.asarray(geom.col_dir)
    rows, cols = polygon[:, 0:1], polygon[:, 1:2]
    points = geom.slice_position(k) + cols * geom.col_spacing * X + rows * geom.row_spacing * Y
    if plane_offset:
        points = points + plane_offset * geom.normal
    image = Dataset()
    image.ReferencedSOPClassUID = CTImageStorage
    image.ReferencedSOPInstanceUID = ct_sop_uid
    item = Dataset()
    item.ContourImageSequence = [image]
    item.ContourGeometricType = geometric_type
    item.NumberOfContourPoints = len(points)
    item.ContourData = [f"{v:.4f}" for v in points.ravel()]
    return item


def write_rtstruct(path: Path, ct: list[Dataset], ct_folder: Path, geom: Geometry, masks: dict[str, np.ndarray],
                   series_uid: str, sop_uid: str, keep: set[str], make_uid: Callable[[int], str]) -> Dataset:
    """An RTSTRUCT with one ROI per lesion label, contoured on the CT slices (``ct`` in slice order k)."""
    from rt_utils import RTStructBuilder

    if geom.rows != geom.cols:
        raise ValueError("rt-utils' builder needs Rows == Columns")
    rt = RTStructBuilder.create_new(dicom_series_path=str(ct_folder))
    # rt-utils sorts slices by position along the normal, i.e. by our k; it wants (rows, cols, slices).
    for label in sorted(masks):
        rt.add_roi(mask=np.moveaxis(masks[label], 0, -1), color=[255, 0, 0], name=label)
    ds = rt.ds
    # Replace rt-utils' pixel-centre contours by boundary contours (see the module docstring).
    for roi, label in zip(ds.ROIContourSequence, sorted(masks)):
        roi.ContourSequence = [contour_item(geom, k, polygon, str(ct[k].SOPInstanceUID))
                               for k in range(geom.n_slices) for polygon in boundary_contours(masks[label][k])]
    ds.SeriesDescription = "Lesion RTSTRUCT"
    ds.Manufacturer = MANUFACTURER
    canonicalize(ds, keep, make_uid)
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds

