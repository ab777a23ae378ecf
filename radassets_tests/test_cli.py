"""The radassets CLI as a user runs it: a subprocess, its output and its exit status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from radassets_tests.conftest import REPO, SMALL_DEMO_SPEC


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "radassets.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=300)


def test_cohort_show_json_v16():
    out = run_cli("cohort", "show", "nsclc_radiomics_idc_v16", "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert {k: stats[k] for k in ("patients", "series", "instances", "idc_version")} == {
        "patients": 422, "series": 844, "instances": 51652, "idc_version": 16}
    assert stats["size_gb"] == pytest.approx(27.5, abs=0.1)
    assert len(stats["hash"]) == 64
    assert stats["collections"][0]["license_short_name"] == "CC BY-NC 3.0"


def test_cohort_diff_v16_v25_unchanged():
    out = run_cli("cohort", "diff", "nsclc_radiomics_idc_v16", "nsclc_radiomics_idc_v25", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["summary"] == {
        "a": "nsclc_radiomics_idc_v16", "b": "nsclc_radiomics_idc_v25", "added": 0, "removed": 0, "revised": 0}


def test_unknown_dataset_version_is_a_clear_error():
    out = run_cli("cohort", "show", "nsclc_radiomics_idc_v99")
    assert out.returncode == 2
    assert "unknown dataset version 'nsclc_radiomics_idc_v99'" in out.stderr
    assert "nsclc_radiomics_idc_v16" in out.stderr  # lists the known ones
    assert "Traceback" not in out.stderr


def test_malformed_definition_is_a_clear_error(tmp_path):
    data = tmp_path / "data"
    (data / "datasets").mkdir(parents=True)
    (data / "datasets" / "bad_v1.yaml").write_text("title: only a title\n")
    # Listed as invalid beside the others (test_datasets.py), and an error when asked for by name.
    out = run_cli("cohort", "show", "bad_v1", env={"RADASSETS_DATA_DIR": str(data)})
    assert out.returncode == 2
    assert "bad_v1.yaml: invalid dataset definition" in out.stderr and "Traceback" not in out.stderr


def test_datasets_list():
    out = run_cli("datasets", "list")
    assert out.returncode == 0, out.stderr
    assert "nsclc_radiomics_idc_v16" in out.stdout and "demo_v1" in out.stdout


def test_cohort_diff_demo_lists_added_and_revised(small_demo, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "demo").symlink_to(small_demo)
    # The small demo was made with another spec than the default; pin it so it is used as is.
    out = run_cli("cohort", "diff", "demo_v1", "demo_v2", "--json",
                  env={"RADASSETS_HOME": str(home), "RADASSETS_DEMO_SPEC": json.dumps(SMALL_DEMO_SPEC)})
    assert out.returncode == 0, out.stderr
    diff = json.loads(out.stdout)
    assert diff["summary"]["added"] == 2 * 2 and diff["summary"]["revised"] == 2 * 2 and diff["summary"]["removed"] == 0
    assert {r["PatientID"] for r in diff["added"]} == {"DEMO-007", "DEMO-008"}
    assert all(r["crdc_series_uuid_a"] != r["crdc_series_uuid_b"] for r in diff["revised"])


def test_add_local_indexes_any_layout_and_verifies_in_place(small_demo, tmp_path):
    # A user's folder: demo files under arbitrary names and nesting, plus a stray non-DICOM file.
    folder = tmp_path / "my_study"
    files = sorted((small_demo / "bucket").rglob("*.dcm"))[:120]
    for i, f in enumerate(files):
        target = folder / f"case{i % 3}" / ("sub" if i % 2 else "") / f"IMG{i:05d}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    (folder / "notes.txt").write_text("not dicom")
    data = tmp_path / "data"
    shutil.copytree(REPO / "data", data)
    env = {"RADASSETS_DATA_DIR": str(data), "RADASSETS_HOME": str(tmp_path / "home")}
    out = run_cli("datasets", "add-local", "my_study_v1", str(folder), env=env)
    assert out.returncode == 0, out.stderr
    assert "skipped 1 files" in out.stdout and (data / "datasets" / "my_study_v1.yaml").is_file()
    shown = json.loads(run_cli("cohort", "show", "my_study_v1", "--json", env=env).stdout)
    assert shown["instances"] == 120 and shown["idc_version"] == 1
    fetched = run_cli("cohort", "build", "my_study_v1", env=env)
    assert fetched.returncode == 0, fetched.stderr
    fetched = run_cli("dicom", "fetch", "my_study_v1", env=env)
    assert fetched.returncode == 0, fetched.stderr
    summary = json.loads(fetched.stdout)
    assert summary["failed"] == 0 and summary["files"] == 120
    # The same name and folder again re-indexes (the definition kept); another folder under it is refused.
    again = run_cli("datasets", "add-local", "my_study_v1", str(folder), env=env)
    assert again.returncode == 0 and "re-indexed 5 series (120 files)" in again.stdout, again.stderr
    other = run_cli("datasets", "add-local", "my_study_v1", str(folder / "case0"), env=env)
    assert other.returncode == 2 and "already exists" in other.stderr


def test_add_local_refuses_a_folder_without_dicom(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("hello")
    data = tmp_path / "data"
    shutil.copytree(REPO / "data", data)
    out = run_cli("datasets", "add-local", "empty_v1", str(tmp_path / "empty"),
                  env={"RADASSETS_DATA_DIR": str(data), "RADASSETS_HOME": str(tmp_path / "home")})
    assert out.returncode == 2 and "no readable DICOM files" in out.stderr
    assert not (data / "datasets" / "empty_v1.yaml").exists()


def test_offline_idc_download_fails_fast_with_instructions(tmp_path):
    """No network here: an IDC dataset's download must say so at once, not hang."""
    env = {"RADASSETS_HOME": str(tmp_path / "home")}
    assert run_cli("cohort", "build", "nsclc_radiomics_idc_v16", env=env).returncode == 0
    out = run_cli("dicom", "fetch", "nsclc_radiomics_idc_v16", env=env)
    assert out.returncode == 2
    assert "cannot reach bucket s3://idc-open-data" in out.stderr and "RADASSETS_IDC_MIRROR" in out.stderr


def test_cohort_show_generates_the_demo_collection_on_first_use(tmp_path):
    # The CLI, not radassets.idc (the layer below the generator), makes the demo collection on a fresh home.
    home = tmp_path / "home"
    spec = {"n_patients": 2, "n_added_in_release_2": 0, "n_revised_in_release_2": 0, "n_test_retest": 0}
    out = run_cli("cohort", "show", "demo_v1", "--json", env={"RADASSETS_HOME": str(home),
                                                              "RADASSETS_DEMO_SPEC": json.dumps(spec)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["patients"] == 2
    assert (home / "demo" / "demo_manifest.json").is_file()
