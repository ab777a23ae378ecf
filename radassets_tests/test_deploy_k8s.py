"""The Kubernetes deployment under deploy/k8s, checked offline: no cluster, no Docker, no network.

What is checked: every YAML file parses; the Dockerfile parses with Docker's own parser (the ``dockerfile``
package wraps BuildKit's) and uses only known instructions; the Dagster chart values validate against the
chart's values schema and the RayCluster against KubeRay's (the subsets written from them under
deploy/k8s/schemas, with their provenance); every pod template and Kubernetes object inside validates against
the Kubernetes schemas that ``kubernetes-validate`` ships; the GPU worker group asks for one ``nvidia.com/gpu``
and nothing else does; the pods' environment names settings radassets reads; images, Ray and library versions
agree across the files.
What is not: that the image builds, that Helm renders these values (no chart here), that a cluster runs them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from importlib.metadata import distribution
from pathlib import Path
from urllib.parse import urlsplit

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml

from radassets.settings import ENV_NAMES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "k8s"
SCHEMAS = DEPLOY / "schemas"
# The Kubernetes version whose schemas the manifests are validated against: one that managed clusters run
# (kubernetes-validate ships schemas up to its own release).
KUBERNETES_VERSION = "1.34"
# Every instruction the Dockerfile reference knows (docs.docker.com/reference/dockerfile).
DOCKERFILE_INSTRUCTIONS = {"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
                           "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
                           "WORKDIR"}
# The settings the deployment adds to radassets.settings.ENV_NAMES: where the Ray cluster is (the run pod is
# its driver) and the Dagster instance's database URL.
DEPLOYMENT_SETTINGS = {"RADASSETS_RAY_ADDRESS", "RADASSETS_DAGSTER_PG_URL"}
GPU = "nvidia.com/gpu"


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def _schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _dockerfile() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(DEPLOY / "Dockerfile"))


def _dockerfile_args() -> dict[str, str]:
    """The default values of the Dockerfile's ARGs (``ARG NAME=value``); a stage's bare ``ARG NAME`` only
    brings the global one into scope."""
    args = {}
    for command in _dockerfile():
        if command.cmd == "ARG":
            name, _, value = command.value[0].partition("=")
            if value:
                args[name] = value
    return args


def _code_location() -> dict:
    (deployment,) = _load("dagster-values.yaml")["dagster-user-deployments"]["deployments"]
    return deployment


def _ray_pod_templates() -> dict[str, dict]:
    """Each pod template of the RayCluster, by group: ``head`` and each worker group's name."""
    spec = _load("raycluster.yaml")["spec"]
    return {"head": spec["headGroupSpec"]["template"],
            **{group["groupName"]: group["template"] for group in spec["workerGroupSpecs"]}}


def _requested_gpus(template: dict) -> list[tuple[str, str | None, str | None]]:
    """(container, GPUs requested, GPUs limited) for each container of a pod template."""
    return [(c["name"], _quantity(c.get("resources", {}).get("requests", {}).get(GPU)),
             _quantity(c.get("resources", {}).get("limits", {}).get(GPU)))
            for c in template["spec"]["containers"]]


def _quantity(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def test_every_yaml_file_parses():
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert {f.name for f in files} >= {"dagster-values.yaml", "raycluster.yaml", "radassets-env.yaml"}
    for path in files:
        documents = list(yaml.safe_load_all(path.read_text()))
        assert documents and all(isinstance(d, dict) and d for d in documents), f"{path.name}: not a mapping"


def test_dockerfile_parses_with_known_instructions_only():
    commands = _dockerfile()
    unknown = [(c.start_line, c.cmd) for c in commands if c.cmd not in DOCKERFILE_INSTRUCTIONS]
    assert not unknown, f"unknown Dockerfile instructions (line, name): {unknown}"
    assert next(c.cmd for c in commands if c.cmd != "ARG") == "FROM"
    # Every file the build copies from the repository root exists there.
    for command in commands:
        if command.cmd == "COPY" and not any(f.startswith("--from=") for f in command.flags):
            for source in command.value[:-1]:
                assert (REPO / source).exists(), f"Dockerfile line {command.start_line}: no {source} in the repo"


def test_dockerfile_default_command_is_the_code_location():
    """The image's CMD serves the code location with the arguments the chart is given."""
    (cmd,) = [c for c in _dockerfile() if c.cmd == "CMD"]
    deployment = _code_location()
    assert cmd.json
    assert list(cmd.value) == ["dagster", "api", "grpc", *deployment["dagsterApiGrpcArgs"],
                               "-h", "0.0.0.0", "-p", str(deployment["port"])]


def test_dockerfile_installs_the_versions_the_deployment_and_the_project_use():
    args = _dockerfile_args()
    assert args["RAY_VERSION"] == _load("raycluster.yaml")["spec"]["rayVersion"]
    # The project's own pin of ray, where pyproject has the `scale` extra (the image installs `.[scale]`).
    for requirement in _pyproject()["project"]["optional-dependencies"].get("scale", []):
        pinned = re.fullmatch(r"ray(\[[^\]]*\])?==([^;\s]+).*", requirement)
        if pinned:
            assert pinned.group(2) == args["RAY_VERSION"], requirement
    # dagster-k8s and dagster-postgres: the release of the Dagster libraries that goes with the dagster pin,
    # as pyproject pins dagster-gcp.
    (gcp,) = [r for r in _pyproject()["project"]["dependencies"] if r.startswith("dagster-gcp==")]
    assert args["DAGSTER_LIBRARIES_VERSION"] == gcp.removeprefix("dagster-gcp==")
    # The torch and pyradiomics the Makefile installs, pyradiomics without build isolation as there.
    makefile = (REPO / "Makefile").read_text()
    torch_spec = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", makefile, re.M)
    assert torch_spec and args["TORCH_VERSION"] == torch_spec.group(1)
    radiomics = re.search(r'--no-build-isolation "(pyradiomics==[^"]+)"', makefile)
    assert radiomics
    runs = [" ".join(c.value) for c in _dockerfile() if c.cmd == "RUN"]
    assert any(f'--no-build-isolation "{radiomics.group(1)}"' in run for run in runs)


def test_dockerfile_smoke_test_names_existing_entry_points():
    """The build runs the console scripts and imports the code location; each must exist in what it installs."""
    (smoke,) = [" ".join(c.value) for c in _dockerfile() if c.cmd == "RUN" and "radassets --help" in c.value[0]]
    assert "radassets" in _pyproject()["project"]["scripts"]
    assert "dagster" in {e.name for e in distribution("dagster").entry_points if e.group == "console_scripts"}
    assert f"import {_code_location()['dagsterApiGrpcArgs'][1]}," in smoke


def test_code_location_module_exists_and_is_the_workspace_one():
    args = _code_location()["dagsterApiGrpcArgs"]
    assert args[0] == "-m"
    (location,) = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    assert args[1] == location["python_module"]["module_name"]
    assert importlib.util.find_spec(args[1]) is not None


def test_image_tags_agree_with_the_dockerfile_and_the_project_version():
    image = _code_location()["image"]
    expected = f"{image['repository']}:{image['tag']}"
    images = {c["image"] for template in _ray_pod_templates().values() for c in template["spec"]["containers"]}
    assert images == {expected}
    (label,) = [c for c in _dockerfile() if c.cmd == "LABEL"]
    labels = dict(zip(label.value[::2], (v.strip('"') for v in label.value[1::2])))
    assert labels["org.opencontainers.image.version"] == image["tag"] == _pyproject()["project"]["version"]


def test_dagster_values_validate_against_the_chart_schema():
    values = _load("dagster-values.yaml")
    jsonschema.Draft7Validator(_schema("dagster-chart-values.subset.schema.json")).validate(values)
    # The Kubernetes objects the run launcher adds to each run pod's container.
    container_config = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "run"},
           "spec": {"containers": [{"name": "dagster", "image": "radassets", **container_config}]}}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_the_chart_schema_rejects_a_misspelt_key():
    """The subset schema is closed where the values set keys: a typo is an error, not a key Helm ignores."""
    values = _load("dagster-values.yaml")
    values["runLauncher"]["config"]["k8sRunLauncher"]["envConfigMap"] = [{"name": "radassets-env"}]
    with pytest.raises(jsonschema.ValidationError, match="envConfigMap"):
        jsonschema.Draft7Validator(_schema("dagster-chart-values.subset.schema.json")).validate(values)


def test_dagster_values_queue_runs_and_limit_the_gpu_pool_as_the_repository_instance():
    values = _load("dagster-values.yaml")
    instance = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == instance["run_coordinator"]["class"]
    assert values["concurrency"]["enabled"]
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert values["concurrency"]["pools"] == {"defaultLimit": instance["concurrency"]["pools"]["default_limit"],
                                              "granularity": instance["concurrency"]["pools"]["granularity"]}


def test_external_postgres_password_and_url_come_from_one_secret():
    values = _load("dagster-values.yaml")
    assert values["postgresql"]["enabled"] is False and not values["generatePostgresqlPasswordSecret"]
    env = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]["env"]
    (url,) = [e for e in env if e["name"] == "RADASSETS_DAGSTER_PG_URL"]
    assert url["valueFrom"]["secretKeyRef"]["name"] == values["global"]["postgresqlSecretName"]


def test_raycluster_validates_against_kuberay_and_kubernetes_schemas():
    cluster = _load("raycluster.yaml")
    jsonschema.Draft7Validator(_schema("raycluster.subset.schema.json")).validate(cluster)
    for group, template in _ray_pod_templates().items():
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": group}, "template": template}
        kubernetes_validate.validate(pod_template, KUBERNETES_VERSION, strict=True)


def test_raycluster_schema_rejects_an_unquoted_ray_start_param():
    """rayStartParams is a map of strings: `num-cpus: 0` unquoted is refused by the API server, and here."""
    cluster = _load("raycluster.yaml")
    cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'string'"):
        jsonschema.Draft7Validator(_schema("raycluster.subset.schema.json")).validate(cluster)


def test_settings_configmap_validates():
    kubernetes_validate.validate(_load("radassets-env.yaml"), KUBERNETES_VERSION, strict=True)


def test_gpu_worker_group_requests_one_gpu_and_nothing_else_does():
    templates = _ray_pod_templates()
    assert _requested_gpus(templates.pop("gpu")) == [("ray-worker", "1", "1")]
    assert templates.keys() == {"head", "cpu"}
    for group, template in templates.items():
        assert all(requests is None and limits is None for _, requests, limits in _requested_gpus(template)), group
    # GPU node pools are tainted; the GPU workers tolerate the taint.
    (gpu_group,) = [g for g in _load("raycluster.yaml")["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu"]
    assert any(t["key"] == GPU for t in gpu_group["template"]["spec"].get("tolerations", []))


def test_pod_environment_names_settings_radassets_reads():
    """Every radassets setting the pods are given is one radassets reads (a renamed setting fails here), and
    the run pods get the artifact root, the Ray address and the database URL."""
    configmap = _load("radassets-env.yaml")
    values = _load("dagster-values.yaml")
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_pod_env = set(configmap["data"]) | {e["name"] for e in launcher["runK8sConfig"]["containerConfig"]["env"]}
    known = set(ENV_NAMES.values()) | DEPLOYMENT_SETTINGS
    unknown = {name for name in run_pod_env if name.startswith("RADASSETS_") or name == "DAGSTER_HOME"} - known
    assert not unknown, f"settings radassets does not read: {sorted(unknown)}"
    assert run_pod_env >= {ENV_NAMES["home"], *DEPLOYMENT_SETTINGS}
    # The one ConfigMap reaches the run pods, the code location and every Ray pod.
    name = configmap["metadata"]["name"]
    assert {"name": name} in launcher["envConfigMaps"]
    assert {"name": name} in _code_location()["envConfigMaps"]
    for group, template in _ray_pod_templates().items():
        for container in template["spec"]["containers"]:
            assert {"configMapRef": {"name": name}} in container.get("envFrom", []), group


def test_ray_address_is_the_head_services_client_port():
    cluster = _load("raycluster.yaml")
    address = urlsplit(_load("radassets-env.yaml")["data"]["RADASSETS_RAY_ADDRESS"])
    meta = cluster["metadata"]
    assert address.scheme == "ray"
    assert address.hostname == f"{meta['name']}-head-svc.{meta['namespace']}.svc.cluster.local"
    (head,) = _ray_pod_templates()["head"]["spec"]["containers"]
    assert {"containerPort": address.port, "name": "client"} in head["ports"]
