"""DICOM CT series → a 3-D image in HU, after checking that the series describes a regular grid.

Geometry convention: SimpleITK/ITK, i.e. DICOM patient coordinates (LPS, millimetres).
Index (i, j, k) = (column, row, slice); the direction matrix's columns are the row direction X
(ImageOrientationPatient[:3]), the column direction Y (ImageOrientationPatient[3:]) and the
slice normal X × Y; slices are sorted by their position along that normal, whatever their
InstanceNumber or file order.

The headers are validated with pydicom before any pixel is read, so each failure has a precise
cause; the pixels are then read by SimpleITK (GDCM), and its geometry is cross-checked against
the headers. A failure raises ``SeriesError`` with a short ``code`` (for QC tables) and a
message naming the series and the cause.
"""

from __future__ import annotations

import os
import re
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from radassets.imaging.qc import QCError as QCError  # re-exported: masks and volumes name it from here
from radassets.imaging.series_kind import SeriesExcluded as SeriesExcluded, excluded_reason, several_stacks

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class SeriesError(QCError):
    """A series cannot become a volume."""

    CODES = ("unreadable_file", "not_ct", "missing_geometry", "missing_rescale", "mixed_orientation",
             "duplicate_positions", "gantry_tilt", "missing_slices", "non_uniform_spacing", "undecodable",
             "too_few_slices", "geometry_mismatch", "conversion_error", "changed_since_indexed", "several_stacks")
    NOUN = "series"


@dataclass(frozen=True)
class Tolerances:
    """How far a series may depart from a regular grid and still be converted."""

    spacing_relative: float = 0.01  # max |gap - median gap| / median gap
    tilt_mm_per_mm: float = 1e-3  # in-plane drift of slice origins per mm along the normal
    orientation: float = 1e-4  # max difference between ImageOrientationPatient values
    min_slices: int = 3


@dataclass
class CTVolume:
    image: sitk.Image  # int16 HU, LPS geometry
    series_uid: str
    qc: dict


def _series_uid(headers: Sequence[pydicom.Dataset]) -> str:
    return str(headers[0].get("SeriesInstanceUID", "?")) if headers else "?"


def describe_exception(error: BaseException) -> str:
    """``Type: message (raised at file.py:line)``: enough to tell a malformed input from a bug of ours."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (raised at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def _read_headers(files: Sequence[Path]) -> list[tuple[Path, pydicom.Dataset]]:
    """Every file's header. Any exception reading one file (pydicom raises many kinds for broken files)
    is that file's failure; a file that ends before its pixel data (truncated) is one too."""
    out: list[tuple[Path, pydicom.Dataset]] = []
    for f in files:
        try:
            with open(f, "rb") as fp:
                header = pydicom.dcmread(fp, stop_before_pixels=True)
                # pydicom stops at the pixel data tag, or silently at the end of a truncated file.
                at_end = fp.tell() >= os.fstat(fp.fileno()).st_size
        except Exception as e:  # noqa: BLE001 - recorded with its type and where it was raised
            raise SeriesError("unreadable_file", _series_uid([h for _, h in out]),
                              f"cannot read {f}: {describe_exception(e)}") from None
        if at_end:
            raise SeriesError("unreadable_file", str(header.get("SeriesInstanceUID", "?")),
                              f"{f} ends after {Path(f).stat().st_size} bytes, before any pixel data (truncated?)")
        out.append((Path(f), header))
    return out


def sort_and_validate(files: Sequence[Path], tol: Tolerances = Tolerances()) -> tuple[list[Path], dict]:
    """Validate a CT series' headers; return its files sorted along the slice normal and the geometry."""
    headers = _read_headers(files)
    uid = _series_uid([h for _, h in headers])
    excluded = excluded_reason(headers)  # localizers, screens, single images: not volumes, not failures
    if excluded is not None:
        raise excluded
    stacks = several_stacks(headers, tol.min_slices)
    if stacks:
        raise SeriesError("several_stacks", uid, f"holds {stacks}; split the series or select one stack")
    if len(headers) < tol.min_slices:
        raise SeriesError("too_few_slices", uid, f"{len(headers)} slices; at least {tol.min_slices} are needed")
    for path, h in headers:
        if str(h.get("SOPClassUID", "")) != CT_IMAGE_STORAGE:
            name = pydicom.uid.UID(str(h.get("SOPClassUID", ""))).name or h.get("SOPClassUID", "none")
            raise SeriesError("not_ct", uid, f"{path.name} is {name}, not CT Image Storage")
        missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
                   if k not in h]
        if missing:
            raise SeriesError("missing_geometry", uid, f"{path.name} lacks {missing}")
        if "RescaleSlope" not in h or "RescaleIntercept" not in h:
            raise SeriesError("missing_rescale", uid, f"{path.name} lacks RescaleSlope/RescaleIntercept: HU unknown")
    iops = np.array([[float(v) for v in h.ImageOrientationPatient] for _, h in headers])
    if np.abs(iops - iops[0]).max() > tol.orientation:
        raise SeriesError("mixed_orientation", uid, "slices have different ImageOrientationPatient")
    x, y = iops[0, :3], iops[0, 3:]
    normal = np.cross(x, y)
    if abs(np.dot(x, y)) > 1e-3 or abs(np.linalg.norm(normal) - 1) > 1e-3:
        raise SeriesError("missing_geometry", uid, f"ImageOrientationPatient {iops[0].tolist()} is not orthonormal")
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for _, h in headers])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    gaps = np.diff(along)
    if (gaps < 1e-3).any():
        k = int(np.argmax(gaps < 1e-3))
        raise SeriesError("duplicate_positions", uid, f"two slices at the same position ({along[k]:.3f} mm along the normal)")
    # Gantry tilt: slice origins drift in-plane as they advance along the normal.
    in_plane = positions - np.outer(along, normal)
    drift = np.linalg.norm(in_plane[-1] - in_plane[0]) / (along[-1] - along[0])
    if drift > tol.tilt_mm_per_mm:
        raise SeriesError("gantry_tilt", uid, f"slice origins shear by {drift:.4f} mm per mm (gantry tilt); resample first")
    median = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - median)))
    if abs(gaps[worst] - median) > tol.spacing_relative * median:
        ratio = gaps[worst] / median
        if abs(ratio - round(ratio)) < 0.1 and round(ratio) >= 2:
            raise SeriesError("missing_slices", uid, f"{round(ratio) - 1} slice(s) missing at {along[worst]:.2f} mm "
                                                     f"(gap {gaps[worst]:.2f} mm, spacing {median:.2f} mm)")
        raise SeriesError("non_uniform_spacing", uid, f"slice gaps from {gaps.min():.3f} to {gaps.max():.3f} mm")
    first = headers[order[0]][1]
    ts = getattr(first.file_meta, "TransferSyntaxUID", None)
    geometry = {
        "origin": positions[0].tolist(),
        "direction": np.column_stack([x, y, normal]).tolist(),
        "spacing": [float(first.PixelSpacing[1]), float(first.PixelSpacing[0]), median],
        "size": [int(first.Columns), int(first.Rows), len(headers)],
        "transfer_syntax": str(ts) if ts else None,
    }
    return [headers[i][0] for i in order], geometry


def _check_decodable(path: Path, uid: str) -> None:
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # noqa: BLE001 - the headers were readable; the rest of the file is not
        raise SeriesError("unreadable_file", uid, f"cannot read {path}: {describe_exception(e)}") from None
    try:
        ds.pixel_array  # noqa: B018 - decoding is the check
    except Exception as e:  # noqa: BLE001 - pydicom raises RuntimeError/NotImplementedError/ValueError by plugin
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax = (ts.name or str(ts)) if ts else "an unknown transfer syntax"
        raise SeriesError("undecodable", uid, f"pixel data of {path} in {syntax} cannot be decoded: "
                                              f"{type(e).__name__}: {e}") from None


def _failing_file(ordered: Sequence[Path]) -> str:
    """`` of FILE``: the first slice SimpleITK cannot read on its own (its series error names none)."""
    for path in ordered:
        try:
            sitk.ReadImage(str(path))
        except RuntimeError:
            return f" of {path}"
    return ""


def read_ct_series(files: Sequence[Path], tol: Tolerances = Tolerances()) -> CTVolume:
    """Validate and convert one CT series to an int16 HU image (SimpleITK, LPS)."""
    if len(files) == 1:
        # One file may hold the whole series as frames (Enhanced / Legacy Converted Enhanced CT).
        from radassets.imaging.multiframe import is_multiframe_ct, read_multiframe_ct  # it imports this module

        if is_multiframe_ct(Path(files[0])):
            return read_multiframe_ct(Path(files[0]), tol)
    started = time.monotonic()
    ordered, geometry = sort_and_validate(files, tol)
    uid = str(pydicom.dcmread(ordered[0], stop_before_pixels=True).get("SeriesInstanceUID", "?"))
    _check_decodable(ordered[0], uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in ordered])
    try:
        image = reader.Execute()
    except RuntimeError as e:
        # The object address ITK puts in its messages changes from run to run: left out, so QC rows repeat.
        reason = re.sub(r"\(0x[0-9a-fA-F]+\)", "", " ".join(str(e).split()))
        raise SeriesError("undecodable", uid, f"SimpleITK could not read the pixels{_failing_file(ordered)}: "
                                              f"{reason}") from None
    # ITK applies the rescale and widens the type (int32, or float for fractional slopes); HU are
    # stored as int16, rounded to 1 HU, which is below CT precision.
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        image = sitk.Round(image)
    hu = sitk.Cast(sitk.Clamp(image, lowerBound=-32768, upperBound=32767), sitk.sitkInt16)
    # Cross-check ITK's geometry with the validated headers: a silent disagreement would move every seed.
    direction = np.array(hu.GetDirection()).reshape(3, 3)
    if (np.abs(np.array(hu.GetOrigin()) - geometry["origin"]).max() > 1e-3
            or np.abs(direction - np.array(geometry["direction"])).max() > 1e-4
            or np.abs(np.array(hu.GetSpacing()) - geometry["spacing"]).max() > 1e-3 * max(geometry["spacing"])):
        raise SeriesError("geometry_mismatch", uid, f"SimpleITK geometry {hu.GetOrigin()}, {hu.GetSpacing()} "
                                                    f"differs from the headers {geometry['origin']}, {geometry['spacing']}")
    array = sitk.GetArrayViewFromImage(hu)
    qc = {
        "SeriesInstanceUID": uid, "status": "ok", "code": None, "message": None,
        "slices": geometry["size"][2], "rows": geometry["size"][1], "columns": geometry["size"][0],
        "spacing_x": geometry["spacing"][0], "spacing_y": geometry["spacing"][1], "spacing_z": geometry["spacing"][2],
        "direction": [round(v, 6) for v in hu.GetDirection()], "origin": list(hu.GetOrigin()),
        "transfer_syntax": geometry["transfer_syntax"], "hu_min": int(array.min()), "hu_max": int(array.max()),
        "seconds": round(time.monotonic() - started, 3),
    }
    return CTVolume(hu, uid, qc)


def failure_qc(files: Sequence[Path], error: SeriesError) -> dict:
    """The QC row of a series that could not be converted."""
    return {"SeriesInstanceUID": error.series, "status": "failed", "code": error.code, "message": str(error),
            "slices": len(files)}
