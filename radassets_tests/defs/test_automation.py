"""Declarative automation in a real instance with the daemon running (``dagster-daemon run``, what ``make ui``
starts): a model added to the registry is embedded, evaluated and compared for every dataset version whose
patches exist, and a dataset version whose patches are then materialized gets the same, with no backfill;
the opt-in ``seed_stability`` stays untouched.

The daemon runs in its own process group on the test's DAGSTER_HOME and is stopped by its pid. The test waits
for materializations with a timeout, never for a fixed time.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from radassets.defs.launch import daemon_dequeues
from radassets.defs.run import materialize_dataset_versions
from radassets.settings import ENV_NAMES, Settings
from radassets_tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.daemon]

TIMEOUT_S = 900  # a loaded 2-core machine: each run's process imports the definitions (torch) in 10-30 s


def wait_for(condition, what: str, daemon: subprocess.Popen, log: Path, timeout: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        assert daemon.poll() is None, f"the daemon exited ({daemon.returncode}):\n{log.read_text()[-3000:]}"
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def materialized(instance: DagsterInstance, asset: str) -> set[str]:
    return set(instance.get_materialized_partitions(AssetKey(asset)))


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Path:
    """An empty model registry: no model partition until a model is added."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv(ENV_NAMES["models_dir"], str(folder))
    return folder


@pytest.fixture
def start_daemon(small_demo_home, registry, instance, tmp_path):
    """Starts ``dagster-daemon run`` on the test's instance when called; stops it by its pid at the end."""
    log = tmp_path / "daemon.log"
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        with log.open("w") as out:
            started.append(subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run",
                                             "-w", str(REPO / "workspace.yaml")],
                                            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, "DAGSTER_HOME": instance.root_directory}))
        return started[0]

    yield start, log
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # its own group: the daemon and the run workers it started
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_a_new_model_and_new_patches_are_followed_by_automation(small_demo_home, registry, instance,
                                                                start_daemon):
    start, log = start_daemon
    quiet = lambda message: None  # noqa: E731
    # demo_v1's patches with no daemon: the command launches its own run.
    assert not daemon_dequeues(instance)
    assert materialize_dataset_versions(["demo_v1"], settings=Settings.load(), selection="+key:patches", models=[],
                                        progress=quiet)
    assert instance.get_dynamic_partitions("model") == []
    process = start()
    wait_for(lambda: daemon_dequeues(instance), "the daemon's first heartbeat", process, log)

    # A model added to the registry: the registry sensor adds its partition, automation does the rest.
    shutil.copy(REPO / "data" / "models" / "untrained_cnn.yaml", registry)
    wait_for(lambda: "demo_v1" in materialized(instance, "comparison"), "demo_v1's comparison", process, log)
    assert materialized(instance, "embeddings") == {"demo_v1|untrained_cnn"}
    assert materialized(instance, "evaluation") == {"demo_v1|untrained_cnn"}

    # A dataset version's patches (this command's run, dequeued and launched by the daemon): its models follow.
    assert materialize_dataset_versions(["demo_v2"], settings=Settings.load(), selection="+key:patches", models=[],
                                        progress=quiet)
    wait_for(lambda: "demo_v2" in materialized(instance, "comparison"), "demo_v2's comparison", process, log)
    assert materialized(instance, "embeddings") == {"demo_v1|untrained_cnn", "demo_v2|untrained_cnn"}
    assert materialized(instance, "evaluation") == {"demo_v1|untrained_cnn", "demo_v2|untrained_cnn"}
    assert materialized(instance, "seed_stability") == set()  # opt-in stays opt-in
