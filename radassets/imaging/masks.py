"""Tumour masks on the CT grid: DICOM SEG read with highdicom, one binary image per segment.

A SEG is read as a volume in its own frame geometry (highdicom ``get_volume``, LPS) and resampled
with nearest-neighbour interpolation onto the CT image's grid, so a SEG whose frames do not
coincide with the CT slices (another spacing, a subset, another orientation) still lands where it
belongs. A SEG on another FrameOfReference than its CT is refused.

RTSTRUCT is not handled here yet: rt-utils 1.2.7 is wrong for non-square pixels and plastimatch
1.10 showed a ~0.45-voxel shift on the demo, so the rasterizer is still to be chosen (issue 3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk


class MaskError(ValueError):
    """A mask cannot be placed on its CT: the message names the mask series and the cause."""


@dataclass
class Segment:
    label: str
    number: int
    image: sitk.Image  # uint8 0/1 on the CT grid
    voxels: int


def read_seg_segments(seg_path: Path, ct: sitk.Image, ct_frame_of_reference: str | None = None) -> list[Segment]:
    """Every segment of a DICOM SEG as a binary image on the grid of ``ct``."""
    seg = hd.seg.segread(str(seg_path))
    uid = str(seg.SeriesInstanceUID)
    if ct_frame_of_reference and str(seg.FrameOfReferenceUID) != ct_frame_of_reference:
        raise MaskError(f"SEG {uid}: FrameOfReferenceUID {seg.FrameOfReferenceUID} is not the CT's {ct_frame_of_reference}")
    segments = []
    for description in seg.SegmentSequence:
        number = int(description.SegmentNumber)
        try:
            volume = seg.get_volume(segment_numbers=[number], combine_segments=True, dtype=np.uint8)
        except (RuntimeError, ValueError) as e:
            raise MaskError(f"SEG {uid}: segment {number} ({description.SegmentLabel}) has no regular volume: {e}") from None
        own = volume.to_simpleitk()
        on_ct = sitk.Resample(own, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        segments.append(Segment(str(description.SegmentLabel), number, on_ct,
                                int(sitk.GetArrayViewFromImage(on_ct).sum())))
    return segments


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
        raise MaskError("empty mask: no centroid")
    origin = np.array(mask.GetOrigin())
    axes = np.array(mask.GetDirection()).reshape(3, 3) * np.array(mask.GetSpacing())
    return origin + axes @ np.array([i.mean(), j.mean(), k.mean()])
