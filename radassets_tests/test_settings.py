"""``radassets.settings``: the environment overrides a project settings file, which overrides the defaults; the
file is found in the working directory or a parent, or beside the virtual environment; its relative paths are
relative to it; a malformed file is one error naming the file and the field."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from radassets.errors import RadassetsError
from radassets.layout import Layout
from radassets.lineage import store
from radassets.packaged import packaged_data_dir
from radassets.settings import (
    CONFIG_ENV,
    ENV_NAMES,
    SETTINGS_FILE,
    Settings,
    SettingsError,
)
from radassets_tests.conftest import REPO


@pytest.fixture
def clean_env(monkeypatch):
    """No setting in the environment, no named settings file: only what a test writes counts."""
    for var in (*ENV_NAMES.values(), CONFIG_ENV):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def load(cwd: Path, venv: Path | None = None) -> Settings:
    return Settings.load(cwd=cwd, venv=venv or cwd / "no-venv-here")


def test_the_defaults(clean_env, tmp_path):
    s = load(tmp_path)
    assert s.file is None
    assert s.layout().root == Path("~/.radassets").expanduser()
    assert s.resolved_data_dir() == packaged_data_dir()
    assert s.resolved_models_dir() == packaged_data_dir() / "models"
    assert s.layout().weights_dir() == Path("~/.radassets/weights").expanduser()
    assert (s.idc_mirror, s.gcp_project, s.dagster_home, s.mirror()) == (None, None, None, None)


def test_the_environment_overrides_the_file_which_overrides_the_defaults(clean_env, tmp_path):
    (tmp_path / SETTINGS_FILE).write_text('home = "var/data"\ndagster_home = "var/dagster_home"\n'
                                          'gcp_project = "from-the-file"\n')
    s = load(tmp_path)
    assert s.file == tmp_path / SETTINGS_FILE
    assert (s.home, s.dagster_home, s.gcp_project) == (str(tmp_path / "var" / "data"), tmp_path / "var" / "dagster_home",
                                                       "from-the-file")
    assert s.weights_dir is None and s.layout().weights_dir() == tmp_path / "var" / "data" / "weights"
    clean_env.setenv("RADASSETS_HOME", "/elsewhere/home")
    clean_env.setenv("RADASSETS_WEIGHTS_DIR", "/elsewhere/weights")
    clean_env.setenv("DAGSTER_HOME", "/elsewhere/dagster")
    s = load(tmp_path)
    assert (s.home, s.dagster_home, s.gcp_project) == ("/elsewhere/home", Path("/elsewhere/dagster"), "from-the-file")
    assert s.layout().weights_dir() == Path("/elsewhere/weights")
    clean_env.setenv("RADASSETS_HOME", "")  # an empty variable is unset: the file's value again
    assert load(tmp_path).home == str(tmp_path / "var" / "data")


def test_relative_paths_are_relative_to_the_file_not_the_working_directory(clean_env, tmp_path):
    project = tmp_path / "project"
    (project / "sub" / "deeper").mkdir(parents=True)
    (project / SETTINGS_FILE).write_text('home = "var/data"\ndata_dir = "my_data"\nmodels_dir = "../models"\n'
                                         'idc_mirror = "mirror"\n')
    s = load(project / "sub" / "deeper")  # found in a parent of the working directory
    assert s.file == project / SETTINGS_FILE
    assert s.home == str(project / "var" / "data")
    assert s.resolved_data_dir() == project / "my_data"
    assert s.resolved_models_dir() == tmp_path / "models"
    assert s.mirror().folder == project / "mirror"


def test_a_url_is_kept_as_a_url(clean_env, tmp_path):
    (tmp_path / SETTINGS_FILE).write_text('home = "s3://bucket/prefix"\nidc_mirror = "http://127.0.0.1:9000"\n')
    s = load(tmp_path)
    assert s.home == "s3://bucket/prefix" and str(s.layout().root) == "s3://bucket/prefix"
    assert s.mirror().kind == "s3" and s.mirror().endpoint_url == "http://127.0.0.1:9000"


def test_a_url_home_keeps_its_locks_and_lineage_database_in_the_state_dir(clean_env, tmp_path):
    clean_env.setenv("RADASSETS_HOME", "s3://bucket/prefix")
    clean_env.setenv("RADASSETS_STATE_DIR", str(tmp_path / "state"))
    layout = load(tmp_path).layout()
    assert (layout.lineage_dir(), layout.locks_dir()) == (tmp_path / "state" / "lineage", tmp_path / "state" / ".locks")
    assert str(layout.lineage_events_dir()) == "s3://bucket/prefix/lineage/events"  # where every node writes


def test_the_file_beside_the_virtualenv_is_found_from_anywhere(clean_env, tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / SETTINGS_FILE).write_text('home = "var/data"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    s = Settings.load(cwd=elsewhere, venv=checkout)  # venv: the folder holding .venv, i.e. sys.prefix's parent
    assert s.file == checkout / SETTINGS_FILE and s.home == str(checkout / "var" / "data")
    # A file in the working directory's parents comes first.
    (elsewhere / SETTINGS_FILE).write_text('home = "here"\n')
    assert Settings.load(cwd=elsewhere, venv=checkout).home == str(elsewhere / "here")


def test_radassets_config_names_the_file(clean_env, tmp_path):
    (tmp_path / "a.toml").write_text('home = "named"\n')
    (tmp_path / SETTINGS_FILE).write_text('home = "found"\n')
    clean_env.setenv(CONFIG_ENV, str(tmp_path / "a.toml"))
    assert load(tmp_path).home == str(tmp_path / "named")
    clean_env.setenv(CONFIG_ENV, str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match=f"{CONFIG_ENV} names .*missing.toml, which is not a file"):
        load(tmp_path)


@pytest.mark.parametrize("text, message", [
    ('home = "var/data"\nhme = "typo"\n', "unknown field 'hme'"),
    ('home = 3\n', "field 'home' must be a non-empty string, got 3"),
    ('home = "var/data"\nhome = "twice"\n', "cannot be read"),
    ('home = [unclosed\n', "cannot be read"),
    ('demo_spec = "not json"\n', "field 'demo_spec'"),
    ('workers = "two"\n', "field 'workers' must be an integer, got 'two'"),
    ('workers = 0\n', "field 'workers': Input should be greater than or equal to 1"),
])
def test_a_malformed_file_is_an_error_naming_the_file_and_the_field(clean_env, tmp_path, text, message):
    path = tmp_path / SETTINGS_FILE
    path.write_text(text)
    with pytest.raises(RadassetsError) as err:
        load(tmp_path).demo()
    assert str(path) in str(err.value) and message in str(err.value), err.value
    assert "\n" not in str(err.value)


def test_where_steps_run_defaults_to_every_cpu_here_and_follows_the_file_and_the_environment(clean_env, tmp_path):
    compute = load(tmp_path).compute()
    assert (compute.workers, compute.ray_address) == (None, None)
    assert compute.resolved_workers == len(os.sched_getaffinity(0))
    (tmp_path / SETTINGS_FILE).write_text('workers = 1\nray_address = "ray://head:10001"\n')
    compute = load(tmp_path).compute()
    assert (compute.workers, compute.ray_address) == (1, "ray://head:10001")
    clean_env.setenv("RADASSETS_WORKERS", "3")
    clean_env.setenv("RADASSETS_RAY_ADDRESS", "")  # empty: unset, the file's value stays
    compute = load(tmp_path).compute()
    assert (compute.workers, compute.ray_address) == (3, "ray://head:10001")


def test_export_dagster_home_sets_only_what_is_unset(clean_env, tmp_path):
    (tmp_path / SETTINGS_FILE).write_text('dagster_home = "var/dagster_home"\n')
    load(tmp_path).export_dagster_home()
    assert os.environ["DAGSTER_HOME"] == str(tmp_path / "var" / "dagster_home")
    clean_env.setenv("DAGSTER_HOME", "/set/by/the/user")
    load(tmp_path).export_dagster_home()
    assert os.environ["DAGSTER_HOME"] == "/set/by/the/user"


def _checkout_with_venv(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A checkout as ``make install`` leaves it (radassets.toml, a .venv in it), a directory elsewhere, and an
    environment without radassets settings."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / SETTINGS_FILE).write_text('home = "var/data"\ndagster_home = "var/dagster_home"\n')
    venv = checkout / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # radassets and its dependencies, after the standard library (a .pth file, as an editable install does)
    (Path(sysconfig.get_path("purelib", vars={"base": str(venv)})) / "radassets_tests.pth").write_text(
        "\n".join([str(REPO), *site.getsitepackages()]) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in (*ENV_NAMES.values(), CONFIG_ENV, "PYTHONPATH")}
    env["HOME"] = str(tmp_path / "user_home")  # not the tester's ~/.radassets
    return checkout, elsewhere, env


def test_the_settings_beside_the_virtualenv_are_found_from_anywhere(tmp_path):
    """``/path/to/checkout/.venv/bin/python`` run from another directory reads the checkout's radassets.toml."""
    checkout, elsewhere, env = _checkout_with_venv(tmp_path)
    code = "from radassets.settings import Settings; s = Settings.load(); print(s.file); print(s.layout().root)"
    out = subprocess.run([str(checkout / ".venv" / "bin" / "python"), "-c", code], cwd=elsewhere, env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(checkout / SETTINGS_FILE), str(checkout / "var" / "data")]


def test_the_bare_cli_finds_the_lineage_that_make_recorded(tmp_path):
    """Issue 14: after ``make demo``, ``.venv/bin/radassets lineage ...`` with no export looked in ~/.radassets
    ("no lineage recorded yet"). The store is where the checkout's settings put it, and the CLI reads it."""
    checkout, elsewhere, env = _checkout_with_venv(tmp_path)
    root = Layout(checkout / "var" / "data").lineage_dir()
    run = {"run_id": "6f1c3a52-0d7e-4b8e-9a51-3f2d8c1b7e40", "partition_key": "demo_v1",
           "partition": {"dataset_version": "demo_v1"}, "code_version": "seeds-1"}
    store.write_event({"event_type": "START", "run": run, "job": {"namespace": "radassets", "name": "seeds"}}, root)
    store.merge(root)
    cli = "from radassets.cli import main; main()"
    out = subprocess.run([str(checkout / ".venv" / "bin" / "python"), "-c", cli, "lineage", "sql",
                          "SELECT count(*) AS n FROM events", "--csv"], cwd=elsewhere, env=env, capture_output=True,
                         text=True, check=False)
    assert (out.returncode, out.stdout.split()) == (0, ["n", "1"]), out.stderr
