"""Geometry against known answers: analytic phantoms on axial, flipped, double-oblique and anisotropic
(non-square) grids, files in shuffled order. Centroids within 0.5 mm of the true centre; patches
equal direct physical sampling of the phantom."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from radassets.imaging.ct import read_ct_series
from radassets.imaging.masks import centroid_lps, read_mask_segments
from radassets.imaging.patches import PatchSpec, extract_mask_patch, extract_patch, padded_fraction
from radassets_tests.imaging.phantoms import geometry, hu_field, write_phantom

GEOMETRIES = ["axial", "flipped", "oblique", "anisotropic"]
CENTER = np.array([14.0, -23.0, -147.0])  # off the grid's centre and off voxel centres


@pytest.fixture(scope="module", params=[(g, k) for g in GEOMETRIES for k in ("SEG", "RTSTRUCT")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def phantom(request, tmp_path_factory):
    name, kind = request.param
    series = write_phantom(tmp_path_factory.mktemp(f"{name}_{kind}"), geometry(name), kind, CENTER)
    return series, read_ct_series(series.ct_files).image


def test_volume_geometry_is_the_written_one(phantom):
    series, image = phantom
    geom = series.geometry
    points = geom.points()
    for k, r, c in [(0, 0, 0), (geom.n_slices - 1, geom.rows - 1, geom.cols - 1), (7, 50, 13)]:
        # index (c, r, k) of the image is the voxel the generator put at points[k, r, c] (k along the normal)
        assert np.allclose(image.TransformIndexToPhysicalPoint((c, r, k)), points[k, r, c], atol=1e-3)
    # HU are the analytic field at every voxel centre, rounded to whole HU on storage.
    assert np.abs(sitk.GetArrayFromImage(image) - hu_field(points)).max() <= 0.5 + 1e-6


def test_mask_centroid_within_half_a_millimetre(phantom):
    series, image = phantom
    [segment] = read_mask_segments(series.mask_file, image)
    assert segment.label == "GTV-1"
    error = np.linalg.norm(centroid_lps(segment.image) - series.lesion_center)
    assert error < 0.5, error
    # Volume: the sphere, within the voxelisation error of a 9 mm radius.
    volume_ml = segment.voxels * np.prod(image.GetSpacing()) / 1000
    assert volume_ml == pytest.approx(4 / 3 * np.pi * series.lesion_radius**3 / 1000, rel=0.05)


def _patch_points(center: np.ndarray, spec: PatchSpec) -> np.ndarray:
    """LPS points of every patch voxel, indexed [k, j, i] like the patch array."""
    axis = np.arange(spec.size) * spec.spacing_mm
    origin = spec.origin(center)
    z, y, x = np.meshgrid(axis + origin[2], axis + origin[1], axis + origin[0], indexing="ij")
    return np.stack([x, y, z], axis=-1)


def test_patch_equals_direct_sampling_of_the_phantom(phantom):
    series, image = phantom
    spec = PatchSpec(size=32)
    patch = extract_patch(image, CENTER, spec)
    assert patch.dtype == np.int16 and patch.shape == (32, 32, 32)
    # Linear interpolation of an affine field is exact: only the two 0.5 HU roundings remain.
    assert np.abs(patch - hu_field(_patch_points(CENTER, spec))).max() <= 1.0
    assert padded_fraction(image, CENTER, spec) == 0.0
    # The mask patch puts the sphere at the patch centre (within half a millimetre).
    mask = extract_mask_patch(read_mask_segments(series.mask_file, image)[0].image, CENTER, spec)
    k, j, i = np.nonzero(mask)
    centre_index = np.array([i.mean(), j.mean(), k.mean()])
    assert np.linalg.norm(centre_index - (spec.size - 1) / 2) * spec.spacing_mm < 0.5


def test_crop_then_resample_equals_resampling_the_whole_volume(phantom):
    _, image = phantom
    spec = PatchSpec(size=40)
    whole = sitk.Resample(image, [spec.size] * 3, sitk.Transform(), sitk.sitkLinear, spec.origin(CENTER).tolist(),
                          [spec.spacing_mm] * 3, np.eye(3).ravel().tolist(), -1024.0, sitk.sitkFloat32)
    expected = np.rint(sitk.GetArrayFromImage(whole)).astype(np.int16)
    assert np.array_equal(extract_patch(image, CENTER, spec), expected)


def test_patch_at_the_border_is_padded_with_air_not_shifted(phantom):
    _, image = phantom
    spec = PatchSpec(size=48)
    # A seed 6 mm inside the first slice: part of the patch lies beyond the volume.
    first_corner = np.array(image.TransformIndexToPhysicalPoint((40, 40, 0)))
    normal = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    center = first_corner + 6.0 * normal
    patch = extract_patch(image, center, spec)
    fraction = padded_fraction(image, center, spec)
    assert 0.2 < fraction < 0.8
    points = _patch_points(center, spec)
    expected = hu_field(points)
    matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    index = (points - np.array(image.GetOrigin())) @ np.linalg.inv(matrix).T
    size = np.array(image.GetSize())
    outside = ((index < -0.5) | (index > size - 0.5)).any(axis=-1)
    # Air exactly where the patch leaves the volume (ITK's half-voxel rule), and nowhere else.
    assert np.array_equal(patch == -1024, outside)
    assert outside.mean() == pytest.approx(fraction, abs=1e-9)
    # Where the volume has data on both sides, the values are the phantom's at the patch's own
    # positions: the lesion is not shifted back inside. (In the half-voxel band at the edge ITK
    # holds the edge slice's value, which no interpolator can do better than.)
    interior = ((index >= 0) & (index <= size - 1)).all(axis=-1)
    assert interior.sum() > 0.2 * interior.size
    assert np.abs(patch[interior] - expected[interior]).max() <= 1.0
