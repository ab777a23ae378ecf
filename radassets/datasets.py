"""Dataset versions: what a cohort is, where its images come from, how labels and seeds are defined.

One YAML file per dataset version under ``data/datasets/``. The file name (without
``.yaml``) is the dataset version's name and its Dagster partition key, so names follow
``radassets.names`` (1 to 64 characters among ``a-z0-9_``), checked before a name becomes a
path. Definitions are validated strictly: a file that is not UTF-8 YAML, an unknown key, a
missing field, a regular expression that does not compile or a reference table that does not
exist is an error naming the file and the field, on one line.

Paths inside a definition (clinical tables, reference tables) are relative to ``data/``;
a path written ``source:NAME`` is relative to the source's own folder instead (the generated
demo collection, or a local DICOM folder), and exists only once that source is there.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from radassets.errors import RadassetsError
from radassets.names import NAME_MAX_LENGTH, check_name, name_problem, shown
from radassets.packaged import packaged_data_dir

# The name rule as a pattern, for callers that still use ``NAME_RE.match``; ``\A...\Z`` so that a
# trailing newline does not pass (``$`` would). New code calls ``radassets.names.check_name``.
NAME_RE = re.compile(rf"\A[a-z0-9_]{{1,{NAME_MAX_LENGTH}}}\Z")
SOURCE_PREFIX = "source:"


class DatasetDefinitionError(RadassetsError, ValueError):
    """A dataset definition is missing, malformed or refers to something that does not exist."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _compiles(pattern: str | None, what: str) -> None:
    """A regular expression in a definition must compile here, not fail halfway through a run."""
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{what} {shown(pattern)} is not a valid regular expression: {e}") from None


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

    @field_validator("id_suffix_pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        _compiles(v, "id_suffix_pattern")
        return v


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
        problem = name_problem("endpoint", self.name)
        if problem:
            raise ValueError(problem)
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
        for label in self.segment_labels or ():
            _compiles(label, "segment label")
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
        _compiles(self.pair_pattern, "pair_pattern")
        if self.pair_pattern is not None and not {"patient", "scan"} <= set(re.compile(self.pair_pattern).groupindex):
            raise ValueError(f"pair_pattern {shown(self.pair_pattern)} needs the groups (?P<patient>...) and "
                             "(?P<scan>...)")
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
    _data_root: Path | None = PrivateAttr(default=None)  # the data folder it was read from

    @property
    def data_root(self) -> Path:
        """The folder its ``data/``-relative table paths are relative to: where it was read from."""
        return self._data_root or packaged_data_dir()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        problem = name_problem("dataset version", v)
        if problem:
            raise ValueError(problem)
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


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces folded, for a one-line error message."""
    return " ".join(text.split())


def validation_problems(e: ValidationError) -> str:
    """Pydantic's errors as one line: ``field.path: message; ...``."""
    return one_line("; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in e.errors()))


def parse_yaml_text(data: bytes, where: str, what: str, error: type[Exception]) -> Any:
    """UTF-8 YAML bytes → Python objects; anything else is an ``error`` naming ``where``, on one line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where}: a {what} must be UTF-8 text; byte {e.start} is not ({e.reason})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise error(f"{where}: not valid YAML: {one_line(str(e))}") from None
    except RecursionError:
        raise error(f"{where}: not valid YAML: nested too deeply") from None


def load_named_yaml(path: Path, model: type[BaseModel], what: str, error: type[Exception],
                    name_kind: str = "dataset version") -> Any:
    """Read a YAML definition whose file name is its ``name`` and validate it as ``model``; every problem
    is an ``error`` naming the file and the field, on one line. The file name is checked as a
    ``name_kind`` name first: a file that could not be a partition key is not read at all.
    Shared by dataset versions and the model registry."""
    path = Path(path)
    problem = name_problem(name_kind, path.stem)
    if problem:  # a file name with a line break or another control character is shown escaped
        raise error(f"{path if path.name.isprintable() else path.parent / shown(path.name)}: {problem}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read {what}: {e.strerror}") from e
    raw = parse_yaml_text(data, str(path), what, error)
    if not isinstance(raw, dict):
        raise error(f"{path}: a {what} must be a mapping, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    try:
        definition: Any = model.model_validate(raw)  # a model with a ``name`` field
    except ValidationError as e:
        raise error(f"{path}: invalid {what}: {validation_problems(e)}") from None
    if definition.name != path.stem:
        raise error(f"{path}: name {definition.name!r} differs from the file name {path.stem!r}; they must match")
    return definition


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the file system: no such table either
        return False


def load_definition(path: Path, data_root: Path | None = None) -> DatasetVersion:
    """Read and validate one definition; the file name must equal its ``name``."""
    path = Path(path)
    data_root = data_root or packaged_data_dir()
    definition = load_named_yaml(path, DatasetVersion, "dataset definition", DatasetDefinitionError)
    definition._data_root = data_root
    for table in definition.referenced_tables:
        if table.startswith(SOURCE_PREFIX):
            continue  # lives in the source folder, which may not be generated yet
        if not _is_file(data_root / table):
            raise DatasetDefinitionError(f"{path}: referenced table {shown(table)} not found under {data_root}")
    return definition


def definitions_dir(data_root: Path | None = None) -> Path:
    return (data_root or packaged_data_dir()) / "datasets"


def _definition_files(data_root: Path | None) -> list[Path]:
    folder = definitions_dir(data_root)
    if not folder.is_dir():
        raise DatasetDefinitionError(f"no dataset definitions folder at {folder}")
    return sorted(folder.glob("*.yaml"))


def load_all(data_root: Path | None = None) -> dict[str, DatasetVersion]:
    """All dataset versions, by name. Any invalid definition fails the whole load, loudly."""
    out = {}
    for path in _definition_files(data_root):
        definition = load_definition(path, data_root)
        out[definition.name] = definition
    return out


def scan_definitions(data_root: Path | None = None) -> tuple[dict[str, DatasetVersion], dict[str, str]]:
    """Every definition file read: the valid dataset versions by name, and the invalid ones (by file name
    without ``.yaml``) with the reason, which names the file and the field. One bad file does not hide the
    others: the code location and ``datasets list`` show the valid ones and report each invalid one."""
    valid: dict[str, DatasetVersion] = {}
    invalid: dict[str, str] = {}
    for path in _definition_files(data_root):
        try:
            definition = load_definition(path, data_root)
        except DatasetDefinitionError as e:
            invalid[path.stem] = str(e)
        else:
            valid[definition.name] = definition
    return valid, invalid


def get(name: str, data_root: Path | None = None) -> DatasetVersion:
    """The dataset version called ``name``, or an error listing the known ones. The name is checked
    before it becomes a path: ``../x`` never reads a file outside the definitions folder."""
    check_name("dataset version", name)
    folder = definitions_dir(data_root)
    path = folder / f"{name}.yaml"
    if not path.is_file():
        # The file names, not load_all(): another definition's error must not hide this one.
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) if folder.is_dir() else ""
        raise DatasetDefinitionError(f"unknown dataset version {name!r}; known: {known or 'none'}")
    return load_definition(path, data_root)
