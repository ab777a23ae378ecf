"""The new-model journey through Dagster: the sensor adds model partitions; a model added with
`radassets models add` and backfilled over every dataset version materializes embeddings only,
nothing upstream (counted in the instance)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from dagster import AssetKey, MultiPartitionKey, SensorResult, SkipReason, build_sensor_context, materialize

from radassets.cli import main as cli_main
from radassets.definitions import defs
from radassets.defs.models import ModelsResource, model_registry_sensor
from radassets.defs.run import materialize_dataset_versions
from radassets.imaging.patches import load_patches
from radassets.layout import Layout
from radassets.settings import Settings
from radassets.models import registry
from radassets.models.embed import read_embeddings
from radassets.models.preprocessing import model_input
from radassets_tests.conftest import REPO
from radassets_tests.standins import TinyEncoder

pytestmark = pytest.mark.integration
ASSETS = ["cohort", "dicom", "volumes", "seeds", "patches", "embeddings"]


@pytest.fixture
def home(small_demo_home, tmp_path, monkeypatch) -> Path:
    """The small demo, and a registry copy holding radiomics only."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(REPO / "data" / "models" / "radiomics.yaml", models)
    monkeypatch.setenv("RADASSETS_MODELS_DIR", str(models))
    return small_demo_home


def counts(instance) -> dict[str, int]:
    return {k: len(instance.fetch_materializations(AssetKey(k), limit=1000).records) for k in ASSETS}


def test_sensor_adds_a_partition_per_registered_model(instance, home):
    result = model_registry_sensor(build_sensor_context(instance=instance))
    assert isinstance(result, SensorResult)
    [request] = result.dynamic_partitions_requests
    assert request.partitions_def_name == "model" and list(request.partition_keys) == ["radiomics"]
    instance.add_dynamic_partitions("model", list(request.partition_keys))
    assert isinstance(model_registry_sensor(build_sensor_context(instance=instance)), SkipReason)


class NanAboveMean(torch.nn.Module):
    """A broken model: NaN for the patches whose mean input is above a threshold (whatever their batch)."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3, 4))
        return torch.where((mean > self.threshold)[:, None], torch.full((x.shape[0], 3), float("nan")),
                           mean[:, None].repeat(1, 3))


def test_a_new_model_is_backfilled_without_recomputing_anything_upstream(instance, home, tmp_path, capsys):
    assert materialize_dataset_versions(["demo_v1", "demo_v2"], settings=Settings.load(), progress=lambda m: None)
    before = counts(instance)
    assert before == {"cohort": 2, "dicom": 2, "volumes": 2, "seeds": 2, "patches": 2, "embeddings": 2}
    upstream_versions = {k: instance.get_latest_materialization_event(AssetKey(k)).asset_materialization
                         .tags["dagster/data_version"] for k in ASSETS[:-1]}

    torch.jit.trace(TinyEncoder(channels=4).eval(), torch.zeros(1, 1, 32, 32, 32)).save(str(tmp_path / "tiny.pt"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"spacing_mm": 1.0, "input_size": [32, 32, 32], "axes": "SPL",
                                    "intensity": {"kind": "scale_range", "a_min": -1024, "a_max": 2048}}))
    cli_main(["models", "add", "tiny", "--torchscript", str(tmp_path / "tiny.pt"), "--preprocessing", str(spec)])
    assert "model partitions added: tiny" in capsys.readouterr().out
    assert set(instance.get_dynamic_partitions("model")) == {"radiomics", "tiny"}

    evaluations = len(instance.fetch_materializations(AssetKey("evaluation"), limit=1000).records)
    cli_main(["models", "backfill", "tiny"])
    after = counts(instance)
    assert after == dict(before, embeddings=before["embeddings"] + 2)  # two dataset versions, nothing upstream
    # What depends on embeddings ran too: evaluation, which on 8 patients records why it cannot evaluate.
    assert len(instance.fetch_materializations(AssetKey("evaluation"), limit=1000).records) == evaluations + 2
    metrics = json.loads((home / "evaluation" / "demo_v1" / "tiny" / "metrics.json").read_text())
    assert metrics["endpoints"]["os_2y"]["status"] == "not evaluable"
    assert "the stratified protocols need at least 5 of each" in metrics["endpoints"]["os_2y"]["reason"]
    assert {k: instance.get_latest_materialization_event(AssetKey(k)).asset_materialization
            .tags["dagster/data_version"] for k in ASSETS[:-1]} == upstream_versions
    for dataset_version in ("demo_v1", "demo_v2"):
        key = MultiPartitionKey({"dataset_version": dataset_version, "model": "tiny"})
        assert instance.get_materialized_partitions(AssetKey("embeddings")) >= {key}
        rows, matrix = read_embeddings(Layout(home).asset_dir("embeddings", dataset_version, "tiny"))
        assert matrix.shape == (len(rows), 4) and {r["model"] for r in rows} == {"tiny"}
    # The existing model's partitions were not touched.
    materialized = instance.get_materialized_partitions(AssetKey("embeddings"))
    assert sorted(k for k in materialized if k.endswith("|radiomics")) == ["demo_v1|radiomics", "demo_v2|radiomics"]

    # A model that gives NaN vectors for a quarter of the patches: within the allowed fraction the partition
    # succeeds, and its check fails naming the patients (the Checks tab of embeddings shows this table).
    patches, _, patch_rows = load_patches(Layout(home).asset_dir("patches", "demo_v1"))
    preprocessing = registry.get("tiny", Path(os.environ["RADASSETS_MODELS_DIR"])).preprocessing
    means = np.array([model_input(p, preprocessing).mean(dtype=np.float64) for p in patches])
    ordered = np.sort(means)
    k = len(means) - len(means) // 4  # the threshold halfway between two patches' means: no rounding decides
    threshold = float((ordered[k - 1] + ordered[k]) / 2)
    torch.jit.script(NanAboveMean(threshold)).save(str(tmp_path / "nan.pt"))
    cli_main(["models", "add", "nan_some", "--torchscript", str(tmp_path / "nan.pt"), "--preprocessing", str(spec)])
    result = materialize(list(defs.assets), instance=instance, selection=["embeddings"],
                         partition_key=MultiPartitionKey({"dataset_version": "demo_v1", "model": "nan_some"}),
                         resources={**defs.resources, "models": ModelsResource(batch_size=4, max_failed_fraction=0.5)})
    [check] = result.get_asset_check_evaluations()
    failing = {r["PatientID"] for r, m in zip(patch_rows, means) if m > threshold}
    assert failing and not check.passed and check.metadata["failed"].value == len(means) // 4
    assert all(patient in check.metadata["failures"].value for patient in failing)

    # A registered model without its weights: the partition fails with the cause as its message.
    shutil.copy(REPO / "data" / "models" / "fmcib.yaml", Path(os.environ["RADASSETS_MODELS_DIR"]))
    instance.add_dynamic_partitions("model", ["fmcib"])
    result = materialize(list(defs.assets), instance=instance, selection=["embeddings"],
                         partition_key=MultiPartitionKey({"dataset_version": "demo_v1", "model": "fmcib"}),
                         resources={**defs.resources, "models": ModelsResource(download_weights=False)},
                         raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "model 'fmcib': no weights at" in message and "model_weights.torch" in message and "8cc92ec4" in message
