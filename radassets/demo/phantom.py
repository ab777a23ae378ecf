"""Analytic chest phantoms with lesions, defined in physical space (DICOM patient LPS, mm).

Everything is a function of physical position, not of voxels, so one phantom can be sampled
on any grid (oblique, flipped, anisotropic) or moved for a re-scan, and the truth (lesion
centre, volume, texture) does not depend on the grid. Voxels sample the phantom at their
centres: there is no partial-volume or slice-profile blur.

Body (constant along z): air (-1000 HU) outside an elliptic torso with a subcutaneous fat rim
(-100 HU) around soft tissue (40 HU), two elliptic lungs (-850 HU) and a vertebral body
(400 HU) posterior in the midline.

Lesion: a rotated ellipsoid whose radius is modulated by a low-frequency lobulation that is
centrally symmetric (the same in directions u and -u), so its centroid is exactly its centre.
Its intensity is ``mean_hu + heterogeneity * texture``, where the texture is a zero-mean,
unit-variance Gaussian random field with a Gaussian correlation function of length
``texture_length_mm`` — the statistics of white noise smoothed with a Gaussian filter of
width ``texture_length_mm / sqrt(2)``. It is drawn as a sum of random cosines (random Fourier
features) in the lesion's own frame, so a re-scan of a moved patient sees the same tumour.
Scanner noise is added per series by the generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 40.0
LUNG_HU = -850.0
BONE_HU = 400.0
N_TEXTURE_WAVES = 32


@dataclass(frozen=True)
class Lesion:
    label: str  # segment / ROI label, "GTV-1" (primary) or "GTV-2"
    center: tuple[float, float, float]  # LPS mm
    semi_axes: tuple[float, float, float]  # mm, before lobulation
    rotation: tuple[tuple[float, ...], ...]  # 3x3 rotation; its columns are the lesion's axes in LPS
    lobulation: tuple[float, float]  # amplitudes of the cos(4θ) and sin²θ·cos(2φ) radius terms
    mean_hu: float
    heterogeneity: float  # standard deviation of the texture, HU
    texture_length_mm: float  # correlation length of the texture
    wave_vectors: tuple[tuple[float, float, float], ...]  # texture, rad/mm in the lesion frame
    wave_phases: tuple[float, ...]

    def _local(self, points: np.ndarray) -> np.ndarray:
        return (points - np.asarray(self.center)) @ np.asarray(self.rotation)

    @staticmethod
    def _radius_factor(cos_t: np.ndarray, phi: np.ndarray, lobulation: tuple[float, float]) -> np.ndarray:
        cos4t = 8 * cos_t**4 - 8 * cos_t**2 + 1
        return 1.0 + lobulation[0] * cos4t + lobulation[1] * (1 - cos_t**2) * np.cos(2 * phi)

    @cached_property
    def volume_ml(self) -> float:
        """Exact volume of the lobulated ellipsoid: a·b·c/3 · ∫ ρ(θ, φ)³ dΩ (Gauss-Legendre in cos θ)."""
        cos_t, weights = np.polynomial.legendre.leggauss(16)
        phi = np.linspace(0.0, 2 * np.pi, 32, endpoint=False)
        rho = self._radius_factor(cos_t[:, None], phi[None, :], self.lobulation)
        integral = float((weights[:, None] * rho**3).sum() * (2 * np.pi / len(phi)))
        return float(np.prod(self.semi_axes)) / 3.0 * integral / 1000.0

    @property
    def reach_mm(self) -> float:
        """Radius of a sphere around the centre that contains the whole lesion."""
        return max(self.semi_axes) * (1.0 + sum(self.lobulation))

    def inside(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask of the ``points`` (..., 3) inside the lesion."""
        scaled = self._local(points) / np.asarray(self.semi_axes)
        r = np.linalg.norm(scaled, axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos_t = np.where(r > 0, scaled[..., 2] / r, 1.0)
        phi = np.arctan2(scaled[..., 1], scaled[..., 0])
        return r <= self._radius_factor(cos_t, phi, self.lobulation)

    def texture(self, points: np.ndarray) -> np.ndarray:
        """The zero-mean, unit-variance texture field at ``points`` (..., 3)."""
        waves = np.cos(self._local(points) @ np.asarray(self.wave_vectors).T + np.asarray(self.wave_phases))
        return waves.sum(axis=-1) * np.sqrt(2.0 / len(self.wave_phases))


@dataclass(frozen=True)
class Body:
    """An elliptic torso with fat rim, two lungs and a vertebral body, constant along z (LPS mm)."""

    torso: tuple[float, float]  # semi-axes in x, y
    lung_center_x: float  # the lungs are centred at (±lung_center_x, LUNG_CENTER_Y)
    lung_axes: tuple[float, float]  # semi-axes in x, y
    spine_radius: float

    LUNG_CENTER_Y = -10.0  # slightly anterior
    FAT_RIM = 0.85  # soft tissue inside this fraction of the torso's elliptic radius²

    def lung_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Centres (x, y) of the right (x < 0) and left lung."""
        return (np.array([-self.lung_center_x, self.LUNG_CENTER_Y]), np.array([self.lung_center_x, self.LUNG_CENTER_Y]))

    def hounsfield(self, points: np.ndarray) -> np.ndarray:
        x, y = points[..., 0], points[..., 1]
        a, b = self.torso
        torso = (x / a) ** 2 + (y / b) ** 2
        hu = np.full(x.shape, AIR_HU, dtype=np.float32)
        hu[torso <= 1.0] = FAT_HU
        hu[torso <= self.FAT_RIM] = SOFT_TISSUE_HU
        la, lb = self.lung_axes
        for cx, cy in self.lung_centers():
            hu[((x - cx) / la) ** 2 + ((y - cy) / lb) ** 2 <= 1.0] = LUNG_HU
        # LPS: +y is posterior, so the spine sits at positive y.
        hu[x**2 + (y - 0.7 * b) ** 2 <= self.spine_radius**2] = BONE_HU
        return hu


@dataclass(frozen=True)
class Phantom:
    body: Body
    lesions: tuple[Lesion, ...]

    def render(self, points: np.ndarray, shift: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """HU (float32, noise-free) and one boolean mask per lesion label at ``points`` (..., 3).

        ``shift`` (LPS mm) moves the whole phantom: a re-scan of the patient moved by that vector.
        """
        p = points - np.asarray(shift, dtype=points.dtype) if shift is not None else points
        hu = self.body.hounsfield(p)
        masks = {}
        for lesion in self.lesions:
            # Test only the points in the lesion's bounding cube: a lesion is small, the volume is not.
            near = np.all(np.abs(p - np.asarray(lesion.center, dtype=p.dtype)) <= lesion.reach_mm, axis=-1)
            near_points = p[near].astype(np.float64)
            inside = lesion.inside(near_points)
            mask = np.zeros(near.shape, dtype=bool)
            mask[near] = inside
            hu[mask] = lesion.mean_hu + lesion.heterogeneity * lesion.texture(near_points[inside])
            masks[lesion.label] = mask
        return hu, masks


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed 3-D rotation matrix."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_lesion(rng: np.random.Generator, label: str, center: np.ndarray, diameter_mm: float,
                  heterogeneity: float) -> Lesion:
    """A lesion of about ``diameter_mm`` with random axes (±25 %), rotation, lobulation, mean HU and texture."""
    axes = diameter_mm / 2.0 * rng.uniform(0.75, 1.25, size=3)
    length = float(rng.uniform(2.5, 5.0))
    wave_vectors = rng.normal(scale=1.0 / length, size=(N_TEXTURE_WAVES, 3))
    return Lesion(
        label=label,
        center=tuple(float(v) for v in center),
        semi_axes=tuple(float(v) for v in axes),
        rotation=tuple(tuple(float(v) for v in row) for row in random_rotation(rng)),
        lobulation=(float(rng.uniform(0.0, 0.15)), float(rng.uniform(0.0, 0.15))),
        mean_hu=float(rng.uniform(-10.0, 60.0)),
        heterogeneity=float(heterogeneity),
        texture_length_mm=length,
        wave_vectors=tuple(tuple(float(v) for v in row) for row in wave_vectors),
        wave_phases=tuple(float(v) for v in rng.uniform(0.0, 2 * np.pi, size=N_TEXTURE_WAVES)),
    )
