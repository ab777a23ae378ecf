"""What a series holds before it is converted: one stack of CT slices, a non-volume series, or several stacks.

Real CT studies hold series that are not volumes: localizers (scouts, topograms), dose-report and protocol
screens (Secondary Capture, often with Modality CT), single images. Such a series is **excluded**: recorded
with its reason, never counted as a failure (``SeriesExcluded``). The rules, in order, each on the files'
headers (PS3.3 C.8.2.1.1.1 for CT's ImageType):

- ``not_ct_image``: a SOP class that is not a CT image (Secondary Capture, Raw Data, an SR, ...);
- ``localizer``: ``LOCALIZER`` (or a vendor's ``SCOUT``, ``TOPOGRAM``, ``SURVIEW``) in ImageType;
- ``screen_capture``: a DERIVED\\SECONDARY image that is a picture of a screen: colour pixels, no position in
  the patient, or ``SCREEN SAVE`` / a dose or protocol page named in ImageType;
- ``single_image``: one single-frame image, which cannot be a volume.

A series whose files mix an excluded kind with CT slices is not excluded: the rule must hold for every file,
so that nothing that could be a volume is dropped silently.

Several stacks in one series (two orientations, a repeat over the same range, contrast phases told apart by
AcquisitionNumber or TemporalPositionIdentifier) are never merged: ``find_stacks`` names them and the series
fails with its own code, ``several_stacks``, and the count of slices of each stack. A step-and-shoot
(sequential) scan gives each rotation its own AcquisitionNumber over disjoint positions: one stack, not
several, which is why AcquisitionNumber splits only slices that share a position.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom

from radassets.idc.schema import CT_IMAGE_CLASSES
from radassets.imaging.qc import QCError
Headers = Sequence[tuple[Path, pydicom.Dataset]]

LOCALIZER_WORDS = ("LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW")
# Whole ImageType values that name a screen or a report page (GE's SCREEN SAVE, dose pages, protocol pages); a
# vendor's fourth value ending in " PROT" (Siemens' CT_SOM5 PROT) too. Whole values: a "LOW DOSE" series is a CT.
SCREEN_VALUES = ("SCREEN SAVE", "SCREENSHOT", "DOSE INFO", "DOSE_INFO", "DOSE REPORT", "DOSE_REPORT", "PROTOCOL",
                 "PATIENT PROTOCOL")
MULTIFRAME_CT_CLASSES = CT_IMAGE_CLASSES[1:]


class SeriesExcluded(QCError):
    """A series that is not a volume to convert: recorded as ``excluded`` with its reason, not a failure."""

    CODES = ("not_ct_image", "localizer", "screen_capture", "single_image", "modality_not_converted",
             "excluded_by_index")
    NOUN = "series"


def _image_type(ds: pydicom.Dataset) -> list[str]:
    value = ds.get("ImageType") or []
    return [str(v).upper() for v in (value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value])]


def _file_kind(ds: pydicom.Dataset) -> tuple[str, str] | None:
    """The exclusion code and reason of one file, or None when it may be a slice of a volume."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class and sop_class not in CT_IMAGE_CLASSES:
        name = pydicom.uid.UID(sop_class).name or sop_class
        return "not_ct_image", f"{name}, not a CT image"
    image_type = _image_type(ds)
    shown = "\\".join(image_type)
    words = [w for w in LOCALIZER_WORDS if any(w in v for v in image_type)]
    if words:
        return "localizer", f"a localizer (ImageType {shown})"
    if image_type[:2] == ["DERIVED", "SECONDARY"]:
        screen = any(v in SCREEN_VALUES or v.endswith(" PROT") for v in image_type[2:])
        colour = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() not in ("MONOCHROME1", "MONOCHROME2")
        # A multi-frame file places its frames in its functional groups, never at the top level.
        placed = ("PerFrameFunctionalGroupsSequence" in ds if sop_class in MULTIFRAME_CT_CLASSES
                  else "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds)
        unplaced = not placed
        if screen or colour or unplaced:
            why = "colour pixels" if colour else ("no position in the patient" if unplaced else "ImageType")
            return "screen_capture", f"a screen capture ({why}; ImageType {shown})"
    return None


def excluded_reason(headers: Headers) -> SeriesExcluded | None:
    """Why the whole series is excluded, or None when it is to be converted (see the module docstring)."""
    if not headers:
        return None
    uid = str(headers[0][1].get("SeriesInstanceUID", "?"))
    kinds = [_file_kind(ds) for _, ds in headers]
    codes = {k[0] if k else None for k in kinds}
    if len(codes) == 1 and None not in codes:
        code, reason = kinds[0]  # type: ignore[misc]
        return SeriesExcluded(code, uid, f"{len(headers)} image(s), {reason}: not a volume")
    if len(headers) == 1 and codes == {None} and int(headers[0][1].get("NumberOfFrames", 1) or 1) == 1:
        return SeriesExcluded("single_image", uid, "one single-frame image: not a volume")
    return None


# Orientations closer than this are one orientation for telling stacks apart; the geometry checks still hold a
# stack to ``Tolerances.orientation``. Stacks of another orientation differ by far more (a tilt change, a plane).
SAME_ORIENTATION = 0.01
# Slices closer than this along the normal share a position (the geometry checks' duplicate threshold, in mm).
SAME_POSITION_MM = 1e-3


def _orientations(headers: Headers) -> list[int]:
    """The orientation group of each file (-1: none), grouping orientations within ``SAME_ORIENTATION``."""
    seen: list[np.ndarray] = []
    groups = []
    for _, ds in headers:
        if "ImageOrientationPatient" not in ds:
            groups.append(-1)
            continue
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        match = next((n for n, other in enumerate(seen) if np.abs(iop - other).max() <= SAME_ORIENTATION), None)
        if match is None:
            seen.append(iop)
            match = len(seen) - 1
        groups.append(match)
    return groups


def _along_normal(headers: Headers) -> np.ndarray | None:
    """Each file's position along the first file's slice normal (None when a file lacks its geometry)."""
    first = headers[0][1]
    if any("ImagePositionPatient" not in ds for _, ds in headers) or "ImageOrientationPatient" not in first:
        return None
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    return np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in headers]) @ normal


def _shares_positions(along: np.ndarray) -> bool:
    return len(along) > 1 and bool((np.diff(np.sort(along)) < SAME_POSITION_MM).any())


def _is_stack(along: np.ndarray, members: list[int], min_slices: int) -> bool:
    """Whether ``members`` are a stack of their own over positions other slices also hold."""
    mine = along[members]
    others = np.delete(along, members)
    overlaps = bool((np.abs(others[:, None] - mine[None, :]) < SAME_POSITION_MM).any())
    return len(members) >= min_slices and not _shares_positions(mine) and overlaps


def mixed_kinds(headers: Headers) -> str | None:
    """A description when some files of a series are not volume slices (a localizer among the slices) and others
    are: never dropped silently, the series is refused as holding several stacks."""
    kinds = [_file_kind(ds) for _, ds in headers]
    # A file of another SOP class (an MR image in a CT series) is a defect of its own (``not_ct``), not a stack.
    odd = [k for k in kinds if k is not None and k[0] != "not_ct_image"]
    if not odd or len(odd) == len(kinds):
        return None
    return f"{len(odd)} image(s) that are {odd[0][1]} among {len(kinds) - len(odd)} volume slice(s)"


def several_stacks(headers: Headers, min_slices: int) -> str | None:
    """A description of the stacks when a series holds more than one, else None (one stack, or a defect that
    the geometry checks name: a stray slice of another orientation, duplicates with nothing to tell them apart).
    """
    if not headers:
        return None
    mixed = mixed_kinds(headers)
    if mixed:
        return mixed
    orientation = _orientations(headers)
    sizes = {g: orientation.count(g) for g in set(orientation) if g >= 0}
    large = {g: n for g, n in sizes.items() if n >= min_slices}
    if len(large) > 1:
        shown = ", ".join(f"{n} slices at ImageOrientationPatient "
                          f"{[round(float(v), 3) for v in headers[orientation.index(g)][1].ImageOrientationPatient]}"
                          for g, n in large.items())
        return f"{len(large)} orientations ({shown})"
    along = _along_normal(headers)
    if along is None or len(sizes) > 1 or not _shares_positions(along):
        return None
    # Slices share positions: stacks when one attribute splits them into groups of a volume's size, each free of
    # duplicates and each over positions another group also holds (a repeat, a phase; not a rotation's own range).
    for keyword in ("StackID", "TemporalPositionIdentifier", "TemporalPositionIndex", "AcquisitionNumber",
                    "AcquisitionTime", "EchoNumbers"):
        groups: dict[str, list[int]] = defaultdict(list)
        for n, (_, ds) in enumerate(headers):
            groups[str(ds.get(keyword, ""))].append(n)
        if len(groups) > 1 and all(_is_stack(along, members, min_slices) for members in groups.values()):
            shown = ", ".join(f"{keyword} {key or 'absent'}: {len(members)} slices" for key, members in groups.items())
            return f"{len(groups)} stacks over the same positions, told apart by {keyword} ({shown})"
    return None
