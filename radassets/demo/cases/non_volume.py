"""Series a CT study holds besides its volumes, and series that hold more than one stack.

Written as scanners write them (PS3.3 C.8.2.1.1.1 ImageType; Secondary Capture for dose screens, as GE and
Siemens write their dose reports, Modality CT):

- ``localizer``: one or two images, ImageType ORIGINAL\\PRIMARY\\LOCALIZER, a large slice thickness;
- ``dose_screen``: a Secondary Capture of a dose report, RGB, DERIVED\\SECONDARY\\SCREEN SAVE (highdicom SCImage);
- ``protocol_page``: CT Image Storage, DERIVED\\SECONDARY\\OTHER, no position in the patient (a vendor's
  protocol page stored as a CT image);
- ``single_axial``: one axial slice;
- ``two_phases``: one series holding two acquisitions over the same positions (AcquisitionNumber 1 and 2,
  e.g. arterial and venous phases written into one series);
- ``two_orientations``: axial slices and coronal slices in one series;
- ``sequential``: a step-and-shoot scan, each rotation's slices with their own AcquisitionNumber: one stack.

Every UID is derived from the case's name and a seed, so the files are the same bytes at every generation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.uid import generate_uid

from radassets.demo.dicom_writer import DEMO_DATE, DEMO_TIME, MANUFACTURER, Geometry, SeriesIds, write_ct_series

CASES = ("localizer", "dose_screen", "protocol_page", "single_axial", "two_phases", "two_orientations", "sequential")


@dataclass(frozen=True)
class Study:
    """The patient and study the cases belong to, and where their UIDs come from."""

    patient_id: str = "SCANNER-001"
    seed: str = "radassets scanner cases"

    def uid(self, *parts: object) -> str:
        return generate_uid(entropy_srcs=[self.seed, self.patient_id, *map(str, parts)])


def small_axial(slices: int = 12, size: int = 32, spacing: float = 2.5, z0: float = -40.0) -> Geometry:
    return Geometry(rows=size, cols=size, row_spacing=1.5, col_spacing=1.5, slice_spacing=spacing, n_slices=slices,
                    row_dir=(1.0, 0.0, 0.0), col_dir=(0.0, 1.0, 0.0),
                    origin=(-(size - 1) * 0.75, -(size - 1) * 0.75, z0), descending_instances=False)


def _ids(study: Study, name: str, number: int, slices: int) -> SeriesIds:
    return SeriesIds(patient_id=study.patient_id, patient_sex="O", patient_age="060Y", study_uid=study.uid("study"),
                     series_uid=study.uid(name, "series"), frame_of_reference_uid=study.uid("frame"),
                     series_number=number, series_description=name,
                     sop_uids=tuple(study.uid(name, "sop", k) for k in range(slices)))


def _body(geom: Geometry) -> np.ndarray:
    """A water cylinder in air, HU, shape (slices, rows, cols): enough for a real-looking image."""
    points = geom.points()
    inside = np.hypot(points[..., 0], points[..., 1]) < 0.4 * geom.cols * geom.col_spacing
    return np.where(inside, 40.0, -1000.0)


def _write(folder: Path, geom: Geometry, ids: SeriesIds, edit: Callable[[pydicom.Dataset, int], None] | None = None,
           prefix: str = "") -> list[Path]:
    """Write a CT series with the demo's writer, then apply ``edit(dataset, k)`` to each file."""
    names = [f"{prefix}{k:03d}.dcm" for k in range(geom.n_slices)]
    write_ct_series(folder, geom, ids, _body(geom), names)
    paths = [folder / n for n in names]
    if edit is not None:
        for k, path in enumerate(paths):
            ds = pydicom.dcmread(path)
            edit(ds, k)
            ds.save_as(path, enforce_file_format=True)
    return paths


def write_localizer(folder: Path, study: Study = Study(), images: int = 2) -> list[Path]:
    """A scout: an AP and a lateral projection (or one), ImageType ORIGINAL\\PRIMARY\\LOCALIZER."""
    geom = small_axial(slices=images, size=48, spacing=1.0)

    def edit(ds: pydicom.Dataset, k: int) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.SliceThickness = "600"
        if k == 1:  # the lateral view
            ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]

    return _write(folder, geom, _ids(study, "localizer", 1, images), edit)


def write_dose_screen(folder: Path, study: Study = Study()) -> list[Path]:
    """A dose report screen: Secondary Capture, RGB, Modality CT, DERIVED\\SECONDARY\\SCREEN SAVE."""
    pixels = np.zeros((64, 96, 3), dtype=np.uint8)
    pixels[8:56:8, 8:88] = 255  # lines of "text"
    image = hd.sc.SCImage(
        pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
        study_instance_uid=study.uid("study"), series_instance_uid=study.uid("dose_screen", "series"),
        series_number=999, sop_instance_uid=study.uid("dose_screen", "sop", 0), instance_number=1,
        manufacturer=MANUFACTURER, patient_id=study.patient_id, patient_name=f"Case^{study.patient_id}",
        patient_sex="O", study_date=DEMO_DATE, study_time=DEMO_TIME, patient_orientation=("L", "P"))
    image.Modality = "CT"
    image.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    image.SeriesDescription = "Dose Report"
    for keyword in ("ContentDate", "InstanceCreationDate", "SeriesDate"):
        if keyword in image:
            setattr(image, keyword, DEMO_DATE)
    for keyword in ("ContentTime", "InstanceCreationTime", "SeriesTime"):
        if keyword in image:
            setattr(image, keyword, DEMO_TIME)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dose.dcm"
    image.save_as(path, enforce_file_format=True)
    return [path]


def write_protocol_page(folder: Path, study: Study = Study()) -> list[Path]:
    """A protocol page stored as a CT image: DERIVED\\SECONDARY\\OTHER, without a position in the patient."""
    geom = small_axial(slices=1, size=48)

    def edit(ds: pydicom.Dataset, k: int) -> None:
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "SliceLocation"):
            delattr(ds, keyword)

    return _write(folder, geom, _ids(study, "protocol_page", 998, 1), edit)


def write_single_axial(folder: Path, study: Study = Study()) -> list[Path]:
    geom = small_axial(slices=1)
    return _write(folder, geom, _ids(study, "single_axial", 3, 1))


def write_two_phases(folder: Path, study: Study = Study()) -> list[Path]:
    """Two acquisitions over the same positions in one series (AcquisitionNumber 1 and 2)."""
    geom = small_axial(slices=10)
    ids = _ids(study, "two_phases", 4, 20)
    first = replace(ids, sop_uids=ids.sop_uids[:10])
    second = replace(ids, sop_uids=ids.sop_uids[10:])

    def phase(number: int) -> Callable[[pydicom.Dataset, int], None]:
        def edit(ds: pydicom.Dataset, k: int) -> None:
            ds.AcquisitionNumber = number
            ds.InstanceNumber = k + 1 + 10 * (number - 1)
        return edit

    return _write(folder, geom, first, phase(1), "a") + _write(folder, geom, second, phase(2), "b")


def write_two_orientations(folder: Path, study: Study = Study()) -> list[Path]:
    """Axial and coronal slices in one series (a reformat stored with its source)."""
    axial = small_axial(slices=8)
    coronal = replace(small_axial(slices=8), col_dir=(0.0, 0.0, -1.0), origin=(-23.25, -10.0, 0.0))
    ids = _ids(study, "two_orientations", 5, 16)
    return (_write(folder, axial, replace(ids, sop_uids=ids.sop_uids[:8]), prefix="ax")
            + _write(folder, coronal, replace(ids, sop_uids=ids.sop_uids[8:]), prefix="cor"))


def write_sequential(folder: Path, study: Study = Study(), per_rotation: int = 4) -> list[Path]:
    """A step-and-shoot scan: 16 slices, each rotation's 4 with their own AcquisitionNumber. One stack."""
    geom = small_axial(slices=16)

    def edit(ds: pydicom.Dataset, k: int) -> None:
        ds.AcquisitionNumber = 1 + k // per_rotation

    return _write(folder, geom, _ids(study, "sequential", 6, 16), edit)


WRITERS: dict[str, Callable[[Path, Study], list[Path]]] = {
    "localizer": write_localizer, "dose_screen": write_dose_screen, "protocol_page": write_protocol_page,
    "single_axial": write_single_axial, "two_phases": write_two_phases,
    "two_orientations": write_two_orientations, "sequential": write_sequential,
}


def write_case(name: str, folder: Path, study: Study = Study()) -> list[Path]:
    """Write one case (``CASES``) into ``folder``; returns its files."""
    return WRITERS[name](folder, study)
