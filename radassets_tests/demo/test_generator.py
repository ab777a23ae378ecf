"""The demo collection: real, deterministic DICOM with known geometry, masks, releases and survival."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pydicom
import pytest
import SimpleITK as sitk
from lifelines import CoxPHFitter

from radassets.demo import DemoSpec, ensure_demo_collection, generate_demo_collection
from radassets.demo.generator import BUCKET, DemoError, plan_patients, survival
from radassets.idc import schema
from radassets.imaging.ct import read_ct_series
from radassets.imaging.masks import read_rtstruct_segments

SMALL = DemoSpec(n_patients=6, n_added_in_release_2=2, n_revised_in_release_2=2, n_test_retest=2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return generate_demo_collection(tmp_path_factory.mktemp("demo") / "demo", SMALL).root


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _index(demo: Path, name: str) -> pd.DataFrame:
    return pq.read_table(demo / "index" / f"{name}.parquet").to_pandas()


def test_generation_is_byte_identical(demo, tmp_path):
    again = generate_demo_collection(tmp_path / "again", SMALL, workers=1).root
    assert _tree_hashes(again) == _tree_hashes(demo)


def test_ensure_reuses_a_complete_collection_and_regenerates_another_spec(demo, tmp_path):
    stamp = (demo / "demo_manifest.json").stat().st_mtime_ns
    ensure_demo_collection(demo, SMALL)
    assert (demo / "demo_manifest.json").stat().st_mtime_ns == stamp
    # Another spec's collection is regenerated in place (a crashed run writes beside it, never into it).
    other = generate_demo_collection(tmp_path / "other", DemoSpec(n_patients=1, n_added_in_release_2=0,
                                                                   n_revised_in_release_2=0, n_test_retest=0),
                                     workers=1).root
    collection = ensure_demo_collection(other, DemoSpec(n_patients=2, n_added_in_release_2=0,
                                                        n_revised_in_release_2=0, n_test_retest=0))
    assert collection.counts["patients_release_1"] == 2
    assert json.loads((other / "demo_manifest.json").read_text())["spec"]["n_patients"] == 2


def test_index_tables_have_the_idc_schema_and_match_the_files(demo):
    for name, expected in schema.INDEX_FILES.items():
        assert pq.read_schema(demo / "index" / f"{name}.parquet").equals(expected, check_metadata=False), name
    current = _index(demo, "idc_index")
    for row in current.itertuples():
        folder = demo / "bucket" / BUCKET / row.crdc_series_uuid
        assert row.series_aws_url == f"s3://{BUCKET}/{row.crdc_series_uuid}/"
        assert len(list(folder.glob("*.dcm"))) == row.instanceCount
    instances = _index(demo, "instances")
    assert all((demo / p).is_file() for p in instances.path)


def test_ct_files_are_complete_ct_image_storage(demo):
    current = _index(demo, "idc_index")
    for row in current[current.Modality == "CT"].itertuples():
        files = sorted((demo / "bucket" / BUCKET / row.crdc_series_uuid).glob("*.dcm"))
        for f in files[:3]:
            ds = pydicom.dcmread(f)
            assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                            "RescaleIntercept", "RescaleSlope", "FrameOfReferenceUID", "SeriesInstanceUID"):
                assert keyword in ds, (f, keyword)
            assert ds.SeriesInstanceUID == row.SeriesInstanceUID
            assert ds.pixel_array.shape == (ds.Rows, ds.Columns)


def _ct_geometry(folder: Path):
    """(sorted SOP UIDs, origin, affine columns) of a CT series, sorted along its normal."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in folder.glob("*.dcm")]
    iop = np.array(headers[0].ImageOrientationPatient, dtype=float)
    x, y = iop[:3], iop[3:]
    normal = np.cross(x, y)
    headers.sort(key=lambda h: float(np.dot(normal, np.array(h.ImagePositionPatient, dtype=float))))
    row_sp, col_sp = (float(v) for v in headers[0].PixelSpacing)
    positions = np.array([h.ImagePositionPatient for h in headers], dtype=float)
    return [h.SOPInstanceUID for h in headers], positions, x * col_sp, y * row_sp


def _centroid(mask_krc: np.ndarray, positions: np.ndarray, col_step: np.ndarray, row_step: np.ndarray) -> np.ndarray:
    k, r, c = np.nonzero(mask_krc)
    return (positions[k] + c[:, None] * col_step + r[:, None] * row_step).mean(axis=0)


def test_masks_round_trip_to_the_lesion_centre(demo):
    """SEG read back with highdicom and RTSTRUCT by pixel-centre fill give each lesion its true centre and volume."""
    assert_masks_give_the_lesions_true_centres(demo)


def assert_masks_give_the_lesions_true_centres(demo: Path) -> None:
    truth = pd.read_csv(demo / "truth" / "lesions.csv")
    current = _index(demo, "idc_index").set_index("SeriesInstanceUID")
    kinds_seen = set()
    for row in truth.itertuples():
        if row.SeriesInstanceUID not in current.index or current.loc[row.SeriesInstanceUID, "crdc_series_uuid"] not in \
                {c for c in current.crdc_series_uuid}:
            continue
        ct_crdc = current.loc[row.SeriesInstanceUID, "crdc_series_uuid"]
        if row.series_version == 1 and (truth[(truth.SeriesInstanceUID == row.SeriesInstanceUID)].series_version == 2).any():
            continue  # the release-1 version of a revised series
        ct_folder = demo / "bucket" / BUCKET / ct_crdc
        mask_crdc = current.loc[row.mask_SeriesInstanceUID, "crdc_series_uuid"]
        mask_file = next((demo / "bucket" / BUCKET / mask_crdc).glob("*.dcm"))
        sops, positions, col_step, row_step = _ct_geometry(ct_folder)
        if row.mask_modality == "SEG":
            seg = hd.seg.segread(mask_file)
            number = next(d.SegmentNumber for d in seg.SegmentSequence if d.SegmentLabel == row.segment_label)
            mask = seg.get_pixels_by_source_instance(sops, segment_numbers=[number])[..., 0]
        else:
            # Read as DICOM readers fill polygons (pixel centres inside), not with rt-utils' cv2.fillPoly,
            # which includes polygon edges and so over-fills boundary contours.
            image = read_ct_series(sorted(ct_folder.glob("*.dcm"))).image
            segment = next(s for s in read_rtstruct_segments(mask_file, image) if s.label == row.segment_label)
            assert np.allclose(image.GetOrigin(), positions[0], atol=1e-3)  # both sorted along the normal
            mask = sitk.GetArrayFromImage(segment.image)
        kinds_seen.add(row.mask_modality)
        voxel = max(np.linalg.norm(col_step), np.linalg.norm(row_step), np.linalg.norm(positions[1] - positions[0]))
        error = np.linalg.norm(_centroid(mask, positions, col_step, row_step) - [row.coordX, row.coordY, row.coordZ])
        assert error < voxel, (row.PatientID, row.scan, row.segment_label, row.mask_modality, error)
        assert abs(mask.sum() * np.prod([np.linalg.norm(col_step), np.linalg.norm(row_step),
                                          np.linalg.norm(positions[1] - positions[0])]) / 1000 - row.mask_volume_ml) \
            <= 0.01 * row.mask_volume_ml + 0.005, (row.PatientID, row.segment_label, row.mask_modality)
    assert kinds_seen == {"SEG", "RTSTRUCT"}


LARGER = DemoSpec(n_patients=2, n_added_in_release_2=0, n_revised_in_release_2=0, n_test_retest=0,
                  slice_matrix=256)


def test_a_larger_slice_matrix_gives_the_same_patients_in_smaller_pixels(tmp_path):
    """``slice_matrix`` (for benchmarks with series of a clinical CT's size): the same field of view, slices,
    lesions and masks, in more, smaller pixels; an RTSTRUCT and a SEG still give each lesion its true centre."""
    small, large = plan_patients(replace(LARGER, slice_matrix=128)), plan_patients(LARGER)
    for a, b in zip(small, large, strict=True):
        assert (b.geometry.rows, b.geometry.cols) == (256, 256)
        assert b.geometry.col_spacing == pytest.approx(a.geometry.col_spacing / 2, abs=1e-4)  # both rounded
        assert (b.geometry.slice_spacing, b.geometry.n_slices) == (a.geometry.slice_spacing, a.geometry.n_slices)
        assert [lesion.label for lesion in b.phantom.lesions] == [lesion.label for lesion in a.phantom.lesions]
        for la, lb in zip(a.phantom.lesions, b.phantom.lesions, strict=True):
            assert lb.center == pytest.approx(la.center, abs=0.5) and lb.semi_axes == pytest.approx(la.semi_axes)
    root = generate_demo_collection(tmp_path / "demo", LARGER).root
    index = _index(root, "idc_index")
    for uuid in index[index.Modality == "CT"].crdc_series_uuid:
        image = read_ct_series(sorted((root / "bucket" / BUCKET / uuid).glob("*.dcm"))).image
        assert image.GetSize()[:2] == (256, 256)
    assert_masks_give_the_lesions_true_centres(root)


@pytest.mark.parametrize("matrix", [32, 2048, True])
def test_a_slice_matrix_out_of_range_is_refused(matrix):
    with pytest.raises(DemoError, match="slice_matrix"):
        DemoSpec(slice_matrix=matrix)


def test_release_2_adds_and_revises_series_like_idc(demo):
    current = _index(demo, "idc_index")
    prior = _index(demo, "prior_versions_index")
    added = current[current.series_init_idc_version == 2]
    assert set(added.PatientID) == {"DEMO-007", "DEMO-008"}
    revised = current[(current.series_init_idc_version == 1) & (current.series_revised_idc_version == 2)]
    assert len(revised) == 2 * SMALL.n_revised_in_release_2  # CT and its mask
    assert len(prior) == len(revised)
    assert set(prior.SeriesInstanceUID) == set(revised.SeriesInstanceUID)  # same UIDs...
    assert not set(prior.crdc_series_uuid) & set(revised.crdc_series_uuid)  # ...new content
    assert (prior.min_idc_version == 1).all() and (prior.max_idc_version == 1).all()
    for row in prior.itertuples():  # old versions stay in the bucket, as in IDC
        assert any((demo / "bucket" / BUCKET / row.crdc_series_uuid).iterdir())


def test_test_retest_pairs(demo):
    pairs = list(csv.DictReader((demo / "truth" / "test_retest.csv").read_text().splitlines()))
    assert len(pairs) == SMALL.n_test_retest
    truth = pd.read_csv(demo / "truth" / "lesions.csv")
    for pair in pairs:
        test = truth[(truth.SeriesInstanceUID == pair["test_SeriesInstanceUID"]) & (truth.segment_label == "GTV-1")]
        retest = truth[(truth.SeriesInstanceUID == pair["retest_SeriesInstanceUID"]) & (truth.segment_label == "GTV-1")]
        shift = np.array([float(pair[k]) for k in ("shift_x_mm", "shift_y_mm", "shift_z_mm")])
        assert 1.0 <= np.linalg.norm(shift) <= 3.0
        moved = retest[["coordX", "coordY", "coordZ"]].to_numpy()[0] - test[["coordX", "coordY", "coordZ"]].to_numpy()[0]
        assert np.allclose(moved, shift, atol=1e-3)


def test_default_spec_varies_geometry_between_patients():
    plans = plan_patients(DemoSpec())
    assert len(plans) == 68 and len({p.patient_id for p in plans}) == 68
    geoms = [p.geometry for p in plans]
    assert len({round(g.col_spacing, 2) for g in geoms}) > 10
    assert len({g.slice_spacing for g in geoms}) >= 4
    assert any(not g.square_pixels for g in geoms)
    assert {g.row_dir[0] for g in geoms if g.row_dir[0] < 0} and any(0 < abs(g.row_dir[1]) < 0.2 for g in geoms)
    assert {g.descending_instances for g in geoms} == {True, False}
    assert {p.mask_kind for p in plans} == {"SEG", "RTSTRUCT"}
    assert all(p.mask_kind == "SEG" for p in plans if not p.geometry.square_pixels)  # rt-utils limit
    assert sum(p.retest_shift is not None for p in plans) == 12
    diameters = [2 * np.mean(p.phantom.lesions[0].semi_axes) for p in plans]
    assert min(diameters) < 12 and max(diameters) > 30


def test_survival_follows_the_stated_hazard_model():
    """A Cox fit on the true covariates recovers the stated coefficients (0.8, 0.6)."""
    spec = DemoSpec(n_patients=600, n_added_in_release_2=0)
    rows = []
    for plan in plan_patients(spec):
        lesion = plan.phantom.lesions[0]
        days, event, _ = survival(spec, plan)
        rows.append({"T": days, "E": event, "z_vol": (np.log(lesion.ellipsoid_volume_ml) - 1.9) / 1.1,
                     "z_het": (lesion.heterogeneity - 0.45) / 0.26})
    frame = pd.DataFrame(rows)
    fit = CoxPHFitter().fit(frame, duration_col="T", event_col="E")
    assert fit.params_["z_vol"] == pytest.approx(0.8, abs=0.2)
    assert fit.params_["z_het"] == pytest.approx(0.6, abs=0.2)
    assert 0.3 < frame.E.mean() < 0.9


def test_manifest_records_spec_model_and_hashes(demo):
    manifest = json.loads((demo / "demo_manifest.json").read_text())
    assert manifest["spec"]["seed"] == SMALL.seed
    assert manifest["hazard_model"]["coefficients"] == {"z_log_volume": 0.8, "z_heterogeneity": 0.6}
    for rel, digest in manifest["sha256"].items():
        assert hashlib.sha256((demo / rel).read_bytes()).hexdigest() == digest
