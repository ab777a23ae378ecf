"""Seed points from a folder of the user's own DICOM files: CT series plus SEG / RTSTRUCT masks.

Files may have any names and any nesting; anything that is not DICOM is skipped and counted.
A damaged file (a DICOM file that cannot be read, a CT slice truncated before its series UID) is
listed as a failure, and so is any exception while reading one mask or its CT: the other lesions
are still written.
Each mask is matched to the CT series it references (SEG: ReferencedSeriesSequence; RTSTRUCT:
RTReferencedSeriesSequence), or, when it names none present, to the only CT series on its
frame of reference. The same code as the ``volumes`` and ``seeds`` assets converts the CT and
places the mask on it, so a seed from this command equals the pipeline's.
"""

from __future__ import annotations

import json

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from radassets.imaging.ct import CTVolume, QCError, SeriesError, describe_exception, read_ct_series
from radassets.imaging.series_kind import CT_IMAGE_CLASSES
from radassets.errors import RadassetsError
from radassets.imaging.masks import (RTSTRUCT_STORAGE, SEG_STORAGES, MaskError, centroid_lps, read_mask_header,
                                     read_mask_segments, select_segments)

SEED_CSV_COLUMNS = ["SeriesInstanceUID", "segment_label", "coordX", "coordY", "coordZ", "voxels", "volume_ml"]
_TAGS = ["SOPClassUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Modality"]


class FolderError(RadassetsError, ValueError):
    """The folder holds nothing to take seeds from (no DICOM, no CT, no mask)."""


@dataclass
class FolderScan:
    root: Path
    ct_series: dict[str, list[Path]] = field(default_factory=dict)  # SeriesInstanceUID -> files
    ct_frames: dict[str, str] = field(default_factory=dict)  # SeriesInstanceUID -> FrameOfReferenceUID
    masks: list[Path] = field(default_factory=list)
    skipped: int = 0  # not DICOM, or DICOM of another kind (MR, SR, ...)
    unreadable: list[str] = field(default_factory=list)  # DICOM files that cannot be read: "PATH: cause"


def scan_folder(root: Path) -> FolderScan:
    root = Path(root)
    if not root.is_dir():
        raise FolderError(f"{root} is not a folder")
    scan = FolderScan(root)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
        except InvalidDicomError:  # not DICOM at all (no preamble and no DICOM header)
            scan.skipped += 1
            continue
        except Exception as e:  # noqa: BLE001 - a damaged DICOM file is a failure to list, not a crash
            scan.unreadable.append(f"{path}: cannot read it: {describe_exception(e)}")
            continue
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class in CT_IMAGE_CLASSES:
            uid = str(ds.get("SeriesInstanceUID", ""))
            if not uid:
                # It belongs to some CT series, which may now lack a slice: listed, so never silent.
                scan.unreadable.append(f"{path}: CT file without a SeriesInstanceUID "
                                       f"({path.stat().st_size} bytes: truncated?)")
                continue
            scan.ct_series.setdefault(uid, []).append(path)
            scan.ct_frames[uid] = str(ds.get("FrameOfReferenceUID", ""))
        elif sop_class in (*SEG_STORAGES, RTSTRUCT_STORAGE):
            scan.masks.append(path)
        else:
            scan.skipped += 1
    if not scan.ct_series and not scan.masks:
        raise FolderError(f"no CT, SEG or RTSTRUCT files under {root} ({scan.skipped} other files skipped)")
    if not scan.masks:
        raise FolderError(f"no SEG or RTSTRUCT under {root}: seeds come from masks "
                          f"({len(scan.ct_series)} CT series found)")
    return scan


def _ct_for(header, scan: FolderScan) -> str:
    for uid in header.referenced_series:
        if uid in scan.ct_series:
            return uid
    same_frame = [uid for uid, frame in scan.ct_frames.items()
                  if header.frame_of_reference and frame == header.frame_of_reference]
    if len(same_frame) == 1:
        return same_frame[0]
    raise MaskError("no_reference", header.series_uid,
                    f"none of its referenced CT series ({', '.join(header.referenced_series) or 'none'}) is in the "
                    f"folder, and {len(same_frame)} CT series share its frame of reference")


def seeds_from_folder(root: Path, labels: Sequence[str] | None = None,
                      progress: Callable[[str], None] | None = None) -> tuple[list[dict[str, Any]], list[str], FolderScan]:
    """One row per lesion (``SEED_CSV_COLUMNS``), the failures (one message each), and the scan."""
    scan = scan_folder(root)
    volumes: dict[str, CTVolume | QCError] = {}
    rows: list[dict[str, Any]] = []
    failures = list(scan.unreadable)
    for path in scan.masks:
        try:
            header = read_mask_header(path)
            ct_uid = _ct_for(header, scan)
            if ct_uid not in volumes:
                try:
                    volumes[ct_uid] = read_ct_series(scan.ct_series[ct_uid])
                except QCError as e:  # a failure, or a series that is not a volume (a localizer)
                    volumes[ct_uid] = e
                except Exception as e:  # noqa: BLE001 - that CT's failure, with its type and origin
                    volumes[ct_uid] = SeriesError("conversion_error", ct_uid, describe_exception(e))
            volume = volumes[ct_uid]
            if isinstance(volume, QCError):
                raise MaskError("no_reference", header.series_uid, f"its CT cannot be converted: {volume}")
            image = volume.image
            # A regridded CT (gantry tilt, uneven gaps): its masks were drawn on the acquired slices.
            native = json.loads(volume.qc["native_grid"]) if volume.qc.get("native_grid") else None
            segments = read_mask_segments(path, image, scan.ct_frames.get(ct_uid) or None, native)
        except MaskError as e:
            failures.append(f"{path}: {e}")
            continue
        except Exception as e:  # noqa: BLE001 - that mask's failure, with its type and origin
            failures.append(f"{path}: {describe_exception(e)}")
            continue
        chosen = select_segments(segments, list(labels) if labels else None, "labels" if labels else "all")
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        for s in chosen:
            if s.voxels == 0:
                failures.append(f"{path}: segment {s.number} ({s.label}) is empty on the CT grid")
                continue
            x, y, z = centroid_lps(s.image)
            rows.append({"SeriesInstanceUID": ct_uid, "segment_label": s.label, "coordX": round(float(x), 4),
                         "coordY": round(float(y), 4), "coordZ": round(float(z), 4), "voxels": s.voxels,
                         "volume_ml": round(s.voxels * voxel_ml, 4)})
        if progress:
            progress(f"{header.modality} {header.series_uid}: {len(chosen)} segment(s) on CT {ct_uid}")
    return rows, failures, scan
