"""Test-wide settings: every test session writes into its own temporary storage and Dagster home."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from radassets.layout import Layout

# Set before radassets or dagster are imported by any test module. The Dagster assets and the CLI read their
# settings where a user's do (the environment, then a settings file); library calls get a Layout explicitly.
_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="radassets-tests-"))
os.environ["RADASSETS_HOME"] = str(_SESSION_ROOT / "data")
os.environ["DAGSTER_HOME"] = str(_SESSION_ROOT / "dagster_home")
for _name in ("RADASSETS_IDC_MIRROR", "RADASSETS_GCP_PROJECT", "RADASSETS_DATA_DIR", "RADASSETS_MODELS_DIR",
              "RADASSETS_WEIGHTS_DIR", "RADASSETS_DEMO_SPEC"):
    os.environ.pop(_name, None)
# An empty settings file: a radassets.toml of the checkout (written by `make install`) is not the tests'.
(_SESSION_ROOT / "radassets.toml").write_text("# the tests' settings: none beyond the environment\n")
os.environ["RADASSETS_CONFIG"] = str(_SESSION_ROOT / "radassets.toml")
(_SESSION_ROOT / "dagster_home").mkdir(parents=True, exist_ok=True)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def session_root() -> Path:
    return _SESSION_ROOT


@pytest.fixture(scope="session")
def session_layout() -> Layout:
    """The layout of the session's RADASSETS_HOME."""
    return Layout(_SESSION_ROOT / "data")


@pytest.fixture
def storage(tmp_path, monkeypatch) -> Path:
    """A private artifact root for one test (RADASSETS_HOME for the assets and the CLI it runs)."""
    root = tmp_path / "radassets_home"
    monkeypatch.setenv("RADASSETS_HOME", str(root))
    return root


@pytest.fixture
def layout(storage) -> Layout:
    """The layout of the test's private artifact root, for library calls."""
    return Layout(storage)


SMALL_DEMO_SPEC = dict(n_patients=6, n_added_in_release_2=2, n_revised_in_release_2=2, n_test_retest=2)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """A small demo collection (8 patients, both releases), generated once per test session."""
    from radassets.demo import DemoSpec, generate_demo_collection

    return generate_demo_collection(tmp_path_factory.mktemp("small_demo") / "demo", DemoSpec(**SMALL_DEMO_SPEC)).root


@pytest.fixture
def demo_layout(small_demo, tmp_path) -> Layout:
    """A private storage root over the (shared, read-only) small demo collection."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "demo").symlink_to(small_demo)
    return Layout(home)


@pytest.fixture(scope="session")
def ray_cluster():
    """A two-node Ray cluster on loopback (``ray.cluster_utils.Cluster``: `ray start` would bind this machine's
    other address, which these machines must not use), each node with one CPU; the second also advertises
    ``gpu_standin: 1``, the custom resource that stands for a GPU. Its processes are stopped by the cluster's own
    handles (their pids) at the end of the session.

    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray from turning ``127.0.0.1`` into the machine's other address
    when a driver connects (it does so on Linux, for clusters whose nodes are other machines); the nodes' worker
    processes, and drivers started from here, inherit it."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={"gpu_standin": 1})
        cluster.wait_for_nodes()
        yield cluster
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 for the session (an artifact store: the real s3fs client against it);
    stopped at the end of the session. ``s3_root`` points a test's artifact root at it."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_root(moto_s3, monkeypatch) -> str:
    """``s3://<a new bucket>/root`` on ``moto_s3``, reached as a user reaches an S3-compatible store: the AWS
    variables (``AWS_ENDPOINT_URL`` and dummy credentials), which s3fs, boto3 and process-pool workers read."""
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": moto_s3}.items():
        monkeypatch.setenv(key, value)
    bucket = f"artifacts-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_s3).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/root"


def copy_to_store(local_root: Path, remote_root: str, *folders: str) -> None:
    """Copy ``folders`` (relative to ``local_root``, e.g. ``"volumes/demo_v1"``) of a local artifact root to the same
    places under ``remote_root`` (a URL): the inputs of a step run on object storage, made by the local pipeline."""
    from radassets.layout import as_path

    remote = as_path(remote_root)
    for folder in folders:
        source = local_root / folder
        for file in sorted(p for p in source.rglob("*") if p.is_file()):
            target = remote / file.relative_to(local_root).as_posix()
            target.fs.put_file(str(file), target.path)  # type: ignore[union-attr]
