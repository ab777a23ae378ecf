"""Eight `radassets pipeline run` processes at once, each materializing its own (dataset version × model)
partition, lose no output and no lineage row (issue 13).

Both small demo releases are materialized up to their patches, and four cheap models are registered: radiomics,
the untrained CNN, and two TinyEncoder TorchScript files of different widths added with `radassets models add`
(a private registry folder). That workspace is the template. From a copy of it, the 8 partitions' embeddings and
evaluation run one after another (the reference); from another copy at the same path, all 8 start at once, as 8
terminals or a scheduler would. The embeddings steps share the ``gpu`` pool (limit 1), so they also queue for it.

Checks: every process exits 0 within RUN_TIMEOUT_S; every output file exists with the sequential run's bytes;
the lineage store holds every run with its start and end, every event (none pending, rejected or lost), and for
each partition the sequential run's version, items and parents; the Dagster instance holds a successful run per
process, a materialization per partition, nothing active and no gpu slot claimed.
"""

from __future__ import annotations

import shutil
import time
from itertools import product
from pathlib import Path

import pytest
import torch
import yaml

from radassets_tests.conftest import REPO
from radassets_tests.reliability.conftest import (Workspace, compare_lineage, compare_outputs, dagster_problems,
                                                  lineage_outputs, lineage_problems, lineage_rows, litter,
                                                  merge_lineage, output_digests, say, wait_or_kill)
from radassets_tests.standins import TinyEncoder

pytestmark = pytest.mark.reliability

DATASET_VERSIONS = ("demo_v1", "demo_v2")
MODELS = ("radiomics", "untrained_cnn", "tiny_narrow", "tiny_wide")
PARTITIONS = list(product(DATASET_VERSIONS, MODELS))  # 8
UPSTREAM = "key:cohort or key:dicom or key:volumes or key:seeds or key:patches"
SELECT = "key:embeddings or key:evaluation"
MODEL_OUTPUTS = ("embeddings/", "evaluation/")
RUN_TIMEOUT_S = 600  # all 8 share 2 cores and queue for the gpu pool: a few minutes at most


def register_tiny_models(ws: Workspace, folder: Path) -> None:
    spec = folder / "tiny.yaml"
    spec.write_text(yaml.safe_dump({"spacing_mm": 1.0, "input_size": [32, 32, 32], "axes": "SPL",
                                    "intensity": {"kind": "scale_range", "a_min": -1024, "a_max": 2048}}))
    for name, channels in (("tiny_narrow", 4), ("tiny_wide", 6)):
        weights = folder / f"{name}.pt"
        torch.jit.trace(TinyEncoder(channels=channels).eval(), torch.zeros(1, 1, 32, 32, 32)).save(str(weights))
        done = ws.run("models", "add", name, "--torchscript", str(weights), "--preprocessing", str(spec),
                      name=f"add-{name}", timeout=300)
        assert done.returncode == 0, done.tail()


@pytest.fixture(scope="module")
def template(tmp_path_factory, reliability_demo, pytestconfig) -> tuple[Path, Path]:
    """(where workspaces live, a copy of the workspace with patches of both releases and 4 models registered)."""
    base = tmp_path_factory.mktemp("concurrency")
    registry = base / "models"
    registry.mkdir()
    for model in ("radiomics", "untrained_cnn"):
        shutil.copy(REPO / "data" / "models" / f"{model}.yaml", registry)
    started = time.monotonic()
    ws = Workspace.at(base / "ws", reliability_demo, RADASSETS_MODELS_DIR=str(registry))
    register_tiny_models(ws, base)
    done = ws.run("pipeline", "run", *DATASET_VERSIONS, "--select", UPSTREAM, name="upstream", timeout=900)
    assert done.returncode == 0, done.tail()
    say(pytestconfig, f"\nconcurrency: patches of {', '.join(DATASET_VERSIONS)} and 4 models in "
                      f"{time.monotonic() - started:.0f} s")
    ws.root.rename(base / "template")
    return base, base / "template"


def workspace_from(template: Path, base: Path, demo: Path) -> Workspace:
    shutil.copytree(template, base / "ws", symlinks=True)
    return Workspace(base / "ws", demo, {"RADASSETS_MODELS_DIR": str(base / "models")})


def command(dataset_version: str, model: str) -> tuple[str, ...]:
    return ("pipeline", "run", dataset_version, "--select", SELECT, "--models", model)


def model_outputs(home: Path) -> dict[str, str]:
    return {rel: digest for rel, digest in output_digests(home).items() if rel.startswith(MODEL_OUTPUTS)}


def test_eight_runs_at_once_lose_nothing(template, reliability_demo, pytestconfig):
    base, copy = template

    # The reference: the same 8 partitions one after another.
    started = time.monotonic()
    ws = workspace_from(copy, base, reliability_demo)
    sequential_runs = []
    for dataset_version, model in PARTITIONS:
        done = ws.run(*command(dataset_version, model), name=f"{dataset_version}-{model}", timeout=RUN_TIMEOUT_S)
        assert done.returncode == 0, f"{dataset_version} × {model} failed on its own:\n{done.tail()}"
        sequential_runs += done.dagster_run_ids
    assert not merge_lineage(ws)
    reference_outputs = model_outputs(ws.home)
    reference_lineage = lineage_outputs(ws.home, sequential_runs)
    assert len(reference_lineage) == 2 * len(PARTITIONS)  # embeddings and evaluation of each partition
    assert {rel.split("/")[2] for rel in reference_outputs} == set(MODELS)
    sequential_s = time.monotonic() - started
    ws.root.rename(base / "sequential")

    # The same 8 at once, on a copy of the same template at the same path.
    started = time.monotonic()
    ws = workspace_from(copy, base, reliability_demo)
    processes = [(partition, *ws.start(*command(*partition), name="-".join(partition))) for partition in PARTITIONS]
    finished = {partition: wait_or_kill(process, log, command(*partition), started, RUN_TIMEOUT_S)
                for partition, process, log in processes}
    concurrent_s = time.monotonic() - started
    say(pytestconfig, f"concurrency: 8 partitions one after another in {sequential_s:.0f} s, "
                      f"all at once in {concurrent_s:.0f} s")

    problems = [f"{' × '.join(p)}: {'hung' if f.returncode is None else f'exit status {f.returncode}'}:\n{f.tail(15)}"
                for p, f in finished.items() if f.returncode != 0]
    problems += [p for p in compare_outputs(reference_outputs, ws.home) if p.split(": ", 1)[1].startswith(MODEL_OUTPUTS)]
    problems += [f"litter: {p}" for p in litter(ws.home)]
    problems += merge_lineage(ws)
    if not problems:
        concurrent_runs = [run for f in finished.values() for run in f.dagster_run_ids]
        problems += lineage_problems(ws.home)
        problems += compare_lineage(reference_lineage, lineage_outputs(ws.home, concurrent_runs))
        unended = lineage_rows(ws.home, "SELECT job_name, partition_key, started_at, ended_at FROM runs "
                                        "WHERE list_contains(?, dagster_run_id) AND (started_at IS NULL OR ended_at IS NULL)",
                               [concurrent_runs])
        if unended:
            problems.append(f"lineage: runs without their start or end event: {unended}")
        [events] = lineage_rows(ws.home, "SELECT count(*) AS n FROM events e JOIN runs r USING (run_id) "
                                         "WHERE list_contains(?, r.dagster_run_id)", [concurrent_runs])
        if events["n"] != 2 * 2 * len(PARTITIONS):
            problems.append(f"lineage: {events['n']} events of the 8 runs, not {2 * 2 * len(PARTITIONS)} "
                            f"(a start and an end for embeddings and evaluation of each)")
    problems += dagster_problems(ws.dagster_home)
    problems += dagster_materializations_missing(ws.dagster_home)
    assert not problems, f"8 runs at once (workspace {ws.root}):\n" + "\n".join(problems)


def dagster_materializations_missing(dagster_home: Path) -> list[str]:
    from dagster import AssetKey, DagsterInstance, MultiPartitionKey

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        wanted = {MultiPartitionKey({"dataset_version": dv, "model": m}) for dv, m in PARTITIONS}
        return [f"Dagster: no {asset} materialization of {sorted(wanted - found)}"
                for asset in ("embeddings", "evaluation")
                if not wanted <= (found := set(instance.get_materialized_partitions(AssetKey(asset))))]
