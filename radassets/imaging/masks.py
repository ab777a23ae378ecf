"""Tumour masks on the CT grid: DICOM SEG and RTSTRUCT, one binary image per segment.

SEG (highdicom): each segment is read as a volume in its own frame geometry (``get_volume``,
LPS) and resampled nearest-neighbour onto the CT image's grid, so a SEG whose frames do not
coincide with the CT slices (another spacing, a subset, another orientation, frames in any order,
empty frames omitted) still lands where it belongs. Binary, fractional and label-map SEGs
(Label Map Segmentation Storage) are read alike, each segment on its own, so overlapping segments
stay separate masks. A FRACTIONAL segment (PROBABILITY or OCCUPANCY) is binarised in its own
frames before resampling: a voxel belongs to it when its value is at least half the
MaximumFractionalValue (highdicom rescales the stored values to 0..1; the voxel is in when ≥ 0.5),
the convention that makes an occupancy map the set of voxels more than half inside.

RTSTRUCT: the ROI contours are read with pydicom and rasterized on the CT image the way
dcmrtstruct2nii's ``DcmPatientCoords2Mask`` does it (contour points through the image's own
physical-to-index map, the polygon filled in its slice by pixel-centre inclusion with
scikit-image's ``polygon2mask``, nested contours of one plane XOR-ed, so an inner contour is a
hole), with what clinical structure sets need and that rasterizer does not do (it takes the slice of a
contour from its first point, silently wraps a negative slice index to the last slice and clips
polygons at the image edge), so the loop is written here:

- Each contour goes to the CT slice nearest to its plane (the mean continuous slice index of its
  points, rounded half up), provided every point lies within half a slice spacing of that slice:
  contours drawn on another reconstruction, or written off the slice centres, land on the slice that
  holds them. A contour whose points are not all within half a spacing of one slice (drawn on a plane
  that is not a CT slice plane) is refused (``contour_not_on_slice``); one beyond the volume (a
  slice index outside the CT, or points more than half a voxel outside a slice) is refused
  (``contour_out_of_bounds``). plastimatch 1.10 also rounds a contour to its nearest slice but
  silently drops a contour beyond the volume and clips one at the edge; here the mask is refused,
  since a partly kept structure would have a wrong volume.
- Contours of one plane are XOR-ed (holes, islands); contours of different drawing planes that land
  on the same CT slice (a structure set drawn on thinner slices) are OR-ed, since they are not
  nested in one plane.
- OPEN_PLANAR, OPEN_NONPLANAR and POINT contours (and closed ones with fewer than three points)
  enclose no area: they are skipped and counted (``Segment.contours_skipped``, the QC row's
  ``contours_skipped``), never filled as polygons. An ROI made only of such contours gives no
  segment; ``read_rtstruct`` says which.
- Each contour names the CT image it was drawn on (ContourImageSequence); the structure set lists the
  images of each referenced series. ``MaskHeader.roi_series`` gives, per ROI, the series its contours
  reference, so that a structure set drawn on several CT series places each ROI on its own CT;
  an ROI whose contours reference two series is refused (``roi_spans_series``).

Why not the alternatives: rt-utils 1.2.7 scales the column index by the row spacing (wrong for
non-square pixels); plastimatch 1.10 gives the same masks on slice-aligned contours (centroids equal
to 0.01 mm on the demo) but is a separate program with files in between, where this works in the
process on the CT image already read.

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
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
import SimpleITK as sitk

from radassets.imaging.ct import QCError, describe_exception, regrid

if TYPE_CHECKING:
    import highdicom as hd

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"  # Label Map Segmentation Storage (2024)
SEG_STORAGES = (SEG_STORAGE, LABELMAP_SEG_STORAGE)
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
# ContourGeometricType: the closed ones are filled; the others enclose no area and are skipped (counted).
# INTERPOLATED_PLANAR is not a DICOM term but dcmrtstruct2nii fills it, and so does this.
FILLED_CONTOURS = ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR", "INTERPOLATED_PLANAR")
SKIPPED_CONTOURS = ("OPEN_PLANAR", "OPEN_NONPLANAR", "POINT")
FRACTIONAL_THRESHOLD = 0.5  # of MaximumFractionalValue: see the module docstring
# Drawing planes closer than this (in slice spacings) are one plane: its contours are XOR-ed. Structure sets
# write ContourData to 0.01 mm or better, far below 1 % of a CT slice spacing.
SAME_PLANE = 0.01
# A point may lie this far (in voxels) beyond the centre of an edge pixel: the edge of the pixel itself, plus
# a hundredth for the rounding of ContourData (a contour along the image's edge is inside the image).
EDGE_TOLERANCE = 0.51


class MaskError(QCError):
    """A mask cannot be placed on its CT."""

    CODES = ("mask_unreadable", "not_a_mask", "frame_of_reference", "no_regular_volume", "contour_out_of_bounds",
             "no_reference", "empty_mask", "changed_since_indexed", "contour_not_on_slice", "contour_type",
             "roi_spans_series")
    NOUN = "mask"


@dataclass
class Segment:
    label: str
    number: int
    image: sitk.Image  # uint8 0/1 on the CT grid
    voxels: int
    contours_skipped: int = 0  # RTSTRUCT: open and point contours of the ROI, not filled


@dataclass(frozen=True)
class MaskHeader:
    """What a mask file says about itself before any rasterization."""

    path: Path
    modality: str  # SEG or RTSTRUCT
    series_uid: str
    frame_of_reference: str | None
    referenced_series: tuple[str, ...]  # SeriesInstanceUIDs of the images it was drawn on
    labels: tuple[str, ...]
    # RTSTRUCT: (ROI number, ROI name, SeriesInstanceUIDs of the images its contours name), by ROI number. A
    # contour whose image the structure set does not list names no series.
    roi_series: tuple[tuple[int, str, tuple[str, ...]], ...] = ()


@contextlib.contextmanager
def _failures_of(path: Path, series: str) -> Iterator[None]:
    """Any exception while reading or rasterizing one mask file (pydicom, highdicom, scikit-image,
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
    if sop_class in SEG_STORAGES:
        referenced = {str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", [])}
        # A label map's segment 0 is its background (highdicom writes it), not a segment.
        labels = tuple(str(s.SegmentLabel) for s in ds.get("SegmentSequence", []) if int(s.SegmentNumber) != 0)
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
                          tuple(sorted(referenced)), labels, _roi_series(ds))
    name = pydicom.uid.UID(sop_class).name if sop_class else "no SOP class"
    raise MaskError("not_a_mask", uid, f"{path} is {name}, not SEG or RTSTRUCT")


def _image_series(ds: pydicom.Dataset) -> dict[str, str]:
    """SOPInstanceUID → SeriesInstanceUID of every image the structure set lists (RTReferencedSeriesSequence)."""
    out = {}
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                for image in series.get("ContourImageSequence", []):
                    out[str(image.ReferencedSOPInstanceUID)] = str(series.SeriesInstanceUID)
    return out


def _roi_series(ds: pydicom.Dataset) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """Per ROI, the series of the images its contours were drawn on (see ``MaskHeader.roi_series``)."""
    series_of = _image_series(ds)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    out = []
    for roi in ds.get("ROIContourSequence", []):
        named = {series_of[str(image.ReferencedSOPInstanceUID)]
                 for contour in roi.get("ContourSequence", []) for image in contour.get("ContourImageSequence", [])
                 if str(image.ReferencedSOPInstanceUID) in series_of}
        number = int(roi.ReferencedROINumber)
        out.append((number, names.get(number, "?"), tuple(sorted(named))))
    return tuple(sorted(out))


def rois_by_series(header: MaskHeader) -> dict[str | None, list[int]]:
    """The ROI numbers of a structure set by the CT series their contours were drawn on (None: the contours name
    no listed image, so the ROI goes where the whole structure set goes). An ROI drawn on two series is refused:
    its contours would be rasterized on one CT's grid from planes of another."""
    out: dict[str | None, list[int]] = {}
    for number, label, series in header.roi_series:
        if len(series) > 1:
            raise MaskError("roi_spans_series", header.series_uid,
                            f"ROI {number} ({label}) has contours drawn on {len(series)} CT series "
                            f"({', '.join(series)}); one series per ROI expected")
        out.setdefault(series[0] if series else None, []).append(number)
    return out


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
    fractional = str(seg.get("SegmentationType", "")) == "FRACTIONAL"
    segments = []
    for number in seg.segment_numbers:  # a label map's background (segment 0) left out
        description = seg.get_segment_description(number)
        try:
            # One segment at a time: overlapping segments stay separate masks. Binary and label-map voxels are the
            # segment number (combine_segments); fractional ones are rescaled to 0..1 (see the module docstring).
            volume = seg.get_volume(segment_numbers=[number], combine_segments=not fractional,
                                    dtype=np.float32 if fractional else np.uint8, rescale_fractional=True)
        except (RuntimeError, ValueError) as e:
            if native is None:
                raise MaskError("no_regular_volume", header.series_uid,
                                f"segment {number} ({description.SegmentLabel}) has no regular volume: {e}") from None
            # A regridded CT's SEG: frames on the acquired (sheared or unevenly spaced) slices, placed by position.
            on_ct = _on_regridded_ct(_seg_on_native(seg, number, native, header), native, ct)
        else:
            if fractional:
                volume = volume.squeeze_channel() if volume.number_of_channel_dimensions else volume
                own = sitk.Cast(volume.to_simpleitk() >= FRACTIONAL_THRESHOLD, sitk.sitkUInt8)
            else:
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
    labelmap = seg.SegmentationType == "LABELMAP"
    # A label map's frames hold every segment (voxel value = segment number); a binary or fractional SEG's frames
    # each name their segment, once in the shared functional groups when there is only one.
    frames = [(i, item) for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence)
              if labelmap or int(item.get("SegmentIdentificationSequence", shared.get("SegmentIdentificationSequence"))[0]
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
    fractional = seg.SegmentationType == "FRACTIONAL"
    threshold = FRACTIONAL_THRESHOLD * float(seg.get("MaximumFractionalValue", 1)) if fractional else 0.5
    for (i, _), k in zip(frames, index):
        inside = pixels[i] == number if labelmap else pixels[i] >= threshold
        stack[k] |= inside.astype(np.uint8)
    return stack


def _on_regridded_ct(stack: np.ndarray, native: dict, ct: sitk.Image) -> sitk.Image:
    """A mask on the acquired slices → uint8 0/1 on the regridded CT's grid (nearest neighbour, as the CT)."""
    image = sitk.Cast(regrid(stack, native, sitk.sitkNearestNeighbor, 0), sitk.sitkUInt8)
    if image.GetSize() != ct.GetSize():
        raise ValueError(f"the acquired slices regrid to {image.GetSize()}, not the CT's {ct.GetSize()}")
    image.CopyInformation(ct)
    return image


@dataclass(frozen=True)
class Contour:
    kind: str  # ContourGeometricType
    points: np.ndarray  # (n, 3) LPS mm


@dataclass
class MaskReading:
    """What a mask gave on one CT: the segments, and (a structure set) per ROI the contours that were skipped."""

    segments: list[Segment]
    skipped: dict[str, int] = field(default_factory=dict)  # ROI name → open/point contours not filled
    without_area: list[str] = field(default_factory=list)  # ROIs made only of such contours: no segment

    @property
    def contours_skipped(self) -> int:
        return sum(self.skipped.values())

    def note(self) -> str | None:
        """What was left out, for the QC message; None when nothing was."""
        if not self.skipped:
            return None
        counts = ", ".join(f"{label}: {n}" for label, n in sorted(self.skipped.items()))
        text = f"{self.contours_skipped} open or point contour(s) skipped ({counts})"
        if self.without_area:
            text += f"; ROI(s) {sorted(self.without_area)} have no closed contour: no segment"
        return text


def _roi_contours(ds: pydicom.Dataset, path: Path) -> dict[int, list[Contour]]:
    """ROI number → its contours (type and LPS points)."""
    out: dict[int, list[Contour]] = {}
    for roi in ds.get("ROIContourSequence", []):
        contours = []
        for n, contour in enumerate(roi.get("ContourSequence", []), start=1):
            values = np.asarray(contour.get("ContourData", []), dtype=float).ravel()
            if values.size % 3:
                raise MaskError("mask_unreadable", str(ds.get("SeriesInstanceUID", path)),
                                f"{path}: contour {n} of ROI {roi.ReferencedROINumber} has {values.size} ContourData "
                                f"values, not a multiple of 3 (x, y, z): the file is damaged")
            contours.append(Contour(str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).upper(),
                                    values.reshape(-1, 3)))
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


def _onto_index_grid(contours: list[Contour], native: dict, series: str, label: str) -> list[Contour]:
    """Filled contours on the acquired slices moved along the step between slice origins onto
    ``_native_index_grid`` (slice k at k mm): in plane nothing moves, so each polygon is filled as it lies.
    Open and point contours are left as they are: they are skipped and counted, never filled."""
    moved = []
    for contour in contours:
        if contour.kind not in FILLED_CONTOURS or len(contour.points) < 3:
            moved.append(contour)
            continue
        index, along = _native_slice(native, contour.points)
        if (index < 0).any():
            offsets = native["offsets"]
            beyond = along.min() < offsets[0] or along.max() > offsets[-1]
            raise MaskError("contour_out_of_bounds" if beyond else "contour_not_on_slice", series,
                            f"ROI {label} has a contour {'beyond' if beyond else 'between'} the CT's acquired slices "
                            f"(more than a quarter of the smallest gap from any of them)")
        moved.append(Contour(contour.kind, contour.points + np.outer(index - along, native["step_dir"])))
    return moved


def continuous_index(ct: sitk.Image, points: np.ndarray) -> np.ndarray:
    """(n, 3) LPS points → (n, 3) continuous (i, j, k) indices of ``ct``: SimpleITK's
    ``TransformPhysicalPointToContinuousIndex``, for all points at once (origin, direction and spacing)."""
    axes = np.array(ct.GetDirection()).reshape(3, 3) * np.array(ct.GetSpacing())
    return np.linalg.solve(axes, (points - np.array(ct.GetOrigin())).T).T


def _slice_of(contour: Contour, index: np.ndarray, ct: sitk.Image, where: str, series: str) -> int:
    """The CT slice a contour lies on (see the module docstring), or its refusal."""
    size = ct.GetSize()
    k = int(np.floor(index[:, 2].mean() + 0.5))  # nearest slice, a tie rounded up: the same on every machine
    if not np.all(np.abs(index[:, 2] - k) <= 0.5):
        span = f"{index[:, 2].min():.2f}..{index[:, 2].max():.2f}"
        raise MaskError("contour_not_on_slice", series,
                        f"{where} spans slice indices {span}: its points are not within half a slice spacing "
                        f"({ct.GetSpacing()[2]:g} mm) of one CT slice, so it was not drawn on a CT slice plane")
    outside = (k < 0 or k >= size[2] or np.any(index[:, :2] < -EDGE_TOLERANCE)
               or np.any(index[:, 0] > size[0] - 1 + EDGE_TOLERANCE) or np.any(index[:, 1] > size[1] - 1 + EDGE_TOLERANCE))
    if outside:
        raise MaskError("contour_out_of_bounds", series,
                        f"{where} lies outside the CT volume (nearest slice index {k} of {size[2]}, in-plane indices "
                        f"{index[:, 0].min():.1f}..{index[:, 0].max():.1f} x {index[:, 1].min():.1f}.."
                        f"{index[:, 1].max():.1f} of {size[0]} x {size[1]})")
    return k


def _rasterize(contours: list[Contour], ct: sitk.Image, label: str, series: str) -> tuple[np.ndarray, int]:
    """The ROI's mask array (k, j, i) on ``ct`` and the number of contours skipped (see the module docstring)."""
    from skimage.draw import polygon2mask

    size = ct.GetSize()
    planes: list[tuple[float, int, np.ndarray]] = []  # (drawing plane, CT slice, filled polygon)
    skipped = 0
    for n, contour in enumerate(contours, start=1):
        if contour.kind in SKIPPED_CONTOURS or (contour.kind in FILLED_CONTOURS and len(contour.points) < 3):
            skipped += 1
            continue
        where = f"ROI {label}, contour {n} ({contour.kind})"
        if contour.kind not in FILLED_CONTOURS:
            raise MaskError("contour_type", series, f"{where}: unknown ContourGeometricType")
        index = continuous_index(ct, contour.points)
        k = _slice_of(contour, index, ct, where, series)
        # polygon2mask takes (row, column) = (j, i) vertices: a pixel is in when its centre is inside.
        planes.append((float(index[:, 2].mean()), k, polygon2mask((size[1], size[0]), index[:, [1, 0]])))
    mask = np.zeros((size[2], size[1], size[0]), dtype=bool)
    for k, groups in _by_plane(planes).items():
        for filled in groups:
            mask[k] |= np.logical_xor.reduce(filled)  # XOR within a drawing plane, OR across planes
    return mask.astype(np.uint8), skipped


def _by_plane(planes: list[tuple[float, int, np.ndarray]]) -> dict[int, list[list[np.ndarray]]]:
    """CT slice → the filled polygons of each drawing plane that landed on it (planes within ``SAME_PLANE``
    slice spacings of each other are one)."""
    out: dict[int, list[list[np.ndarray]]] = {}
    last: dict[int, float] = {}
    for position, k, filled in sorted(planes, key=lambda p: (p[1], p[0])):
        groups = out.setdefault(k, [])
        if not groups or position - last[k] > SAME_PLANE:
            groups.append([])
        groups[-1].append(filled)
        last[k] = position
    return out


def read_rtstruct(rtstruct_path: Path, ct: sitk.Image, ct_frame_of_reference: str | None = None,
                  rois: Collection[int] | None = None, native: dict | None = None) -> MaskReading:
    """The ROIs of an RTSTRUCT (those numbered in ``rois``; all by default) rasterized on the grid of ``ct``,
    with the contours skipped (see the module docstring)."""
    header = read_mask_header(rtstruct_path)
    _check_frame(header, ct_frame_of_reference)
    with _failures_of(rtstruct_path, header.series_uid):
        ds = pydicom.dcmread(rtstruct_path)
        contours = _roi_contours(ds, Path(rtstruct_path))
        reading = MaskReading([])
        for roi in ds.get("StructureSetROISequence", []):
            number, label = int(roi.ROINumber), str(roi.ROIName)
            if rois is not None and number not in rois:
                continue
            own = contours.get(number, [])
            grid = ct
            if native is not None:  # rasterized on the acquired slices, then resampled with the CT
                own = _onto_index_grid(own, native, header.series_uid, f"{number} ({label})")
                grid = _native_index_grid(native)
            array, skipped = _rasterize(own, grid, label, header.series_uid)
            if skipped:
                reading.skipped[label] = skipped
            if own and skipped == len(own):
                reading.without_area.append(label)
                continue
            if native is not None:
                mask = _on_regridded_ct(array, native, ct)
                array = sitk.GetArrayViewFromImage(mask)
            else:
                mask = sitk.GetImageFromArray(array)
            mask.CopyInformation(ct)
            reading.segments.append(Segment(label, number, mask, int(array.sum()), skipped))
        return reading


def read_rtstruct_segments(rtstruct_path: Path, ct: sitk.Image, ct_frame_of_reference: str | None = None,
                           rois: Collection[int] | None = None, native: dict | None = None) -> list[Segment]:
    """Every ROI of an RTSTRUCT (or those numbered in ``rois``) rasterized on the grid of ``ct``."""
    return read_rtstruct(rtstruct_path, ct, ct_frame_of_reference, rois, native).segments


def read_mask_segments(path: Path, ct: sitk.Image, ct_frame_of_reference: str | None = None,
                       native: dict | None = None) -> list[Segment]:
    """The segments of a SEG or RTSTRUCT file on the grid of ``ct`` (``native``: the acquired slices of a
    regridded CT, its QC row's ``native_grid``)."""
    header = read_mask_header(path)
    if header.modality == "SEG":
        return read_seg_segments(path, ct, ct_frame_of_reference, native)
    return read_rtstruct_segments(path, ct, ct_frame_of_reference, native=native)


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
