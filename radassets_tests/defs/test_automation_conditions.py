"""The automation conditions evaluated tick by tick in a real instance (``dagster.evaluate_automation_conditions``,
no daemon): a model that runs here is embedded once a dataset version's patches exist, a registered model
whose weights are not in the cache is not (automation downloads nothing), and it is once its weights are there.
The daemon itself is exercised in ``test_automation.py``."""

from __future__ import annotations

import shutil

import pytest
from dagster import AssetKey, AssetMaterialization, DagsterInstance, evaluate_automation_conditions

from radassets.models import registry
from radassets.models.weights import weights_path
from radassets.settings import ENV_NAMES, Settings
from radassets_tests.conftest import REPO

EMBEDDINGS, EVALUATION, COMPARISON = AssetKey("embeddings"), AssetKey("evaluation"), AssetKey("comparison")


@pytest.fixture
def two_models(tmp_path, monkeypatch):
    """A registry of radiomics (runs anywhere) and CT-FM (weights to download), and an empty weights cache."""
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("radiomics", "ct_fm"):
        shutil.copy(REPO / "data" / "models" / f"{name}.yaml", folder)
    monkeypatch.setenv(ENV_NAMES["models_dir"], str(folder))
    monkeypatch.setenv("RADASSETS_HOME", str(tmp_path / "home"))
    return folder


def test_automation_embeds_only_models_that_run_here_then_the_others_once_their_weights_are_there(
        two_models, tmp_path):
    from radassets.definitions import defs

    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("model", ["radiomics", "ct_fm"])
        result = evaluate_automation_conditions(defs, instance)
        assert result.get_requested_partitions(EMBEDDINGS) == set()  # no patches yet

        instance.report_runless_asset_event(AssetMaterialization("patches", partition="demo_v1"))
        result = evaluate_automation_conditions(defs, instance, cursor=result.cursor)
        assert result.get_requested_partitions(EMBEDDINGS) == {"demo_v1|radiomics"}
        assert result.get_requested_partitions(EVALUATION) == set()  # it follows its embeddings
        # The requested run (launched by the sensor in a real instance) embeds it.
        instance.report_runless_asset_event(AssetMaterialization("embeddings", partition="demo_v1|radiomics"))

        # CT-FM's weights arrive in the cache: its missing partition is no longer held back.
        settings = Settings.load()
        path = weights_path(registry.get("ct_fm", two_models), settings.layout().weights_dir())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")
        result = evaluate_automation_conditions(defs, instance, cursor=result.cursor)
        assert result.get_requested_partitions(EMBEDDINGS) == {"demo_v1|ct_fm"}


def test_a_model_missing_since_before_the_first_tick_is_embedded_once_its_weights_are_there(two_models):
    """``make demo`` (every model partition synced, CT-FM skipped: no weights), then ``make ui``: the sensor's
    first tick finds CT-FM's partition already missing, so eager's "newly missing" never fires for it."""
    from radassets.definitions import defs

    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("model", ["radiomics", "ct_fm"])
        instance.report_runless_asset_event(AssetMaterialization("patches", partition="demo_v1"))
        instance.report_runless_asset_event(AssetMaterialization("embeddings", partition="demo_v1|radiomics"))
        result = evaluate_automation_conditions(defs, instance)
        assert result.get_requested_partitions(EMBEDDINGS) == set()
        result = evaluate_automation_conditions(defs, instance, cursor=result.cursor)
        assert result.get_requested_partitions(EMBEDDINGS) == set()

        path = weights_path(registry.get("ct_fm", two_models), Settings.load().layout().weights_dir())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")
        result = evaluate_automation_conditions(defs, instance, cursor=result.cursor)
        assert result.get_requested_partitions(EMBEDDINGS) == {"demo_v1|ct_fm"}


def test_a_model_added_before_the_daemon_started_is_embedded_on_the_first_tick(two_models):
    """``radassets models add`` with no daemon, then ``make ui``: the partition is missing before automation's
    first tick (eager alone would never request it: it only follows what changes after that tick)."""
    from radassets.definitions import defs

    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("model", ["radiomics", "ct_fm"])
        instance.report_runless_asset_event(AssetMaterialization("patches", partition="demo_v1"))
        result = evaluate_automation_conditions(defs, instance)
        assert result.get_requested_partitions(EMBEDDINGS) == {"demo_v1|radiomics"}
