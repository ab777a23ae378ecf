"""SEG masks on the CT grid: lesion centroids against the demo's analytic truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pydicom
import pytest
import SimpleITK as sitk

from radassets.demo.generator import BUCKET
from radassets.imaging.ct import read_ct_series
from radassets.imaging.masks import MaskError, Segment, centroid_lps, read_seg_segments, select_segments


def seg_cases(demo: Path):
    """(CT files, SEG file, truth rows) for every current SEG of the demo."""
    index = pq.read_table(demo / "index" / "idc_index.parquet").to_pandas()
    truth = pd.read_csv(demo / "truth" / "lesions.csv")
    for seg in index[index.Modality == "SEG"].itertuples():
        rows = truth[truth.mask_SeriesInstanceUID == seg.SeriesInstanceUID]
        rows = rows[rows.series_version == rows.series_version.max()]
        ct = index[index.SeriesInstanceUID == rows.SeriesInstanceUID.iloc[0]].iloc[0]
        yield (sorted((demo / "bucket" / BUCKET / ct.crdc_series_uuid).glob("*.dcm")),
               next((demo / "bucket" / BUCKET / seg.crdc_series_uuid).glob("*.dcm")), rows)


def test_seg_segments_land_on_the_lesions(small_demo):
    n = 0
    for ct_files, seg_file, truth in seg_cases(small_demo):
        volume = read_ct_series(ct_files)
        frame = str(pydicom.dcmread(ct_files[0], stop_before_pixels=True).FrameOfReferenceUID)
        segments = read_seg_segments(seg_file, volume.image, frame)
        assert sorted(s.label for s in segments) == sorted(truth.segment_label)
        for s in segments:
            row = truth[truth.segment_label == s.label].iloc[0]
            assert s.image.GetSize() == volume.image.GetSize()
            error = np.linalg.norm(centroid_lps(s.image) - [row.coordX, row.coordY, row.coordZ])
            assert error <= 0.5 * max(volume.image.GetSpacing()), (s.label, error)
            n += 1
    assert n >= 4


def test_seg_resamples_onto_another_grid(small_demo):
    """A reference grid unlike the SEG's frames (1 mm isotropic, cropped): the lesion stays put."""
    ct_files, seg_file, truth = next(seg_cases(small_demo))
    ct = read_ct_series(ct_files).image
    row = truth[truth.segment_label == "GTV-1"].iloc[0]
    centre = np.array([row.coordX, row.coordY, row.coordZ])
    size = 80
    grid = sitk.Image([size] * 3, sitk.sitkInt16)
    grid.SetSpacing((1.0, 1.0, 1.0))
    grid.SetDirection(ct.GetDirection())
    axes = np.array(ct.GetDirection()).reshape(3, 3)
    grid.SetOrigin(tuple(centre - axes @ np.full(3, (size - 1) / 2)))
    [gtv] = [s for s in read_seg_segments(seg_file, grid) if s.label == "GTV-1"]
    assert np.linalg.norm(centroid_lps(gtv.image) - centre) <= 0.5 * max(ct.GetSpacing())
    assert gtv.voxels * 1e-3 == pytest.approx(row.mask_volume_ml, rel=0.25)


def test_seg_on_another_frame_of_reference_is_refused(small_demo):
    ct_files, seg_file, _ = next(seg_cases(small_demo))
    with pytest.raises(MaskError, match="FrameOfReferenceUID"):
        read_seg_segments(seg_file, read_ct_series(ct_files).image, "1.2.3.4")


def test_segment_selection():
    def seg(label, voxels):
        return Segment(label, 0, sitk.Image([1, 1, 1], sitk.sitkUInt8), voxels)

    segments = [seg("Kidney", 900), seg("Tumor", 50), seg("Tumor-2", 80), seg("GTV-1", 10)]
    assert [s.label for s in select_segments(segments, ["GTV-1"], "labels")] == ["GTV-1"]
    assert [s.label for s in select_segments(segments, ["(?i)tumou?r.*"], "largest")] == ["Tumor-2"]
    assert [s.label for s in select_segments(segments, None, "largest")] == ["Kidney"]
    assert len(select_segments(segments, None, "all")) == 4
