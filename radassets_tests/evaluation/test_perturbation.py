"""Seed perturbation against known answers: a model whose embedding is the lesion's centroid in patch
coordinates must see the lesion move by minus the seed's offset, in every axis, on an anisotropic
volume; offsets have the protocol's SD; a zero SD changes nothing (every score the same bits, kappa exactly
1); a volume or mask changed since the patches step is refused."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from radassets.datasets import DatasetVersion
from radassets.evaluation.perturbation import (PerturbationError, endpoint_probes, patch_spec_of, perturbed_embeddings,
                                               seed_perturbation)
from radassets.imaging.patches import PatchSpec, load_patches, write_patches

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


class PatchHistogram:
    """A stand-in model with as many features as a small radiomics set: a 48-bin HU histogram of the patch,
    its mean and SD, and the lesion's centroid. Each patch is embedded on its own (no batch arithmetic)."""

    entry = SimpleNamespace(name="histogram", kind="test")
    weights_sha256 = None
    dim = 53

    def embed(self, patches, masks, rows):
        out = []
        for patch in patches:
            counts, _ = np.histogram(patch, bins=48, range=(-900, 100))
            centroid = LesionCentroid().embed(patch[None], None, None)[0]
            out.append([*(counts / patch.size), patch.mean() / 100, patch.std() / 100, *centroid])
        return np.array(out, dtype=np.float32)


@pytest.fixture
def cohort(tmp_path):
    """31 patients (an odd count: the median threshold is one patient's score), each a seed near one of
    seven noisy spheres of 3-9 mm in one anisotropic volume with its mask, a survival endpoint whose
    events follow lesion size."""
    rng = np.random.default_rng(5)
    size, spacing, origin = (120, 110, 60), (0.8, 0.7, 2.5), (-48.0, -40.0, -20.0)
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    xyz = [origin[a] + (i, j, k)[a] * spacing[a] for a in range(3)]
    hu = rng.normal(-800.0, 30.0, k.shape)
    mask = np.zeros(k.shape, np.uint8)
    centres = [np.array([x, y, z]) for x, y, z in zip(rng.uniform(-35, 35, 7), rng.uniform(-28, 28, 7),
                                                     rng.uniform(5, 110, 7))]
    radii = np.linspace(3.0, 9.0, 7)
    for centre, radius in zip(centres, radii):
        inside = sum((xyz[a] - centre[a]) ** 2 for a in range(3)) <= radius**2
        hu[inside], mask[inside] = rng.normal(40.0, 20.0, int(inside.sum())), 1
    for array, path in ((hu.astype(np.int16), tmp_path / "ct.nrrd"), (mask, tmp_path / "mask.nrrd")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        sitk.WriteImage(image, str(path))
    lesion = rng.integers(0, 7, 31)
    seeds = pd.DataFrame([{"seed_id": f"s{n}", "PatientID": f"P{n:02d}", "SeriesInstanceUID": "1.2.3",
                           "crdc_series_uuid": "u", "source": "test", "segment_label": "GTV-1",
                           "ct_path": str(tmp_path / "ct.nrrd"), "mask_path": str(tmp_path / "mask.nrrd"),
                           **dict(zip(("coordX", "coordY", "coordZ"), centres[c] + rng.uniform(-2, 2, 3)))}
                          for n, c in enumerate(lesion)])
    write_patches(seeds.to_dict("records"), tmp_path / "patches", PatchSpec(size=48))
    patients = pd.DataFrame({"PatientID": seeds["PatientID"], "seed_id": seeds["seed_id"], "patch_index": range(31)})
    stored = load_patches(tmp_path / "patches")[0][:]
    x = PatchHistogram().embed(stored, None, None)  # the stored embeddings, as the embeddings step made them
    died = radii[lesion] + rng.normal(0, 1.5, 31) > 6.0
    clinical = pd.DataFrame({"PatientID": seeds["PatientID"], "days": np.where(died, 300, 1000), "event": died.astype(int)})
    definition = DatasetVersion.model_validate({
        "name": "phantom", "title": "phantom", "description": "test", "source": {"kind": "demo", "idc_version": 1},
        "selection": {"collections": ["phantom"], "modalities": ["CT"]},
        "clinical": {"table": "clinical.csv", "id_column": "PatientID"},
        "endpoints": [{"name": "os", "kind": "survival", "time_column": "days", "event_column": "event",
                       "event_values": [1], "horizon_days": 730, "censored_before_horizon": "drop"}],
        "seeds": {"source": "mask", "segment_labels": ["GTV-1"]}})
    return definition, patients, x, clinical, seeds, tmp_path / "patches"


def test_an_unmoved_seed_changes_no_score_and_no_prediction(cohort):
    """sd 0: the patch extracted again is the stored one, the model gives the stored vector, and the probe of
    the patient's fold scores it alone (per trial) exactly as it scored it within the fold: kappa is exactly
    1 by construction, not by luck, even for the patient whose score is the median threshold."""
    definition, patients, x, clinical, seeds, patches_dir = cohort
    [probe], skipped = endpoint_probes(definition, clinical, patients, x)
    assert not skipped and len(probe.rows) == 31 and 5 <= probe.y.sum() <= 26
    assert probe.threshold in probe.unperturbed  # odd count: the median is one patient's own score
    metrics, table = seed_perturbation(definition, PatchHistogram(), patients, x, clinical, seeds, patches_dir,
                                       trials=3, sd_voxels=0.0)
    assert table["embedded"].all() and (table[["dx_mm", "dy_mm", "dz_mm"]] == 0).all().all()
    unperturbed = pd.Series(probe.unperturbed, index=patients["PatientID"].to_numpy()[probe.rows])
    for _, trial in table.groupby("trial"):
        assert np.array_equal(trial["score_os"].to_numpy(), unperturbed.loc[trial["PatientID"]].to_numpy())
    e = metrics["endpoints"]["os"]
    assert [t["kappa"] for t in e["trials"]] == [1.0, 1.0, 1.0] and e["kappa_min"] == 1.0
    assert e["changed_mean"] == 0.0 and e["auc_mean"] == e["unperturbed_auc"]


def test_a_mask_changed_since_the_patches_step_is_refused(cohort):
    _, patients, _, _, seeds, patches_dir = cohort
    mask = sitk.ReadImage(seeds["mask_path"][0])
    sitk.WriteImage(sitk.BinaryDilate(mask, [1, 1, 1]), seeds["mask_path"][0])  # every segment one voxel larger
    with pytest.raises(PerturbationError, match=r"patient P\d+: the mask patch extracted again .*differs"):
        perturbed_embeddings(PatchHistogram(), patients, seeds, patches_dir, patch_spec_of(patches_dir),
                             np.zeros((2, 31, 3)))
