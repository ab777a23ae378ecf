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

A CT resampled onto a regular grid (gantry tilt, uneven gaps: ``radassets.imaging.ct.regrid``) comes with
its acquired slices' geometry (``native_grid``). Its masks were drawn on the acquired slices, which are
not planes of the corrected grid, so they are placed there first and resampled nearest-neighbour onto the
CT's grid the way the CT was: an RTSTRUCT's contours are rasterized on the acquired slices (each contour
on the slice it lies in), a SEG's frames are put on the slice at their position (highdicom's
``get_volume`` refuses frames that are sheared or unevenly spaced; a SEG whose frames do form a regular
volume is read as before).

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

from radassets.imaging.ct import QCError, describe_exception, regrid

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


def read_seg_segments(seg_path: Path, ct: sitk.Image, ct_frame_of_reference: str | None = None,
                      native: dict | None = None) -> list[Segment]:
    """Every segment of a DICOM SEG as a binary image on the grid of ``ct`` (``native``: the acquired slices of a
    regridded CT, see the module docstring)."""
    header = read_mask_header(seg_path)
    _check_frame(header, ct_frame_of_reference)
    import highdicom as hd  # here: the code location imports this module, and only SEG reading needs highdicom

    with _failures_of(seg_path, header.series_uid):
        return _seg_segments(hd.seg.segread(str(seg_path)), header, ct, native)


def _seg_segments(seg: hd.seg.Segmentation, header: MaskHeader, ct: sitk.Image,
                  native: dict | None) -> list[Segment]:
    segments = []
    for description in seg.SegmentSequence:
        number = int(description.SegmentNumber)
        try:
            volume = seg.get_volume(segment_numbers=[number], combine_segments=True, dtype=np.uint8)
        except (RuntimeError, ValueError) as e:
            if native is None:
                raise MaskError("no_regular_volume", header.series_uid,
                                f"segment {number} ({description.SegmentLabel}) has no regular volume: {e}") from None
            on_ct = _on_regridded_ct(_seg_on_native(seg, number, native, header), native, ct)
        else:
            # With combine_segments the voxel values are the segment number: binarize before counting.
            own = sitk.Cast(volume.to_simpleitk() > 0, sitk.sitkUInt8)
            on_ct = sitk.Resample(own, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        segments.append(Segment(str(description.SegmentLabel), number, on_ct,
                                int(sitk.GetArrayViewFromImage(on_ct).sum())))
    return segments


def _native_slice(native: dict, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For points (n, 3) on the acquired slices: the index of the slice each lies in and its distance along the
    step between slice origins (mm). A point more than a quarter of the smallest gap off every slice is on
    none of them (an index of -1)."""
    basis = np.column_stack([native["row_dir"], native["col_dir"], native["step_dir"]])
    along = np.linalg.solve(basis, (np.asarray(points, float) - native["origin"]).T)[2]
    offsets = np.asarray(native["offsets"])
    index = np.abs(along[:, None] - offsets[None, :]).argmin(axis=1)
    off = np.abs(along - offsets[index]) > 0.25 * np.diff(offsets).min()
    return np.where(off, -1, index), along


def _seg_on_native(seg: hd.seg.Segmentation, number: int, native: dict, header: MaskHeader) -> np.ndarray:
    """Segment ``number``'s frames on the acquired slices (slices, rows, columns; 0/1): each frame on the slice
    at its ImagePositionPatient. The frames must have the slices' rows, columns, pixel spacing, orientation
    and in-plane origin (a SEG drawn on the CT's own images has them)."""
    cols, rows = native["size"]
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    spacing = np.asarray(shared.PixelMeasuresSequence[0].PixelSpacing, float)[::-1]  # (columns, rows)
    if ((int(seg.Rows), int(seg.Columns)) != (rows, cols)
            or np.abs(orientation - np.r_[native["row_dir"], native["col_dir"]]).max() > 1e-4
            or np.abs(spacing - native["pixel_spacing"]).max() > 1e-3 * max(native["pixel_spacing"])):
        raise MaskError("no_regular_volume", header.series_uid,
                        f"segment {number}: its frames are neither a regular volume nor the CT's acquired slices "
                        f"(rows, columns, pixel spacing or orientation differ)")
    # A SEG of one segment may name it once, in the shared functional groups.
    frames = [(i, item) for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence)
              if int(item.get("SegmentIdentificationSequence", shared.get("SegmentIdentificationSequence"))[0]
                     .ReferencedSegmentNumber) == number]
    positions = np.array([[float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient] for _, item in frames])
    stack = np.zeros((len(native["offsets"]), rows, cols), dtype=np.uint8)
    if not frames:
        return stack
    index, along = _native_slice(native, positions)
    in_plane = positions - np.asarray(native["origin"]) - np.outer(along, native["step_dir"])
    if (index < 0).any() or np.linalg.norm(in_plane, axis=1).max() > 1e-2 * min(native["pixel_spacing"]) + 1e-3:
        raise MaskError("no_regular_volume", header.series_uid,
                        f"segment {number}: frames lie off the CT's acquired slices")
    pixels = seg.pixel_array.reshape(-1, rows, cols)
    # A fractional SEG stores 0..MaximumFractionalValue: a voxel is in the segment from half of it.
    threshold = float(seg.get("MaximumFractionalValue", 1)) / 2 if seg.SegmentationType == "FRACTIONAL" else 0
    for (i, _), k in zip(frames, index):
        stack[k] |= (pixels[i] > threshold).astype(np.uint8)
    return stack


def _on_regridded_ct(stack: np.ndarray, native: dict, ct: sitk.Image) -> sitk.Image:
    """A mask on the acquired slices → uint8 0/1 on the regridded CT's grid (nearest neighbour, as the CT)."""
    image = sitk.Cast(regrid(stack, native, sitk.sitkNearestNeighbor, 0), sitk.sitkUInt8)
    if image.GetSize() != ct.GetSize():
        raise ValueError(f"the acquired slices regrid to {image.GetSize()}, not the CT's {ct.GetSize()}")
    image.CopyInformation(ct)
    return image


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


def _native_index_grid(native: dict) -> sitk.Image:
    """The acquired slices as an image whose slices are 1 mm apart along the step between slice origins
    (sheared for a tilt): contours moved onto it (``_onto_index_grid``) are rasterized each on its own slice,
    however unevenly the real slices lie."""
    image = sitk.Image([*native["size"], len(native["offsets"])], sitk.sitkUInt8)
    image.SetOrigin(native["origin"])
    image.SetSpacing((*native["pixel_spacing"], 1.0))
    image.SetDirection(np.column_stack([native["row_dir"], native["col_dir"], native["step_dir"]]).ravel().tolist())
    return image


def _onto_index_grid(contours: list[dict], native: dict, series: str, label: str) -> list[dict]:
    """Contours on the acquired slices moved along the step between slice origins onto ``_native_index_grid``
    (slice k at k mm): in plane nothing moves, so the rasterizer fills each polygon as it lies."""
    moved = []
    for contour in contours:
        points = np.column_stack([contour["points"][a] for a in "xyz"])
        index, along = _native_slice(native, points)
        if (index < 0).any():
            raise MaskError("contour_out_of_bounds", series, f"ROI {label} has a contour off the CT's slices")
        points = points + np.outer(index - along, native["step_dir"])
        moved.append(dict(contour, points={a: points[:, i].tolist() for i, a in enumerate("xyz")}))
    return moved


def read_rtstruct_segments(rtstruct_path: Path, ct: sitk.Image, ct_frame_of_reference: str | None = None,
                           native: dict | None = None) -> list[Segment]:
    """Every ROI of an RTSTRUCT rasterized on the grid of ``ct`` (see the module docstring; ``native``: the
    acquired slices of a regridded CT)."""
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
            drawn = contours.get(number, [])
            grid = ct
            if native is not None:
                drawn = _onto_index_grid(drawn, native, header.series_uid, f"{number} ({label})")
                grid = _native_index_grid(native)
            try:
                mask = rasterize.convert(drawn, grid, 0, 1)
            except (ContourOutOfBoundsException, IndexError):
                raise MaskError("contour_out_of_bounds", header.series_uid,
                                f"ROI {number} ({label}) has contours outside the CT volume") from None
            if native is not None:
                mask = _on_regridded_ct(sitk.GetArrayFromImage(mask), native, ct)
            # dcmrtstruct2nii returns the array as an image without the CT's geometry: restore it.
            mask = sitk.Cast(mask, sitk.sitkUInt8)
            mask.CopyInformation(ct)
            segments.append(Segment(label, number, mask, int(sitk.GetArrayViewFromImage(mask).sum())))
        return segments


def read_mask_segments(path: Path, ct: sitk.Image, ct_frame_of_reference: str | None = None,
                       native: dict | None = None) -> list[Segment]:
    """The segments of a SEG or RTSTRUCT file on the grid of ``ct`` (``native``: the acquired slices of a
    regridded CT, its QC row's ``native_grid``)."""
    header = read_mask_header(path)
    reader = read_seg_segments if header.modality == "SEG" else read_rtstruct_segments
    return reader(path, ct, ct_frame_of_reference, native)


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
