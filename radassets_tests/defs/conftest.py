"""Fixtures of the Dagster tests: a real instance configured by the project's dagster.yaml."""

from __future__ import annotations

import shutil

import pytest
from dagster import DagsterInstance

from radassets_tests.conftest import REPO


@pytest.fixture
def instance(tmp_path):
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with DagsterInstance.from_config(str(tmp_path)) as inst:
        yield inst
