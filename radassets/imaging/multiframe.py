"""A multi-frame CT file (Enhanced CT, Legacy Converted Enhanced CT) → the same 3-D HU image as its series
would give as single-frame files.

One file holds every slice as a frame; each frame's geometry lies in its functional groups (PS3.3 C.7.6.16):
per-frame (PerFrameFunctionalGroupsSequence) or, when all frames share it, SharedFunctionalGroupsSequence:
PlanePositionSequence (ImagePositionPatient), PlaneOrientationSequence (ImageOrientationPatient),
PixelMeasuresSequence (PixelSpacing) and PixelValueTransformationSequence (the rescale to HU, possibly per
frame). Frames may be stored in any order; the file's frame number says nothing about where a frame lies.

As for single-frame series (``ct.py``), the headers are validated with pydicom first, frame by frame, so that a
failure has a precise code and names the frame; the checks are the single-frame path's (sorted along the normal
X × Y, orientation within ``Tolerances.orientation``, regular gaps within ``Tolerances.spacing_relative``, no
shear, at least ``min_slices`` frames). highdicom then reads the pixels as a volume with each frame's modality
transform, and its geometry is cross-checked against the headers. The image has ct.py's conventions: int16 HU
rounded as SimpleITK rounds, LPS, index (column, row, slice), slices along +X × Y.
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
from pydicom.uid import EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage

from radassets.imaging.ct import CTVolume, SeriesError, Tolerances, describe_exception
from radassets.imaging.series_kind import excluded_reason

MULTIFRAME_CT_CLASSES = (EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage)


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
    if "Rows" not in ds or "Columns" not in ds:
        raise SeriesError("missing_geometry", uid, "the file lacks Rows/Columns")
    return FrameGeometry(np.array(values["ImagePositionPatient"]), np.array(values["ImageOrientationPatient"]),
                         np.array(values["PixelSpacing"]), int(ds.Rows), int(ds.Columns))


def validate_frames(frames: FrameGeometry, uid: str, tol: Tolerances) -> dict:
    """The frames' grid as ``sort_and_validate`` gives a series' (origin, direction, spacing, size), with the
    same checks and codes.

    Why not sort_and_validate's own code: it works on files and their headers, and its gap and tilt checks are
    being rewritten; these are the same checks on arrays, kept small so that the two can be merged into one
    helper once that rewrite lands."""
    n = len(frames.positions)
    if n < tol.min_slices:
        raise SeriesError("too_few_slices", uid, f"{n} frames; at least {tol.min_slices} are needed")
    iops = frames.orientations
    if np.abs(iops - iops[0]).max() > tol.orientation:
        worst = int(np.abs(iops - iops[0]).max(axis=1).argmax())
        raise SeriesError("mixed_orientation", uid, f"frame {worst + 1}'s ImageOrientationPatient "
                                                    f"{iops[worst].tolist()} differs from frame 1's")
    if np.abs(frames.pixel_spacings - frames.pixel_spacings[0]).max() > 1e-6 * frames.pixel_spacings[0].max():
        raise SeriesError("non_uniform_spacing", uid, "frames have different PixelSpacing")
    x, y = iops[0, :3], iops[0, 3:]
    normal = np.cross(x, y)
    if abs(np.dot(x, y)) > 1e-3 or abs(np.linalg.norm(normal) - 1) > 1e-3:
        raise SeriesError("missing_geometry", uid, f"ImageOrientationPatient {iops[0].tolist()} is not orthonormal")
    along = frames.positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = frames.positions[order], along[order]
    gaps = np.diff(along)
    if (gaps < 1e-3).any():
        k = int(np.argmax(gaps < 1e-3))
        raise SeriesError("duplicate_positions", uid, f"frames {order[k] + 1} and {order[k + 1] + 1} lie at the "
                                                      f"same position ({along[k]:.3f} mm along the normal)")
    in_plane = positions - np.outer(along, normal)
    drift = np.linalg.norm(in_plane[-1] - in_plane[0]) / (along[-1] - along[0])
    if drift > tol.tilt_mm_per_mm:
        raise SeriesError("gantry_tilt", uid, f"frame origins shear by {drift:.4f} mm per mm (gantry tilt)")
    median = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - median)))
    if abs(gaps[worst] - median) > tol.spacing_relative * median:
        ratio = gaps[worst] / median
        if abs(ratio - round(ratio)) < 0.1 and round(ratio) >= 2:
            raise SeriesError("missing_slices", uid, f"{round(ratio) - 1} frame(s) missing at {along[worst]:.2f} mm "
                                                     f"(gap {gaps[worst]:.2f} mm, spacing {median:.2f} mm)")
        raise SeriesError("non_uniform_spacing", uid, f"frame gaps from {gaps.min():.3f} to {gaps.max():.3f} mm")
    return {"origin": positions[0].tolist(), "direction": np.column_stack([x, y, normal]).tolist(),
            "spacing": [float(frames.pixel_spacings[0, 1]), float(frames.pixel_spacings[0, 0]), median],
            "size": [frames.columns, frames.rows, n]}


def _hu_image(ds: pydicom.Dataset, uid: str, path: Path, tol: Tolerances) -> sitk.Image:
    """The frames as a float HU image with ct.py's axes, read by highdicom (each frame's own rescale)."""
    try:
        image = hd.Image.from_dataset(ds, copy=False)
    except Exception as e:  # noqa: BLE001 - highdicom refuses what it cannot index; the file's cause
        raise SeriesError("unreadable_file", uid, f"highdicom cannot read {path}: {describe_exception(e)}") from None
    if image.get_volume_geometry(rtol=tol.spacing_relative) is None:
        # The headers passed the same checks: highdicom disagreeing is a geometry question, not a decoding one.
        raise SeriesError("geometry_mismatch", uid, f"highdicom does not see a regular volume in {path}")
    try:
        volume = image.get_volume(apply_modality_transform=True, dtype=np.float64, rtol=tol.spacing_relative)
    except Exception as e:  # noqa: BLE001 - pydicom's pixel handlers raise several kinds
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax = (ts.name or str(ts)) if ts else "an unknown transfer syntax"
        # Object addresses in the plugins' messages change from run to run: left out, so QC rows repeat.
        reason = re.sub(r" at 0x[0-9a-fA-F]+", "", " ".join(f"{type(e).__name__}: {e}".split()))
        raise SeriesError("undecodable", uid, f"pixel data of {path} in {syntax} cannot be decoded: {reason}") from None
    # highdicom's axes are (slice, row, column) and it stacks the slices in whichever direction it finds; ct.py's
    # slices run along +X × Y, which makes (slice, row step Y, column step X) left-handed. Flipping the slice axis
    # where needed gives that order; permuting to (column, row, slice) gives SimpleITK's index (i, j, k).
    volume = volume.ensure_handedness(hd.AxisHandedness.LEFT_HANDED, flip_axis=0)
    return volume.permute_spatial_axes([2, 1, 0]).to_simpleitk()


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
    geometry = validate_frames(frame_geometry(ds, uid), uid, tol)
    image = _hu_image(ds, uid, Path(path), tol)
    # As ct.py: HU rounded to 1 HU (SimpleITK's rounding) and clamped to int16.
    hu = sitk.Cast(sitk.Clamp(sitk.Round(image), lowerBound=-32768, upperBound=32767), sitk.sitkInt16)
    _check_geometry(hu, geometry, uid)
    # highdicom derives the origin and direction through its affine (differences ~1e-7 mm on oblique files);
    # the image carries them as the headers state them, as SimpleITK does for single-frame files, so that the
    # same slices give the same numbers whichever way they were stored.
    hu.SetOrigin(geometry["origin"])
    hu.SetDirection(np.array(geometry["direction"]).ravel().tolist())
    array = sitk.GetArrayViewFromImage(hu)
    ts = getattr(ds.file_meta, "TransferSyntaxUID", None)
    qc = {
        "SeriesInstanceUID": uid, "status": "ok", "code": None, "message": None,
        "slices": geometry["size"][2], "rows": geometry["size"][1], "columns": geometry["size"][0],
        "spacing_x": geometry["spacing"][0], "spacing_y": geometry["spacing"][1], "spacing_z": geometry["spacing"][2],
        "direction": [round(v, 6) for v in hu.GetDirection()], "origin": list(hu.GetOrigin()),
        "transfer_syntax": str(ts) if ts else None, "hu_min": int(array.min()), "hu_max": int(array.max()),
        "sop_class": pydicom.uid.UID(sop_class).name,
        "seconds": round(time.monotonic() - started, 3),
    }
    return CTVolume(hu, uid, qc)


def _check_geometry(hu: sitk.Image, geometry: dict, uid: str) -> None:
    """highdicom's grid against the validated headers, with ct.py's tolerances: a silent disagreement would
    move every seed."""
    direction = np.array(hu.GetDirection()).reshape(3, 3)
    if (list(hu.GetSize()) != geometry["size"]
            or np.abs(np.array(hu.GetOrigin()) - geometry["origin"]).max() > 1e-3
            or np.abs(direction - np.array(geometry["direction"])).max() > 1e-4
            or np.abs(np.array(hu.GetSpacing()) - geometry["spacing"]).max() > 1e-3 * max(geometry["spacing"])):
        raise SeriesError("geometry_mismatch", uid, f"highdicom's grid {hu.GetSize()}, {hu.GetOrigin()}, "
                                                    f"{hu.GetSpacing()} differs from the headers {geometry['size']}, "
                                                    f"{geometry['origin']}, {geometry['spacing']}")
