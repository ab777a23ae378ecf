"""DICOM CT series → a 3-D image in HU, after checking that the series describes a regular grid.

Geometry convention: SimpleITK/ITK, i.e. DICOM patient coordinates (LPS, millimetres).
Index (i, j, k) = (column, row, slice); the direction matrix's columns are the row direction X
(ImageOrientationPatient[:3]), the column direction Y (ImageOrientationPatient[3:]) and the
slice normal X × Y; slices are sorted by their position along that normal, whatever their
InstanceNumber or file order.

The headers are validated with pydicom before any pixel is used, so each failure has a precise
cause; the pixels are then read by SimpleITK (GDCM), and its geometry is cross-checked against
the headers. A plain series (uncompressed 16-bit slices, one integer rescale, not regridded) is not parsed
a second time: its HU are computed from the pixel data read with the headers, on the grid ITK's series
reader gives, with the same voxels and geometry as ITK's path (``_native_hu``).

A failure raises ``SeriesError`` with a short ``code`` (for QC tables) and a
message naming the series and the cause.

Gantry tilt and uneven slice spacing (``regrid`` in the QC row): a series whose slice origins advance
along the table rather than along the slice normal (gantry tilt), or whose gaps vary, is resampled onto a
regular orthogonal grid, with linear interpolation, as dcm2niix does (its ``_Tilt_1`` and ``_Eq_1`` files):

- Tilt: the slices keep their own planes (the grid's axes are the row direction X, the column direction Y
  and the slice normal N, spacing ``PixelSpacing`` and the gap along N); each slice is shifted within its
  plane so that the voxels line up along N, i.e. interpolated along Y only. The grid is widened by the
  shift across the series (dcm2niix's extra rows), so every acquired pixel is kept; the voxels outside the
  acquired slab (the triangles at either end of the widened rows) get ``fill_hu``: the lowest HU of the
  series, as dcm2niix fills them (the scanner's own padding or air, never a new value).
- Uneven gaps: planes at the smallest gap, from the first slice up to the last one (never beyond),
  each a linear blend of the two acquired slices around it. dcm2niix picks the same spacing, except that
  it caps the slice count at twice the acquired one (then widening the spacing): the cap is left out, as
  it would resample the thin-slice part of a series coarser than it was acquired.
- Missing slices are not uneven spacing: a regular series in which every irregular gap is an isolated
  integer multiple (≥ 2) of the usual spacing has lost slices (``missing_slices``, refused); a run of two
  or more gaps of another spacing, or a gap that is no multiple, is uneven spacing (resampled when
  ``Tolerances.resample_uneven``, if no gap exceeds ``Tolerances.max_interpolated_gap_mm``).

The acquired geometry is kept as ``native_grid`` (JSON in the QC row and in the volume's NRRD header), so a
mask drawn on the acquired slices can be placed on them first and resampled the same way.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.filereader import read_dataset
from radassets.imaging.qc import QCError as QCError  # re-exported: masks and volumes name it from here
from radassets.imaging.series_kind import (MULTIFRAME_CT_CLASSES, SeriesExcluded as SeriesExcluded, excluded_reason,
                                          several_stacks)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class SeriesError(QCError):
    """A series cannot become a volume."""

    CODES = ("unreadable_file", "not_ct", "missing_geometry", "missing_rescale", "mixed_orientation",
             "duplicate_positions", "gantry_tilt", "missing_slices", "non_uniform_spacing", "undecodable",
             "too_few_slices", "geometry_mismatch", "conversion_error", "changed_since_indexed", "several_stacks")
    NOUN = "series"


@dataclass(frozen=True)
class Tolerances:
    """How far a series may depart from a regular grid and still be converted, and which departures are
    resampled onto a regular grid (see the module docstring).

    - ``spacing_relative``: a gap within this fraction of the median gap is regular.
    - ``tilt_mm_per_mm``: in-plane drift of slice origins per mm along the normal below which a series is
      untilted; above it the series is gantry-tilted.
    - ``max_tilt_degrees``: a tilted series up to this angle (between the table direction the slices step
      along and the slice normal) is resampled onto an orthogonal grid; beyond, ``gantry_tilt``. 30° covers
      clinical head CT (typically 10-25°).
    - ``tilt_tag_degrees``: how far a non-zero GantryDetectorTilt may differ (in magnitude: vendors differ in
      sign) from the angle the positions give before the series is refused (``geometry_mismatch``).
    - ``resample_uneven``: resample a series with uneven gaps (else ``non_uniform_spacing``).
    - ``max_interpolated_gap_mm``: the widest gap of an uneven series that may be interpolated across.
    """

    spacing_relative: float = 0.01  # max |gap - median gap| / median gap
    tilt_mm_per_mm: float = 1e-3  # in-plane drift of slice origins per mm along the normal
    orientation: float = 1e-4  # max difference between ImageOrientationPatient values
    min_slices: int = 3
    max_tilt_degrees: float = 30.0
    tilt_tag_degrees: float = 1.0
    resample_uneven: bool = True
    max_interpolated_gap_mm: float = 10.0


@dataclass
class CTVolume:
    image: sitk.Image  # int16 HU, LPS geometry
    series_uid: str
    qc: dict
    # The first file's FrameOfReferenceUID (its masks are matched on it), where the reader had its header anyway.
    frame_of_reference: str | None = None


def _series_uid(headers: Sequence[pydicom.Dataset]) -> str:
    return str(headers[0].get("SeriesInstanceUID", "?")) if headers else "?"


def describe_exception(error: BaseException) -> str:
    """``Type: message (raised at file.py:line)``: enough to tell a malformed input from a bug of ours."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (raised at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def _read_headers(files: Sequence[Path], pixels: dict[Path, bytes] | None = None) -> list[tuple[Path, pydicom.Dataset]]:
    """Every file's header. Any exception reading one file (pydicom raises many kinds for broken files)
    is that file's failure; a file that ends before its pixel data (truncated) is one too. ``pixels``: where
    given, each file's uncompressed pixel data is read into it in the same pass (``_native_pixels``)."""
    out: list[tuple[Path, pydicom.Dataset]] = []
    for f in files:
        try:
            with open(f, "rb") as fp:
                header = pydicom.dcmread(fp, stop_before_pixels=True)
                # pydicom stops at the pixel data tag, or silently at the end of a truncated file.
                at_end = fp.tell() >= os.fstat(fp.fileno()).st_size
                if pixels is not None and not at_end:
                    _native_pixels(fp, header, Path(f), pixels)
        except Exception as e:  # noqa: BLE001 - recorded with its type and where it was raised
            raise SeriesError("unreadable_file", _series_uid([h for _, h in out]),
                              f"cannot read {f}: {describe_exception(e)}") from None
        if at_end:
            raise SeriesError("unreadable_file", str(header.get("SeriesInstanceUID", "?")),
                              f"{f} ends after {Path(f).stat().st_size} bytes, before any pixel data (truncated?)")
        out.append((Path(f), header))
    return out


_NATIVE_LITTLE_ENDIAN = (pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian)


def _native_pixels(fp: Any, header: pydicom.Dataset, path: Path, pixels: dict[Path, bytes]) -> None:
    """The rest of an open file (its pixel data) into ``pixels[path]``, if it is uncompressed little-endian and
    reads whole; otherwise nothing, and ITK reads the file (or says why it cannot)."""
    if getattr(header.file_meta, "TransferSyntaxUID", None) not in _NATIVE_LITTLE_ENDIAN:
        return
    try:
        rest = read_dataset(fp, header.file_meta.TransferSyntaxUID.is_implicit_VR, True)
        data = rest.get(0x7FE00010)
    except Exception:  # noqa: BLE001 - a damaged pixel data element: left to ITK, whose error the QC row gives
        return
    if data is not None and isinstance(data.value, bytes):
        pixels[path] = data.value


def sort_and_validate(files: Sequence[Path], tol: Tolerances = Tolerances()) -> tuple[list[Path], dict]:
    """Validate a CT series' headers; return its files sorted along the slice normal and the geometry."""
    ordered, geometry, _ = _validated(files, tol)
    return ordered, geometry


def _validated(files: Sequence[Path], tol: Tolerances, pixels: dict[Path, bytes] | None = None
               ) -> tuple[list[Path], dict, list[pydicom.Dataset]]:
    """``sort_and_validate``, and the headers it read (sorted as the files), so that nothing is read twice;
    ``pixels``: see ``_read_headers``."""
    headers = _read_headers(files, pixels)
    uid = _series_uid([h for _, h in headers])
    excluded = excluded_reason(headers)  # localizers, screens, single images: not volumes, not failures
    if excluded is not None:
        raise excluded
    stacks = several_stacks(headers, tol.min_slices)
    if stacks:
        raise SeriesError("several_stacks", uid, f"holds {stacks}; split the series or select one stack")
    multiframe = [path.name for path, h in headers if str(h.get("SOPClassUID", "")) in MULTIFRAME_CT_CLASSES]
    if multiframe:  # one multi-frame file is a series of its own (read_ct_series); several are several stacks
        raise SeriesError("several_stacks", uid, f"holds {len(multiframe)} multi-frame CT file(s) ({multiframe[0]}, "
                                                 f"...) among {len(headers)} files: each is a stack of its own")
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
    first = headers[0][1]
    order, geometry = stack_geometry(
        uid, np.array([[float(v) for v in h.ImagePositionPatient] for _, h in headers]),
        np.array([[float(v) for v in h.ImageOrientationPatient] for _, h in headers]),
        [float(first.PixelSpacing[1]), float(first.PixelSpacing[0])], [int(first.Columns), int(first.Rows)],
        tol, names=lambda i: headers[i][0].name, tilt_tag=headers[0][1].get("GantryDetectorTilt"))
    ts = getattr(headers[order[0]][1].file_meta, "TransferSyntaxUID", None)
    geometry["transfer_syntax"] = str(ts) if ts else None
    return [headers[i][0] for i in order], geometry, [headers[i][1] for i in order]


def stack_geometry(uid: str, positions: np.ndarray, orientations: np.ndarray, pixel_spacing: list[float],
                   size: list[int], tol: Tolerances, names: Callable[[int], str],
                   tilt_tag: Any = None) -> tuple[np.ndarray, dict]:
    """The order of a stack's images along the slice normal and the grid they give, from their positions and
    orientations (one row per image; ``pixel_spacing`` and ``size`` as (columns, rows)); each departure from a
    regular grid refused with its code, or, for a gantry tilt or uneven gaps within the tolerances, recorded
    for ``to_volume`` to resample (``regrid``, ``native_grid``). ``names(i)`` names image ``i`` in messages.
    Single-frame series (``sort_and_validate``) and multi-frame files (``multiframe``) both come here."""
    if np.abs(orientations - orientations[0]).max() > tol.orientation:
        worst = int(np.abs(orientations - orientations[0]).max(axis=1).argmax())
        raise SeriesError("mixed_orientation", uid, f"{names(worst)}'s ImageOrientationPatient "
                                                    f"{orientations[worst].tolist()} differs from {names(0)}'s")
    x, y = orientations[0, :3], orientations[0, 3:]
    normal = np.cross(x, y)
    if abs(np.dot(x, y)) > 1e-3 or abs(np.linalg.norm(normal) - 1) > 1e-3:
        raise SeriesError("missing_geometry", uid,
                          f"ImageOrientationPatient {orientations[0].tolist()} is not orthonormal")
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    gaps = np.diff(along)
    if (gaps < 1e-3).any():
        k = int(np.argmax(gaps < 1e-3))
        raise SeriesError("duplicate_positions", uid, f"{names(order[k])} and {names(order[k + 1])} lie at the same "
                                                      f"position ({along[k]:.3f} mm along the normal)")
    tilt = _tilt(uid, positions, along, normal, tilt_tag, tol)
    uneven = _uneven(uid, gaps, along, tol)
    geometry = {
        "origin": positions[0].tolist(),
        "direction": np.column_stack([x, y, normal]).tolist(),
        "spacing": [*pixel_spacing, float(np.median(gaps))],
        "size": [*size, len(positions)],
        "tilt_degrees": tilt,
        "regrid": "+".join(name for name, on in (("gantry_tilt", tilt is not None), ("uneven_spacing", uneven))
                           if on) or None,
    }
    if geometry["regrid"]:
        geometry["native_grid"] = native_grid(positions, x, y, pixel_spacing, size)
    return order, geometry


def _tilt(uid: str, positions: np.ndarray, along: np.ndarray, normal: np.ndarray, tag: Any,
          tol: Tolerances) -> float | None:
    """The gantry tilt in degrees (the angle between the line the slice origins step along and the slice
    normal), or None for an untilted series; refuses a tilt beyond the tolerance, origins that do not lie on
    one line, and a GantryDetectorTilt that contradicts the positions."""
    # Gantry tilt: slice origins drift in-plane as they advance along the normal.
    in_plane = positions - np.outer(along, normal)
    extent = along[-1] - along[0]
    drift = np.linalg.norm(in_plane[-1] - in_plane[0]) / extent
    if drift <= tol.tilt_mm_per_mm:
        return None
    step = (positions[-1] - positions[0]) / np.linalg.norm(positions[-1] - positions[0])
    off_line = positions - positions[0] - np.outer((positions - positions[0]) @ step, step)
    if np.linalg.norm(off_line, axis=1).max() > tol.tilt_mm_per_mm * extent:
        raise SeriesError("gantry_tilt", uid, f"slice origins shear by {drift:.4f} mm per mm but do not lie on one "
                                              f"line (up to {np.linalg.norm(off_line, axis=1).max():.3f} mm off it)")
    degrees = math.degrees(math.acos(min(1.0, abs(float(step @ normal)))))
    if degrees > tol.max_tilt_degrees:
        raise SeriesError("gantry_tilt", uid, f"gantry tilt of {degrees:.2f} degrees (slice origins shear by "
                                              f"{drift:.4f} mm per mm) exceeds the {tol.max_tilt_degrees:g} degrees "
                                              f"that are resampled")
    if tag is not None and float(tag) != 0 and abs(abs(float(tag)) - degrees) > tol.tilt_tag_degrees:
        raise SeriesError("geometry_mismatch", uid, f"GantryDetectorTilt {float(tag):g} degrees contradicts the "
                                                    f"{degrees:.2f} degrees of tilt that the slice positions give")
    return degrees


def _runs(gaps: np.ndarray, relative: float) -> list[int]:
    """The lengths of the runs of equal gaps (each within ``relative`` of its run's first gap), in order."""
    lengths, start = [], 0
    for k in range(1, len(gaps) + 1):
        if k == len(gaps) or abs(gaps[k] - gaps[start]) > relative * gaps[start]:
            lengths.append(k - start)
            start = k
    return lengths


def _uneven(uid: str, gaps: np.ndarray, along: np.ndarray, tol: Tolerances) -> bool:
    """True for a series to be resampled for uneven gaps, False for a regular one. The rule:

    - missing slices (refused): every irregular gap (off the median by more than ``spacing_relative``) is an
      integer multiple (≥ 2) of the median, and no two of them are next to each other;
    - uneven spacing (resampled): the series is piecewise regular, runs of two or more equal gaps, with at
      most one odd gap between two such runs (where a scan changed its interval);
    - anything else (slices displaced one by one, jitter) is ``non_uniform_spacing``, refused, as is uneven
      spacing when it is not to be resampled or a gap is wider than ``max_interpolated_gap_mm``.
    """
    median = float(np.median(gaps))
    irregular = np.abs(gaps - median) > tol.spacing_relative * median
    if not irregular.any():
        return False
    ratio = gaps / median
    multiple = (np.abs(ratio - np.round(ratio)) < 0.1) & (np.round(ratio) >= 2)
    isolated = irregular & ~np.r_[False, irregular[:-1]] & ~np.r_[irregular[1:], False]
    if (multiple[irregular] & isolated[irregular]).all():
        where = ", ".join(f"{round(ratio[k]) - 1} at {along[k]:.2f} mm (gap {gaps[k]:.2f} mm)"
                          for k in np.flatnonzero(irregular))
        raise SeriesError("missing_slices", uid, f"slice(s) missing: {where}; spacing {median:.2f} mm")
    runs = _runs(gaps, tol.spacing_relative)
    piecewise = all(n >= 2 or (0 < i < len(runs) - 1 and runs[i - 1] >= 2 and runs[i + 1] >= 2)
                    for i, n in enumerate(runs))
    if not piecewise or not tol.resample_uneven:
        raise SeriesError("non_uniform_spacing", uid, f"slice gaps from {gaps.min():.3f} to {gaps.max():.3f} mm")
    if gaps.max() > tol.max_interpolated_gap_mm:
        raise SeriesError("non_uniform_spacing", uid,
                          f"slice gaps from {gaps.min():.3f} to {gaps.max():.3f} mm: a gap of {gaps.max():.2f} mm is "
                          f"wider than the {tol.max_interpolated_gap_mm:g} mm that may be interpolated across")
    return True


def native_grid(positions: np.ndarray, x: np.ndarray, y: np.ndarray, pixel: list[float], size: list[int]) -> dict:
    """The acquired slices as plain data: the first origin, the row and column directions, the unit vector the
    origins step along, the pixel spacing (columns, rows), the slice size and each slice's distance from
    the first along that vector (sorted slices)."""
    offsets = (positions - positions[0]) @ np.asarray(positions[-1] - positions[0])
    offsets = offsets / np.linalg.norm(positions[-1] - positions[0])
    step = (positions[-1] - positions[0]) / (offsets[-1] - offsets[0])
    return {"origin": [float(v) for v in positions[0]], "row_dir": [float(v) for v in x],
            "col_dir": [float(v) for v in y], "step_dir": [float(v) for v in step], "pixel_spacing": list(pixel),
            "size": list(size), "offsets": [round(float(v), 6) for v in offsets]}


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


def _check_itk_geometry(image: sitk.Image, geometry: dict, uid: str) -> None:
    """Cross-check ITK's geometry with the validated headers: a silent disagreement would move every seed. For a
    series to be regridded ITK's slice spacing (its first gap) is not the series' and is not compared."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    compared = 2 if geometry["regrid"] else 3
    if (np.abs(np.array(image.GetOrigin()) - geometry["origin"]).max() > 1e-3
            or np.abs(direction - np.array(geometry["direction"])).max() > 1e-4
            or np.abs(np.subtract(image.GetSpacing(), geometry["spacing"])[:compared]).max()
            > 1e-3 * max(geometry["spacing"])):
        raise SeriesError("geometry_mismatch", uid,
                          f"SimpleITK geometry {image.GetOrigin()}, {image.GetSpacing()} "
                          f"differs from the headers {geometry['origin']}, {geometry['spacing']}")


def _describe_regrid(image: sitk.Image, geometry: dict, fill: float | None) -> None:
    """Record the correction in the volume's header (NRRD key/value pairs), only on regridded volumes."""
    image.SetMetaData("radassets_regrid", geometry["regrid"])
    image.SetMetaData("radassets_interpolation", "linear")
    image.SetMetaData("radassets_fill_hu", f"{fill:g}")
    if geometry["tilt_degrees"] is not None:
        image.SetMetaData("radassets_tilt_degrees", f"{geometry['tilt_degrees']:.4f}")
    image.SetMetaData("radassets_native_grid", json.dumps(geometry["native_grid"]))


def _equalise(stack: np.ndarray, offsets: np.ndarray, step: float, nearest: bool) -> np.ndarray:
    """Slices at ``offsets`` (mm, ascending) → slices ``step`` apart from the first offset up to the last
    (never beyond), each a linear blend of the two acquired slices around it (or the nearer one). Written
    here because SimpleITK has no resampler for irregularly placed slices; it is dcm2niix's ``_Eq`` rule."""
    n = int(math.floor((offsets[-1] - offsets[0]) / step + 1e-6)) + 1
    planes = offsets[0] + np.arange(n) * step
    if n == len(offsets) and np.abs(planes - offsets).max() <= 1e-6 * step:
        return stack  # already regular: no blending, not even by rounding errors
    hi = np.clip(np.searchsorted(offsets, planes, side="left"), 1, len(offsets) - 1)
    lo = hi - 1
    weight = np.clip((planes - offsets[lo]) / (offsets[hi] - offsets[lo]), 0.0, 1.0)
    if nearest:
        weight = np.round(weight)
    weight = weight.astype(np.float32)[:, None, None]
    return stack[lo] * (1 - weight) + stack[hi] * weight


def corrected_grid(native: dict) -> tuple[sitk.Image, sitk.Image]:
    """The grid a regridded series is resampled onto, and the acquired slices' (sheared) grid after equalising,
    both as empty images. The corrected grid has the slices' own planes (axes X, Y, N = X × Y), the pixel
    spacing and the equalised gap along N; it is widened in plane by the shift of the last slice against the
    first (rounded up to whole pixels), as dcm2niix's ``_Tilt_1`` is, so every acquired pixel is inside it."""
    x, y, s = (np.asarray(native[k]) for k in ("row_dir", "col_dir", "step_dir"))
    normal = np.cross(x, y)
    offsets = np.asarray(native["offsets"])
    step = float(np.diff(offsets).min())
    n = int(math.floor((offsets[-1] - offsets[0]) / step + 1e-6)) + 1
    (sx, sy), (cols, rows) = native["pixel_spacing"], native["size"]
    acquired = sitk.Image([cols, rows, n], sitk.sitkFloat32)
    acquired.SetOrigin(native["origin"])
    acquired.SetSpacing((sx, sy, step))
    acquired.SetDirection(np.column_stack([x, y, s]).ravel().tolist())
    shift = (n - 1) * step * s  # where the last slice's origin lies from the first's
    a, b = float(shift @ x), float(shift @ y)
    # The in-plane shift is rounded up to whole pixels (less a micrometre, so that an exact multiple stays one);
    # the grid ends where the slab does, on the far side, and the rounding's slack (under a pixel) lies before
    # the first row or column: where dcm2niix puts it (it counts rows from the other end, as NIfTI does).
    extra = [math.ceil(abs(a) / sx - 1e-3 / sx), math.ceil(abs(b) / sy - 1e-3 / sy)]
    grid = sitk.Image([cols + extra[0], rows + extra[1], n], sitk.sitkFloat32)
    grid.SetOrigin((np.asarray(native["origin"]) + (max(a, 0.0) - extra[0] * sx) * x
                    + (max(b, 0.0) - extra[1] * sy) * y).tolist())
    grid.SetSpacing((sx, sy, step * float(s @ normal)))
    grid.SetDirection(np.column_stack([x, y, normal]).ravel().tolist())
    return grid, acquired


def regrid(stack: np.ndarray, native: dict, interpolator: int, fill: float) -> sitk.Image:
    """Values on the acquired slices (``stack``: slices, rows, columns, sorted) → an image on the corrected grid
    (see ``corrected_grid``): equalised along the slices, then resampled by SimpleITK from the sheared grid
    (direction columns X, Y and the unit step between slice origins) onto the orthogonal one. Voxels outside
    the acquired slab get ``fill``. ``interpolator``: linear for HU, nearest neighbour for masks."""
    grid, acquired = corrected_grid(native)
    offsets = np.asarray(native["offsets"])
    equal = _equalise(stack.astype(np.float32), offsets, acquired.GetSpacing()[2],
                      interpolator == sitk.sitkNearestNeighbor)
    image = sitk.GetImageFromArray(equal)
    image.CopyInformation(acquired)
    return sitk.Resample(image, grid, sitk.Transform(), interpolator, fill, sitk.sitkFloat32)


def read_ct_series(files: Sequence[Path], tol: Tolerances = Tolerances()) -> CTVolume:
    """Validate and convert one CT series to an int16 HU image (SimpleITK, LPS)."""
    if len(files) == 1:
        # One file may hold the whole series as frames (Enhanced / Legacy Converted Enhanced CT).
        from radassets.imaging.multiframe import is_multiframe_ct, read_multiframe_ct  # it imports this module

        if is_multiframe_ct(Path(files[0])):
            return read_multiframe_ct(Path(files[0]), tol)
    started = time.monotonic()
    pixels: dict[Path, bytes] = {}
    ordered, geometry, headers = _validated(files, tol, pixels)
    uid = str(headers[0].get("SeriesInstanceUID", "?"))  # the first sorted slice's, from the headers read once
    # The frame of reference of the first file as given (its masks are matched on it), here rather than re-read.
    frame = str(headers[ordered.index(Path(files[0]))].get("FrameOfReferenceUID", "")) or None
    hu = None if geometry["regrid"] else _native_hu(ordered, headers, pixels)
    if hu is not None:
        image = _as_itk_series_reads(hu, ordered)
        _check_itk_geometry(image, geometry, uid)
        return replace(to_volume(image, geometry, uid, started), frame_of_reference=frame)
    pixels.clear()  # not needed by ITK's read: not held through it
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in ordered])
    try:
        image = reader.Execute()
    except RuntimeError as e:
        # Only now is a slice decoded by pydicom: its error names the transfer syntax and the file, which ITK's
        # does not. A series ITK reads is not decoded twice.
        _check_decodable(ordered[0], uid)
        # The object address ITK puts in its messages changes from run to run: left out, so QC rows repeat.
        reason = re.sub(r"\(0x[0-9a-fA-F]+\)", "", " ".join(str(e).split()))
        raise SeriesError("undecodable", uid, f"SimpleITK could not read the pixels{_failing_file(ordered)}: "
                                              f"{reason}") from None
    _check_itk_geometry(image, geometry, uid)
    return replace(to_volume(image, geometry, uid, started), frame_of_reference=frame)


def _native_hu(ordered: Sequence[Path], headers: Sequence[pydicom.Dataset],
               pixels: dict[Path, bytes]) -> np.ndarray | None:
    """The series' HU as int16 (slices, rows, columns), computed from the pixel data read with the headers, where
    that is exactly what ITK would give; None for anything else (ITK reads those). Why: the series is then parsed
    once, not a second time by GDCM (its read was a third of a series' conversion time). The cases kept here are
    plain: uncompressed 16-bit MONOCHROME2 single-frame slices of one size, one integer rescale for the whole
    series (HU = stored × slope + intercept, exact in integers, as ITK computes it in double), and stored values
    inside BitsStored (so that masking or sign-extending the unused high bits, whoever does it, changes nothing).
    ``radassets_tests/imaging/test_ct_native_read.py`` pins the result against ITK's."""
    first = headers[0]
    fields = ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "RescaleSlope",
              "RescaleIntercept", "PhotometricInterpretation", "SamplesPerPixel")
    same = [first.get(k) for k in fields]
    if (same[2] != 16 or same[7] != "MONOCHROME2" or same[8] != 1 or same[4] not in (0, 1)
            or not 1 <= int(same[3] or 0) <= 16):
        return None
    for path, h in zip(ordered, headers):
        if path not in pixels or [h.get(k) for k in fields] != same or int(h.get("NumberOfFrames", 1) or 1) != 1:
            return None
    rows, columns = int(first.Rows), int(first.Columns)
    if any(len(pixels[p]) != rows * columns * 2 for p in ordered):
        return None
    try:
        slope, intercept = float(first.RescaleSlope), float(first.RescaleIntercept)
    except (AttributeError, TypeError, ValueError):  # absent, empty or several values: GDCM's defaults, in ITK
        return None
    if slope == 0 or not (slope.is_integer() and intercept.is_integer()):  # GDCM reads a slope of 0 as 1
        return None
    signed, bits = int(first.PixelRepresentation) == 1, int(first.BitsStored)
    stored = np.frombuffer(b"".join(pixels[p] for p in ordered), "<i2" if signed else "<u2")
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if stored.size == 0:
        return None
    smallest, largest = int(stored.min()), int(stored.max())
    if smallest < low or largest > high:
        return None
    # Exact integers: |stored| < 2^16, so int32 holds stored × slope + intercept for any slope and intercept that
    # keep the ends of the range within it (checked in Python integers); else int64.
    ends = (smallest * int(slope) + int(intercept), largest * int(slope) + int(intercept))
    wide = np.int32 if all(-(1 << 31) <= v < (1 << 31) for v in (*ends, int(intercept))) else np.int64
    hu = stored.astype(wide)
    if slope != 1:
        hu *= int(slope)
    hu += int(intercept)
    if min(ends) < -32768 or max(ends) > 32767:  # clamped to int16 as ITK's path clamps (to_volume)
        np.clip(hu, -32768, 32767, out=hu)
    return hu.astype(np.int16).reshape(len(ordered), rows, columns)


def _as_itk_series_reads(hu: np.ndarray, ordered: Sequence[Path]) -> sitk.Image:
    """``hu`` on the grid ``sitk.ImageSeriesReader`` gives ``ordered`` (ITK's ``GenerateOutputInformation``): the
    first file's origin, pixel spacing and direction as GDCM reads them (its header only), and the slice spacing
    |last origin - first origin| / (n - 1), computed in double as ITK's ``Vector::GetNorm`` does."""
    readers = []
    for path in (ordered[0], ordered[-1]):
        reader = sitk.ImageFileReader()
        reader.SetImageIO("GDCMImageIO")
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        readers.append(reader)
    d = [b - a for a, b in zip(readers[0].GetOrigin(), readers[1].GetOrigin())]
    norm = math.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
    image = sitk.GetImageFromArray(hu)
    image.SetOrigin(readers[0].GetOrigin())
    image.SetSpacing((*readers[0].GetSpacing()[:2], norm / (len(ordered) - 1) if norm else 1.0))
    image.SetDirection(readers[0].GetDirection())
    return image


def to_volume(image: sitk.Image, geometry: dict, uid: str, started: float, **qc: object) -> CTVolume:
    """The read slices (HU, on the grid ``stack_geometry`` gave; any pixel type) → the int16 HU volume and its QC
    row, resampled first onto a regular grid where the geometry says so (``regrid``). ``qc``: more QC values."""
    fill = None
    if geometry["regrid"]:
        native = sitk.GetArrayFromImage(image).astype(np.float32)
        fill = float(native.min())
        image = regrid(native, geometry["native_grid"], sitk.sitkLinear, fill)
    # ITK applies the rescale and widens the type (int32, or float for fractional slopes); HU are
    # stored as int16, rounded to 1 HU, which is below CT precision.
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        image = sitk.Round(image)
    hu = sitk.Cast(sitk.Clamp(image, lowerBound=-32768, upperBound=32767), sitk.sitkInt16)
    if geometry["regrid"]:
        _describe_regrid(hu, geometry, fill)
    array = sitk.GetArrayViewFromImage(hu)
    row = {
        "SeriesInstanceUID": uid, "status": "ok", "code": None, "message": None,
        "slices": hu.GetSize()[2], "rows": hu.GetSize()[1], "columns": hu.GetSize()[0],
        "spacing_x": hu.GetSpacing()[0], "spacing_y": hu.GetSpacing()[1], "spacing_z": hu.GetSpacing()[2],
        "direction": [round(v, 6) for v in hu.GetDirection()], "origin": list(hu.GetOrigin()),
        "transfer_syntax": geometry.get("transfer_syntax"), "hu_min": int(array.min()), "hu_max": int(array.max()),
        "tilt_degrees": None if geometry["tilt_degrees"] is None else round(geometry["tilt_degrees"], 4),
        "regrid": geometry["regrid"], "seconds": round(time.monotonic() - started, 3),
        "native_grid": json.dumps(geometry["native_grid"]) if geometry["regrid"] else None, **qc,
    }
    return CTVolume(hu, uid, row)


def failure_qc(files: Sequence[Path], error: QCError) -> dict:
    """The QC row of a series that could not be converted."""
    return {"SeriesInstanceUID": error.series, "status": "failed", "code": error.code, "message": str(error),
            "slices": len(files)}
