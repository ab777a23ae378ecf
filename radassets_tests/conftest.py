"""Test-wide settings: every test session writes into its own temporary storage and Dagster home."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Set before radassets or dagster are imported by any test module.
_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="radassets-tests-"))
os.environ["RADASSETS_HOME"] = str(_SESSION_ROOT / "data")
os.environ["DAGSTER_HOME"] = str(_SESSION_ROOT / "dagster_home")
os.environ.pop("RADASSETS_IDC_MIRROR", None)
os.environ.pop("RADASSETS_GCP_PROJECT", None)
(_SESSION_ROOT / "dagster_home").mkdir(parents=True, exist_ok=True)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def session_root() -> Path:
    return _SESSION_ROOT


@pytest.fixture
def storage(tmp_path, monkeypatch) -> Path:
    """A private RADASSETS_HOME for one test."""
    root = tmp_path / "radassets_home"
    monkeypatch.setenv("RADASSETS_HOME", str(root))
    return root


SMALL_DEMO_SPEC = dict(n_patients=6, n_added_in_release_2=2, n_revised_in_release_2=2, n_test_retest=2)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """A small demo collection (8 patients, both releases), generated once per test session."""
    from radassets.demo import DemoSpec, generate_demo_collection

    return generate_demo_collection(tmp_path_factory.mktemp("small_demo") / "demo", DemoSpec(**SMALL_DEMO_SPEC)).root
