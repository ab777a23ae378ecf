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
           "RADASSETS_MODELS_DIR": str(root / "models")}
    # A private registry (journeys add models) of the models that run here without a download: a backfill
    # over every model partition must not stop at weights this machine cannot fetch.
    from radassets.models.pipeline import default_models

    (root / "models").mkdir()
    for name in default_models()[0]:
        shutil.copy(REPO / "data" / "models" / f"{name}.yaml", root / "models" / f"{name}.yaml")
    subprocess.run([str(Path(sys.executable).parent / "dagster"), "instance", "concurrency", "set", "gpu", "1"],
                   env=env, check=True, capture_output=True)
    port = free_port()
    log = root / "dagster_dev.log"
    with open(log, "w") as out:
        process = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p",
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


@pytest.fixture(scope="module")
def demo_collection_for_ui() -> Path:
    """The default demo collection, generated once under the session's RADASSETS_HOME."""
    from radassets.demo import ensure_demo_collection
    from radassets.idc.index import demo_root

    return ensure_demo_collection(demo_root()).root


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    """A fresh page; its last state is saved as a screenshot under test-artifacts/ui/ whatever the outcome."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    yield page
    artifacts = REPO / "test-artifacts" / "ui"
    artifacts.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(artifacts / f"{request.node.name}.png"), full_page=False)
    context.close()
