"""Property-based tests (Hypothesis) of the parsers of user input: names, dataset definitions, model
registry entries, preprocessing specs and ``RADASSETS_DEMO_SPEC``.

Each property: any input gives a result or one ``RadassetsError`` subclass with a one-line message,
never another exception (a traceback for the user). Inputs are arbitrary text and bytes, arbitrary
YAML-like structures, and valid definitions with parts replaced, deleted or added (which reach
the validators deep inside a definition). A valid preprocessing spec also gives a finite model
input of its declared shape, or a ``PreprocessingError``.

The examples are derandomized (the same on every run and machine) and few enough to run in
seconds; no example database is written.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radassets import datasets
from radassets.packaged import packaged_data_dir
from radassets.datasets import DatasetDefinitionError, DatasetVersion
from radassets.demo.generator import SPEC_ENV, DemoError
from radassets.errors import RadassetsError
from radassets.models import registry
from radassets.models.preprocessing import PreprocessingError, model_input
from radassets.models.registry import ModelEntry, Preprocessing, RegistryError
from radassets.names import NAME_MAX_LENGTH, InvalidNameError, check_name
from radassets.settings import Settings

PROPERTY = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DATA = packaged_data_dir()
DEFINITIONS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((DATA / "datasets").glob("*.yaml"))}
ENTRIES = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((DATA / "models").glob("*.yaml"))}


def _all_keys(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set(map(str, obj)) | {k for v in obj.values() for k in _all_keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _all_keys(v)}
    return set()


# Field names of the real files, so random mappings often hit real fields with wrong values.
KNOWN_KEYS = sorted(_all_keys(list(DEFINITIONS.values())) | _all_keys(list(ENTRIES.values())))


def outcome(error: type[RadassetsError], parse, *args) -> Any:
    """``parse(*args)``, or None when it raised ``error`` with a one-line message; any other exception
    escapes and fails the property."""
    try:
        return parse(*args)
    except error as e:
        message = str(e)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return None


# -- strategies ---------------------------------------------------------------------------------------

text = st.text(max_size=30)
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | text | st.sampled_from(KNOWN_KEYS))
keys = st.sampled_from(KNOWN_KEYS) | text | st.integers(-3, 3)
yamlish = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
                       max_leaves=15)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place inside a nested structure: the keys and indexes leading to it."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw, bases: dict[str, dict]) -> dict:
    """A real definition with one to three places replaced by an arbitrary value, deleted, or given
    an extra key."""
    obj = copy.deepcopy(draw(st.sampled_from(sorted(bases)).map(bases.__getitem__)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(obj)))
        if not path:
            continue
        parent = obj
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "extra"]))
        if action == "replace":
            parent[path[-1]] = draw(yamlish)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(keys)] = draw(yamlish)
    return obj


def _yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, allow_unicode=True, sort_keys=False)


# -- names --------------------------------------------------------------------------------------------

@PROPERTY
@given(st.text(max_size=NAME_MAX_LENGTH + 20) | st.from_regex(r"[a-z0-9_]{0,70}", fullmatch=True))
def test_a_name_is_accepted_exactly_when_it_follows_the_rule(value):
    result = outcome(InvalidNameError, check_name, "model", value)
    valid = 1 <= len(value) <= NAME_MAX_LENGTH and all(c in "abcdefghijklmnopqrstuvwxyz0123456789_" for c in value)
    assert (result == value) if valid else (result is None)


# -- dataset definitions -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory(prefix="radassets-properties-") as name:
        yield Path(name)


def _load_definition(folder: Path, data: bytes, stem: str = "prop_v1") -> DatasetVersion | None:
    path = folder / f"{stem}.yaml"
    path.write_bytes(data)
    try:
        return outcome(DatasetDefinitionError, datasets.load_definition, path, DATA)
    finally:
        path.unlink()


@PROPERTY
@given(mutated(DEFINITIONS))
def test_a_changed_dataset_definition_loads_or_is_one_error(folder, obj):
    result = _load_definition(folder, _yaml(obj).encode())
    assert result is None or result.name == "prop_v1"


@PROPERTY
@given(yamlish)
def test_any_yaml_structure_as_a_dataset_definition(folder, obj):
    _load_definition(folder, _yaml(obj).encode())


@PROPERTY
@given(st.text(max_size=200))
def test_any_text_as_a_dataset_definition(folder, value):
    _load_definition(folder, value.encode("utf-8", "surrogatepass"))


@PROPERTY
@given(st.binary(max_size=200))
def test_any_bytes_as_a_dataset_definition(folder, data):
    _load_definition(folder, data)


@PROPERTY
@given(st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=60)
       .filter(lambda s: s not in (".", "..")))
def test_any_file_name_of_a_dataset_definition(folder, stem):
    result = _load_definition(folder, (DATA / "datasets" / "nsclc_radiomics_idc_v16.yaml").read_bytes(), stem)
    assert (result is not None) == (outcome(InvalidNameError, check_name, "dataset version", stem) is not None)


@PROPERTY
@given(st.text(max_size=NAME_MAX_LENGTH + 10))
def test_any_name_asked_for(value):
    outcome(RadassetsError, datasets.get, value, DATA)


# -- model registry entries ---------------------------------------------------------------------------

def _load_entry(folder: Path, data: bytes) -> ModelEntry | None:
    path = folder / "prop_model.yaml"
    path.write_bytes(data)
    try:
        return outcome(RegistryError, registry.load_entry, path)
    finally:
        path.unlink()


@PROPERTY
@given(mutated(ENTRIES))
def test_a_changed_registry_entry_loads_or_is_one_error(folder, obj):
    entry = _load_entry(folder, _yaml(obj).encode())
    if entry is not None and entry.preprocessing is not None:
        assert all(1 <= n <= registry.MAX_INPUT_SIZE for n in entry.preprocessing.input_size)


@PROPERTY
@given(yamlish | st.binary(max_size=100))
def test_anything_as_a_registry_entry(folder, obj):
    _load_entry(folder, obj if isinstance(obj, bytes) else _yaml(obj).encode())
    outcome(RegistryError, registry.entry_from, obj, "test")


# -- preprocessing specs ------------------------------------------------------------------------------

numbers = st.integers(-10, 600) | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0, 1, 48, 512])
intensity = st.fixed_dictionaries(
    {"kind": st.sampled_from(["scale_range", "zscore", "none", "other"])},
    optional={k: numbers | text for k in ("a_min", "a_max", "b_min", "b_max", "mean", "std")}
    | {"clip": st.booleans() | text})
specs = st.fixed_dictionaries(
    {"input_size": st.lists(st.integers(-2, 600), min_size=0, max_size=4) | yamlish,
     "intensity": intensity | yamlish},
    optional={"spacing_mm": numbers | text, "axes": st.sampled_from(["SPL", "LPS", "RAS", "SAR", "XYZ", ""]),
              "extra": yamlish})


PREPROCESSING = {name: e["preprocessing"] for name, e in ENTRIES.items() if "preprocessing" in e}


@PROPERTY
@given(mutated(PREPROCESSING) | specs | yamlish)
def test_any_preprocessing_spec_parses_or_is_one_error(raw):
    spec = outcome(RegistryError, registry.preprocessing_from, raw, "spec.yaml")
    assert spec is None or isinstance(spec, Preprocessing)


small_specs = st.builds(
    lambda size, spacing, axes, window: {"input_size": size, "spacing_mm": spacing, "axes": axes, "intensity": window},
    st.lists(st.integers(1, 20), min_size=3, max_size=3), st.sampled_from([0.1, 0.5, 0.7, 1.0, 1.5, 3.0, 40.0]),
    st.sampled_from(["SPL", "LPS", "RAS", "SAR"]),
    st.sampled_from([{"kind": "scale_range", "a_min": -1024, "a_max": 2048, "clip": True},
                     {"kind": "scale_range", "a_min": -1e6, "a_max": 1e6, "b_min": -1e6, "b_max": 1e6},
                     {"kind": "zscore", "mean": -300.5, "std": 1e-3}, {"kind": "none"}]))


@PROPERTY
@given(small_specs, st.integers(0, 2**32 - 1))
def test_a_valid_spec_gives_a_finite_input_of_its_shape_or_one_error(raw, seed):
    spec = registry.preprocessing_from(raw, "spec.yaml")
    patch = np.random.default_rng(seed).integers(-1024, 3072, size=(16, 16, 16)).astype(np.int16)
    x = outcome(PreprocessingError, model_input, patch, spec)
    if x is not None:
        assert x.shape == (1, *spec.input_size) and x.dtype == np.float32 and np.isfinite(x).all()
    else:
        assert spec.field_of_view_mm() > 16  # refused only when the patch is too small for it


# -- RADASSETS_DEMO_SPEC --------------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | text,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                           max_leaves=10)
spec_like = st.dictionaries(st.sampled_from(["n_patients", "n_added_in_release_2", "n_revised_in_release_2",
                                             "n_test_retest", "seed", "slice_matrix", "n_patient"]),
                            st.integers(-5, 3000) | json_values, max_size=5)
env_text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=60)


@PROPERTY
@given(spec_like.map(json.dumps) | json_values.map(json.dumps) | env_text)
def test_any_demo_spec_in_the_environment(value):
    with mock.patch.dict(os.environ, {SPEC_ENV: value}):
        spec = outcome(DemoError, lambda: Settings.load().demo())
    if spec is not None:
        assert spec.n_patients >= 1 and spec.n_test_retest + spec.n_revised_in_release_2 <= spec.n_patients
        assert 64 <= spec.slice_matrix <= 1024
