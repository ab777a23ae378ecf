"""Seed perturbation against known answers: a model whose embedding is the lesion's centroid in patch
coordinates must see the lesion move by minus the seed's offset, in every axis, on an anisotropic
volume; offsets have the protocol's SD; a zero SD changes nothing; a volume changed since the patches
step is refused."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from radassets.evaluation.perturbation import PerturbationError, patch_spec_of, perturbed_embeddings
from radassets.imaging.patches import PatchSpec, write_patches

CENTRES = [np.array([-20.0, 15.0, 40.0]), np.array([22.0, -12.0, 55.0])]  # LPS mm


class LesionCentroid:
    """A stand-in model: the embedding is the centroid (LPS mm, from the patch centre) of voxels above −400 HU."""

    entry = SimpleNamespace(name="centroid", kind="test")
    weights_sha256 = None
    dim = 3

    def embed(self, patches, masks, rows):
        size = patches.shape[1]
        c = np.arange(size) - (size - 1) / 2
        s, p, l = np.meshgrid(c, c, c, indexing="ij")  # patch arrays are [S, P, L]
        out = []
        for patch in patches:
            w = (patch > -400).astype(float)
            out.append([(w * l).sum() / w.sum(), (w * p).sum() / w.sum(), (w * s).sum() / w.sum()])
        return np.array(out, dtype=np.float32)


def lesion_volume(path, centres) -> None:
    """Lung (−800 HU) with soft-tissue spheres of radius 7 mm, on a 0.8 × 0.7 × 2.5 mm grid."""
    size, spacing, origin = (120, 110, 60), (0.8, 0.7, 2.5), (-48.0, -40.0, -20.0)
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    xyz = [origin[a] + (i, j, k)[a] * spacing[a] for a in range(3)]
    hu = np.full(k.shape, -800.0)
    for centre in centres:
        hu[sum((xyz[a] - centre[a]) ** 2 for a in range(3)) <= 7.0**2] = 40.0
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def lesions(tmp_path):
    ct = tmp_path / "ct.nrrd"
    lesion_volume(ct, CENTRES)
    seeds = pd.DataFrame([{"seed_id": f"s{n}", "PatientID": f"P{n}", "SeriesInstanceUID": "1.2.3",
                           "crdc_series_uuid": "u", "source": "test", "segment_label": "GTV-1",
                           "ct_path": str(ct), "mask_path": None,
                           "coordX": c[0], "coordY": c[1], "coordZ": c[2]} for n, c in enumerate(CENTRES)])
    write_patches(seeds.to_dict("records"), tmp_path / "patches", PatchSpec(size=48))
    patients = pd.DataFrame({"PatientID": ["P0", "P1"], "seed_id": ["s0", "s1"], "patch_index": [0, 1]})
    return tmp_path, seeds, patients


def test_the_lesion_moves_by_minus_the_seed_offset(lesions):
    folder, seeds, patients = lesions
    offsets = np.random.default_rng(1).normal(0.0, 4.0, size=(40, 2, 3))
    vectors = perturbed_embeddings(LesionCentroid(), patients, seeds, folder / "patches",
                                   patch_spec_of(folder / "patches"), offsets, batch_size=16)
    assert vectors.shape == (40, 2, 3)
    # Moving the seed by +d puts the lesion at −d in the patch, in x (L), y (P) and z (S) alike; the
    # residual is the interpolation of the sphere's edge on the 2.5 mm slices.
    assert np.abs(vectors + offsets).max() < 0.35
    assert np.corrcoef(vectors[..., 2].ravel(), -offsets[..., 2].ravel())[0, 1] > 0.99
    unmoved = perturbed_embeddings(LesionCentroid(), patients, seeds, folder / "patches",
                                   patch_spec_of(folder / "patches"), np.zeros((2, 2, 3)))
    assert np.abs(unmoved).max() < 0.05  # the seeds are the sphere centres


def test_a_volume_changed_since_the_patches_step_is_refused(lesions):
    folder, seeds, patients = lesions
    lesion_volume(folder / "ct.nrrd", [CENTRES[0] + 2.0, CENTRES[1]])  # P0's lesion moved 2 mm per axis
    with pytest.raises(PerturbationError, match=r"patient P0: .*differs from the stored patch.*volume changed"):
        perturbed_embeddings(LesionCentroid(), patients, seeds, folder / "patches",
                             patch_spec_of(folder / "patches"), np.zeros((2, 2, 3)))
