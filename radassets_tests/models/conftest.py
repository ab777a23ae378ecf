"""Fixtures of the model tests."""

from __future__ import annotations

import shutil

import pytest

from radassets_tests.conftest import REPO


@pytest.fixture
def models_home(tmp_path, monkeypatch):
    """A private copy of the registry and a private storage root."""
    models = tmp_path / "models"
    shutil.copytree(REPO / "data" / "models", models)
    monkeypatch.setenv("RADASSETS_MODELS_DIR", str(models))
    monkeypatch.setenv("RADASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return models
