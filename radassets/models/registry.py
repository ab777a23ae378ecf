"""The model registry: one YAML file per model under ``data/models/``; its name is the ``model`` partition key.

An entry says everything that makes an embedding reproducible: which architecture (``family``,
a builder in ``radassets.models.families``), the embedding dimension, the preprocessing from the
canonical patch to the model's input (spacing, input size, axis order, intensity transform), the
weights (URI, file name, sha256, key prefixes the published file adds) and their licence.

``kind`` says how the model runs:
- ``torch``: a built-in architecture with published weights (FMCIB, CT-FM, ...);
- ``untrained``: a built-in architecture, randomly initialised with a fixed seed (a control);
- ``radiomics``: IBSI features computed by pyradiomics from the patch and its mask;
- ``torchscript`` / ``onnx``: a user's exported network file, with the preprocessing in YAML; the
  file is treated like published weights (``weights.uri`` may be ``file://``), pinned by sha256;
- ``table``: precomputed embeddings (CSV or parquet keyed by patient or series) imported as is.

Definitions are validated strictly, like dataset versions: an unknown key, a missing field, a
number that is not finite, an input size outside 1..``MAX_INPUT_SIZE`` or a family that
``radassets.models.families`` does not build is an error naming the file and the field.
``scan_registry`` reads every entry and returns the invalid ones with their reason, so one bad
file does not hide the others (``models list`` shows it as invalid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from radassets.datasets import load_named_yaml, validation_problems
from radassets.errors import RadassetsError
from radassets.models.families import FAMILIES
from radassets.names import check_name, name_problem
from radassets.packaged import packaged_data_dir
from radassets.storage import sha256_json

Axes = Literal["SPL", "LPS", "RAS", "SAR"]
# Voxels along one axis of a model's input: 512 is a whole CT slice, far beyond any lesion patch.
MAX_INPUT_SIZE = 512
# An input voxel finer than 0.1 mm is finer than any CT; it would make a grid of billions of points.
MIN_SPACING_MM = 0.1
# HU windows, scale bounds, means and SDs beyond a million are a typo, and overflow float32 inputs.
MAX_INTENSITY = 1e6
IntensityValue = Annotated[float, Field(ge=-MAX_INTENSITY, le=MAX_INTENSITY)]


class RegistryError(RadassetsError, ValueError):
    """A model definition is missing, malformed or refers to something that does not exist."""


class _Strict(BaseModel):
    # No NaN or infinity: a window of [nan, 1] passes every comparison and gives NaN inputs.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Intensity(_Strict):
    """HU → network input: ``clip`` to [a_min, a_max] (optional), then ``(HU - a_min) / (a_max - a_min)``
    mapped onto [b_min, b_max] (MONAI's ScaleIntensityRange), or z-scored with ``mean``/``std``."""

    kind: Literal["scale_range", "zscore", "none"] = "scale_range"
    a_min: IntensityValue | None = None
    a_max: IntensityValue | None = None
    b_min: IntensityValue = 0.0
    b_max: IntensityValue = 1.0
    clip: bool = False
    mean: IntensityValue | None = None
    std: IntensityValue | None = None

    @model_validator(mode="after")
    def _complete(self) -> Intensity:
        if self.kind == "scale_range" and (self.a_min is None or self.a_max is None or self.a_max <= self.a_min):
            raise ValueError("scale_range needs a_min < a_max")
        if self.kind == "zscore" and (self.mean is None or self.std is None or self.std <= 0):
            raise ValueError("zscore needs mean and a positive std")
        return self


class Preprocessing(_Strict):
    """From the canonical patch (1 mm, axes S, P, L) to the network's input tensor."""

    spacing_mm: float = Field(default=1.0, ge=MIN_SPACING_MM, le=100.0, description="isotropic input spacing")
    input_size: tuple[Annotated[int, Field(ge=1, le=MAX_INPUT_SIZE)], Annotated[int, Field(ge=1, le=MAX_INPUT_SIZE)],
                      Annotated[int, Field(ge=1, le=MAX_INPUT_SIZE)]] = Field(
        description=f"voxels along the tensor's three spatial axes, each 1..{MAX_INPUT_SIZE}")
    axes: Axes = Field(default="SPL", description="anatomical direction of increasing index on each tensor axis")
    intensity: Intensity

    def field_of_view_mm(self) -> float:
        return max(self.input_size) * self.spacing_mm


class Weights(_Strict):
    uri: str = Field(description="where the published file is downloaded from")
    file: str = Field(description="file name in the weights cache")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                               description="required to load; null while the published file's hash is unconfirmed")
    state_dict_key: str | None = Field(default=None, description="top-level key holding the state dict, if any")
    strip_prefixes: list[str] = Field(default_factory=list,
                                      description="prefixes the published keys carry (e.g. 'module.')")
    select_prefix: str | None = Field(default=None, description="keep only keys under this prefix (e.g. an encoder)")
    unused_prefixes: list[str] = Field(default_factory=list,
                                       description="parts of the published network not used for embeddings (e.g. "
                                                   "a decoder): named here, so any other unexpected key is an error")


class TableSource(_Strict):
    path: str = Field(description="CSV or parquet of precomputed embeddings (relative to data/ or absolute)")
    id_column: str
    id_kind: Literal["PatientID", "SeriesInstanceUID", "seed_id"] = "PatientID"
    vector_columns: list[str] | None = Field(default=None, description="default: every other numeric column")


class ModelEntry(_Strict):
    name: str
    title: str
    kind: Literal["torch", "untrained", "radiomics", "torchscript", "onnx", "table"]
    family: str | None = Field(default=None, description="builder in radassets.models.families (torch, untrained)")
    embedding_dim: int | None = Field(default=None, gt=0)
    preprocessing: Preprocessing | None = None
    weights: Weights | None = None
    table: TableSource | None = None
    seed: int | None = Field(default=None, description="untrained: the initialisation seed")
    settings: dict | None = Field(default=None, description="radiomics: pyradiomics extractor settings")
    licence: str
    citation: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        problem = name_problem("model", v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("family")
    @classmethod
    def _family(cls, v: str | None) -> str | None:
        if v is not None and v not in FAMILIES:
            raise ValueError(f"unknown model family {v!r}; known: {', '.join(sorted(FAMILIES))}")
        return v

    @model_validator(mode="after")
    def _complete(self) -> ModelEntry:
        need = {"torch": ("family", "embedding_dim", "preprocessing", "weights"),
                "untrained": ("family", "embedding_dim", "preprocessing", "seed"),
                "radiomics": ("settings",),
                "torchscript": ("weights", "embedding_dim", "preprocessing"),
                "onnx": ("weights", "embedding_dim", "preprocessing"),
                "table": ("table",)}[self.kind]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"a {self.kind} model needs {missing}")
        return self

    @property
    def preprocessing_hash(self) -> str:
        """Identity of everything between the canonical patch and the vector, other than the weights."""
        return sha256_json({"kind": self.kind, "family": self.family, "settings": self.settings,
                            "preprocessing": self.preprocessing.model_dump() if self.preprocessing else None})


def models_dir(folder: Path | None = None) -> Path:
    """The registry folder: ``folder`` (``Settings.resolved_models_dir()``), else the shipped registry."""
    return Path(folder) if folder is not None else packaged_data_dir() / "models"


def load_entry(path: Path) -> ModelEntry:
    return load_named_yaml(path, ModelEntry, "model definition", RegistryError, name_kind="model")


def _validated(model: type[BaseModel], raw: Any, where: str, what: str) -> Any:
    """``raw`` validated as ``model``, or a one-line ``RegistryError`` naming ``where`` and the fields."""
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: a {what} must be a mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise RegistryError(f"{where}: invalid {what}: {validation_problems(e)}") from None


def entry_from(raw: Any, where: str) -> ModelEntry:
    """A registry entry from a mapping (``models add``)."""
    return _validated(ModelEntry, raw, where, "model definition")


def preprocessing_from(raw: Any, where: str) -> Preprocessing:
    """A preprocessing spec (spacing_mm, input_size, axes, intensity) from a mapping."""
    return _validated(Preprocessing, raw, where, "preprocessing spec")


def _registry_folder(folder: Path | None) -> Path:
    folder = models_dir(folder)
    if not folder.is_dir():
        raise RegistryError(f"no model registry folder at {folder}")
    return folder


def scan_registry(folder: Path | None = None) -> tuple[dict[str, ModelEntry], dict[str, str]]:
    """Every definition file read: the valid entries by name, and the invalid ones (by file name
    without ``.yaml``) with the reason. One bad file does not hide the others."""
    entries: dict[str, ModelEntry] = {}
    invalid: dict[str, str] = {}
    for path in sorted(_registry_folder(folder).glob("*.yaml")):
        try:
            entry = load_entry(path)
        except RegistryError as e:
            invalid[path.stem] = str(e)
        else:
            entries[entry.name] = entry
    return entries, invalid


def load_registry(folder: Path | None = None) -> dict[str, ModelEntry]:
    """Every registered model, by name. Any invalid entry fails the whole load, loudly."""
    return {e.name: e for e in (load_entry(p) for p in sorted(_registry_folder(folder).glob("*.yaml")))}


def get(name: str, folder: Path | None = None) -> ModelEntry:
    """The entry called ``name`` in the registry ``folder``. The name is checked before it becomes a path."""
    check_name("model", name)
    folder = models_dir(folder)
    path = folder / f"{name}.yaml"
    if not path.is_file():
        # The file names, not load_registry(): another entry's error must not hide this one.
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) if folder.is_dir() else ""
        raise RegistryError(f"unknown model {name!r}; registered: {known or 'none'}")
    return load_entry(path)
