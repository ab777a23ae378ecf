"""The researcher's journeys in the Dagster UI, in headless Chromium, against `dagster dev` started here.

They build on each other as one person's session does, so they run in file order on one server:

1. Materialize demo_v1 from the asset graph (the cheap assets: the opt-in seed stability and the Hosny
   reproduction are filtered out, as a person would), wait for the backfill to succeed, and see the
   evaluation's metrics and Kaplan-Meier figure in its materialization.
2. Register a new TorchScript model with `radassets models add`, backfill it from the UI over every dataset
   version (demo_v2 having been run from the command line meanwhile), and see in the run list that only
   embeddings and what depends on them ran.
3. Open the comparison that journey 2 updated, and trace its figure with `radassets lineage trace`: the new
   model is there with the sha256 of its weights.
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


def open_materialize_dialog(page, url: str, selection: str, assets: int):
    """The asset graph filtered by `selection`, then 'Materialize all': its launch dialog."""
    page.goto(f"{url}/asset-groups")
    dismiss_welcome(page)
    page.locator(".CodeMirror").first.click(timeout=30000)  # the asset filter is a CodeMirror editor
    page.keyboard.type(selection, delay=20)
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Materialize all").click(timeout=30000)
    dialog = page.locator(".dagster-dialog")
    dialog.get_by_text(f"Launch runs to materialize {assets} assets").wait_for(timeout=30000)
    return dialog


def select_all(dialog, dimension: str, expect: tuple[str, ...]) -> None:
    """Press a dimension's 'All' until its keys show: a click made while the dialog still loads the
    partitions is lost."""
    for _ in range(5):
        dialog.get_by_role("button", name="All").first.click()
        try:
            for key in expect:
                dialog.get_by_text(key, exact=True).first.wait_for(timeout=5000)
            return
        except Exception:  # noqa: BLE001 - not yet: press again
            continue
    raise AssertionError(f"'All' did not select the {dimension} partitions {expect}:\n{dialog.inner_text()}")


def launch_backfill(page) -> str:
    page.get_by_role("button", name="Launch backfill").click()
    toast = page.get_by_text("Created backfill")
    toast.wait_for(timeout=30000)
    return toast.inner_text().split()[-1]


def wait_for_backfill(server, backfill_id: str) -> None:
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    status = None
    while time.monotonic() < deadline:
        status = graphql(server.url, f'{{ partitionBackfillOrError(backfillId: "{backfill_id}") '
                                     f'{{ ... on PartitionBackfill {{ status }} }} }}')["partitionBackfillOrError"]["status"]
        if status != "REQUESTED":
            break
        time.sleep(5)
    assert status == "COMPLETED_SUCCESS", f"backfill {backfill_id}: {status}\n{server.log.read_text()[-3000:]}"


def materializations(url: str, asset: str) -> list[dict]:
    data = graphql(url, f'{{ assetOrError(assetKey: {{path: ["{asset}"]}}) {{ ... on Asset '
                        f'{{ assetMaterializations {{ partition runId timestamp }} }} }} }}')
    return data["assetOrError"].get("assetMaterializations", [])


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


def test_1_materialize_demo_v1_from_the_asset_graph(ui_server, page):
    dialog = open_materialize_dialog(page, ui_server.url,
                                     "not tag:radassets/opt_in=true and not key:hosny2018_figure2", 8)
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_text("demo_v1", exact=True).first.click()
    page.keyboard.press("Escape")
    backfill_id = launch_backfill(page)
    wait_for_backfill(ui_server, backfill_id)

    # The backfill's page lists its runs as a person checks them.
    page.goto(f"{ui_server.url}/runs/b/{backfill_id}")
    page.get_by_text("Completed").first.wait_for(timeout=30000)

    # The evaluation of demo_v1 × radiomics: its numbers and the Kaplan-Meier figure.
    page.goto(f"{ui_server.url}/assets/evaluation?view=partitions&partition=demo_v1%7Cradiomics")
    metrics = json.loads((ui_server.home / "evaluation" / "demo_v1" / "radiomics" / "metrics.json").read_text())
    endpoint = metrics["endpoints"]["os_2y"]
    for label, value in (("os_2y: probe auc", endpoint["linear_probe"]["auc"]),
                         ("os_2y: hazard ratio", endpoint["survival"]["hazard_ratio"])):
        row = metadata_row(page, label)
        assert repr(value) in row.inner_text(), (label, row.inner_text())
    show_figure(page, "os_2y: kaplan_meier")


def test_2_backfill_a_new_model_over_every_dataset_version(ui_server, page, new_model_files):
    assert materializations(ui_server.url, "evaluation"), "journey 2 builds on journey 1: run the module whole"
    # A colleague ran the second release from the command line meanwhile (default models only).
    prepared = ui_server.cli("pipeline", "run", "demo_v2")
    assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]

    weights, spec = new_model_files
    added = ui_server.cli("models", "add", NEW_MODEL, "--torchscript", str(weights), "--preprocessing", str(spec))
    assert added.returncode == 0, added.stdout + added.stderr
    assert f"registered {NEW_MODEL} (torchscript, 8-d)" in added.stdout
    before = {asset: materializations(ui_server.url, asset) for asset in (*UPSTREAM, "embeddings")}

    # Everything that depends on embeddings, except the opt-in stability: every dataset version × the new model.
    dialog = open_materialize_dialog(page, ui_server.url, "key:embeddings+ and not tag:radassets/opt_in=true", 3)
    select_all(dialog, "dataset_version", expect=("demo_v1", "demo_v2"))
    dialog.get_by_text("Select a partition or create one").last.click()  # the model dimension
    page.get_by_text(NEW_MODEL, exact=True).first.click()  # the partition the CLI (or the sensor) added
    page.keyboard.press("Escape")
    backfill_id = launch_backfill(page)
    wait_for_backfill(ui_server, backfill_id)

    # The run list, with the runs inside the backfill shown: what each one materialized.
    page.goto(f"{ui_server.url}/runs?q%5B0%5D=tag%3Adagster%2Fbackfill%3D{backfill_id}")
    page.get_by_text("Show runs within backfills").click()
    # %-formatting, not an f-string: GraphQL's own braces stay as they are.
    runs = graphql(ui_server.url, '{ runsOrError(filter: {tags: [{key: "dagster/backfill", value: "%s"}]}) '  # noqa: UP031
                                  '{ ... on Runs { results { runId status assetSelection { path } '
                                  'tags { key value } } } } }' % backfill_id)["runsOrError"]["results"]
    for run in runs:
        page.get_by_text(run["runId"][:8], exact=True).wait_for(timeout=30000)
    listed = page.inner_text("body")  # the navigation around the list names no asset
    for asset in ("embeddings", "evaluation", "comparison"):
        assert asset in listed
    for asset in UPSTREAM:
        assert not re.search(rf"\b{asset}\b", listed), f"{asset} ran in backfill {backfill_id}"

    partitions = sorted(next(t["value"] for t in run["tags"] if t["key"] == "dagster/partition") for run in runs)
    assert all(run["status"] == "SUCCESS" for run in runs), runs
    assert {k["path"][0] for run in runs for k in run["assetSelection"]} == {"embeddings", "evaluation", "comparison"}
    assert partitions == ["demo_v1", f"demo_v1|{NEW_MODEL}", "demo_v2", f"demo_v2|{NEW_MODEL}"]
    # Nothing upstream was materialized again, nor the other models' embeddings.
    after = {asset: materializations(ui_server.url, asset) for asset in (*UPSTREAM, "embeddings")}
    for asset in UPSTREAM:
        assert after[asset] == before[asset], f"{asset} was materialized again"
    new = [m for m in after["embeddings"] if m not in before["embeddings"]]
    assert sorted(m["partition"] for m in new) == [f"demo_v1|{NEW_MODEL}", f"demo_v2|{NEW_MODEL}"]


def test_3_trace_the_comparison_figure_to_the_new_model(ui_server, page, new_model_files, artifacts):
    page.goto(f"{ui_server.url}/assets/comparison?view=partitions&partition=demo_v1")
    ranking = metadata_row(page, "os_2y: ranking").inner_text()
    assert NEW_MODEL in ranking, f"journey 3 traces what journey 2 made: run the module whole\n{ranking}"
    lineage_id = metadata_row(page, "lineage_id").inner_text().split()[-1]
    latest_run = page.locator('a[href^="/runs/"]').filter(has_text=re.compile(r"^[0-9a-f]{8}$")).first.inner_text()
    show_figure(page, "os_2y: auc_figure")

    figure = ui_server.home / "comparison" / "demo_v1" / "auc_os_2y.png"
    traced = ui_server.cli("lineage", "trace", str(figure), "--json")
    assert traced.returncode == 0, traced.stdout + traced.stderr
    trace = json.loads(traced.stdout)
    # The figure carries the lineage id that the UI shows for the comparison it belongs to.
    assert (trace["asset"], trace["partition_key"]) == ("comparison", "demo_v1")
    assert trace["version_id"] == f"comparison[demo_v1]@{lineage_id}"
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
