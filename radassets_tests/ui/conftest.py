"""The Dagster UI as a person uses it: `dagster dev` (webserver and daemon) started by the tests on a free
loopback port, over a private instance and storage root, and headless Chromium from Debian's package
driven by Playwright.

`dagster dev` ignores SIGTERM unless it leads its own process group, so it is started in a new session
and stopped through that group, by the PID the fixture started, never by name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from radassets_tests.conftest import REPO

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
STARTUP_TIMEOUT_S = 180
ARTIFACTS = REPO / "test-artifacts" / "ui"  # git-ignored; CI keeps it
DAGSTER = str(Path(sys.executable).parent / "dagster")  # the venv's, whatever PATH says


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class UiServer:
    url: str
    env: dict[str, str]
    home: Path
    log: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`radassets ...` against the same instance and storage root as the UI."""
        return subprocess.run([sys.executable, "-m", "radassets.cli", *args], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=600)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _location_loaded(url: str) -> bool:
    query = json.dumps({"query": "{ workspaceOrError { ... on Workspace { locationEntries { name "
                                 "locationOrLoadError { __typename } } } } }"}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=query, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            entries = json.load(response)["data"]["workspaceOrError"]["locationEntries"]
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return any(e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
               for e in entries)


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("RADASSETS_UI_REQUIRED"):  # CI: the journeys must run
            pytest.fail("RADASSETS_UI_REQUIRED is set but there is no chromium (apt-get install chromium)")
        pytest.skip("needs Debian's chromium package (apt-get install chromium); browsers cannot be downloaded here")
    return path


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory, demo_collection_for_ui) -> Iterator[UiServer]:
    root = tmp_path_factory.mktemp("ui")
    dagster_home, home = root / "dagster_home", root / "home"
    dagster_home.mkdir()
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    (home / "demo").symlink_to(demo_collection_for_ui)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "RADASSETS_HOME": str(home),
           "RADASSETS_DATA_DIR": str(_private_data_dir(root / "data")),
           # set as well: it would override the data folder's models/ if the caller's environment had it
           "RADASSETS_MODELS_DIR": str(root / "data" / "models")}
    subprocess.run([DAGSTER, "instance", "concurrency", "set", "gpu", "1"],
                   env=env, check=True, capture_output=True)
    port = free_port()
    log = root / "dagster_dev.log"
    with open(log, "w") as out:
        process = subprocess.Popen([DAGSTER, "dev", "-h", "127.0.0.1", "-p",
                                    str(port), "-w", str(REPO / "workspace.yaml")], cwd=REPO, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not (_answers(url) and _location_loaded(url)):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dagster dev did not come up on {url}:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield UiServer(url, env, home, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _private_data_dir(data: Path) -> Path:
    """What this offline machine can materialize: the demo collection's dataset versions (the IDC ones need
    the network, so "all dataset versions" in a backfill means these), and the models that run without a
    download (the journeys add one). Reference tables are the checkout's own."""
    from radassets import datasets
    from radassets.models.pipeline import default_models
    from radassets.settings import Settings

    (data / "datasets").mkdir(parents=True)
    (data / "models").mkdir()
    (data / "reference").symlink_to(REPO / "data" / "reference")
    for name, definition in datasets.load_all().items():
        if definition.source.kind == "demo":
            shutil.copy(REPO / "data" / "datasets" / f"{name}.yaml", data / "datasets" / f"{name}.yaml")
    for name in default_models(Settings.load().layout().weights_dir())[0]:
        shutil.copy(REPO / "data" / "models" / f"{name}.yaml", data / "models" / f"{name}.yaml")
    return data


@pytest.fixture(scope="module")
def demo_collection_for_ui() -> Path:
    """The default demo collection, generated once under the session's RADASSETS_HOME."""
    from radassets.demo import ensure_demo_collection
    from radassets.settings import Settings

    return ensure_demo_collection(Settings.load().layout().demo_root()).root


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request, artifacts):
    """A fresh page; its last state is saved as a screenshot under test-artifacts/ui/ whatever the outcome."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    yield page
    page.wait_for_timeout(1000)  # let a dialog finish fading in
    page.screenshot(path=str(artifacts / f"{request.node.name}.png"), full_page=False)
    context.close()


@pytest.fixture
def artifacts() -> Path:
    """Where a journey keeps what shows its final state beside the screenshot."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
