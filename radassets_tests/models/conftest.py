"""Fixtures of the model tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from radassets.layout import Layout
from radassets_tests.conftest import REPO


def home_weights(models_home: Path) -> Path:
    """The weights cache of the artifact root beside ``models_home`` (where the CLI run in the test caches)."""
    return Layout(models_home.parent / "home").weights_dir()


@pytest.fixture
def models_home(tmp_path, monkeypatch):
    """A private copy of the registry and a private storage root, the settings of the CLI run in-process;
    library calls are given the registry folder (this) and ``home_weights(models_home)``."""
    models = tmp_path / "models"
    shutil.copytree(REPO / "data" / "models", models)
    monkeypatch.setenv("RADASSETS_MODELS_DIR", str(models))
    monkeypatch.setenv("RADASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return models
