"""A multi-frame CT file (Enhanced CT, Legacy Converted Enhanced CT) → the same 3-D HU image as its series
would give as single-frame files.

One file holds every slice as a frame; each frame's geometry lies in its functional groups (PS3.3 C.7.6.16):
per-frame (PerFrameFunctionalGroupsSequence) or, when all frames share it, SharedFunctionalGroupsSequence:
PlanePositionSequence (ImagePositionPatient), PlaneOrientationSequence (ImageOrientationPatient),
PixelMeasuresSequence (PixelSpacing) and PixelValueTransformationSequence (the rescale to HU, possibly per
frame). Frames may be stored in any order; the file's frame number says nothing about where a frame lies.

As for single-frame series (``ct.py``), the headers are validated with pydicom first, frame by frame, so that a
failure has a precise code and names the frame; the grid comes from the same ``stack_geometry`` (frames sorted
along the normal X × Y, the same codes and tolerances, a gantry tilt or uneven gaps resampled the same way).
pydicom decodes the frames; each gets its own rescale; ``to_volume`` makes the int16 HU volume and its QC row, as
for single-frame files. For a regular stack, highdicom's reading of the functional groups is cross-checked
against ours (the role SimpleITK's geometry plays for single-frame files). The image has ct.py's conventions:
int16 HU rounded as SimpleITK rounds, LPS, index (column, row, slice), slices along +X × Y.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk

from radassets.imaging.ct import CTVolume, SeriesError, Tolerances, describe_exception, stack_geometry, to_volume
from radassets.imaging.series_kind import MULTIFRAME_CT_CLASSES, excluded_reason, several_stacks



def is_multiframe_ct(path: Path) -> bool:
    """Whether ``path`` is an Enhanced or Legacy Converted Enhanced CT file (False when unreadable: the
    single-frame path then reports why)."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - any unreadable file is the single-frame path's to report
        return False
    return str(header.get("SOPClassUID", "")) in MULTIFRAME_CT_CLASSES


@dataclass(frozen=True)
class FrameGeometry:
    """What each frame's functional groups say, in the file's frame order."""

    positions: np.ndarray  # (frames, 3) ImagePositionPatient
    orientations: np.ndarray  # (frames, 6) ImageOrientationPatient
    pixel_spacings: np.ndarray  # (frames, 2) PixelSpacing (between rows, between columns)
    slopes: np.ndarray  # (frames,) RescaleSlope
    intercepts: np.ndarray  # (frames,) RescaleIntercept
    rows: int
    columns: int


def _functional_value(frame: pydicom.Dataset, shared: pydicom.Dataset, sequence: str, keyword: str):
    """``keyword`` of ``sequence``'s item in the frame's functional groups, else the shared ones (PS3.3
    C.7.6.16.1: a group is in one of the two); None where neither has it."""
    for groups in (frame, shared):
        items = groups.get(sequence)
        if items and keyword in items[0]:
            return items[0][keyword].value
    return None


def _frame_groups(ds: pydicom.Dataset, uid: str) -> tuple[list[pydicom.Dataset], pydicom.Dataset]:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []))
    shared_items = ds.get("SharedFunctionalGroupsSequence", [])
    if len(per_frame) != frames:
        raise SeriesError("missing_geometry", uid, f"{len(per_frame)} per-frame functional group items for "
                                                   f"{frames} frames")
    return per_frame, shared_items[0] if shared_items else pydicom.Dataset()


def frame_geometry(ds: pydicom.Dataset, uid: str) -> FrameGeometry:
    """Every frame's position, orientation and pixel spacing; ``missing_geometry`` naming the first frame
    (1-based, as DICOM counts them) that lacks one, ``missing_rescale`` where a frame has no rescale."""
    per_frame, shared = _frame_groups(ds, uid)
    wanted = {"PlanePositionSequence": "ImagePositionPatient", "PlaneOrientationSequence": "ImageOrientationPatient",
              "PixelMeasuresSequence": "PixelSpacing"}
    values: dict[str, list] = {k: [] for k in wanted.values()}
    rescale: list[tuple[float, float]] = []
    for number, frame in enumerate(per_frame, start=1):
        for sequence, keyword in wanted.items():
            value = _functional_value(frame, shared, sequence, keyword)
            if value is None:
                raise SeriesError("missing_geometry", uid, f"frame {number} has no {sequence} ({keyword})")
            values[keyword].append([float(v) for v in value])
        slope = _functional_value(frame, shared, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _functional_value(frame, shared, "PixelValueTransformationSequence", "RescaleIntercept")
        if slope is None or intercept is None:
            raise SeriesError("missing_rescale", uid, f"frame {number} has no PixelValueTransformationSequence "
                                                      "RescaleSlope/RescaleIntercept: HU unknown")
        rescale.append((float(slope), float(intercept)))
    if "Rows" not in ds or "Columns" not in ds:
        raise SeriesError("missing_geometry", uid, "the file lacks Rows/Columns")
    return FrameGeometry(np.array(values["ImagePositionPatient"]), np.array(values["ImageOrientationPatient"]),
                         np.array(values["PixelSpacing"]), np.array([r[0] for r in rescale]),
                         np.array([r[1] for r in rescale]), int(ds.Rows), int(ds.Columns))


def _frame_headers(ds: pydicom.Dataset, frames: FrameGeometry, path: Path) -> list[tuple[Path, pydicom.Dataset]]:
    """Each frame as the header a single-frame file would have (position, orientation, and what FrameContentSequence
    says of its stack and temporal position), so that ``several_stacks`` tells a file's stacks apart as a series'."""
    per_frame, shared = _frame_groups(ds, "?")
    headers = []
    for n, frame in enumerate(per_frame):
        header = pydicom.Dataset()
        header.ImagePositionPatient = list(frames.positions[n])
        header.ImageOrientationPatient = list(frames.orientations[n])
        for keyword in ("StackID", "TemporalPositionIndex"):
            value = _functional_value(frame, shared, "FrameContentSequence", keyword)
            if value is not None:
                setattr(header, keyword, value)
        headers.append((path, header))
    return headers


def validate_frames(frames: FrameGeometry, uid: str, tol: Tolerances) -> tuple[np.ndarray, dict]:
    """The frames' order along the slice normal and their grid: ``stack_geometry``'s checks and codes, as for a
    series of single-frame files, with the frames named by their number (1-based, as DICOM counts them)."""
    n = len(frames.positions)
    if n < tol.min_slices:
        raise SeriesError("too_few_slices", uid, f"{n} frames; at least {tol.min_slices} are needed")
    if np.abs(frames.pixel_spacings - frames.pixel_spacings[0]).max() > 1e-6 * frames.pixel_spacings[0].max():
        raise SeriesError("non_uniform_spacing", uid, "frames have different PixelSpacing")
    return stack_geometry(uid, frames.positions, frames.orientations,
                          [float(frames.pixel_spacings[0, 1]), float(frames.pixel_spacings[0, 0])],
                          [frames.columns, frames.rows], tol, names=lambda i: f"frame {i + 1}")


def _hu_stack(ds: pydicom.Dataset, frames: FrameGeometry, order: np.ndarray, uid: str, path: Path) -> np.ndarray:
    """The frames in ``order`` as HU (slices, rows, columns), each with its own rescale (pydicom decodes them)."""
    try:
        stored = ds.pixel_array.reshape(-1, frames.rows, frames.columns)
    except Exception as e:  # noqa: BLE001 - pydicom's pixel handlers raise several kinds
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax = (ts.name or str(ts)) if ts else "an unknown transfer syntax"
        # Object addresses in the plugins' messages change from run to run: left out, so QC rows repeat.
        reason = re.sub(r" at 0x[0-9a-fA-F]+", "", " ".join(f"{type(e).__name__}: {e}".split()))
        raise SeriesError("undecodable", uid, f"pixel data of {path} in {syntax} cannot be decoded: {reason}") from None
    slopes, intercepts = frames.slopes[order], frames.intercepts[order]
    return stored[order].astype(np.float64) * slopes[:, None, None] + intercepts[:, None, None]


def _check_with_highdicom(ds: pydicom.Dataset, geometry: dict, uid: str, tol: Tolerances) -> None:
    """highdicom's reading of the functional groups against ours, for a regular stack: a silent disagreement
    would move every seed (the role SimpleITK's geometry plays for single-frame files)."""
    volume = hd.Image.from_dataset(ds, copy=False).get_volume_geometry(rtol=tol.spacing_relative)
    if volume is None:
        raise SeriesError("geometry_mismatch", uid, "highdicom does not see a regular volume in the frames")
    # highdicom's index is (slice, row, column), stacked in either direction: compare the set of corner voxels.
    ours = np.array(geometry["direction"]) * np.array(geometry["spacing"])
    corners = [np.array(geometry["origin"]) + ours @ (np.array(c) * (np.array(geometry["size"]) - 1))
               for c in np.ndindex(2, 2, 2)]
    theirs = [volume.map_indices_to_reference(np.array([c]) * (np.array(volume.spatial_shape) - 1))[0]
              for c in np.ndindex(2, 2, 2)]
    if max(min(np.abs(t - c).max() for c in corners) for t in theirs) > 1e-3:
        raise SeriesError("geometry_mismatch", uid, f"highdicom places the frames' corners elsewhere than the "
                                                    f"headers do (origin {geometry['origin']})")


def read_multiframe_ct(path: Path, tol: Tolerances = Tolerances()) -> CTVolume:
    """Validate and convert one multi-frame CT file to an int16 HU image (SimpleITK, LPS), as ``read_ct_series``
    converts the same slices stored one per file."""
    started = time.monotonic()
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # noqa: BLE001 - recorded with its type and where it was raised
        raise SeriesError("unreadable_file", "?", f"cannot read {path}: {describe_exception(e)}") from None
    uid = str(ds.get("SeriesInstanceUID", "?"))
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in MULTIFRAME_CT_CLASSES:
        name = pydicom.uid.UID(sop_class).name or sop_class or "none"
        raise SeriesError("not_ct", uid, f"{Path(path).name} is {name}, not (Legacy Converted) Enhanced CT")
    excluded = excluded_reason([(Path(path), ds)])  # an enhanced localizer is no more a volume than a 2-D one
    if excluded is not None:
        raise excluded
    frames = frame_geometry(ds, uid)
    stacks = several_stacks(_frame_headers(ds, frames, Path(path)), tol.min_slices)
    if stacks:
        raise SeriesError("several_stacks", uid, f"holds {stacks}; split the series or select one stack")
    order, geometry = validate_frames(frames, uid, tol)
    if not geometry["regrid"]:
        _check_with_highdicom(ds, geometry, uid, tol)
    image = sitk.GetImageFromArray(_hu_stack(ds, frames, order, uid, Path(path)))
    # The grid as the headers state it, as SimpleITK gives single-frame files theirs: the same slices give the
    # same volume whichever way they were stored.
    image.SetOrigin(geometry["origin"])
    image.SetSpacing(geometry["spacing"])
    image.SetDirection(np.array(geometry["direction"]).ravel().tolist())
    ts = getattr(ds.file_meta, "TransferSyntaxUID", None)
    geometry["transfer_syntax"] = str(ts) if ts else None
    return to_volume(image, geometry, uid, started, sop_class=pydicom.uid.UID(sop_class).name)
