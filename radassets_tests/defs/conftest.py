"""Fixtures of the Dagster tests: a real instance configured by the project's dagster.yaml, and a private
RADASSETS_HOME over a (read-only, shared) demo collection, with DAGSTER_HOME pointing at the instance so
the CLI and library code under test use the instance the assertions read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance

from radassets_tests.conftest import REPO, SMALL_DEMO_SPEC


@pytest.fixture
def instance(tmp_path):
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with DagsterInstance.from_config(str(tmp_path)) as inst:
        yield inst


@pytest.fixture(scope="session")
def demo_collection(session_layout) -> Path:
    """The default demo collection (60 patients), generated once under the session's RADASSETS_HOME."""
    from radassets.demo import ensure_demo_collection

    return ensure_demo_collection(session_layout.demo_root()).root


def _home_over(collection: Path, tmp_path: Path, monkeypatch, instance) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "demo").symlink_to(collection)
    monkeypatch.setenv("RADASSETS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
    return home


@pytest.fixture
def default_demo_home(tmp_path, monkeypatch, instance, demo_collection) -> Path:
    return _home_over(demo_collection, tmp_path, monkeypatch, instance)


@pytest.fixture
def small_demo_home(tmp_path, monkeypatch, instance, small_demo) -> Path:
    monkeypatch.setenv("RADASSETS_DEMO_SPEC", json.dumps(SMALL_DEMO_SPEC))
    return _home_over(small_demo, tmp_path, monkeypatch, instance)
