"""Gantry tilt and uneven slice spacing: CT series whose slices do not form a regular orthogonal grid.

- ``write_tilted``: a gantry-tilted series as scanners write it. The gantry is tilted about the patient's
  left-right axis by ``tilt`` degrees, so each slice's column direction Y is tilted out of the axial plane,
  ``ImageOrientationPatient = [1, 0, 0, 0, cos t, sin t]``, while the slice origins advance along the table
  (LPS +z), not along the slice normal. ``GantryDetectorTilt`` carries the nominal angle. With a SEG
  (highdicom) and an RTSTRUCT drawn on the tilted slices.
- ``write_uneven``: an axial series whose gaps vary: a run of one spacing then a run of another (a helical
  scan reconstructed at 1 mm then 7 mm; an old sequential head CT with 5 mm slices low and 10 mm above).
- ``write_missing_slice``: a regular series with one slice left out (a gap of twice the spacing).

Every case is the analytic phantom of ``radassets.demo.phantom`` (body constant along z, a spherical
lesion of known centre in the right lung) sampled at the true position of each pixel, so a correct
conversion puts the lesion where ``Case.lesion_center`` says. Everything is deterministic: the UIDs are
derived from the case's name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radassets.demo.dicom_writer import Geometry, SeriesIds, write_ct_series, write_rtstruct, write_seg
from radassets.demo.phantom import Body, Lesion, Phantom, xyz

UID_ROOT = "1.2.826.0.1.3680043.8.498.16"  # pydicom's root, then digits derived from the case
BODY = Body(torso=(27.0, 22.0), lung_center_x=11.0, lung_axes=(8.5, 12.0), spine_radius=4.0)
LESION_HU = 60.0


@dataclass(frozen=True)
class Case:
    """What a case wrote and the answer a conversion should give."""

    name: str
    geometry: Geometry
    ct_folder: Path
    ct_files: tuple[Path, ...]
    series_uid: str
    lesion_center: np.ndarray  # LPS mm
    lesion_radius: float  # mm
    seg_file: Path | None = None
    rtstruct_file: Path | None = None
    labelmap_file: Path | None = None  # a Label Map SEG


def _uid(*key: object) -> str:
    digest = int(hashlib.sha256(repr(key).encode()).hexdigest()[:24], 16)
    return f"{UID_ROOT}.{digest}"


def lesion(center: np.ndarray, radius: float) -> Lesion:
    """A homogeneous sphere (no lobulation, no texture): its centroid is its centre on any grid."""
    return Lesion(label="GTV-1", center=xyz(center), semi_axes=(radius, radius, radius),
                  rotation=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), lobulation=(0.0, 0.0),
                  mean_hu=LESION_HU, heterogeneity=0.0, wave_vectors=((0.0, 0.0, 1.0),), wave_phases=(0.0,))


def _write(folder: Path, name: str, geom: Geometry, center: np.ndarray, radius: float,
           masks: tuple[str, ...] = ()) -> Case:
    phantom = Phantom(BODY, (lesion(center, radius),))
    hu, truth = phantom.render(geom.points())
    ids = SeriesIds(patient_id=f"CASE-{name}", patient_sex="O", patient_age="060Y", study_uid=_uid(name, "study"),
                    series_uid=_uid(name, "series"), frame_of_reference_uid=_uid(name, "frame"), series_number=1,
                    series_description=name, sop_uids=tuple(_uid(name, "sop", k) for k in range(geom.n_slices)))
    ct_folder = folder / name / "ct"
    # Names in no slice order (a hash), as files from an archive come.
    names = [hashlib.sha256(f"{name}-{k}".encode()).hexdigest()[:16] + ".dcm" for k in range(geom.n_slices)]
    ct = write_ct_series(ct_folder, geom, ids, np.round(hu), names)
    keep = {ids.study_uid, ids.series_uid, ids.frame_of_reference_uid, *ids.sop_uids}
    files: dict[str, Path] = {}
    for kind in masks:
        path = folder / name / kind.lower() / f"{kind.lower()}.dcm"
        series, sop = _uid(name, kind, "series"), _uid(name, kind, "sop")

        def make_uid(i: int, kind: str = kind) -> str:
            return _uid(name, kind, "generated", i)

        if kind in ("SEG", "LABELMAP"):
            write_seg(path, ct, truth, series, sop, keep, make_uid, "BINARY" if kind == "SEG" else "LABELMAP")
        else:
            write_rtstruct(path, ct, ct_folder, geom, truth, series, sop, keep, make_uid)
        files[kind] = path
    return Case(name, geom, ct_folder, tuple(ct_folder / n for n in names), ids.series_uid, np.asarray(center, float),
                radius, files.get("SEG"), files.get("RTSTRUCT"), files.get("LABELMAP"))


def _axial(size: int, pixel: float, positions: np.ndarray, slice_spacing: float,
           col_dir: tuple[float, float, float] = (0.0, 1.0, 0.0), tilt: float | None = None) -> Geometry:
    return Geometry(rows=size, cols=size, row_spacing=pixel, col_spacing=pixel, slice_spacing=slice_spacing,
                    n_slices=len(positions), row_dir=(1.0, 0.0, 0.0), col_dir=col_dir,
                    origin=xyz(positions[0]), descending_instances=False,
                    positions=tuple(xyz(p) for p in positions), gantry_tilt=tilt)


def tilted_geometry(tilt: float = 17.5, size: int = 64, pixel: float = 0.9, step: float = 2.5,
                    n_slices: int = 32, steps: list[float] | None = None) -> Geometry:
    """Slices tilted by ``tilt`` degrees about L-R, origins stepping ``step`` mm along the table (+z; or by each
    of ``steps`` in turn), the field of view centred on the body axis (x = y = 0) halfway along."""
    t = np.radians(tilt)
    y = np.array([0.0, np.cos(t), np.sin(t)])
    half = (size - 1) / 2 * pixel
    z = np.concatenate([[0.0], np.cumsum(steps if steps is not None else [step] * (n_slices - 1))])
    positions = np.column_stack([np.full_like(z, -half), np.zeros_like(z), z - z[-1] / 2]) - half * y
    return _axial(size, pixel, positions, step * np.cos(t), xyz(y), tilt)


def axial_positions(gaps: list[float], size: int, pixel: float) -> np.ndarray:
    """Slice origins of an axial series with the given gaps (mm, along +z), centred on the body axis."""
    half = (size - 1) / 2 * pixel
    z = np.concatenate([[0.0], np.cumsum(gaps)])
    z = z - (z[-1] + z[0]) / 2
    return np.column_stack([np.full_like(z, -half), np.full_like(z, -half), z])


LESION_CENTER = np.array([11.3, -9.6, 1.7])  # in the right lung (LPS: +x is the patient's left)


def write_tilted(folder: Path, tilt: float = 17.5, masks: tuple[str, ...] = ("SEG", "RTSTRUCT")) -> Case:
    """A gantry-tilted series (``tilt`` degrees) with a 6 mm-radius lesion and its SEG and RTSTRUCT."""
    return _write(folder, f"tilted-{tilt:g}", tilted_geometry(tilt), LESION_CENTER, 6.0, masks)


def write_tilted_uneven(folder: Path, tilt: float = 15.0, masks: tuple[str, ...] = ("SEG", "RTSTRUCT")) -> Case:
    """Both at once: a tilted series whose table steps go from 2.5 mm to 5 mm."""
    geom = tilted_geometry(tilt, steps=[2.5] * 12 + [5.0] * 6)
    return _write(folder, f"tilted-uneven-{tilt:g}", geom, LESION_CENTER + np.array([0.0, 0.0, -8.0]), 6.0, masks)


def write_uneven(folder: Path, kind: str = "1-7", masks: tuple[str, ...] = ()) -> Case:
    """``1-7``: 1 mm gaps over 30 mm, then 7 mm gaps (a reconstruction that changes interval);
    ``5-10``: a sequential head-like series, 5 mm slices low and 10 mm above."""
    gaps = {"1-7": [1.0] * 30 + [7.0] * 4, "5-10": [5.0] * 8 + [10.0] * 4}[kind]
    size, pixel = 64, 0.9
    geom = _axial(size, pixel, axial_positions(gaps, size, pixel), min(gaps))
    # The lesion lies in the finer part, where the series resolves it (in the coarser part its centroid moves
    # with the linear blend across the wide gaps: a matter of sampling, not of geometry).
    centre = LESION_CENTER + np.array([0.0, 0.0, -14.0 if kind == "1-7" else -8.0])
    return _write(folder, f"uneven-{kind}", geom, centre, 6.0, masks)


def write_missing_slice(folder: Path, spacing: float = 2.5, n_slices: int = 24, missing: int = 11) -> Case:
    """A regular series with slice ``missing`` left out (one gap of twice the spacing)."""
    gaps = [spacing] * (n_slices - 1)
    size, pixel = 64, 0.9
    positions = np.delete(axial_positions(gaps, size, pixel), missing, axis=0)
    return _write(folder, "missing-slice", _axial(size, pixel, positions, spacing), LESION_CENTER, 6.0)


def write_regular(folder: Path, spacing: float = 2.5, n_slices: int = 24) -> Case:
    """The control: a regular axial series (no tilt, even gaps), converted exactly as before."""
    size, pixel = 64, 0.9
    positions = axial_positions([spacing] * (n_slices - 1), size, pixel)
    return _write(folder, "regular", _axial(size, pixel, positions, spacing), LESION_CENTER, 6.0)
