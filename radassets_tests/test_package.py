"""radassets as a real package: the sdist and the wheel built from it carry the shipped definitions and the
licence, and the wheel, installed in a fresh virtualenv outside the repository, lists the dataset versions
and loads the Dagster code location.

No network: the wheel is built without build isolation, and the fresh virtualenv reaches its dependencies
through a ``.pth`` file naming this interpreter's site-packages (a ``.pth`` file's paths are not site dirs,
so the editable install's own ``.pth`` finder there is not run and cannot hand it the checkout's code).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from radassets_tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.packaging]

SHIPPED = {"datasets/demo_v1.yaml", "models/radiomics.yaml", "reference/LICENSES.md", "reference/PROVENANCE.tsv",
           "reference/nsclc_radiomics/clinical.csv"}

# Run inside the fresh virtualenv: where the code and the definitions come from, and the code location.
PROBE = textwrap.dedent("""
    import json, sys
    import radassets
    from radassets.packaged import packaged_data_dir
    from radassets.definitions import defs
    from radassets.defs.partitions import dataset_version_partitions

    repo = defs.get_repository_def()
    print(json.dumps({
        "radassets": radassets.__file__,
        "data": str(packaged_data_dir()),
        "editable_finders": [repr(f) for f in sys.meta_path if "editable" in repr(f).lower()],
        "asset_keys": sorted(k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()),
        "dataset_versions": sorted(dataset_version_partitions.get_partition_keys()),
    }))
""")


def run(*args: str | Path, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                         check=False)  # the assertion shows the output
    assert out.returncode == 0, f"{args}: {out.stdout}\n{out.stderr}"
    return out


def test_the_wheel_works_in_a_fresh_virtualenv(tmp_path):
    # Nothing of the checkout or of the tests' settings: PYTHONPATH may name the checkout, whose
    # radassets.egg-info (left by a build) pip would take for an installed radassets.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith(("RADASSETS_", "DAGSTER_"))}
    # The sdist, then the wheel from the unpacked sdist (as `python -m build` does): the wheel can only
    # carry the definitions if the sdist has them.
    dist = tmp_path / "dist"
    egg_info = REPO / "radassets.egg-info"  # setuptools writes it into the checkout: removed if it was not there
    litter = not egg_info.exists()
    try:
        run(sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})",
            cwd=REPO)
    finally:
        if litter:
            shutil.rmtree(egg_info, ignore_errors=True)
    (sdist,) = dist.glob("radassets-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "src", filter="data")
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {f"data/{name}" for name in SHIPPED} | {"LICENSE", "setup.py"} <= in_sdist
    (source,) = (tmp_path / "src").iterdir()
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", dist,
        source, cwd=tmp_path, env=env)
    (wheel,) = dist.glob("radassets-*.whl")
    with zipfile.ZipFile(wheel) as z:
        in_wheel = set(z.namelist())
        metadata = z.read(next(n for n in in_wheel if n.endswith(".dist-info/METADATA"))).decode()
    assert {f"radassets/data/{name}" for name in SHIPPED} <= in_wheel
    licences = {n.split(".dist-info/licenses/", 1)[1] for n in in_wheel if ".dist-info/licenses/" in n}
    assert licences == {"LICENSE", "data/reference/LICENSES.md"}
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert not any(n.startswith("radassets_tests/") for n in in_wheel)

    # A fresh virtualenv, outside the repository, that sees this interpreter's dependencies but not radassets.
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=tmp_path, env=env).stdout.strip())
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel,
        cwd=tmp_path, env=env)  # before the .pth file: pip would find the editable radassets through it, and keep that
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "radassets_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))

    work = tmp_path / "elsewhere"
    (tmp_path / "dagster_home").mkdir()
    work.mkdir()
    env |= {"RADASSETS_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster_home")}

    listed = json.loads(run(venv / "bin" / "radassets", "datasets", "list", "--json", cwd=work, env=env).stdout)
    shipped = sorted(p.stem for p in (REPO / "data" / "datasets").glob("*.yaml"))
    assert sorted(listed) == shipped

    probe = json.loads(run(python, "-c", PROBE, cwd=work, env=env).stdout)
    assert Path(probe["radassets"]).is_relative_to(site), probe["radassets"]
    assert Path(probe["data"]) == site / "radassets" / "data"
    assert probe["editable_finders"] == []
    from radassets.definitions import defs

    assert probe["asset_keys"] == sorted(k.to_user_string() for k in defs.get_repository_def().asset_graph
                                         .get_all_asset_keys())
    assert {"cohort", "embeddings", "comparison"} <= set(probe["asset_keys"])
    assert probe["dataset_versions"] == shipped

    # The code location as `dagster dev -m radassets.definitions` loads it.
    validated = run(python, "-m", "dagster", "definitions", "validate", "-m", "radassets.definitions", cwd=work,
                    env=env)
    assert "Validation successful for code location radassets.definitions" in validated.stdout + validated.stderr
