"""The radassets CLI as a user runs it: a subprocess, its output and its exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from radassets_tests.conftest import REPO


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
    out = run_cli("datasets", "list", env={"RADASSETS_DATA_DIR": str(data)})
    assert out.returncode == 2
    assert "bad_v1.yaml: invalid dataset definition" in out.stderr and "Traceback" not in out.stderr


def test_datasets_list():
    out = run_cli("datasets", "list")
    assert out.returncode == 0, out.stderr
    assert "nsclc_radiomics_idc_v16" in out.stdout and "demo_v1" in out.stdout
