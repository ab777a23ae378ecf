"""The reproduced Hosny et al. 2018 Figure 2 analysis, materialized as an asset in a real instance."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from dagster import AssetKey, materialize

from radassets.definitions import defs
from radassets.evaluation.figures import lineage_id_of
from radassets_tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_hosny2018_figure2_asset(instance, storage):
    result = materialize(list(defs.assets), instance=instance, selection=["hosny2018_figure2"],
                         resources=defs.resources)
    assert result.success
    meta = instance.get_latest_materialization_event(AssetKey("hosny2018_figure2")).asset_materialization.metadata
    assert meta["n"].value == 206 and meta["n_events_before_horizon"].value == 146
    tuning = pd.read_csv(REPO / "data" / "reference" / "nsclc_radiomics" / "hosny_tuning_cohort_logits.csv")
    assert meta["threshold"].value == pytest.approx(tuning["logit_0"].median())
    assert meta["auc_ci_low"].value < meta["auc"].value < meta["auc_ci_high"].value
    assert meta["kaplan_meier"].value.startswith("![km.png](data:image/png;base64,")
    out = storage / "reports" / "hosny2018_figure2"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label_definition"]["censored_before_horizon"] == "alive"
    assert lineage_id_of(out / "km.png") == lineage_id_of(out / "roc.png") == meta["lineage_id"].value
