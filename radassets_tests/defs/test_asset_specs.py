"""A snapshot of every asset spec: a change to keys, partitions, groups, kinds, checks or automation is deliberate.

Regenerate after an intended change with: RADASSETS_UPDATE_SNAPSHOTS=1 make test
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dagster import AssetKey

from radassets.definitions import defs

SNAPSHOT = Path(__file__).with_name("asset_specs.snapshot.json")


def asset_specs() -> dict:
    graph = defs.resolve_asset_graph()
    out = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        out[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": type(partitions).__name__ if partitions else None,
            "code_version": node.code_version,
            "checks": sorted(c.name for c in node.check_keys) if hasattr(node, "check_keys") else [],
            "has_description": bool(node.description),
            "automation": node.automation_condition.get_label() if node.automation_condition else None,
        }
    return out


def test_asset_specs_match_snapshot():
    current = asset_specs()
    if os.environ.get("RADASSETS_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert SNAPSHOT.exists(), f"no snapshot at {SNAPSHOT}; create it with RADASSETS_UPDATE_SNAPSHOTS=1"
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_asset_is_described_and_grouped():
    for key, spec in asset_specs().items():
        assert spec["has_description"], key
        assert spec["group"] and spec["group"] != "default", key


def test_definitions_load_with_dataset_version_partitions():
    graph = defs.resolve_asset_graph()
    keys = graph.get(AssetKey("cohort")).partitions_def.get_partition_keys()
    assert {"demo_v1", "demo_v2", "nsclc_radiomics_idc_v16"} <= set(keys)
