"""The code location loads with one invalid dataset definition among the valid ones: the valid ones are
partitions, and the invalid one is named with its file and field where the UI shows it (the ``cohort``
asset's description) and in the load's log.

The dataset versions are read when ``radassets.definitions`` is imported, so each load is a fresh process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from radassets.packaged import packaged_data_dir
from radassets_tests.conftest import REPO

pytestmark = pytest.mark.integration

LOAD = textwrap.dedent("""
    import json
    from dagster import AssetKey, Definitions
    from radassets.definitions import defs

    Definitions.validate_loadable(defs)
    graph = defs.get_repository_def().asset_graph
    print(json.dumps({
        key: {"partitions": sorted(graph.get(AssetKey(key)).partitions_def.get_partition_keys()),
              "description": graph.get(AssetKey(key)).description}
        for key in ("cohort", "patches")
    }))
""")

BROKEN = r"broken_v1\.yaml: invalid dataset definition: source\.idc_version: Field required"


def test_the_code_location_loads_the_valid_definitions_and_names_the_invalid_one(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(packaged_data_dir(), data)
    shipped = sorted(p.stem for p in (data / "datasets").glob("*.yaml"))
    text = (data / "datasets" / "demo_v1.yaml").read_text()
    (data / "datasets" / "broken_v1.yaml").write_text(
        text.replace("source: {kind: demo, idc_version: 1}", "source: {kind: demo}", 1))

    env = {**os.environ, "RADASSETS_DATA_DIR": str(data), "RADASSETS_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", LOAD], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assets = json.loads(out.stdout)
    assert assets["cohort"]["partitions"] == assets["patches"]["partitions"] == shipped
    first = assets["cohort"]["description"].split("\n\n", 2)
    assert first[0] == ("Invalid dataset definitions, not partitions until fixed and the code location reloaded "
                        "(1):"), first
    assert re.fullmatch(r"- `.*" + BROKEN + "`", first[1]), first[1]
    assert len(re.findall(r"dataset definition not loaded, so not a partition: .*" + BROKEN, out.stderr)) == 1, \
        out.stderr
