"""The researcher's journeys in the Dagster UI, in headless Chromium, against `dagster dev` started here.

They build on each other as one person's session does, so they run in file order on one server (its daemon
evaluates the automation conditions, as `make ui`'s does):

1. Launch the job `dataset_version_job` for demo_v1 from its page (no typed asset filter), wait for its
   backfill to succeed, watch automation materialize the models' embeddings and evaluations, and see the
   evaluation's metrics and Kaplan-Meier figure in its materialization.
2. Register a new TorchScript model with `radassets models add` (demo_v2 having been run from the command
   line meanwhile) and watch automation embed, evaluate and compare it for every dataset version, with no
   backfill: the runs list shows what it launched, and only embeddings and what depends on them ran.
3. Open the comparison that journey 2 updated, and trace its figure as a journal gets it (the vector PDF, copied
   and renamed) with `radassets lineage trace`: the new model is there with the sha256 of its weights; the stamp
   printed on the figure traces to the same version.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from radassets.storage import sha256_file
from radassets_tests.standins import TinyEncoder

pytestmark = [pytest.mark.ui, pytest.mark.integration]

BACKFILL_TIMEOUT_S = 900
AUTOMATION_TIMEOUT_S = 900
AUTOMATION_TICK_S = 30  # the automation sensor's minimum_interval_seconds (radassets/defs/automation.py)
UPSTREAM = ("cohort", "dicom", "volumes", "seeds", "patches")
NEW_MODEL = "tiny_encoder"
NEW_MODEL_SPEC = """spacing_mm: 1.0
input_size: [40, 40, 40]
axes: SPL
intensity: {kind: scale_range, a_min: -1024, a_max: 2048, b_min: 0, b_max: 1, clip: false}
"""


def graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    assert "errors" not in body, body["errors"]
    return body["data"]


def dismiss_welcome(page) -> None:
    """A new instance greets with a 'Join the Dagster community' dialog."""
    with contextlib.suppress(Exception):  # not shown (already dismissed)
        page.get_by_role("button", name="Skip").click(timeout=8000)


def open_job_dialog(page, url: str, job: str, assets: int):
    """A job's page (Overview > Jobs > the job), then 'Materialize all': its launch dialog."""
    page.goto(f"{url}/locations/radassets/jobs/{job}")
    dismiss_welcome(page)
    page.get_by_role("button", name="Materialize all").click(timeout=60000)
    dialog = page.locator(".dagster-dialog")
    dialog.get_by_text(f"Launch runs to materialize {assets} assets").wait_for(timeout=30000)
    return dialog


def wait_for_job_run(server, job: str) -> str:
    """The id of the one run of ``job``, once it has succeeded."""
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = graphql(server.url, '{ runsOrError(filter: {pipelineName: "%s"}) '  # noqa: UP031
                                   '{ ... on Runs { results { runId status } } } }' % job)["runsOrError"]["results"]
        if runs and runs[0]["status"] not in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED"):
            break
        time.sleep(5)
    assert len(runs) == 1 and runs[0]["status"] == "SUCCESS", f"{job}: {runs}\n{server.log.read_text()[-3000:]}"
    return runs[0]["runId"]


def materializations(url: str, asset: str) -> list[dict]:
    data = graphql(url, f'{{ assetOrError(assetKey: {{path: ["{asset}"]}}) {{ ... on Asset '
                        f'{{ assetMaterializations {{ partition runId timestamp }} }} }} }}')
    return data["assetOrError"].get("assetMaterializations", [])


def wait_for_materializations(server, wanted: dict[str, set[str]], since: list[dict] | None = None) -> list[dict]:
    """Until each asset of ``wanted`` has a materialization of each of its partitions (newer than ``since``, the
    materializations seen before): automation acts on its own ticks, so the test waits for the outcome, with a
    timeout, never for a fixed time. Returns the new materializations with their asset."""
    deadline = time.monotonic() + AUTOMATION_TIMEOUT_S
    seen = {(m["runId"], m["partition"]) for m in since or []}
    while True:
        found = [{**m, "asset": asset} for asset in wanted for m in materializations(server.url, asset)
                 if (m["runId"], m["partition"]) not in seen]
        missing = {(a, p) for a, parts in wanted.items() for p in parts} - {(m["asset"], m["partition"]) for m in found}
        if not missing:
            return found
        assert time.monotonic() < deadline, (f"automation did not materialize {sorted(missing)} in "
                                             f"{AUTOMATION_TIMEOUT_S} s\n{server.log.read_text()[-3000:]}")
        time.sleep(5)


def wait_until_idle(server) -> None:
    """Until no run is queued or in progress across two automation ticks (what follows is then quiet)."""
    deadline = time.monotonic() + AUTOMATION_TIMEOUT_S
    idle_since = None
    while True:
        active = graphql(server.url, '{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, '
                                     'CANCELING]}) { ... on Runs { count } } }')["runsOrError"]["count"]
        now = time.monotonic()
        idle_since = (idle_since or now) if active == 0 else None
        if idle_since is not None and now - idle_since > 2 * AUTOMATION_TICK_S + 5:
            return
        assert now < deadline, f"runs still active after {AUTOMATION_TIMEOUT_S} s"
        time.sleep(5)


def run_tags(url: str, run_id: str) -> dict[str, str]:
    run = graphql(url, f'{{ runOrError(runId: "{run_id}") {{ ... on Run {{ tags {{ key value }} }} }} }}')
    return {t["key"]: t["value"] for t in run["runOrError"]["tags"]}


def launched_by_automation(tags: dict[str, str]) -> bool:
    return tags.get("dagster/from_automation_condition") == "true" or tags.get("dagster/sensor_name") == "automation"


def metadata_row(page, label: str):
    """The row of the materialization's metadata table whose label is `label`, once its value shows.

    Dagster renders a Markdown value (our tables) in a lazily loaded component: the row appears with an
    empty value cell first, so reading it at first sight can read nothing (seen in CI)."""
    row = page.get_by_text(label, exact=True).first.locator("xpath=ancestor::tr[1]")
    row.wait_for(timeout=60000)
    value = row.locator("td").nth(1)
    deadline = time.monotonic() + 60
    while not value.inner_text().strip():
        assert time.monotonic() < deadline, f"the value of {label!r} did not render in 60 s"
        page.wait_for_timeout(250)
    return row


def show_figure(page, label: str) -> None:
    """Dagster shows Markdown over 1,000 characters (our inline PNGs) behind '[Show Markdown]'."""
    metadata_row(page, label).get_by_text("[Show Markdown]").click()
    figure = page.locator('img[src^="data:image/png;base64,"]').first
    figure.wait_for(state="visible", timeout=30000)
    assert figure.evaluate("img => img.naturalWidth") > 300  # the figure itself, decoded by the browser


@pytest.fixture(scope="module")
def new_model_files(tmp_path_factory) -> tuple[Path, Path]:
    """A researcher's own encoder: a small 3-D CNN saved as TorchScript, and its preprocessing spec."""
    folder = tmp_path_factory.mktemp("new_model")
    weights, spec = folder / f"{NEW_MODEL}.pt", folder / "preprocessing.yaml"
    torch.jit.trace(TinyEncoder(channels=8).eval(), torch.zeros(1, 1, 40, 40, 40)).save(str(weights))
    spec.write_text(NEW_MODEL_SPEC)
    return weights, spec


def test_1_launch_the_dataset_version_job_and_watch_automation(ui_server, page):
    dialog = open_job_dialog(page, ui_server.url, "dataset_version_job", 5)
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_text("demo_v1", exact=True).first.click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Launch 1 run").click()  # one partition: one run, no backfill
    run_id = wait_for_job_run(ui_server, "dataset_version_job")

    # The run's page, as a person checks it.
    page.goto(f"{ui_server.url}/runs/{run_id}")
    page.get_by_text("Success").first.wait_for(timeout=30000)

    # Automation follows the patches: every model that runs here is embedded and evaluated, then compared.
    new = wait_for_materializations(ui_server, {"evaluation": {"demo_v1|radiomics", "demo_v1|untrained_cnn"},
                                                "comparison": {"demo_v1"}})
    for m in new:
        tags = run_tags(ui_server.url, m["runId"])
        assert launched_by_automation(tags), (m, tags)

    # The evaluation of demo_v1 × radiomics: its numbers and the Kaplan-Meier figure.
    page.goto(f"{ui_server.url}/assets/evaluation?view=partitions&partition=demo_v1%7Cradiomics")
    metrics = json.loads((ui_server.home / "evaluation" / "demo_v1" / "radiomics" / "metrics.json").read_text())
    endpoint = metrics["endpoints"]["os_2y"]
    for label, value in (("os_2y: probe auc", endpoint["linear_probe"]["auc"]),
                         ("os_2y: hazard ratio", endpoint["survival"]["hazard_ratio"])):
        row = metadata_row(page, label)
        assert repr(value) in row.inner_text(), (label, row.inner_text())
    show_figure(page, "os_2y: kaplan_meier")


def test_2_register_a_new_model_and_watch_automation_materialize_it(ui_server, page, new_model_files):
    assert materializations(ui_server.url, "evaluation"), "journey 2 builds on journey 1: run the module whole"
    # A colleague ran the second release from the command line meanwhile (default models only): its runs go
    # through the instance's queue, which the UI's daemon serves.
    prepared = ui_server.cli("pipeline", "run", "demo_v2")
    assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]
    wait_until_idle(ui_server)
    before = {asset: materializations(ui_server.url, asset) for asset in (*UPSTREAM, "embeddings", "comparison")}

    weights, spec = new_model_files
    added = ui_server.cli("models", "add", NEW_MODEL, "--torchscript", str(weights), "--preprocessing", str(spec))
    assert added.returncode == 0, added.stdout + added.stderr
    assert f"registered {NEW_MODEL} (torchscript, 8-d)" in added.stdout

    # No backfill: the registry sensor adds the model's partition, automation embeds, evaluates and compares it
    # for every dataset version whose patches exist.
    new = wait_for_materializations(
        ui_server, {"embeddings": {f"demo_v1|{NEW_MODEL}", f"demo_v2|{NEW_MODEL}"},
                    "evaluation": {f"demo_v1|{NEW_MODEL}", f"demo_v2|{NEW_MODEL}"},
                    "comparison": {"demo_v1", "demo_v2"}},
        since=[m for ms in before.values() for m in ms])
    wait_until_idle(ui_server)
    run_ids = sorted({m["runId"] for m in new})

    # The run list as a person checks it: the runs automation launched ("Launched by: automation"), and what
    # each one materialized.
    page.goto(f"{ui_server.url}/runs?q%5B0%5D=tag%3Adagster%2Ffrom_automation_condition%3Dtrue")
    page.get_by_text("Show runs within backfills").click()  # automation launches a backfill per request
    for run_id in run_ids:
        page.get_by_text(run_id[:8], exact=True).wait_for(timeout=30000)
    for run_id in run_ids:
        tags = run_tags(ui_server.url, run_id)
        assert launched_by_automation(tags), (run_id, tags)

    # Nothing upstream was materialized again, nor the other models' embeddings.
    after = {asset: materializations(ui_server.url, asset) for asset in (*UPSTREAM, "embeddings")}
    for asset in UPSTREAM:
        assert after[asset] == before[asset], f"{asset} was materialized again"
    added_embeddings = [m for m in after["embeddings"] if m not in before["embeddings"]]
    assert sorted(m["partition"] for m in added_embeddings) == [f"demo_v1|{NEW_MODEL}", f"demo_v2|{NEW_MODEL}"]


def test_3_trace_the_comparison_figure_to_the_new_model(ui_server, page, new_model_files, artifacts, tmp_path):
    page.goto(f"{ui_server.url}/assets/comparison?view=partitions&partition=demo_v1")
    ranking = metadata_row(page, "os_2y: ranking").inner_text()
    assert NEW_MODEL in ranking, f"journey 3 traces what journey 2 made: run the module whole\n{ranking}"
    lineage_id = metadata_row(page, "lineage_id").inner_text().split()[-1]
    latest_run = page.locator('a[href^="/runs/"]').filter(has_text=re.compile(r"^[0-9a-f]{8}$")).first.inner_text()
    show_figure(page, "os_2y: auc_figure")

    # The figure as submitted to a journal: its vector PDF, renamed, in the manuscript's folder.
    figure = tmp_path / "manuscript" / "figure_3.pdf"
    figure.parent.mkdir()
    figure.write_bytes((ui_server.home / "comparison" / "demo_v1" / "auc_os_2y.pdf").read_bytes())
    traced = ui_server.cli("lineage", "trace", str(figure), "--json")
    assert traced.returncode == 0, traced.stdout + traced.stderr
    trace = json.loads(traced.stdout)
    # The figure carries the lineage id that the UI shows for the comparison it belongs to.
    assert (trace["asset"], trace["partition_key"]) == ("comparison", "demo_v1")
    assert trace["version_id"] == f"comparison[demo_v1]@{lineage_id}"
    assert trace["found_by"] == f"lineage id {lineage_id} in figure_3.pdf"
    # A printed copy keeps only the stamp in its corner: typed back, it names the same version.
    stamped = ui_server.cli("lineage", "trace", f"radassets {lineage_id[:8]}", "--json")
    assert stamped.returncode == 0 and json.loads(stamped.stdout)["version_id"] == trace["version_id"]
    weights_sha256 = sha256_file(new_model_files[0])
    models = {m["name"]: m for m in trace["models"]}
    assert set(models) == {"radiomics", "untrained_cnn", NEW_MODEL}
    assert models[NEW_MODEL]["weights_sha256"] == weights_sha256
    # Back to the release and the code: the cohort, its series, and the run the UI shows as the latest.
    assert trace["cohort"] == "demo_v1" and trace["idc_version"] == 1 and trace["series_count"] > 0
    assert trace["git_commit"] and trace["radassets_version"]
    comparison_runs = [r for r in trace["runs"] if r["asset"] == "comparison"]
    assert any(str(r.get("dagster_run_id", "")).startswith(latest_run) for r in comparison_runs), comparison_runs
    # The trace as a person reads it, kept beside the screenshot.
    readable = ui_server.cli("lineage", "trace", str(figure))
    assert readable.returncode == 0 and NEW_MODEL in readable.stdout and weights_sha256 in readable.stdout
    (artifacts / "test_3_trace_the_comparison_figure_to_the_new_model.txt").write_text(readable.stdout)
