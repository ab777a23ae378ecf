"""The demo collection: synthetic chest CT with tumour masks, laid out like an IDC bucket.

What is generated (default spec), all deterministic from the seed:

- 60 patients in release 1 (dataset version ``demo_v1``), 8 more in release 2 (``demo_v2``),
  which also revises 4 patients' series as IDC does: same SeriesInstanceUID, new
  crdc_series_uuid and SOP Instance UIDs (a re-export with another noise realisation); the
  release-1 version stays in the bucket and is listed in ``prior_versions_index``;
- per patient a CT series whose pixel spacing, slice spacing and thickness, orientation
  (axial, flipped, oblique) and InstanceNumber order vary (``radassets.demo.geometry``),
  with one or two lesions (``GTV-1``, ``GTV-2``) in the lungs (``radassets.demo.phantom``);
- masks as DICOM SEG (highdicom) for half of the patients and RTSTRUCT (rt-utils) for the
  others (only square pixels get RTSTRUCT: see ``radassets.demo.dicom_writer``);
- a re-scan (test-retest) for 12 patients: a new study whose phantom is moved by 1-3 mm and
  re-noised, with its own mask of the same kind;
- a clinical table whose survival follows a stated proportional-hazards model of the primary
  lesion's volume and heterogeneity (``HAZARD_MODEL``), so evaluation has a known answer.

Layout under the output root::

    bucket/radassets-demo-data/<crdc_series_uuid>/<crdc_instance_uuid>.dcm
    index/{idc_index,prior_versions_index,version_metadata_index,collections_index,instances}.parquet
    clinical.csv
    truth/{lesions,survival,test_retest}.csv
    demo_manifest.json  README.md

Every patient draws from its own random streams (seed, patient number, purpose), so adding
patients never changes existing ones and the result does not depend on the number of workers.
All coordinates are DICOM patient coordinates (LPS) in millimetres.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import UID, generate_uid

from radassets.demo.dicom_writer import Rescale, SeriesIds, write_ct_series, write_rtstruct, write_seg
from radassets.demo.geometry import Geometry, random_geometry
from radassets.demo.phantom import Body, Phantom, random_lesion
from radassets.idc import schema

GENERATOR_VERSION = 2
SPEC_ENV = "RADASSETS_DEMO_SPEC"
COLLECTION_ID = "radassets_demo"
BUCKET = "radassets-demo-data"
DEMO_DOI = "10.0000/radassets.demo"  # not a registered DOI: the demo is generated, there is nothing to cite
LICENSE = "CC0 1.0"
LICENSE_URL = "https://creativecommons.org/publicdomain/zero/1.0/"
RELEASE_DATES = {1: "2026-01-15", 2: "2026-06-15"}
RELEASE_DATASET_VERSIONS = {1: "demo_v1", 2: "demo_v2"}
CURRENT_RELEASE = 2
CT_SERIES_NUMBER = 1
MASK_SERIES_NUMBER = 100

# Survival: exponential proportional hazards of the primary lesion (GTV-1), in days.
#   h(t) = h0 * exp(b_volume * z_log_volume + b_heterogeneity * z_heterogeneity)
# The z-scores use the mean and SD of the covariates' sampling distributions (stated constants),
# and h0 is set so that about half of the patients die within 730 days.
HAZARD_MODEL = {
    "form": "exponential proportional hazards: h(t) = h0 * exp(b_volume * z_log_volume + b_heterogeneity * z_heterogeneity)",
    "time_unit": "days",
    "baseline_hazard_per_day": float(np.log(2) / 800.0),
    "baseline_hazard": "ln(2) / 800 per day (median survival 800 days at z = 0)",
    "coefficients": {"z_log_volume": 0.8, "z_heterogeneity": 0.6},
    "covariates": {
        "z_log_volume": {"definition": "(ln(lesion_volume_ml of GTV-1) - 1.24) / 1.52", "mean": 1.24, "sd": 1.52},
        "z_heterogeneity": {"definition": "(heterogeneity of GTV-1 in HU - 35) / 17.32", "mean": 35.0, "sd": 17.32},
    },
    "censoring": {"kind": "administrative, uniform", "low_days": 400.0, "high_days": 2500.0},
    "survival_days": "min(event time, censoring time), rounded up to whole days; event = 1 if death came first",
    "not_in_the_model": ["age", "sex", "GTV-2", "lesion mean HU", "scanner noise"],
}


@dataclass(frozen=True)
class DemoSpec:
    """What to generate. Patients 1..n_test_retest get a re-scan; the next n_revised_in_release_2
    patients have their series revised in release 2; patients after n_patients are added in release 2."""

    n_patients: int = 60
    n_added_in_release_2: int = 8
    n_revised_in_release_2: int = 4
    n_test_retest: int = 12
    seed: int = 20261123

    @classmethod
    def from_env(cls) -> DemoSpec:
        """The default spec, or the one given as JSON in ``$RADASSETS_DEMO_SPEC`` (e.g. a larger demo)."""
        text = os.environ.get(SPEC_ENV)
        if not text:
            return cls()
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{SPEC_ENV} is not a valid demo spec ({e}): {text!r}") from None

    def __post_init__(self) -> None:
        counts = (self.n_patients, self.n_added_in_release_2, self.n_revised_in_release_2, self.n_test_retest)
        if self.n_patients < 1 or min(counts) < 0 or self.n_test_retest + self.n_revised_in_release_2 > self.n_patients:
            raise ValueError(f"inconsistent demo spec {self}: test-retest and revised patients must fit in n_patients")


@dataclass
class DemoCollection:
    root: Path
    spec: DemoSpec
    counts: dict[str, int] = field(default_factory=dict)


# -- plan: every patient's geometry, phantom and role, before anything is written ----------------

@dataclass(frozen=True)
class PatientPlan:
    number: int
    patient_id: str
    release: int  # the release that added the patient
    geometry: Geometry
    phantom: Phantom
    mask_kind: str  # "SEG" or "RTSTRUCT"
    sex: str
    age: int
    study_date: str  # DICOM DA of the (first) study
    study_time: str  # DICOM TM; a re-scan is 15 minutes later the same day
    noise_hu: float  # SD of the white scanner noise
    rescale: Rescale
    retest_shift: tuple[float, float, float] | None  # LPS mm, the re-scan's phantom translation
    revised: bool  # series re-exported in release 2


def _rng(spec: DemoSpec, *key: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, *key])


# Purposes of the per-patient random streams: _rng(spec, patient number, purpose, ...).
_PLAN, _SURVIVAL, _NOISE = 0, 1, 2


def _lesion_fits(geom: Geometry, center: np.ndarray, reach: float) -> bool:
    """Whether a sphere of radius ``reach`` (mm) around ``center`` lies inside the grid, with room for a re-scan shift."""
    index = geom.lps_to_index(center)
    margins_mm = np.array([
        [index[0] * geom.slice_spacing, (geom.n_slices - 1 - index[0]) * geom.slice_spacing],
        [index[1] * geom.row_spacing, (geom.rows - 1 - index[1]) * geom.row_spacing],
        [index[2] * geom.col_spacing, (geom.cols - 1 - index[2]) * geom.col_spacing],
    ])
    return bool((margins_mm >= reach + 5.0).all())


def _phantom(rng: np.random.Generator, geom: Geometry) -> Phantom:
    """Body plus a primary lesion (8-45 mm, log-uniform) in one lung and, for a quarter of the
    patients, a second one (8-18 mm) in the other lung; lesions lie wholly inside their lung."""
    body = Body(torso=(float(rng.uniform(135, 155)), float(rng.uniform(95, 115))),
                lung_center_x=float(rng.uniform(62, 72)),
                lung_axes=(float(rng.uniform(42, 50)), float(rng.uniform(62, 72))),
                spine_radius=float(rng.uniform(14, 18)))
    sides = [int(rng.integers(2))]
    if rng.uniform() < 0.25:
        sides.append(1 - sides[0])
    grid_center = geom.index_to_lps([(geom.n_slices - 1) / 2, (geom.rows - 1) / 2, (geom.cols - 1) / 2])
    lesions = []
    for i, side in enumerate(sides):
        diameter = float(np.exp(rng.uniform(np.log(8.0), np.log(45.0)))) if i == 0 else float(rng.uniform(8.0, 18.0))
        heterogeneity = float(rng.uniform(5.0, 65.0))
        lesion = random_lesion(rng, f"GTV-{i + 1}", np.zeros(3), diameter, heterogeneity)
        lung_xy = body.lung_centers()[side]
        room = np.maximum(np.asarray(body.lung_axes) - lesion.reach_mm, 0.0)
        for _ in range(1000):
            # Uniform in the ellipse where the lesion's bounding sphere stays inside the lung.
            radius, angle = np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            xy = lung_xy + room * radius * np.array([np.cos(angle), np.sin(angle)])
            center = np.array([xy[0], xy[1], grid_center[2] + rng.uniform(-60.0, 60.0)])
            if _lesion_fits(geom, center, lesion.reach_mm):
                break
        else:
            raise RuntimeError(f"no room for lesion {lesion.label} in grid {geom}")
        lesions.append(random_lesion(rng, lesion.label, center, diameter, heterogeneity))
    return Phantom(body=body, lesions=tuple(lesions))


def plan_patients(spec: DemoSpec) -> list[PatientPlan]:
    """Every patient's geometry, phantom and role, without writing anything (cheap)."""
    plans = []
    total = spec.n_patients + spec.n_added_in_release_2
    revised = range(spec.n_test_retest + 1, spec.n_test_retest + spec.n_revised_in_release_2 + 1)
    for number in range(1, total + 1):
        rng = _rng(spec, number, _PLAN)
        geom = random_geometry(rng, number)
        phantom = _phantom(rng, geom)
        rt_utils_ok = geom.square_pixels and geom.rows == geom.cols
        mask_kind = "RTSTRUCT" if number % 2 == 1 and rt_utils_ok else "SEG"
        shift = None
        if number <= spec.n_test_retest:
            direction = rng.normal(size=3)
            shift = tuple(round(float(v), 3) for v in direction / np.linalg.norm(direction) * rng.uniform(1.0, 3.0))
        if number % 11 == 7:
            rescale = Rescale(intercept=-1024.0, slope=0.5)  # HU in steps of 0.5
        elif number % 9 == 5:
            rescale = Rescale(intercept=-1000.0, slope=1.0)
        else:
            rescale = Rescale()
        day = np.datetime64("2016-01-04") + int(rng.integers(0, 4 * 365))
        seconds = int(rng.integers(8 * 3600, 17 * 3600))
        plans.append(PatientPlan(
            number=number, patient_id=f"DEMO-{number:03d}", release=1 if number <= spec.n_patients else 2,
            geometry=geom, phantom=phantom, mask_kind=mask_kind, sex=str(rng.choice(["F", "M"])),
            age=int(rng.integers(45, 86)), study_date=str(day).replace("-", ""),
            study_time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
            noise_hu=float(rng.uniform(12.0, 25.0)), rescale=rescale, retest_shift=shift, revised=number in revised,
        ))
    return plans


# -- survival -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SurvivalDraw:
    z_log_volume: float
    z_heterogeneity: float
    linear_predictor: float
    event_time_days: float  # latent time of death
    censoring_days: float  # administrative censoring time
    survival_days: int  # observed: min of both, rounded up
    event: int  # 1 = died before censoring


def survival(spec: DemoSpec, plan: PatientPlan) -> SurvivalDraw:
    """The patient's survival drawn from ``HAZARD_MODEL`` for its primary lesion (GTV-1)."""
    primary = next(lesion for lesion in plan.phantom.lesions if lesion.label == "GTV-1")
    covariates, coef = HAZARD_MODEL["covariates"], HAZARD_MODEL["coefficients"]
    z_vol = (np.log(primary.volume_ml) - covariates["z_log_volume"]["mean"]) / covariates["z_log_volume"]["sd"]
    z_het = (primary.heterogeneity - covariates["z_heterogeneity"]["mean"]) / covariates["z_heterogeneity"]["sd"]
    lp = coef["z_log_volume"] * z_vol + coef["z_heterogeneity"] * z_het
    rng = _rng(spec, plan.number, _SURVIVAL)
    event_time = float(rng.exponential(1.0 / (HAZARD_MODEL["baseline_hazard_per_day"] * np.exp(lp))))
    censoring = HAZARD_MODEL["censoring"]
    censor_time = float(rng.uniform(censoring["low_days"], censoring["high_days"]))
    return SurvivalDraw(z_log_volume=float(z_vol), z_heterogeneity=float(z_het), linear_predictor=float(lp),
                        event_time_days=event_time, censoring_days=censor_time,
                        survival_days=int(np.ceil(min(event_time, censor_time))), event=int(event_time <= censor_time))


# -- writing --------------------------------------------------------------------------------------

class _Ids:
    """Deterministic DICOM UIDs (2.25 form) and crdc-style UUID4s derived from the seed and a key."""

    def __init__(self, spec: DemoSpec, *key: object):
        self.key = "|".join(str(k) for k in (spec.seed, *key))

    def uid(self, name: str) -> str:
        return generate_uid(prefix=None, entropy_srcs=[self.key, name])

    def uuid(self, name: str) -> str:
        digest = hashlib.sha256(f"{self.key}|{name}".encode()).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))


def _iso_date(da: str | None) -> str | None:
    return f"{da[:4]}-{da[4:6]}-{da[6:8]}" if da else None


def _series_row(files: list[Path], crdc: str, init: int, revised: int) -> dict:
    """The idc_index row of one series version, read from what was written."""
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    pixel_representation = ds.get("PixelRepresentation")
    return {
        "collection_id": COLLECTION_ID, "analysis_result_id": None, "PatientID": ds.PatientID,
        "SeriesInstanceUID": ds.SeriesInstanceUID, "StudyInstanceUID": ds.StudyInstanceUID, "source_DOI": DEMO_DOI,
        "PatientAge": ds.get("PatientAge"), "PatientSex": ds.get("PatientSex"), "StudyDate": _iso_date(ds.StudyDate),
        "StudyDescription": ds.get("StudyDescription"), "BodyPartExamined": ds.get("BodyPartExamined"),
        "Modality": ds.Modality, "SOPClassUID": ds.SOPClassUID, "sop_class_name": UID(ds.SOPClassUID).name,
        "TransferSyntaxUID": str(syntax), "transfer_syntax_name": syntax.name,
        "PhotometricInterpretation": ds.get("PhotometricInterpretation"),
        "PixelRepresentation": None if pixel_representation is None else str(pixel_representation),
        "Manufacturer": ds.get("Manufacturer"), "ManufacturerModelName": ds.get("ManufacturerModelName"),
        "SeriesDate": _iso_date(ds.get("SeriesDate")), "SeriesDescription": ds.get("SeriesDescription"),
        "SeriesNumber": str(ds.SeriesNumber), "instanceCount": len(files), "license_short_name": LICENSE,
        "series_init_idc_version": init, "series_revised_idc_version": revised, "aws_bucket": BUCKET,
        "crdc_series_uuid": crdc, "series_aws_url": f"s3://{BUCKET}/{crdc}/",
        "series_size_MB": sum(f.stat().st_size for f in files) / 1e6,
    }


def _instance_row(root: Path, crdc: str, series_uid: str, sop_uid: str, path: Path) -> dict:
    return {"crdc_series_uuid": crdc, "SeriesInstanceUID": series_uid, "SOPInstanceUID": sop_uid,
            "path": path.relative_to(root).as_posix(), "size_bytes": path.stat().st_size}


@dataclass
class _Output:
    """Table rows produced by one patient (or, merged, by all)."""

    current: list[dict] = field(default_factory=list)  # idc_index
    prior: list[dict] = field(default_factory=list)  # prior_versions_index
    instances: list[dict] = field(default_factory=list)
    lesions: list[dict] = field(default_factory=list)
    retest: list[dict] = field(default_factory=list)
    clinical: list[dict] = field(default_factory=list)
    survival: list[dict] = field(default_factory=list)

    def extend(self, other: _Output) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))


def _write_scan(root: Path, spec: DemoSpec, plan: PatientPlan, scan: str, version: int) -> _Output:
    """Write one CT series (``scan``: "test" or "retest") and its mask, as series version ``version``.

    Version 1 is what the patient's first release serves; version 2 is the release-2 re-export
    of a revised series (same Study/Series/Frame of Reference UIDs, new SOP UIDs and crdc UUIDs).
    """
    scan_ids = _Ids(spec, plan.number, scan)  # identity of the scan: the same in every version
    version_ids = _Ids(spec, plan.number, scan, version)  # one version's content and storage
    geom = plan.geometry
    shift = np.asarray(plan.retest_shift) if scan == "retest" else None
    hu, masks = plan.phantom.render(geom.points(), shift)
    noise_rng = _rng(spec, plan.number, _NOISE, 0 if scan == "test" else 1, version)
    hu += noise_rng.normal(0.0, plan.noise_hu, size=hu.shape).astype(np.float32)

    study_time = plan.study_time
    if scan == "retest":  # same day, 15 minutes later (as in RIDER Lung CT)
        seconds = int(study_time[:2]) * 3600 + int(study_time[2:4]) * 60 + int(study_time[4:]) + 15 * 60
        study_time = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
    suffix = " retest" if scan == "retest" else ""
    ids = SeriesIds(
        patient_id=plan.patient_id, patient_sex=plan.sex, patient_age=f"{plan.age:03d}Y",
        study_uid=scan_ids.uid("study"), study_date=plan.study_date, study_time=study_time,
        series_uid=scan_ids.uid("ct-series"), frame_of_reference_uid=scan_ids.uid("frame-of-reference"),
        series_number=CT_SERIES_NUMBER, series_description="Chest CT" + suffix,
        sop_uids=tuple(version_ids.uid(f"ct-sop-{k}") for k in range(geom.n_slices)),
    )
    ct_crdc = version_ids.uuid("ct-crdc")
    ct_folder = root / "bucket" / BUCKET / ct_crdc
    ct_files = [f"{version_ids.uuid(f'ct-instance-{k}')}.dcm" for k in range(geom.n_slices)]
    ct_paths = write_ct_series(ct_folder, geom, ids, hu, ct_files, plan.rescale)

    mask_series_uid = scan_ids.uid("mask-series")
    mask_sop_uid = version_ids.uid("mask-sop")
    mask_crdc = version_ids.uuid("mask-crdc")
    mask_path = root / "bucket" / BUCKET / mask_crdc / f"{version_ids.uuid('mask-instance')}.dcm"
    mask_description = f"GTV {plan.mask_kind}{suffix}"
    if plan.mask_kind == "SEG":
        write_seg(mask_path, ct_paths, ids, masks, mask_series_uid, mask_sop_uid,
                  version_ids.uid("dimension-organization"), MASK_SERIES_NUMBER, mask_description)
    else:
        write_rtstruct(mask_path, ct_folder, geom, ids, masks, mask_series_uid, mask_sop_uid,
                       MASK_SERIES_NUMBER, mask_description)

    out = _Output()
    revised_in = max(plan.release, version)
    out.current = [_series_row(ct_paths, ct_crdc, plan.release, revised_in),
                   _series_row([mask_path], mask_crdc, plan.release, revised_in)]
    out.instances = [_instance_row(root, ct_crdc, ids.series_uid, sop, p) for sop, p in zip(ids.sop_uids, ct_paths)]
    out.instances.append(_instance_row(root, mask_crdc, mask_series_uid, mask_sop_uid, mask_path))
    voxel_ml = geom.row_spacing * geom.col_spacing * geom.slice_spacing / 1000.0
    for lesion in plan.phantom.lesions:
        center = np.asarray(lesion.center) + (shift if shift is not None else 0.0)
        out.lesions.append({
            "PatientID": plan.patient_id, "scan": scan, "release": revised_in,
            "current": int(not (plan.revised and scan == "test" and version == 1)),
            "SeriesInstanceUID": ids.series_uid, "crdc_series_uuid": ct_crdc,
            "mask_SeriesInstanceUID": mask_series_uid, "mask_crdc_series_uuid": mask_crdc,
            "mask_modality": plan.mask_kind, "segment_label": lesion.label,
            "coordX": round(float(center[0]), 4), "coordY": round(float(center[1]), 4),
            "coordZ": round(float(center[2]), 4),
            **{f"semi_axis_{i}_mm": round(a, 4) for i, a in enumerate(lesion.semi_axes, start=1)},
            "lesion_volume_ml": round(lesion.volume_ml, 5),
            "mask_volume_ml": round(float(masks[lesion.label].sum()) * voxel_ml, 5),
            "mean_hu": round(lesion.mean_hu, 3), "heterogeneity": round(lesion.heterogeneity, 4),
            "noise_hu": round(plan.noise_hu, 3),
        })
    return out


RETEST_COLUMNS = ["PatientID", "test_SeriesInstanceUID", "test_crdc_series_uuid", "retest_SeriesInstanceUID",
                  "retest_crdc_series_uuid", "shift_x_mm", "shift_y_mm", "shift_z_mm"]


def _write_patient(work: Path, spec: DemoSpec, plan: PatientPlan) -> _Output:
    out = _Output()
    scans = ["test"] + (["retest"] if plan.retest_shift is not None else [])
    for scan in scans:
        scan_out = _write_scan(work, spec, plan, scan, version=1)
        out.instances += scan_out.instances
        out.lesions += scan_out.lesions
        if plan.revised and scan == "test":
            # Release 2 re-exports this series: the release-1 version becomes a prior version.
            for row in scan_out.current:
                out.prior.append({name: row.get(name) for name in schema.PRIOR_VERSIONS_SCHEMA.names}
                                 | {"gcs_bucket": BUCKET, "min_idc_version": 1, "max_idc_version": 1})
            scan_out = _write_scan(work, spec, plan, scan, version=2)
            out.instances += scan_out.instances
            out.lesions += scan_out.lesions
        out.current += scan_out.current
    if plan.retest_shift is not None:
        ct = {r["scan"]: r for r in out.lesions if r["segment_label"] == "GTV-1"}
        out.retest.append({
            "PatientID": plan.patient_id,
            "test_SeriesInstanceUID": ct["test"]["SeriesInstanceUID"], "test_crdc_series_uuid": ct["test"]["crdc_series_uuid"],
            "retest_SeriesInstanceUID": ct["retest"]["SeriesInstanceUID"],
            "retest_crdc_series_uuid": ct["retest"]["crdc_series_uuid"],
            **{f"shift_{axis}_mm": v for axis, v in zip("xyz", plan.retest_shift)},
        })
    draw = survival(spec, plan)
    out.clinical.append({"PatientID": plan.patient_id, "survival_days": draw.survival_days, "event": draw.event,
                         "age": plan.age, "sex": plan.sex})
    primary = next(lesion for lesion in plan.phantom.lesions if lesion.label == "GTV-1")
    out.survival.append({
        "PatientID": plan.patient_id, "release": plan.release, "lesion_volume_ml": round(primary.volume_ml, 5),
        "heterogeneity": round(primary.heterogeneity, 4), "z_log_volume": round(draw.z_log_volume, 5),
        "z_heterogeneity": round(draw.z_heterogeneity, 5), "linear_predictor": round(draw.linear_predictor, 5),
        "event_time_days": round(draw.event_time_days, 2), "censoring_days": round(draw.censoring_days, 2),
        "survival_days": draw.survival_days, "event": draw.event,
    })
    return out


def _csv_text(rows: list[dict], columns: list[str] | None = None) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_tables(work: Path, spec: DemoSpec, merged: _Output) -> dict[str, int]:
    """Index parquet files, CSV tables, README and, last, the manifest; returns the counts."""
    index = work / "index"
    schema.write_table(merged.current, schema.IDC_INDEX_SCHEMA, index / "idc_index.parquet")
    schema.write_table(merged.prior, schema.PRIOR_VERSIONS_SCHEMA, index / "prior_versions_index.parquet")
    schema.write_table([{"idc_version": v, "version_timestamp": d} for v, d in RELEASE_DATES.items()],
                       schema.VERSION_METADATA_SCHEMA, index / "version_metadata_index.parquet")
    schema.write_table([{"collection_id": COLLECTION_ID, "collection_name": "radassets demo", "source_DOI": DEMO_DOI,
                         "license_short_name": LICENSE, "license_url": LICENSE_URL,
                         "citation": "Synthetic data generated by radassets; not patient data, nothing to cite."}],
                       schema.COLLECTIONS_SCHEMA, index / "collections_index.parquet")
    schema.write_table(merged.instances, schema.INSTANCES_SCHEMA, index / "instances.parquet")
    (work / "truth").mkdir()
    (work / "clinical.csv").write_text(_csv_text(merged.clinical))
    (work / "truth" / "lesions.csv").write_text(_csv_text(merged.lesions))
    (work / "truth" / "survival.csv").write_text(_csv_text(merged.survival))
    (work / "truth" / "test_retest.csv").write_text(_csv_text(merged.retest, RETEST_COLUMNS))
    (work / "README.md").write_text(_readme(spec))

    modalities = [row["Modality"] for row in merged.current]
    counts = {
        "patients_release_1": spec.n_patients, "patients_release_2": spec.n_patients + spec.n_added_in_release_2,
        "series_current": len(merged.current), "series_prior_versions": len(merged.prior),
        **{f"series_current_{m}": modalities.count(m) for m in ("CT", "SEG", "RTSTRUCT")},
        "files": len(merged.instances), "bytes": sum(row["size_bytes"] for row in merged.instances),
        "lesions_current": sum(row["current"] for row in merged.lesions if row["scan"] == "test"),
        "test_retest_pairs": len(merged.retest),
    }
    bucket_listing = "".join(f"{row['path']} {_sha256(work / row['path'])}\n"
                             for row in sorted(merged.instances, key=lambda r: r["path"]))
    tables = sorted([*index.glob("*.parquet"), work / "clinical.csv", *(work / "truth").glob("*.csv"),
                     work / "README.md"])
    manifest = {
        "generator": "radassets.demo", "generator_version": GENERATOR_VERSION, "seed": spec.seed,
        "spec": asdict(spec), "hazard_model": HAZARD_MODEL, "counts": counts,
        "releases": {str(v): {"date": RELEASE_DATES[v], "dataset_version": RELEASE_DATASET_VERSIONS[v]}
                     for v in RELEASE_DATES},
        "collection": {"collection_id": COLLECTION_ID, "aws_bucket": BUCKET, "source_DOI": DEMO_DOI,
                       "license_short_name": LICENSE},
        "sha256": {p.relative_to(work).as_posix(): _sha256(p) for p in tables},
        # sha256 of the lines "<path> <sha256 of the file>\n" of every DICOM file, sorted by path.
        "bucket_sha256": hashlib.sha256(bucket_listing.encode()).hexdigest(),
    }
    # The manifest is written last: its presence marks a complete collection.
    (work / "demo_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return counts


def generate_demo_collection(root: Path, spec: DemoSpec | None = None,
                             progress: Callable[[str], None] | None = None, workers: int | None = None) -> DemoCollection:
    """Generate the collection into ``root``, replacing what is there.

    Writes into a temporary sibling folder and renames it into place at the end, so a crash
    never leaves a half-written collection at ``root``. Patients are written by ``workers``
    processes (default: one per core); the files do not depend on their number.
    """
    spec = spec or DemoSpec()
    root = Path(root)
    started = time.monotonic()
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        plans = plan_patients(spec)
        merged = _Output()
        workers = max(1, min(workers or os.cpu_count() or 1, len(plans)))

        def report(plan: PatientPlan, out: _Output) -> None:
            merged.extend(out)
            if progress:
                roles = [plan.mask_kind] + (["re-scan"] if plan.retest_shift else []) + (
                    ["revised in release 2"] if plan.revised else []) + (["added in release 2"] if plan.release == 2 else [])
                progress(f"demo: {plan.patient_id} written ({plan.number}/{len(plans)}; {', '.join(roles)})")

        if workers == 1:
            for plan in plans:
                report(plan, _write_patient(work, spec, plan))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                # map yields in patient order, so every table is written in the same order each time.
                for plan, out in zip(plans, pool.map(_write_patient, repeat(work), repeat(spec), plans)):
                    report(plan, out)
        counts = _write_tables(work, spec, merged)
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            root.rename(old / root.name)
            work.rename(root)
            shutil.rmtree(old)
        else:
            work.rename(root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if progress:
        progress(f"demo: {counts['files']} files, {counts['series_current']} current series "
                 f"in {time.monotonic() - started:.1f} s at {root}")
    return DemoCollection(root, spec, counts)


def ensure_demo_collection(root: Path, spec: DemoSpec | None = None,
                           progress: Callable[[str], None] | None = None) -> DemoCollection:
    """The collection at ``root``; generated only if its manifest is missing or from another spec or generator version."""
    spec = spec or DemoSpec()
    manifest_path = Path(root) / "demo_manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("generator_version") == GENERATOR_VERSION and manifest.get("spec") == asdict(spec):
            return DemoCollection(Path(root), spec, manifest["counts"])
    return generate_demo_collection(root, spec, progress)


def _readme(spec: DemoSpec) -> str:
    model = HAZARD_MODEL
    coef, cov, cens = model["coefficients"], model["covariates"], model["censoring"]
    n_total = spec.n_patients + spec.n_added_in_release_2
    return f"""# radassets demo collection

Synthetic chest CT generated by radassets (`radassets.demo`, generator version {GENERATOR_VERSION},
seed {spec.seed}). **Not patient data.** Real DICOM files, laid out like an IDC bucket
(`bucket/{BUCKET}/<crdc_series_uuid>/<crdc_instance_uuid>.dcm`) with an index in the IDC index
schema (`index/`), so the same cohort, download and imaging code serves IDC and the demo.
Licence {LICENSE} (generated data). The source DOI `{DEMO_DOI}` is a placeholder, **not a
registered DOI**; there is nothing to cite.

## Releases
- Release 1 (dataset version `demo_v1`, {RELEASE_DATES[1]}): patients DEMO-001 to DEMO-{spec.n_patients:03d}.
- Release 2 (`demo_v2`, {RELEASE_DATES[2]}): adds DEMO-{spec.n_patients + 1:03d} to DEMO-{n_total:03d}
  (`series_init_idc_version` = 2) and revises the CT and mask series of {spec.n_revised_in_release_2} patients:
  same SeriesInstanceUID, new crdc_series_uuid and SOPInstanceUIDs (a re-export with another noise
  realisation; the mask is re-made on the new CT). The release-1 versions stay in the bucket and are
  listed in `index/prior_versions_index.parquet` (min_idc_version = max_idc_version = 1).
- `index/idc_index.parquet` lists every series version served by the current release ({CURRENT_RELEASE});
  `index/instances.parquet` every file in the bucket (paths relative to this folder).

## Images
- CT Image Storage, one file per slice, Explicit VR Little Endian, int16 stored values,
  HU = stored * RescaleSlope + RescaleIntercept (intercept -1024, some -1000; slope 1, some 0.5).
- Geometry varies between patients: 128-160 pixels of 1.6-2.6 mm (some non-square: PixelSpacing
  = [row spacing, column spacing]), 40-90 slices 1.5-5 mm apart (some with SliceThickness larger
  than the spacing), axial, flipped (row direction [-1,0,0] and/or column direction [0,-1,0]) and
  mildly oblique orientations, and InstanceNumber running head-to-feet or feet-to-head. Stack
  slices by ImagePositionPatient along the normal, never by file name or InstanceNumber.
- Phantom: elliptic torso (fat rim -100 HU, soft tissue 40 HU), lungs (-850 HU), vertebra
  (400 HU), air (-1000 HU), white scanner noise (SD 12-25 HU per patient). Lesions lie inside
  the lungs: lobulated ellipsoids of 8-45 mm with a mean of -10 to 60 HU and a texture (a
  Gaussian random field, as Gaussian-filtered noise) whose SD, `heterogeneity`, is 5-65 HU.

## Masks
- DICOM SEG (highdicom, BINARY) for about half of the patients, RTSTRUCT (rt-utils) for the
  others (only series with square pixels). Labels: `GTV-1` (primary lesion) and `GTV-2` (second
  lesion, about a quarter of the patients), as SegmentLabel and ROIName.

## Test-retest
- {spec.n_test_retest} patients (DEMO-001 to DEMO-{spec.n_test_retest:03d}) have a second study the same
  day ("Chest CT retest"): the phantom moved by 1-3 mm and re-noised, with its own mask of the
  same kind. `truth/test_retest.csv` pairs the CT series and gives the shift (LPS mm).

## Survival model (the known answer)
{model['form']}

- h0 = {model['baseline_hazard']} = {model['baseline_hazard_per_day']:.6g} per day
- b_volume = {coef['z_log_volume']}, b_heterogeneity = {coef['z_heterogeneity']}
  (larger and more heterogeneous primary lesions mean shorter survival)
- z_log_volume = {cov['z_log_volume']['definition']}
- z_heterogeneity = {cov['z_heterogeneity']['definition']}
- censoring: {cens['kind']} in [{cens['low_days']:g}, {cens['high_days']:g}] days; {model['survival_days']}.
- not in the model: {', '.join(model['not_in_the_model'])}.

`clinical.csv` has PatientID, survival_days, event (1 = died), age, sex. The covariates and
the latent times are only in `truth/survival.csv`.

## Truth tables (all coordinates DICOM patient LPS, mm)
- `truth/lesions.csv`: one row per CT series version and lesion: PatientID, scan (test/retest),
  release (first release serving this version), current (served by release {CURRENT_RELEASE}),
  SeriesInstanceUID and crdc_series_uuid of the CT and of its mask, mask modality, segment
  label, centre (coordX, coordY, coordZ), semi-axes before lobulation, lesion_volume_ml (exact),
  mask_volume_ml (voxel count), mean_hu, heterogeneity (texture SD, HU), noise_hu.
- `truth/survival.csv`: per patient, the primary lesion's covariates, z-scores, linear
  predictor, latent event and censoring times and the observed outcome.
- `truth/test_retest.csv`: test and retest CT series with the applied shift.

`demo_manifest.json` records the spec, the model, counts and the sha256 of every table.
"""
