"""Analytic chest phantoms with lesions, defined in physical space (DICOM patient LPS, mm).

Everything is a function of physical position, not of voxels, so the same phantom can be
sampled on any grid: oblique, flipped, anisotropic, or shifted for a re-scan. This is what
makes the demo a test of geometry handling with known answers.

A lesion is a rotated ellipsoid whose radius is modulated by a centrally symmetric lobulation
(even in the direction vector), so its centroid is exactly its centre. Its texture is a sum of
random plane waves in the lesion's own frame, so a re-scan sees the same tumour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AIR_HU = -1000.0


@dataclass(frozen=True)
class Lesion:
    label: str
    center: tuple[float, float, float]  # LPS mm
    semi_axes: tuple[float, float, float]  # mm, before lobulation
    rotation: tuple[tuple[float, ...], ...]  # 3x3, columns are the lesion's axes in LPS
    lobulation: tuple[float, float]  # amplitudes of the cos(4θ) and sin²θ·cos(2φ) terms
    mean_hu: float
    heterogeneity: float  # amplitude of the texture, as a fraction of 100 HU
    wave_vectors: tuple[tuple[float, float, float], ...]  # texture, rad/mm
    wave_phases: tuple[float, ...]

    @property
    def ellipsoid_volume_ml(self) -> float:
        a, b, c = self.semi_axes
        return 4.0 / 3.0 * np.pi * a * b * c / 1000.0

    def _local(self, points: np.ndarray) -> np.ndarray:
        return (points - np.asarray(self.center)) @ np.asarray(self.rotation)

    def inside(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask of ``points`` (..., 3) inside the lesion."""
        local = self._local(points)
        scaled = local / np.asarray(self.semi_axes)
        r = np.linalg.norm(scaled, axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos_t = np.where(r > 0, scaled[..., 2] / r, 1.0)
            phi = np.arctan2(scaled[..., 1], scaled[..., 0])
        cos4t = 8 * cos_t**4 - 8 * cos_t**2 + 1
        sin2t = 1 - cos_t**2
        radius = 1.0 + self.lobulation[0] * cos4t + self.lobulation[1] * sin2t * np.cos(2 * phi)
        return r <= radius

    def texture(self, points: np.ndarray) -> np.ndarray:
        """Zero-mean, unit-variance texture field at ``points``."""
        local = self._local(points)
        k = np.asarray(self.wave_vectors)
        waves = np.cos(local @ k.T + np.asarray(self.wave_phases))
        return waves.sum(axis=-1) * np.sqrt(2.0 / len(self.wave_phases))


@dataclass(frozen=True)
class Body:
    """An elliptic torso (fat rim, soft tissue), two lungs and a vertebral body, constant along z."""

    torso: tuple[float, float]  # semi-axes in x, y (mm)
    lung_center_x: float
    lung_axes: tuple[float, float]
    spine_radius: float

    def hounsfield(self, points: np.ndarray) -> np.ndarray:
        x, y = points[..., 0], points[..., 1]
        a, b = self.torso
        torso = (x / a) ** 2 + (y / b) ** 2
        hu = np.full(x.shape, AIR_HU, dtype=np.float32)
        hu[torso <= 1.0] = -100.0  # subcutaneous fat
        hu[torso <= 0.85] = 40.0  # soft tissue
        la, lb = self.lung_axes
        for cx in (-self.lung_center_x, self.lung_center_x):
            hu[((x - cx) / la) ** 2 + ((y + 10.0) / lb) ** 2 <= 1.0] = -850.0
        # LPS: +y is posterior, so the spine sits at positive y.
        hu[x**2 + (y - 0.7 * b) ** 2 <= self.spine_radius**2] = 400.0
        return hu


@dataclass(frozen=True)
class Phantom:
    body: Body
    lesions: tuple[Lesion, ...]

    def render(self, points: np.ndarray, shift: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """HU and one boolean mask per lesion label at ``points`` (..., 3).

        ``shift`` moves the whole phantom (a re-scan with the patient moved by that vector).
        """
        p = points - shift if shift is not None else points
        hu = self.body.hounsfield(p)
        masks = {}
        for lesion in self.lesions:
            # Test only the points in the lesion's bounding cube: a lesion is small, the volume is not.
            reach = max(lesion.semi_axes) * (1.0 + sum(lesion.lobulation))
            near = np.all(np.abs(p - np.asarray(lesion.center)) <= reach, axis=-1)
            mask = np.zeros(near.shape, dtype=bool)
            mask[near] = lesion.inside(p[near])
            hu[mask] = lesion.mean_hu + 100.0 * lesion.heterogeneity * lesion.texture(p[mask])
            masks[lesion.label] = mask
        return hu, masks


def xyz(values) -> tuple[float, float, float]:
    """Three numbers (a point or a vector, e.g. a numpy row) as a tuple of Python floats."""
    x, y, z = (float(v) for v in values)
    return x, y, z


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_lesion(rng: np.random.Generator, label: str, center: np.ndarray, diameter_mm: float,
                  heterogeneity: float) -> Lesion:
    radius = diameter_mm / 2.0
    axes = radius * rng.uniform(0.75, 1.25, size=3)
    n_waves = 6
    directions = rng.normal(size=(n_waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavelengths = rng.uniform(4.0, 9.0, size=n_waves)
    k = directions * (2 * np.pi / wavelengths)[:, None]
    return Lesion(
        label=label,
        center=xyz(center),
        semi_axes=xyz(axes),
        rotation=tuple(tuple(float(v) for v in row) for row in random_rotation(rng)),
        lobulation=(float(rng.uniform(0.0, 0.15)), float(rng.uniform(0.0, 0.15))),
        mean_hu=float(rng.uniform(-10.0, 60.0)),
        heterogeneity=float(heterogeneity),
        wave_vectors=tuple(xyz(row) for row in k),
        wave_phases=tuple(float(v) for v in rng.uniform(0, 2 * np.pi, size=n_waves)),
    )
