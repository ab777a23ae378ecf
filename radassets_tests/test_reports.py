"""Typed step reports: every pipeline step returns a frozen dataclass whose failed items are all one type,
``ItemFailure``, while the manifests the steps write keep their established keys and values."""

from __future__ import annotations

import dataclasses
import json
import shutil
import typing

import pytest

from radassets import datasets
from radassets.demo import DemoSpec, ensure_demo_source
from radassets.evaluation.compare_report import compare_models
from radassets.evaluation.perturbation import run_seed_stability
from radassets.evaluation.report import evaluate_model
from radassets.evaluation.scores import evaluate_scores
from radassets.idc import download
from radassets.idc.cohort import build_cohort, make_cohort
from radassets.idc.cohorts import cohort_for, write_cohort
from radassets.idc.dicom import fetch_dataset_dicom
from radassets.imaging.pipeline import run_patches, run_seeds, run_volumes
from radassets.models.pipeline import run_model
from radassets.reports import ItemFailure
from radassets_tests.conftest import SMALL_DEMO_SPEC

STEPS = [build_cohort, make_cohort, fetch_dataset_dicom, run_volumes, run_seeds, run_patches, run_model,
         evaluate_model, compare_models, run_seed_stability, evaluate_scores]


def _report_type(step) -> type:
    returned = typing.get_type_hints(step)["return"]
    if typing.get_origin(returned) is tuple:  # run_patches: (report, montage path)
        returned = typing.get_args(returned)[0]
    return returned


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.__name__)
def test_every_step_returns_a_frozen_dataclass_with_typed_fields(step):
    report = _report_type(step)
    assert dataclasses.is_dataclass(report), f"{step.__name__} returns {report}, not a dataclass"
    hints = typing.get_type_hints(report)
    assert all(f.name in hints and hints[f.name] is not typing.Any for f in dataclasses.fields(report))
    if report.__name__ != "Cohort":  # the lockfile itself (it is rewritten when rebuilt); its stats are frozen
        assert report.__dataclass_params__.frozen, f"{report.__name__} is not frozen"


def _failures_hint(report: type):
    """The declared type of a report's ``failures``: a field's, or a property's return; None without one."""
    if not isinstance(report, type):  # a step that returns a plain dict
        return None
    prop = report.__dict__.get("failures")
    if isinstance(prop, property):
        return typing.get_type_hints(prop.fget)["return"]
    return typing.get_type_hints(report).get("failures")


WITH_FAILURES = [s for s in STEPS if _failures_hint(_report_type(s)) is not None]


def test_the_steps_that_skip_items_report_failures():
    assert {s.__name__ for s in WITH_FAILURES} == {"fetch_dataset_dicom", "run_volumes", "run_seeds", "run_model",
                                                  "evaluate_model", "compare_models", "run_seed_stability"}


@pytest.mark.parametrize("step", WITH_FAILURES, ids=lambda s: s.__name__)
def test_every_report_states_its_failures_as_item_failures(step):
    report = _report_type(step)
    assert _failures_hint(report) == list[ItemFailure], f"{report.__name__}.failures is {_failures_hint(report)}"


def _old_dicom_manifest(rows: list[dict], dataset_version: str, manifest: str, cohort_hash: str,
                        content_hash: str) -> dict:
    """The DICOM manifest as the step wrote it from its dict rows before the reports were typed (``manifest``: its
    name relative to the root, as records name artifacts since they are written to object stores too)."""
    failed = [r for r in rows if r["status"] == "failed"]
    return {"summary": {"dataset_version": dataset_version, "series": len(rows), "verified": len(rows) - len(failed),
                        "failed": len(failed), "failed_fraction": len(failed) / len(rows),
                        "files": sum(r["files"] or 0 for r in rows),
                        "size_gb": round(sum(r["bytes"] or 0 for r in rows) / 1e9, 4), "manifest": str(manifest)},
            "cohort_hash": cohort_hash, "content_hash": content_hash, "series": rows}


def test_a_corrupted_series_is_one_item_failure_through_the_steps_and_the_manifests_keep_their_shape(
        demo_layout, tmp_path):
    layout = demo_layout
    definition = datasets.get("demo_v1")
    ensure_demo_source(definition, layout, DemoSpec(**SMALL_DEMO_SPEC))
    cohort = cohort_for(definition, layout)
    write_cohort(cohort, layout)
    # A mirror whose copy of one CT series has a truncated file.
    mirror = tmp_path / "mirror"
    shutil.copytree(layout.demo_root() / "bucket", mirror)
    victim = next(s for s in cohort.series if s["Modality"] == "CT")
    bad = sorted((mirror / "radassets-demo-data" / victim["crdc_series_uuid"]).glob("*.dcm"))[0]
    bad.write_bytes(b"truncated")

    dicom = fetch_dataset_dicom(definition, cohort, layout, mirror=download.Mirror.local_folder(mirror), attempts=1)
    [failure] = dicom.failures
    uid = victim["SeriesInstanceUID"]
    assert (failure.stage, failure.item, failure.patient, failure.series) == ("dicom", uid, victim["PatientID"], uid)
    assert "unreadable DICOM" in failure.reason, failure.reason
    assert (dicom.series, dicom.failed, dicom.verified) == (len(cohort.series), 1, len(cohort.series) - 1)
    written = json.loads(dicom.manifest_path.read_text())
    assert written == _old_dicom_manifest(written["series"], "demo_v1", layout.relative(dicom.manifest_path),
                                          cohort.content_hash, dicom.content_hash)
    assert [r["reason"] for r in written["series"] if r["status"] == "failed"] == [failure.reason]

    volumes = run_volumes(definition, layout)
    by_item = {f.item: f for f in volumes.failures}
    assert by_item[uid].stage == "volumes" and by_item[uid].code == "not_downloaded"
    assert volumes.failures_by_code == json.loads((volumes.out_dir / "manifest.json").read_text())["summary"][
        "failures_by_code"]
    seeds = run_seeds(definition, layout)
    patches, _ = run_patches(definition, layout)
    assert uid not in {r["SeriesInstanceUID"] for r in patches.rows}
    embeddings = run_model("demo_v1", "untrained_cnn", layout, device="cpu")
    manifest = json.loads((embeddings.out_dir / "manifest.json").read_text())
    assert manifest["failures"] == [] and embeddings.failed == 0 and embeddings.embedded == len(patches.rows)
    for report in (dicom, volumes, seeds, embeddings):
        assert all(type(f) is ItemFailure for f in report.failures)
