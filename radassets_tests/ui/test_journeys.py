"""The researcher's journeys in the Dagster UI, in headless Chromium, against `dagster dev` started here.

Journey 1: materialize demo_v1 from the asset graph (the cheap assets: the opt-in seed stability and the
Hosny reproduction are filtered out, as a person would), wait for the backfill to succeed, and see the
evaluation's metrics and Kaplan-Meier figure in its materialization.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

pytestmark = [pytest.mark.ui, pytest.mark.integration]

SELECTION = "not tag:radassets/opt_in=true and not key:hosny2018_figure2"
BACKFILL_TIMEOUT_S = 900


def graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


def dismiss_welcome(page) -> None:
    """A new instance greets with a 'Join the Dagster community' dialog."""
    try:
        page.get_by_role("button", name="Skip").click(timeout=8000)
    except Exception:  # noqa: BLE001 - not shown (already dismissed)
        pass


def test_materialize_demo_v1_from_the_asset_graph(ui_server, page):
    page.goto(f"{ui_server.url}/asset-groups")
    dismiss_welcome(page)
    page.locator(".CodeMirror").first.click(timeout=30000)  # the asset filter is a CodeMirror editor
    page.keyboard.type(SELECTION, delay=20)
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Materialize all").click(timeout=30000)
    dialog = page.locator(".dagster-dialog")
    dialog.get_by_text("Launch runs to materialize 8 assets").wait_for(timeout=30000)
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_text("demo_v1", exact=True).first.click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Launch backfill").click()
    toast = page.get_by_text("Created backfill")
    toast.wait_for(timeout=30000)
    backfill_id = toast.inner_text().split()[-1]

    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    status = None
    while time.monotonic() < deadline:
        status = graphql(ui_server.url, f'{{ partitionBackfillOrError(backfillId: "{backfill_id}") '
                                        f'{{ ... on PartitionBackfill {{ status }} }} }}')["partitionBackfillOrError"]["status"]
        if status not in ("REQUESTED",):
            break
        time.sleep(5)
    assert status == "COMPLETED_SUCCESS", f"backfill {backfill_id}: {status}\n{ui_server.log.read_text()[-3000:]}"

    # The backfill's page lists its runs as a person checks them.
    page.goto(f"{ui_server.url}/runs/b/{backfill_id}")
    page.get_by_text("Completed").first.wait_for(timeout=30000)

    # The evaluation of demo_v1 × radiomics: its numbers and the Kaplan-Meier figure.
    page.goto(f"{ui_server.url}/assets/evaluation?view=partitions&partition=demo_v1%7Cradiomics")
    metrics = json.loads((ui_server.home / "evaluation" / "demo_v1" / "radiomics" / "metrics.json").read_text())
    endpoint = metrics["endpoints"]["os_2y"]
    for label, value in (("os_2y: probe auc", endpoint["linear_probe"]["auc"]),
                         ("os_2y: hazard ratio", endpoint["survival"]["hazard_ratio"])):
        row = page.get_by_text(label, exact=True).first.locator("xpath=ancestor::tr[1]")
        row.wait_for(timeout=60000)
        assert repr(value) in row.inner_text(), (label, row.inner_text())
    km = page.get_by_text("os_2y: kaplan_meier", exact=True).first.locator("xpath=ancestor::tr[1]")
    km.get_by_text("[Show Markdown]").click()  # Dagster shows Markdown over 1,000 characters on request
    figure = page.locator('img[src^="data:image/png;base64,"]').first
    figure.wait_for(state="visible", timeout=30000)
    assert figure.evaluate("img => img.naturalWidth") > 300  # the figure itself, decoded by the browser
