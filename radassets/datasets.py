"""Dataset versions: what a cohort is, where its images come from, how labels and seeds are defined.

One YAML file per dataset version under ``data/datasets/``. The file name (without
``.yaml``) is the dataset version's name and its Dagster partition key, so names are
restricted to ``[a-z0-9_]``. Definitions are validated strictly: an unknown key, a missing
field or a reference table that does not exist is an error naming the file and the field.

Paths inside a definition (clinical tables, reference tables) are relative to ``data/``;
a path written ``source:NAME`` is relative to the source's own folder instead (the generated
demo collection, or a local DICOM folder), and exists only once that source is there.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_RE = re.compile(r"^[a-z0-9_]+$")
DATA_DIR_ENV = "RADASSETS_DATA_DIR"
SOURCE_PREFIX = "source:"


def data_dir() -> Path:
    """The folder holding dataset definitions and reference tables (``data/`` of the checkout)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent / "data"


class DatasetDefinitionError(ValueError):
    """A dataset definition is missing, malformed or refers to something that does not exist."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """Where the images come from.

    ``idc``: the NCI Imaging Data Commons, pinned to ``idc_version`` (a published release,
    never "current"). ``demo``: the generated demo collection, whose releases stand in for IDC
    releases. ``local``: a folder of the user's own DICOM files indexed by
    ``radassets datasets add-local``.
    """

    kind: Literal["idc", "demo", "local"]
    idc_version: int = Field(ge=1, description="IDC (or demo) release the cohort is pinned to")
    path: str | None = Field(default=None, description="local sources only: the DICOM folder")

    @model_validator(mode="after")
    def _path_only_for_local(self) -> Source:
        if self.kind == "local" and not self.path:
            raise ValueError("a local source needs 'path'")
        if self.kind != "local" and self.path:
            raise ValueError(f"'path' is only for local sources, not {self.kind!r}")
        return self


class ReferenceFilter(_Strict):
    """Keep only the series (or patients) listed in a column of a reference table."""

    table: str
    column: str
    modalities: list[str] | None = Field(
        default=None, description="apply to these modalities only; others pass unfiltered"
    )


class Selection(_Strict):
    """Which series of the source make up the cohort."""

    collections: list[str] = Field(min_length=1)
    modalities: list[str] = Field(min_length=1)
    source_dois: list[str] | None = Field(
        default=None, description="keep series whose source DOI is one of these (case-insensitive)"
    )
    series_from: ReferenceFilter | None = None
    patients_from: ReferenceFilter | None = None

    @field_validator("source_dois")
    @classmethod
    def _lower_dois(cls, v: list[str] | None) -> list[str] | None:
        # IDC stores DOIs in lower case; publications print them in upper case.
        return [d.lower() for d in v] if v else v


class ClinicalTable(_Strict):
    table: str
    id_column: str
    id_suffix_pattern: str | None = Field(
        default=None, description="regex removed from ids before matching PatientID (e.g. '-(test|retest)$')"
    )


class TimeFromDates(_Strict):
    start_column: str
    end_column: str


class Endpoint(_Strict):
    """A label definition. Binary survival labels must say what censoring before the horizon means.

    ``survival``: a time-to-event endpoint; its binary label at ``horizon_days`` is 1 when the
    event happened before the horizon. Patients censored before the horizon are survivors
    (``alive``, the Hosny et al. 2018 convention) or are excluded (``drop``, Pai et al.).
    ``binary``: a label column read as is (e.g. LUNG16 malignancy).
    """

    name: str
    kind: Literal["survival", "binary"]
    time_column: str | None = None
    time_from_dates: TimeFromDates | None = None
    time_unit: Literal["days", "months"] = "days"
    event_column: str | None = None
    event_values: list[str | int] | None = Field(
        default=None, description="values of event_column that mean the event happened"
    )
    horizon_days: int | None = Field(default=None, gt=0)
    censored_before_horizon: Literal["alive", "drop"] | None = None
    label_column: str | None = None
    positive_values: list[str | int] | None = None

    @model_validator(mode="after")
    def _complete(self) -> Endpoint:
        if not NAME_RE.match(self.name):
            raise ValueError(f"endpoint name {self.name!r} must match [a-z0-9_]+")
        if self.kind == "survival":
            if (self.time_column is None) == (self.time_from_dates is None):
                raise ValueError("a survival endpoint needs exactly one of 'time_column' or 'time_from_dates'")
            missing = [k for k in ("event_column", "event_values", "horizon_days", "censored_before_horizon")
                       if getattr(self, k) is None]
            if missing:
                raise ValueError(f"a survival endpoint needs {missing}")
        else:
            if self.label_column is None or self.positive_values is None:
                raise ValueError("a binary endpoint needs 'label_column' and 'positive_values'")
        return self


class Seeds(_Strict):
    """Where lesion seed points come from.

    ``mask``: centroids of the segments named in ``segment_labels`` (or the largest segment,
    ``segment_rule: largest``). ``reference``: a published table of LPS-millimetre points.
    A reference table may accompany a mask source; the distance between both is then reported.
    """

    source: Literal["mask", "reference"]
    segment_labels: list[str] | None = None
    segment_rule: Literal["labels", "largest", "all"] = "labels"
    reference: ReferenceSeeds | None = None

    @model_validator(mode="after")
    def _complete(self) -> Seeds:
        if self.source == "reference" and self.reference is None:
            raise ValueError("seeds from 'reference' need a 'reference' table")
        if self.source == "mask" and self.segment_rule == "labels" and not self.segment_labels:
            raise ValueError("seeds from masks by label need 'segment_labels'")
        return self


class ReferenceSeeds(_Strict):
    table: str
    id_column: str = Field(description="PatientID or SeriesInstanceUID column")
    id_kind: Literal["PatientID", "SeriesInstanceUID"] = "PatientID"
    coord_columns: list[str] = Field(default=["coordX", "coordY", "coordZ"], min_length=3, max_length=3)
    label_column: str | None = Field(default=None, description="segment label of each point, matched to mask labels")


Seeds.model_rebuild()


class TestRetest(_Strict):
    """Pairs of same-day scans of one lesion: ids with a test/retest suffix (RIDER: ``pair_pattern``), or
    a table giving each pair's two CT SeriesInstanceUIDs (``test_column`` and ``retest_column``)."""

    table: str
    id_column: str
    pair_pattern: str | None = Field(default=None,
                                     description="regex with a group 'patient' and a group 'scan' (e.g. test/retest)")
    test_column: str | None = Field(default=None, description="SeriesInstanceUID of the first scan of each pair")
    retest_column: str | None = Field(default=None, description="SeriesInstanceUID of the repeat scan")

    @model_validator(mode="after")
    def _one_way(self) -> TestRetest:
        if (self.pair_pattern is None) == (self.test_column is None or self.retest_column is None):
            raise ValueError("give either 'pair_pattern', or both 'test_column' and 'retest_column'")
        return self


class DatasetVersion(_Strict):
    """One dataset version: the unit of the ``dataset_version`` partition."""

    name: str
    title: str
    description: str
    source: Source
    selection: Selection
    clinical: ClinicalTable | None = None
    endpoints: list[Endpoint] = Field(default_factory=list)
    seeds: Seeds
    test_retest: TestRetest | None = None
    citation: str | None = Field(default=None, description="the study this dataset version reproduces")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"dataset version name {v!r} must match [a-z0-9_]+ (it is a partition key)")
        return v

    @cached_property
    def referenced_tables(self) -> list[str]:
        """Every table path (relative to ``data/``) this definition relies on."""
        tables = []
        for ref in (self.selection.series_from, self.selection.patients_from, self.clinical,
                    self.seeds.reference, self.test_retest):
            if ref is not None:
                tables.append(ref.table)
        return tables


def load_named_yaml(path: Path, model: type[BaseModel], what: str, error: type[Exception]) -> Any:
    """Read a YAML definition whose file name is its ``name`` and validate it as ``model``; every problem
    is an ``error`` naming the file and the field. Shared by dataset versions and the model registry."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise error(f"{path}: cannot read {what}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise error(f"{path}: a {what} must be a mapping, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    try:
        definition = model.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in e.errors()
        )
        raise error(f"{path}: invalid {what}: {problems}") from None
    if definition.name != path.stem:
        raise error(f"{path}: name {definition.name!r} differs from the file name {path.stem!r}; they must match")
    return definition


def load_definition(path: Path, data_root: Path | None = None) -> DatasetVersion:
    """Read and validate one definition; the file name must equal its ``name``."""
    path = Path(path)
    data_root = data_root or data_dir()
    definition = load_named_yaml(path, DatasetVersion, "dataset definition", DatasetDefinitionError)
    for table in definition.referenced_tables:
        if table.startswith(SOURCE_PREFIX):
            continue  # lives in the source folder, which may not be generated yet
        if not (data_root / table).is_file():
            raise DatasetDefinitionError(f"{path}: referenced table {table!r} not found under {data_root}")
    return definition


def definitions_dir(data_root: Path | None = None) -> Path:
    return (data_root or data_dir()) / "datasets"


def load_all(data_root: Path | None = None) -> dict[str, DatasetVersion]:
    """All dataset versions, by name. Any invalid definition fails the whole load, loudly."""
    folder = definitions_dir(data_root)
    if not folder.is_dir():
        raise DatasetDefinitionError(f"no dataset definitions folder at {folder}")
    out = {}
    for path in sorted(folder.glob("*.yaml")):
        definition = load_definition(path, data_root)
        out[definition.name] = definition
    return out


def get(name: str, data_root: Path | None = None) -> DatasetVersion:
    """The dataset version called ``name``, or an error listing the known ones."""
    path = definitions_dir(data_root) / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(load_all(data_root))) or "none"
        raise DatasetDefinitionError(f"unknown dataset version {name!r}; known: {known}")
    return load_definition(path, data_root)
