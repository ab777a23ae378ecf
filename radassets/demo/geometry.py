"""Where the voxels of a demo CT series lie in patient space (DICOM LPS, millimetres).

Conventions (DICOM PS3.3 C.7.6.2.1.1, the same as ITK/SimpleITK):

- Arrays are indexed ``[k, r, c]``: slice k, row r, column c.
- X = ImageOrientationPatient[:3] is the direction of increasing column index c,
  Y = ImageOrientationPatient[3:] that of increasing row index r, and N = X × Y the slice normal.
- The centre of voxel (k, r, c) is ``origin + c·PixelSpacing[1]·X + r·PixelSpacing[0]·Y + k·Δs·N``:
  PixelSpacing[0] is the distance between rows, PixelSpacing[1] the distance between columns,
  and ``origin`` is the ImagePositionPatient of slice k = 0.
- Slice k therefore sits at ``k·Δs`` along N; sorting a series by ``IPP · N`` gives back k.
  SimpleITK reads such a series with origin = IPP of k = 0, spacing (PixelSpacing[1],
  PixelSpacing[0], Δs) and direction matrix with columns X, Y, N (``itk_direction``).
- InstanceNumber runs head→feet or feet→head (``instances_head_to_feet``), independently of k,
  so neither the file order nor InstanceNumber may be used to stack slices.

LPS: +x towards the patient's left, +y posterior, +z towards the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Orientation of each patient's series, by patient number (cycled, so every few patients
# cover them all). X (row direction) and Y (column direction) before the oblique rotations.
ORIENTATIONS: tuple[str, ...] = (
    "axial",  # X = +x, Y = +y, N = +z
    "row_flipped",  # X = -x: columns run from the patient's left to right; N = -z
    "oblique_z",  # axial rotated 3-8 degrees about z
    "column_flipped",  # Y = -y: rows run from posterior to anterior; N = -z
    "axial",
    "both_flipped",  # X = -x, Y = -y (the image turned by 180 degrees); N = +z
    "oblique_zx",  # axial rotated 3-8 degrees about z, then tilted 2-5 degrees about x
)


@dataclass(frozen=True)
class Geometry:
    """The voxel grid of one CT series (see the module docstring for the conventions)."""

    orientation: str  # one of ORIENTATIONS
    rows: int
    cols: int
    row_spacing: float  # PixelSpacing[0]: distance between rows, along Y (mm)
    col_spacing: float  # PixelSpacing[1]: distance between columns, along X (mm)
    slice_spacing: float  # distance between slice planes along N (mm), = SpacingBetweenSlices
    slice_thickness: float  # SliceThickness (mm): header only, the phantom is sampled at voxel centres
    n_slices: int
    row_dir: tuple[float, float, float]  # X, ImageOrientationPatient[:3]
    col_dir: tuple[float, float, float]  # Y, ImageOrientationPatient[3:]
    origin: tuple[float, float, float]  # ImagePositionPatient of slice k = 0 (LPS mm)
    instances_head_to_feet: bool  # InstanceNumber 1 is the most cranial slice

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    @property
    def square_pixels(self) -> bool:
        return self.row_spacing == self.col_spacing

    @property
    def itk_spacing(self) -> tuple[float, float, float]:
        return (self.col_spacing, self.row_spacing, self.slice_spacing)

    @property
    def itk_direction(self) -> np.ndarray:
        """3x3 direction matrix with columns X, Y, N (SimpleITK's ``GetDirection()`` reshaped)."""
        return np.column_stack([self.row_dir, self.col_dir, self.normal])

    def slice_position(self, k: int) -> np.ndarray:
        """ImagePositionPatient of slice k."""
        return np.asarray(self.origin) + k * self.slice_spacing * self.normal

    def instance_number(self, k: int) -> int:
        cranial_last = self.normal[2] > 0  # k grows towards the head
        return self.n_slices - k if cranial_last == self.instances_head_to_feet else k + 1

    def index_to_lps(self, krc: np.ndarray) -> np.ndarray:
        """LPS coordinates of (fractional) voxel indices ``krc`` (..., 3) in (k, r, c) order."""
        krc = np.asarray(krc, dtype=float)
        steps = np.stack([self.slice_spacing * self.normal, self.row_spacing * np.asarray(self.col_dir),
                          self.col_spacing * np.asarray(self.row_dir)])
        return np.asarray(self.origin) + krc @ steps

    def lps_to_index(self, points: np.ndarray) -> np.ndarray:
        """Fractional (k, r, c) indices of LPS ``points`` (..., 3); inverse of ``index_to_lps``."""
        local = np.asarray(points, dtype=float) - np.asarray(self.origin)
        return np.stack([local @ self.normal / self.slice_spacing, local @ np.asarray(self.col_dir) / self.row_spacing,
                         local @ np.asarray(self.row_dir) / self.col_spacing], axis=-1)

    def points(self) -> np.ndarray:
        """LPS coordinates of every voxel centre, shape (slices, rows, cols, 3), float32."""
        k = np.arange(self.n_slices, dtype=np.float32)[:, None, None, None]
        r = np.arange(self.rows, dtype=np.float32)[None, :, None, None]
        c = np.arange(self.cols, dtype=np.float32)[None, None, :, None]
        X = np.asarray(self.row_dir, dtype=np.float32) * np.float32(self.col_spacing)
        Y = np.asarray(self.col_dir, dtype=np.float32) * np.float32(self.row_spacing)
        N = self.normal.astype(np.float32) * np.float32(self.slice_spacing)
        origin = np.asarray(self.origin, dtype=np.float32)
        return origin + k * N + r * Y + c * X


def orientation_vectors(orientation: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row direction X and column direction Y (orthonormal) of one of ``ORIENTATIONS``."""
    x, y = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    if orientation in ("row_flipped", "both_flipped"):
        x = -x
    if orientation in ("column_flipped", "both_flipped"):
        y = -y
    if orientation.startswith("oblique"):
        a = np.deg2rad(rng.uniform(3.0, 8.0) * rng.choice([-1.0, 1.0]))
        rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
        if orientation == "oblique_zx":
            b = np.deg2rad(rng.uniform(2.0, 5.0) * rng.choice([-1.0, 1.0]))
            rot = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]]) @ rot
        x, y = rot @ x, rot @ y
    return x, y


def random_geometry(rng: np.random.Generator, number: int) -> Geometry:
    """The grid of patient ``number``: size, spacing, thickness, orientation and slice order vary.

    - In-plane: 128, 144 or 160 pixels over a field of view of 260-330 mm (1.6-2.6 mm pixels);
      every fifth patient (number % 5 == 3) has non-square pixels (rows 10-25 % further apart).
    - Slices: 1.5-5 mm apart, 40-90 of them; every fourth patient (number % 4 == 2) has
      overlapping reconstruction (SliceThickness 0.5 mm larger than the spacing).
    - Orientation: ``ORIENTATIONS[(number - 1) % 7]``; InstanceNumber order drawn at random.
    """
    orientation = ORIENTATIONS[(number - 1) % len(ORIENTATIONS)]
    size = int(rng.choice([128, 144, 160]))
    col_spacing = round(float(rng.uniform(260.0, 330.0)) / size, 3)
    row_spacing = round(col_spacing * float(rng.uniform(1.10, 1.25)), 3) if number % 5 == 3 else col_spacing
    slice_spacing = float(rng.choice([1.5, 2.0, 2.5, 3.0, 5.0]))
    thickness = slice_spacing + 0.5 if number % 4 == 2 and slice_spacing < 5.0 else slice_spacing
    n_slices = int(np.clip(round(float(rng.uniform(110.0, 170.0)) / slice_spacing), 40, 90))
    x, y = orientation_vectors(orientation, rng)
    normal = np.cross(x, y)
    centre = np.array([rng.uniform(-5.0, 5.0), rng.uniform(-5.0, 5.0), rng.uniform(-250.0, -100.0)])
    origin = (centre - (size - 1) / 2 * col_spacing * x - (size - 1) / 2 * row_spacing * y
              - (n_slices - 1) / 2 * slice_spacing * normal)
    return Geometry(
        orientation=orientation, rows=size, cols=size, row_spacing=row_spacing, col_spacing=col_spacing,
        slice_spacing=slice_spacing, slice_thickness=thickness, n_slices=n_slices,
        row_dir=tuple(float(v) for v in x), col_dir=tuple(float(v) for v in y),
        origin=tuple(round(float(v), 4) for v in origin), instances_head_to_feet=bool(rng.integers(2)),
    )
