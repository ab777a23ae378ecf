"""Tumour masks on the CT grid: DICOM SEG and RTSTRUCT, one binary image per segment.

SEG (highdicom): each segment is read as a volume in its own frame geometry (``get_volume``,
LPS) and resampled nearest-neighbour onto the CT image's grid, so a SEG whose frames do not
coincide with the CT slices (another spacing, a subset, another orientation) still lands where
it belongs.

RTSTRUCT (dcmrtstruct2nii): the ROI contours are read with pydicom and rasterized by
dcmrtstruct2nii's ``DcmPatientCoords2Mask``: every contour point goes through SimpleITK's
``TransformPhysicalPointToContinuousIndex`` of the CT image, the polygon is filled in that
slice by pixel-centre inclusion (scikit-image), and nested contours are XOR-ed (holes). Because
the physical-to-index map is the image's own (direction and spacing of each axis), non-square
pixels, flipped and oblique orientations are handled. Why not the alternatives:
rt-utils 1.2.7 scales the column index by the row spacing (wrong for non-square pixels);
plastimatch 1.10 gives the same masks (centroids equal to 0.01 mm on the demo) but is a separate
program with files in between, where this works in the process on the CT image already read.
(An offset seen with plastimatch earlier came from the demo's old rt-utils contours, not from it.)

A mask on another FrameOfReference than its CT is refused. Every failure is a ``MaskError``
with a short ``code`` for the QC table and a message naming the mask series and the cause; any
other exception while reading one mask file (a damaged file, a malformed dataset) becomes its
``mask_unreadable`` failure, with the file, the exception's type and message.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
import SimpleITK as sitk

from radassets.imaging.ct import QCError, describe_exception

if TYPE_CHECKING:
    import highdicom as hd

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


class MaskError(QCError):
    """A mask cannot be placed on its CT."""

    CODES = ("mask_unreadable", "not_a_mask", "frame_of_reference", "no_regular_volume", "contour_out_of_bounds",
             "no_reference", "empty_mask", "changed_since_indexed")
    NOUN = "mask"


@dataclass
class Segment:
    label: str
    number: int
    image: sitk.Image  # uint8 0/1 on the CT grid
    voxels: int


@dataclass(frozen=True)
class MaskHeader:
    """What a mask file says about itself before any rasterization."""

    path: Path
    modality: str  # SEG or RTSTRUCT
    series_uid: str
    frame_of_reference: str | None
    referenced_series: tuple[str, ...]  # SeriesInstanceUIDs of the images it was drawn on
    labels: tuple[str, ...]


@contextlib.contextmanager
def _failures_of(path: Path, series: str) -> Iterator[None]:
    """Any exception while reading or rasterizing one mask file (pydicom, highdicom, dcmrtstruct2nii,
    SimpleITK, or an attribute missing from a malformed dataset) is that file's ``mask_unreadable``
    failure, recorded with its type and where it was raised."""
    try:
        yield
    except MaskError:
        raise
    except Exception as e:  # noqa: BLE001 - recorded in the QC row, never swallowed
        raise MaskError("mask_unreadable", series, f"cannot read {path}: {describe_exception(e)}") from None


def read_mask_header(path: Path) -> MaskHeader:
    """Modality, frame of reference, referenced CT series and segment labels of a SEG or RTSTRUCT."""
    with _failures_of(path, Path(path).name):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    uid = str(ds.get("SeriesInstanceUID", Path(path).name))
    with _failures_of(path, uid):
        return _header(Path(path), ds, uid)


def _header(path: Path, ds: pydicom.Dataset, uid: str) -> MaskHeader:
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == SEG_STORAGE:
        referenced = {str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", [])}
        labels = tuple(str(s.SegmentLabel) for s in ds.get("SegmentSequence", []))
        return MaskHeader(Path(path), "SEG", uid, str(ds.get("FrameOfReferenceUID", "")) or None,
                          tuple(sorted(referenced)), labels)
    if sop_class == RTSTRUCT_STORAGE:
        referenced, frames = set(), set()
        for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
            frames.add(str(frame.FrameOfReferenceUID))
            for study in frame.get("RTReferencedStudySequence", []):
                for series in study.get("RTReferencedSeriesSequence", []):
                    referenced.add(str(series.SeriesInstanceUID))
        frames |= {str(r.ReferencedFrameOfReferenceUID) for r in ds.get("StructureSetROISequence", [])
                   if "ReferencedFrameOfReferenceUID" in r}
        labels = tuple(str(r.ROIName) for r in ds.get("StructureSetROISequence", []))
        return MaskHeader(Path(path), "RTSTRUCT", uid, next(iter(frames)) if len(frames) == 1 else None,
                          tuple(sorted(referenced)), labels)
    name = pydicom.uid.UID(sop_class).name if sop_class else "no SOP class"
    raise MaskError("not_a_mask", uid, f"{path} is {name}, not SEG or RTSTRUCT")


def _check_frame(header: MaskHeader, ct_frame_of_reference: str | None) -> None:
    if ct_frame_of_reference and header.frame_of_reference and header.frame_of_reference != ct_frame_of_reference:
        raise MaskError("frame_of_reference", header.series_uid,
                        f"FrameOfReferenceUID {header.frame_of_reference} is not the CT's {ct_frame_of_reference}")


def read_seg_segments(seg_path: Path, ct: sitk.Image, ct_frame_of_reference: str | None = None) -> list[Segment]:
    """Every segment of a DICOM SEG as a binary image on the grid of ``ct``."""
    header = read_mask_header(seg_path)
    _check_frame(header, ct_frame_of_reference)
    import highdicom as hd  # here: the code location imports this module, and only SEG reading needs highdicom

    with _failures_of(seg_path, header.series_uid):
        return _seg_segments(hd.seg.segread(str(seg_path)), header, ct)


def _seg_segments(seg: hd.seg.Segmentation, header: MaskHeader, ct: sitk.Image) -> list[Segment]:
    segments = []
    for description in seg.SegmentSequence:
        number = int(description.SegmentNumber)
        try:
            volume = seg.get_volume(segment_numbers=[number], combine_segments=True, dtype=np.uint8)
        except (RuntimeError, ValueError) as e:
            raise MaskError("no_regular_volume", header.series_uid,
                            f"segment {number} ({description.SegmentLabel}) has no regular volume: {e}") from None
        # With combine_segments the voxel values are the segment number: binarize before counting.
        own = sitk.Cast(volume.to_simpleitk() > 0, sitk.sitkUInt8)
        on_ct = sitk.Resample(own, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        segments.append(Segment(str(description.SegmentLabel), number, on_ct,
                                int(sitk.GetArrayViewFromImage(on_ct).sum())))
    return segments


def _roi_contours(ds: pydicom.Dataset, path: Path) -> dict[int, list[dict]]:
    """ROI number → contours in the form dcmrtstruct2nii's rasterizer takes."""
    out: dict[int, list[dict]] = {}
    for roi in ds.get("ROIContourSequence", []):
        contours = []
        for n, contour in enumerate(roi.get("ContourSequence", []), start=1):
            values = np.asarray(contour.ContourData, dtype=float).ravel()
            if values.size % 3:
                raise MaskError("mask_unreadable", str(ds.get("SeriesInstanceUID", path)),
                                f"{path}: contour {n} of ROI {roi.ReferencedROINumber} has {values.size} ContourData "
                                f"values, not a multiple of 3 (x, y, z): the file is damaged")
            points = values.reshape(-1, 3)
            contours.append({"type": str(contour.get("ContourGeometricType", "CLOSED_PLANAR")),
                             "points": {"x": points[:, 0].tolist(), "y": points[:, 1].tolist(),
                                        "z": points[:, 2].tolist()}})
        out[int(roi.ReferencedROINumber)] = contours
    return out


def read_rtstruct_segments(rtstruct_path: Path, ct: sitk.Image, ct_frame_of_reference: str | None = None) -> list[Segment]:
    """Every ROI of an RTSTRUCT rasterized on the grid of ``ct`` (see the module docstring)."""
    # The package prints a citation request on import; it is cited in the README instead of on stdout.
    with contextlib.redirect_stdout(io.StringIO()):
        from dcmrtstruct2nii.adapters.convert.rtstructcontour2mask import DcmPatientCoords2Mask
        from dcmrtstruct2nii.exceptions import ContourOutOfBoundsException

    header = read_mask_header(rtstruct_path)
    _check_frame(header, ct_frame_of_reference)
    with _failures_of(rtstruct_path, header.series_uid):
        ds = pydicom.dcmread(rtstruct_path)
        contours = _roi_contours(ds, Path(rtstruct_path))
        rasterize = DcmPatientCoords2Mask()
        segments = []
        for roi in ds.get("StructureSetROISequence", []):
            number, label = int(roi.ROINumber), str(roi.ROIName)
            try:
                mask = rasterize.convert(contours.get(number, []), ct, 0, 1)
            except (ContourOutOfBoundsException, IndexError):
                raise MaskError("contour_out_of_bounds", header.series_uid,
                                f"ROI {number} ({label}) has contours outside the CT volume") from None
            # dcmrtstruct2nii returns the array as an image without the CT's geometry: restore it.
            mask = sitk.Cast(mask, sitk.sitkUInt8)
            mask.CopyInformation(ct)
            segments.append(Segment(label, number, mask, int(sitk.GetArrayViewFromImage(mask).sum())))
        return segments


def read_mask_segments(path: Path, ct: sitk.Image, ct_frame_of_reference: str | None = None) -> list[Segment]:
    """The segments of a SEG or RTSTRUCT file on the grid of ``ct``."""
    header = read_mask_header(path)
    reader = read_seg_segments if header.modality == "SEG" else read_rtstruct_segments
    return reader(path, ct, ct_frame_of_reference)


def select_segments(segments: list[Segment], labels: list[str] | None, rule: str) -> list[Segment]:
    """Apply a dataset version's segment selection: labels (regular expressions), largest, or all."""
    chosen = segments
    if labels:
        patterns = [re.compile(p) for p in labels]
        chosen = [s for s in segments if any(p.fullmatch(s.label) for p in patterns)]
    if rule == "largest" and chosen:
        chosen = [max(chosen, key=lambda s: s.voxels)]
    return chosen


def centroid_lps(mask: sitk.Image) -> np.ndarray:
    """Physical (LPS mm) centroid of a binary mask's voxel centres."""
    k, j, i = np.nonzero(sitk.GetArrayViewFromImage(mask))
    if len(i) == 0:
        raise ValueError("empty mask: no centroid")
    origin = np.array(mask.GetOrigin())
    axes = np.array(mask.GetDirection()).reshape(3, 3) * np.array(mask.GetSpacing())
    return origin + axes @ np.array([i.mean(), j.mean(), k.mean()])
