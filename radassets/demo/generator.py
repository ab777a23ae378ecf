"""The demo collection: synthetic chest CT with tumour masks, laid out like an IDC bucket.

What is generated (default spec), all deterministic from the seed:
- 60 patients in release 1 (``demo_v1``), 8 more in release 2 (``demo_v2``), which also revises
  4 patients' series: same SeriesInstanceUID, new crdc_series_uuid and SOP Instance UIDs, the
  old version kept in the bucket and listed in ``prior_versions_index``, as IDC does;
- per patient a CT series whose pixel spacing, slice spacing, orientation (axial, flipped,
  oblique) and slice order vary, with one or two lesions (``GTV-1``, ``GTV-2``) in the lungs;
- masks as DICOM SEG (highdicom) for half of the patients and RTSTRUCT (rt-utils) for the rest;
- a re-scan (test-retest) for 12 patients: the phantom moved by 1–3 mm and re-noised;
- a clinical table whose survival follows a stated proportional-hazards model of the primary
  lesion's phenotype, so evaluation has a known answer (see ``HAZARD_MODEL``).

Layout under the output root::

    bucket/radassets-demo-data/<crdc_series_uuid>/<crdc_instance_uuid>.dcm
    index/{idc_index,prior_versions_index,version_metadata_index,collections_index,instances}.parquet
    clinical.csv  truth/lesions.csv  truth/test_retest.csv  demo_manifest.json  README.md

Each patient draws from its own random stream (seed, patient number), so adding patients never
changes existing ones.

Generating writes a new collection beside the output root (``.NAME.partial``) and swaps it in at
the end, so an interrupted run never leaves a half collection where a good one was. Only a
collection this generator made (it holds ``demo_manifest.json``), an empty folder or a missing
one is ever replaced: any other folder, such as ``$RADASSETS_HOME`` or a folder of the user's
files, is an error naming it, and nothing is deleted.

Under an artifact root on an object store (``s3://...``), the demo root is a folder of the store: the collection
is generated in a local scratch folder and put to the store with ``demo_manifest.json`` last
(``radassets.staging.put_folder``), so every worker of a cluster reads the same collection (the ``dicom`` step
copies its series from there) and a put cut short is not taken for a collection. A store has no rename to swap a
folder in: an earlier collection's manifest is removed first, then its files, then the new one is put.
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
from itertools import repeat
from multiprocessing import get_context
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from pydicom.uid import generate_uid
from upath import UPath

from radassets.demo.dicom_writer import Geometry, SeriesIds, write_ct_series, write_rtstruct, write_seg
from radassets.datasets import DatasetVersion
from radassets.demo.phantom import Body, Phantom, random_lesion, xyz
from radassets.errors import RadassetsError
from radassets.idc import schema
from radassets.layout import Layout
from radassets.names import shown
from radassets.staging import put_folder

GENERATOR_VERSION = 2  # 2: RTSTRUCT contours on the mask boundary
SPEC_ENV = "RADASSETS_DEMO_SPEC"
MANIFEST = "demo_manifest.json"
MIN_MATRIX, MAX_MATRIX = 64, 1024  # CT slice rows and columns (DemoSpec.slice_matrix)
MAX_PATIENTS = 2000  # per release: the default demo has 60; beyond this, generation takes hours
COLLECTION_ID = "radassets_demo"
BUCKET = "radassets-demo-data"
DEMO_DOI = "10.0000/radassets.demo"  # not a real DOI: the demo is generated, nothing to cite
LICENSE = "CC0 1.0"
UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root, for UIDs derived from the seed
RELEASE_DATES = {1: "2026-01-15", 2: "2026-06-15"}

# Survival: exponential proportional hazards of the primary lesion (GTV-1).
#   h(t) = h0 * exp(b_volume * z_log_volume + b_heterogeneity * z_heterogeneity)
# z_* standardise with the sampling distributions' own mean and SD (fixed constants below).
HAZARD_MODEL: dict[str, Any] = {
    "form": "exponential proportional hazards",
    "baseline_hazard_per_day": float(np.log(2) / 700.0),
    "coefficients": {"z_log_volume": 0.8, "z_heterogeneity": 0.6},
    "z_log_volume": "(ln(ellipsoid volume in ml) - 1.9) / 1.1",
    "z_heterogeneity": "(heterogeneity - 0.45) / 0.26",
    "censoring": "administrative, uniform in [400, 2500] days",
}


class DemoError(RadassetsError, ValueError):
    """An invalid demo spec, or an output folder that is not a demo collection and must not be replaced."""


@dataclass(frozen=True)
class DemoSpec:
    n_patients: int = 60
    n_added_in_release_2: int = 8
    n_revised_in_release_2: int = 4
    n_test_retest: int = 12
    seed: int = 20261123
    # Rows and columns of every CT slice (the field of view is the same: the pixels are smaller). 128 keeps the
    # demo small and fast; 512, a clinical CT's matrix, makes series of realistic size (``bench/scale.py``).
    slice_matrix: int = 128

    @classmethod
    def from_text(cls, text: str | None, where: str = SPEC_ENV) -> DemoSpec:
        """The default spec, or the one given as JSON (``$RADASSETS_DEMO_SPEC``, read by ``radassets.settings``;
        ``where`` names it in errors) for a larger demo, such as ``{"n_patients": 120, "n_test_retest": 20}``;
        fields left out keep their default."""
        if not text:
            return cls()
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise DemoError(f"{where} is not valid JSON ({e}): {shown(text)}") from None
        if not isinstance(raw, dict):
            raise DemoError(f"{where} must be a JSON object like {{\"n_patients\": 120}}, got {shown(text)}")
        fields = list(asdict(cls()))
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise DemoError(f"{where} has unknown fields {', '.join(shown(k) for k in unknown)}; "
                            f"known: {', '.join(fields)}")
        try:
            return cls(**raw)
        except DemoError as e:
            raise DemoError(f"{where} is not a valid demo spec: {e}") from None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if type(value) is not int:  # not bool, float or text: each is a count or a seed
                raise DemoError(f"{name} must be a whole number, got {shown(value)}")
        bounds = {"n_patients": (1, MAX_PATIENTS), "n_added_in_release_2": (0, MAX_PATIENTS),
                  "n_revised_in_release_2": (0, MAX_PATIENTS), "n_test_retest": (0, MAX_PATIENTS),
                  "seed": (0, 2**63 - 1), "slice_matrix": (MIN_MATRIX, MAX_MATRIX)}
        for name, (low, high) in bounds.items():
            if not low <= getattr(self, name) <= high:
                raise DemoError(f"{name} must be in {low}..{high}, got {getattr(self, name)}")
        if self.n_test_retest + self.n_revised_in_release_2 > self.n_patients:
            raise DemoError(f"n_test_retest ({self.n_test_retest}) plus n_revised_in_release_2 "
                            f"({self.n_revised_in_release_2}) must not exceed n_patients ({self.n_patients})")


@dataclass
class DemoCollection:
    root: Path
    spec: DemoSpec
    counts: dict[str, int] = field(default_factory=dict)


# -- per-patient plan ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PatientPlan:
    number: int
    patient_id: str
    release: int  # release that added the patient
    geometry: Geometry
    phantom: Phantom
    mask_kind: str  # "SEG" or "RTSTRUCT"
    sex: str
    age: int
    noise_hu: float
    intercept: float
    slope: float
    retest_shift: tuple[float, float, float] | None
    revised: bool


def _rng(spec: DemoSpec, *key: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, *key])


def _geometry(rng: np.random.Generator, number: int, size: int) -> Geometry:
    fov = rng.uniform(250.0, 330.0)
    spacing = fov / size
    row_spacing = col_spacing = round(spacing, 4)
    if number % 7 == 3:  # some non-square pixels (only given SEG masks, see dicom_writer)
        row_spacing = round(spacing * rng.uniform(1.1, 1.25), 4)
    slice_spacing = float(rng.choice([1.5, 2.0, 2.5, 3.0, 5.0]))
    n_slices = int(min(64, max(30, round(130.0 / slice_spacing))))
    kind = number % 6
    if kind == 1:  # flipped: columns run towards patient right (-x), so the slice normal points to the feet (-z)
        row_dir, col_dir = (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
    elif kind == 4:  # oblique: rotated about the z axis by a few degrees
        a = np.deg2rad(rng.uniform(3.0, 8.0) * rng.choice([-1, 1]))
        row_dir = (float(np.cos(a)), float(np.sin(a)), 0.0)
        col_dir = (float(-np.sin(a)), float(np.cos(a)), 0.0)
    else:
        row_dir, col_dir = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
    X, Y = np.asarray(row_dir), np.asarray(col_dir)
    normal = np.cross(X, Y)
    center = np.array([rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(-250.0, -100.0)])
    origin = (center - (size - 1) / 2 * col_spacing * X - (size - 1) / 2 * row_spacing * Y
              - (n_slices - 1) / 2 * slice_spacing * normal)
    return Geometry(rows=size, cols=size, row_spacing=row_spacing, col_spacing=col_spacing,
                    slice_spacing=slice_spacing, n_slices=n_slices, row_dir=row_dir, col_dir=col_dir,
                    origin=xyz(origin), descending_instances=bool(rng.integers(2)))


def _phantom(rng: np.random.Generator, geom: Geometry) -> Phantom:
    body = Body(torso=(float(rng.uniform(135, 155)), float(rng.uniform(95, 115))),
                lung_center_x=float(rng.uniform(62, 72)), lung_axes=(float(rng.uniform(42, 50)), float(rng.uniform(62, 72))),
                spine_radius=float(rng.uniform(14, 18)))
    z_mid = float(np.asarray(geom.origin)[2] + (geom.n_slices - 1) / 2 * geom.slice_spacing * geom.normal[2])
    half_z = (geom.n_slices - 1) / 2 * geom.slice_spacing
    lesions = []
    sides = [rng.choice([-1.0, 1.0])]
    if rng.uniform() < 0.25:
        sides.append(-sides[0])
    for i, side in enumerate(sides):
        diameter = float(np.exp(rng.uniform(np.log(8.0), np.log(45.0)))) if i == 0 else float(rng.uniform(8, 18))
        margin = diameter / 2 * 1.3
        # Keep the lesion inside its lung and away from the volume's top and bottom.
        lx = side * body.lung_center_x + rng.uniform(-1, 1) * max(0.0, body.lung_axes[0] - margin) * 0.5
        ly = -10.0 + rng.uniform(-1, 1) * max(0.0, body.lung_axes[1] - margin) * 0.5
        lz = z_mid + rng.uniform(-1, 1) * max(0.0, half_z - margin - 5.0)
        lesions.append(random_lesion(rng, f"GTV-{i + 1}", np.array([lx, ly, lz]), diameter,
                                     heterogeneity=float(rng.uniform(0.0, 0.9))))
    return Phantom(body=body, lesions=tuple(lesions))


def plan_patients(spec: DemoSpec) -> list[PatientPlan]:
    """Every patient's geometry, phantom and role, without writing anything."""
    plans = []
    total = spec.n_patients + spec.n_added_in_release_2
    revised = set(range(spec.n_test_retest + 1, spec.n_test_retest + spec.n_revised_in_release_2 + 1))
    for number in range(1, total + 1):
        rng = _rng(spec, number)
        geom = _geometry(rng, number, spec.slice_matrix)
        phantom = _phantom(rng, geom)
        mask_kind = "SEG" if (number % 2 == 0 or not geom.square_pixels) else "RTSTRUCT"
        shift = None
        if number <= spec.n_test_retest:
            direction = rng.normal(size=3)
            shift = xyz(direction / np.linalg.norm(direction) * rng.uniform(1.0, 3.0))
        intercept, slope = (-1000.0, 1.0) if number % 9 == 5 else (-1024.0, 1.0)
        plans.append(PatientPlan(
            number=number, patient_id=f"DEMO-{number:03d}", release=1 if number <= spec.n_patients else 2,
            geometry=geom, phantom=phantom, mask_kind=mask_kind, sex=str(rng.choice(["F", "M"])),
            age=int(rng.integers(45, 85)), noise_hu=float(rng.uniform(12.0, 25.0)), intercept=intercept,
            slope=slope, retest_shift=shift, revised=number in revised,
        ))
    return plans


def survival(spec: DemoSpec, plan: PatientPlan) -> tuple[float, int, float]:
    """(days, event, linear predictor) drawn from ``HAZARD_MODEL`` for the primary lesion."""
    primary = plan.phantom.lesions[0]
    z_vol = (np.log(primary.ellipsoid_volume_ml) - 1.9) / 1.1
    z_het = (primary.heterogeneity - 0.45) / 0.26
    coef = HAZARD_MODEL["coefficients"]
    lp = coef["z_log_volume"] * z_vol + coef["z_heterogeneity"] * z_het
    rng = _rng(spec, plan.number, 7)
    event_time = -np.log(rng.uniform()) / (HAZARD_MODEL["baseline_hazard_per_day"] * np.exp(lp))
    censor_time = rng.uniform(400.0, 2500.0)
    days = float(min(event_time, censor_time))
    return round(days, 1), int(event_time <= censor_time), float(lp)


# -- writing -------------------------------------------------------------------------------------

class _Ids:
    """Deterministic UIDs and UUIDs for one (patient, scan, version)."""

    def __init__(self, spec: DemoSpec, *key: object):
        self.key = "|".join(str(k) for k in (spec.seed, *key))
        self.counter = 0

    def uid(self, name: str) -> str:
        return generate_uid(prefix=UID_PREFIX, entropy_srcs=[self.key, name])

    def uuid(self, name: str) -> str:
        digest = hashlib.sha256(f"{self.key}|{name}".encode()).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))


def _series_row(plan: PatientPlan, *, modality: str, series_uid: str, study_uid: str, crdc: str, files: list[Path],
                sop_class: str, sop_class_name: str, description: str, number: int, init: int, revised: int) -> dict:
    return {
        "collection_id": COLLECTION_ID, "PatientID": plan.patient_id, "SeriesInstanceUID": series_uid,
        "StudyInstanceUID": study_uid, "source_DOI": DEMO_DOI, "PatientAge": f"{plan.age:03d}Y",
        "PatientSex": plan.sex, "StudyDate": "2020-01-01", "StudyDescription": "Demo chest CT",
        "BodyPartExamined": "CHEST", "Modality": modality, "SOPClassUID": sop_class,
        "sop_class_name": sop_class_name, "TransferSyntaxUID": "1.2.840.10008.1.2.1",
        "transfer_syntax_name": "Explicit VR Little Endian",
        "PhotometricInterpretation": "MONOCHROME2" if modality != "RTSTRUCT" else None,
        "PixelRepresentation": "1" if modality == "CT" else ("0" if modality == "SEG" else None),
        "Manufacturer": "radassets", "ManufacturerModelName": "radassets demo phantom",
        "SeriesDate": "2020-01-01", "SeriesDescription": description, "SeriesNumber": str(number),
        "instanceCount": len(files), "license_short_name": LICENSE, "series_init_idc_version": init,
        "series_revised_idc_version": revised, "aws_bucket": BUCKET, "crdc_series_uuid": crdc,
        "series_aws_url": f"s3://{BUCKET}/{crdc}/", "series_size_MB": sum(f.stat().st_size for f in files) / 1e6,
    }


def _write_scan(root: Path, spec: DemoSpec, plan: PatientPlan, scan: str,
                version: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Write one CT series (``scan`` = test or retest) and its mask, at a series ``version`` (1 or 2).

    Returns index rows, instance rows and truth rows.
    """
    patient_ids = _Ids(spec, plan.number, scan)  # identity of the scan: same across versions
    version_ids = _Ids(spec, plan.number, scan, version)  # content of one version
    geom = plan.geometry
    shift = np.asarray(plan.retest_shift) if scan == "retest" else None
    points = geom.points()
    rng = _rng(spec, plan.number, 1 if scan == "test" else 2, version)
    hu, masks = plan.phantom.render(points, shift)
    hu = hu + rng.normal(0.0, plan.noise_hu, size=hu.shape).astype(np.float32)

    study_uid = patient_ids.uid("study")
    ct_series_uid = patient_ids.uid("ct-series")
    ct_crdc = version_ids.uuid("ct-crdc")
    ct_files = [version_ids.uuid(f"ct-instance-{k}") + ".dcm" for k in range(geom.n_slices)]
    ids = SeriesIds(
        patient_id=plan.patient_id, patient_sex=plan.sex, patient_age=f"{plan.age:03d}Y", study_uid=study_uid,
        series_uid=ct_series_uid, frame_of_reference_uid=patient_ids.uid("frame-of-reference"),
        series_number=1 if scan == "test" else 2,
        series_description="Demo chest CT" + (" retest" if scan == "retest" else ""),
        sop_uids=tuple(version_ids.uid(f"ct-sop-{k}") for k in range(geom.n_slices)),
    )
    ct_folder = root / "bucket" / BUCKET / ct_crdc
    ct = write_ct_series(ct_folder, geom, ids, hu, ct_files, plan.intercept, plan.slope)

    mask_series_uid = patient_ids.uid("mask-series")
    mask_crdc = version_ids.uuid("mask-crdc")
    mask_path = root / "bucket" / BUCKET / mask_crdc / (version_ids.uuid("mask-instance") + ".dcm")
    keep = {study_uid, ct_series_uid, ids.frame_of_reference_uid, *ids.sop_uids}
    counter = iter(range(1_000_000))

    def make_uid(i: int) -> str:
        return version_ids.uid(f"mask-generated-{i}-{next(counter)}")

    mask_sop = version_ids.uid("mask-sop")
    if plan.mask_kind == "SEG":
        write_seg(mask_path, ct, masks, mask_series_uid, mask_sop, keep, make_uid)
        sop_class, sop_name = "1.2.840.10008.5.1.4.1.1.66.4", "Segmentation Storage"
    else:
        write_rtstruct(mask_path, ct, ct_folder, geom, masks, mask_series_uid, mask_sop, keep, make_uid)
        sop_class, sop_name = "1.2.840.10008.5.1.4.1.1.481.3", "RT Structure Set Storage"

    init = plan.release
    ct_paths = [ct_folder / f for f in ct_files]
    index_rows = [
        _series_row(plan, modality="CT", series_uid=ct_series_uid, study_uid=study_uid, crdc=ct_crdc, files=ct_paths,
                    sop_class="1.2.840.10008.5.1.4.1.1.2", sop_class_name="CT Image Storage",
                    description=ids.series_description, number=ids.series_number, init=init, revised=max(init, version)),
        _series_row(plan, modality=plan.mask_kind, series_uid=mask_series_uid, study_uid=study_uid, crdc=mask_crdc,
                    files=[mask_path], sop_class=sop_class, sop_class_name=sop_name,
                    description=f"Lesion {plan.mask_kind}" + (" retest" if scan == "retest" else ""),
                    number=100 + ids.series_number, init=init, revised=max(init, version)),
    ]
    instance_rows = [
        {"crdc_series_uuid": ct_crdc, "SeriesInstanceUID": ct_series_uid, "SOPInstanceUID": sop,
         "path": str(p.relative_to(root)), "size_bytes": p.stat().st_size} for sop, p in zip(ids.sop_uids, ct_paths)
    ] + [{"crdc_series_uuid": mask_crdc, "SeriesInstanceUID": mask_series_uid, "SOPInstanceUID": mask_sop,
          "path": str(mask_path.relative_to(root)), "size_bytes": mask_path.stat().st_size}]
    voxel_ml = geom.row_spacing * geom.col_spacing * geom.slice_spacing / 1000.0
    truth_rows = []
    for lesion in plan.phantom.lesions:
        center = np.asarray(lesion.center) + (shift if shift is not None else 0.0)
        truth_rows.append({
            "PatientID": plan.patient_id, "scan": scan, "series_version": version,
            "SeriesInstanceUID": ct_series_uid, "mask_SeriesInstanceUID": mask_series_uid, "mask_modality": plan.mask_kind,
            "segment_label": lesion.label, "coordX": round(float(center[0]), 4), "coordY": round(float(center[1]), 4),
            "coordZ": round(float(center[2]), 4), "semi_axis_1_mm": round(lesion.semi_axes[0], 4),
            "semi_axis_2_mm": round(lesion.semi_axes[1], 4), "semi_axis_3_mm": round(lesion.semi_axes[2], 4),
            "ellipsoid_volume_ml": round(lesion.ellipsoid_volume_ml, 4),
            "mask_volume_ml": round(float(masks[lesion.label].sum()) * voxel_ml, 4),
            "mean_hu": round(lesion.mean_hu, 3), "heterogeneity": round(lesion.heterogeneity, 4),
        })
    return index_rows, instance_rows, truth_rows


RETEST_COLUMNS = ["PatientID", "test_SeriesInstanceUID", "retest_SeriesInstanceUID", "shift_x_mm", "shift_y_mm",
                  "shift_z_mm"]


def _csv_text(rows: list[dict], columns: list[str] | None = None) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class _PatientOutput:
    current: list[dict] = field(default_factory=list)
    prior: list[dict] = field(default_factory=list)
    instances: list[dict] = field(default_factory=list)
    truth: list[dict] = field(default_factory=list)
    retest: list[dict] = field(default_factory=list)
    clinical: list[dict] = field(default_factory=list)
    linear_predictors: list[dict] = field(default_factory=list)


def _write_patient(work: Path, spec: DemoSpec, plan: PatientPlan) -> _PatientOutput:
    out = _PatientOutput()
    scans = ["test"] + (["retest"] if plan.retest_shift is not None else [])
    for scan in scans:
        index_rows, instance_rows, truth_rows = _write_scan(work, spec, plan, scan, version=1)
        out.instances += instance_rows
        out.truth += truth_rows
        if plan.revised and scan == "test":
            # Release 2 re-exports this series: the release-1 version becomes a prior version.
            for row in index_rows:
                out.prior.append({k: row[k] for k in ("collection_id", "PatientID", "SeriesInstanceUID",
                                                       "StudyInstanceUID", "Modality", "crdc_series_uuid",
                                                       "series_size_MB", "series_aws_url", "aws_bucket")}
                                 | {"gcs_bucket": BUCKET, "min_idc_version": 1, "max_idc_version": 1})
            index_rows, instance_rows, truth_rows = _write_scan(work, spec, plan, scan, version=2)
            out.instances += instance_rows
            out.truth += truth_rows
        out.current += index_rows
    if plan.retest_shift is not None:
        test_uid, retest_uid = (r["SeriesInstanceUID"] for r in out.truth
                                if r["segment_label"] == "GTV-1" and r["series_version"] == 1)
        out.retest.append({"PatientID": plan.patient_id, "test_SeriesInstanceUID": test_uid,
                           "retest_SeriesInstanceUID": retest_uid, "shift_x_mm": round(plan.retest_shift[0], 4),
                           "shift_y_mm": round(plan.retest_shift[1], 4), "shift_z_mm": round(plan.retest_shift[2], 4)})
    days, event, lp = survival(spec, plan)
    out.clinical.append({"PatientID": plan.patient_id, "age": plan.age, "sex": plan.sex,
                         "survival_days": days, "event": event})
    out.linear_predictors.append({"PatientID": plan.patient_id, "release_added": plan.release,
                                  "linear_predictor": round(lp, 5)})
    return out


def _read_manifest(root: Path) -> dict | None:
    """The manifest of the demo collection at ``root``, or None if there is none that reads as one."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "generator_version" in manifest else None


def check_replaceable(root: Path) -> None:
    """Refuse, naming ``root``, to replace anything but a demo collection this generator made (it holds
    a manifest), an empty folder or nothing: never delete a user's files or ``$RADASSETS_HOME``."""
    if not root.exists():
        return
    if not root.is_dir():
        raise DemoError(f"{root} is a file, not a demo collection: choose another --root; nothing was changed")
    if _read_manifest(root) is not None:
        return
    try:
        empty = not any(root.iterdir())
    except OSError as e:
        raise DemoError(f"cannot list {root}: {e.strerror}; nothing was changed") from None
    if not empty:
        raise DemoError(f"{root} is not a demo collection (no readable {MANIFEST}) and is not empty: it is left "
                        "as it is; choose a new or empty folder (or delete a damaged demo collection yourself)")


def generate_demo_collection(root: Path, spec: DemoSpec | None = None,
                             progress: Callable[[str], None] | None = None, workers: int | None = None) -> DemoCollection:
    """Generate the collection into ``root``, atomically: it is written beside ``root`` and swapped in,
    so a crash leaves no half collection there. ``root`` must be missing, empty or a demo collection
    (``check_replaceable``); a symbolic link is followed, and the collection replaced where it points.

    Patients are written in parallel (``workers`` processes, default: every core); each draws
    from its own random stream, so the result does not depend on the number of workers.
    """
    spec = spec or DemoSpec()
    root = Path(root).expanduser().resolve()
    check_replaceable(root)
    started = time.monotonic()
    work = root.with_name(f".{root.name}.partial")  # ours: a killed run's leftover is removed here
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        counts = _write_collection(work, spec, progress, workers)
        check_replaceable(root)  # again: the folder may have changed during the minutes of writing
        _swap_in(work, root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if progress:
        progress(f"demo: {counts['files']} files, {counts['series_current']} series "
                 f"in {time.monotonic() - started:.1f} s at {root}")
    return DemoCollection(root, spec, counts)


def _swap_in(work: Path, root: Path) -> None:
    """Put the complete collection at ``work`` in place of ``root`` (checked replaceable)."""
    if not root.exists():
        work.rename(root)
        return
    old = root.with_name(f".{root.name}.old")  # ours too: a previous collection being removed
    shutil.rmtree(old, ignore_errors=True)
    root.rename(old)
    work.rename(root)
    shutil.rmtree(old)


def _write_collection(work: Path, spec: DemoSpec, progress: Callable[[str], None] | None,
                      workers: int | None = None) -> dict[str, int]:
    """Write every file of the collection under ``work``, the manifest last; returns the counts."""
    plans = plan_patients(spec)
    merged = _PatientOutput()
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        # map keeps patient order, so every table is written in the same order each time.
        for plan, out in zip(plans, pool.map(_write_patient, repeat(work), repeat(spec), plans)):
            for name in ("current", "prior", "instances", "truth", "retest", "clinical", "linear_predictors"):
                getattr(merged, name).extend(getattr(out, name))
            if progress:
                progress(f"demo: {plan.patient_id} written ({plan.mask_kind}"
                         f"{', with re-scan' if plan.retest_shift else ''}{', revised in release 2' if plan.revised else ''})")
    current, prior, instances, truth = merged.current, merged.prior, merged.instances, merged.truth
    clinical, retest, linear_predictors = merged.clinical, merged.retest, merged.linear_predictors

    folder = work / "index"
    schema.write_table(current, schema.IDC_INDEX_SCHEMA, folder / "idc_index.parquet")
    schema.write_table(prior, schema.PRIOR_VERSIONS_SCHEMA, folder / "prior_versions_index.parquet")
    schema.write_table([{"idc_version": v, "version_timestamp": d} for v, d in RELEASE_DATES.items()],
                       schema.VERSION_METADATA_SCHEMA, folder / "version_metadata_index.parquet")
    schema.write_table([{"collection_id": COLLECTION_ID, "collection_name": "radassets demo",
                         "source_DOI": DEMO_DOI, "license_short_name": LICENSE,
                         "license_url": "https://creativecommons.org/publicdomain/zero/1.0/",
                         "citation": "Generated by radassets; not real patient data."}],
                       schema.COLLECTIONS_SCHEMA, folder / "collections_index.parquet")
    schema.write_table(instances, schema.INSTANCES_SCHEMA, folder / "instances.parquet")
    (work / "truth").mkdir()
    (work / "clinical.csv").write_text(_csv_text(clinical))
    (work / "truth" / "lesions.csv").write_text(_csv_text(truth))
    (work / "truth" / "test_retest.csv").write_text(_csv_text(retest, RETEST_COLUMNS))
    (work / "truth" / "survival_model.csv").write_text(_csv_text(linear_predictors))
    (work / "README.md").write_text(_readme(spec))
    counts = {
        "patients_release_1": spec.n_patients, "patients_release_2": spec.n_patients + spec.n_added_in_release_2,
        "series_current": len(current), "series_prior_versions": len(prior), "files": len(instances),
        "test_retest_pairs": len(retest),
    }
    manifest = {
        "generator_version": GENERATOR_VERSION, "spec": asdict(spec), "hazard_model": HAZARD_MODEL,
        "counts": counts, "release_dates": RELEASE_DATES,
        "sha256": {str(p.relative_to(work)): _sha256(p)
                   for p in sorted([*folder.glob("*.parquet"), work / "clinical.csv", *(work / "truth").glob("*.csv")])},
    }
    # The manifest is written last: its presence marks a complete collection.
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return counts


def ensure_demo_collection(root: Path, spec: DemoSpec | None = None,
                           progress: Callable[[str], None] | None = None) -> DemoCollection:
    """The collection at ``root`` (a folder, or one on the artifact store: a ``UPath``), generated only if absent
    or made by another spec or generator."""
    spec = spec or DemoSpec()
    root = root if isinstance(root, UPath) else Path(root)
    manifest = _read_manifest(root)
    if (manifest is not None and manifest.get("generator_version") == GENERATOR_VERSION
            and manifest.get("spec") == asdict(spec) and isinstance(manifest.get("counts"), dict)):
        return DemoCollection(root, spec, manifest["counts"])
    if isinstance(root, UPath):
        return _generate_on_store(root, spec, progress)
    return generate_demo_collection(root, spec, progress)


def _generate_on_store(root: UPath, spec: DemoSpec, progress: Callable[[str], None] | None) -> DemoCollection:
    """Generate the collection in a local scratch folder and put it to ``root`` on an object store, its manifest
    last. Only a demo collection (a readable manifest) or nothing is replaced, as on a disk."""
    exists = root.fs.exists(root.path)
    if exists and _read_manifest(cast(Path, root)) is None:
        raise DemoError(f"{root} is not a demo collection (no readable {MANIFEST}) and is not empty: it is left as "
                        "it is; choose another artifact root (or delete a damaged demo collection yourself)")
    with tempfile.TemporaryDirectory(prefix="radassets-demo-") as scratch:
        local = generate_demo_collection(Path(scratch) / "demo", spec, progress)
        if exists:
            (root / MANIFEST).unlink()  # first: from here on, readers see no collection until the new one is whole
            root.fs.rm(root.path, recursive=True)
        put_folder(local.root, cast(Path, root), last=MANIFEST)
    if progress:
        progress(f"demo: put to {root}")
    return DemoCollection(cast(Path, root), spec, local.counts)


def ensure_demo_source(definition: DatasetVersion, layout: Layout, spec: DemoSpec | None = None,
                       progress: Callable[[str], None] | None = None) -> None:
    """Generate the demo collection a ``source: demo`` dataset version is selected from, if absent, under the
    layout's demo root with ``spec`` (the default spec if None).

    The entry points (the cohort asset, the CLI) call this before building a cohort, so the embedded
    default works on a fresh machine without a separate step (deterministic, about half a minute). Under a URL
    root the collection is generated locally and put to the store (see the module docstring).
    Other sources are left alone. Called here rather than by ``radassets.idc``: idc is the layer below.
    """
    if definition.source.kind == "demo":
        ensure_demo_collection(layout.demo_root(), spec or DemoSpec(), progress=progress)


def _readme(spec: DemoSpec) -> str:
    coef = HAZARD_MODEL["coefficients"]
    return f"""# radassets demo collection

Synthetic chest CT generated by radassets (generator version {GENERATOR_VERSION}, seed {spec.seed}).
Not patient data. Laid out like an IDC bucket (`bucket/{BUCKET}/<crdc_series_uuid>/`) with an
index in the IDC index schema (`index/`), so the same cohort and download code serves IDC and demo.

- Release 1 (`demo_v1`): {spec.n_patients} patients; release 2 (`demo_v2`) adds {spec.n_added_in_release_2}
  and revises {spec.n_revised_in_release_2} patients' series (same SeriesInstanceUID, new crdc_series_uuid).
- {spec.n_test_retest} patients have a re-scan (SeriesDescription ends in "retest"), moved 1-3 mm and re-noised.
- Masks: DICOM SEG (highdicom) or RTSTRUCT (rt-utils); lesion labels GTV-1 (primary) and GTV-2.
- The source DOI `{DEMO_DOI}` is a placeholder, not a registered DOI.

## Survival model (the known answer)
h(t) = h0 * exp({coef['z_log_volume']} * z_log_volume + {coef['z_heterogeneity']} * z_heterogeneity),
h0 = ln 2 / 700 per day; z_log_volume = {HAZARD_MODEL['z_log_volume']};
z_heterogeneity = {HAZARD_MODEL['z_heterogeneity']}; {HAZARD_MODEL['censoring']}.
Larger and more heterogeneous primary lesions mean shorter survival.

`truth/lesions.csv` holds every lesion's centre (LPS mm), size and texture; `truth/test_retest.csv`
the re-scan shifts.
"""
