"""Analytic phantoms written as real DICOM (CT + SEG or RTSTRUCT) on chosen geometries, for known answers.

HU is an affine function of the LPS position, so any correct linear resampling of the volume
reproduces it exactly (up to the 1 HU rounding of storage); the lesion is a sphere with a known
centre. Files are written in a shuffled order with shuffled names, and InstanceNumber may run
against the slice order, so nothing can rely on file order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from radassets.demo.dicom_writer import Geometry, SeriesIds, write_ct_series, write_rtstruct, write_seg

HU_GRADIENT = np.array([0.8, -0.5, 1.5])  # HU per mm along L, P, S
HU_OFFSET = 20.0


def hu_field(points: np.ndarray) -> np.ndarray:
    return points @ HU_GRADIENT + HU_OFFSET


def rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def geometry(name: str) -> Geometry:
    """Named test geometries: axial, flipped (feet first, columns to the right), double oblique,
    anisotropic with non-square pixels, each centred near (10, -20, -150) mm."""
    x, y = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    spacing = (0.8, 0.8, 1.25)  # row spacing, column spacing, slice spacing
    descending = False
    if name == "flipped":
        x, y, descending = -x, y, True  # normal = -z: slices run from head to feet
    elif name == "oblique":
        r = rotation((1.0, 1.0, 0.3), 25.0)
        x, y = r @ x, r @ y
    elif name == "anisotropic":
        spacing, descending = (1.1, 0.7, 2.5), True
    elif name != "axial":
        raise ValueError(name)
    size, n_slices = 80, 64
    row_spacing, col_spacing, slice_spacing = spacing
    normal = np.cross(x, y)
    center = np.array([10.0, -20.0, -150.0])
    origin = (center - (size - 1) / 2 * col_spacing * x - (size - 1) / 2 * row_spacing * y
              - (n_slices - 1) / 2 * slice_spacing * normal)
    return Geometry(rows=size, cols=size, row_spacing=row_spacing, col_spacing=col_spacing, slice_spacing=slice_spacing,
                    n_slices=n_slices, row_dir=tuple(x), col_dir=tuple(y), origin=tuple(origin),
                    descending_instances=descending)


@dataclass
class PhantomSeries:
    geometry: Geometry
    ct_files: list[Path]
    mask_file: Path
    series_uid: str
    lesion_center: np.ndarray
    lesion_radius: float


def write_phantom(folder: Path, geom: Geometry, mask_kind: str, lesion_center: np.ndarray,
                  lesion_radius: float = 9.0, seed: int = 0) -> PhantomSeries:
    """Write a CT series (files shuffled) and a SEG or RTSTRUCT with one sphere labelled GTV-1."""
    rng = np.random.default_rng(seed)
    points = geom.points()
    hu = hu_field(points)
    sphere = np.linalg.norm(points - lesion_center, axis=-1) <= lesion_radius
    series_uid = generate_uid()
    ids = SeriesIds(patient_id="PHANTOM", patient_sex="O", patient_age="050Y", study_uid=generate_uid(),
                    series_uid=series_uid, frame_of_reference_uid=generate_uid(), series_number=1,
                    series_description="phantom", sop_uids=tuple(generate_uid() for _ in range(geom.n_slices)))
    names = [f"{rng.integers(1 << 40):x}.dcm" for _ in range(geom.n_slices)]  # random names: no order in them
    ct_folder = folder / "ct"
    ct = write_ct_series(ct_folder, geom, ids, hu, names)
    mask_file = folder / "mask" / "mask.dcm"
    keep = {ids.study_uid, series_uid, ids.frame_of_reference_uid, *ids.sop_uids}
    writer = write_seg if mask_kind == "SEG" else write_rtstruct
    args = (mask_file, ct) if mask_kind == "SEG" else (mask_file, ct, ct_folder, geom)
    writer(*args, {"GTV-1": sphere}, generate_uid(), generate_uid(), keep, lambda i: generate_uid())
    return PhantomSeries(geom, sorted(ct_folder.glob("*.dcm")), mask_file, series_uid, np.asarray(lesion_center),
                         lesion_radius)
