"""Convert many CT series to volumes: one QC row per series; a bad series never stops the rest.

Volumes are written as NRRD (``space: left-posterior-superior``, gzip), which keeps the ITK/LPS
geometry exactly and opens in 3D Slicer; every file is written to a temporary name and renamed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import SimpleITK as sitk

from radassets.imaging.ct import SeriesError, Tolerances, failure_qc, read_ct_series
from radassets.storage import atomic_path


def write_volume(image: sitk.Image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True, imageIO="NrrdImageIO")
    return path


def convert_series(series: Mapping[str, Sequence[Path]], out_dir: Path, tol: Tolerances = Tolerances(),
                   progress: Callable[[int, int, str], None] | None = None) -> list[dict]:
    """``series``: SeriesInstanceUID → its files. Returns one QC row per series, in input order."""
    rows = []
    for i, (uid, files) in enumerate(series.items(), start=1):
        try:
            volume = read_ct_series(files, tol)
            path = write_volume(volume.image, Path(out_dir) / f"{uid}.nrrd")
            row = dict(volume.qc, path=str(path))
        except SeriesError as e:
            row = failure_qc(files, SeriesError(e.code, uid, str(e).split(": ", 1)[-1]))
        rows.append(row)
        if progress:
            progress(i, len(series), f"{row['status']}: {uid}" + (f" ({row['code']})" if row["code"] else ""))
    return rows
