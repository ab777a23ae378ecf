"""Dataset definitions: every shipped definition validates; bad ones fail naming file and field."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from radassets import datasets
from radassets.packaged import packaged_data_dir
from radassets.datasets import DatasetDefinitionError
from radassets_tests.test_cli import run_cli

EXPECTED = {
    "demo_v1", "demo_v2", "nsclc_radiomics_idc_v16", "nsclc_radiomics_idc_v25", "nsclc_radiogenomics_idc_v25",
    "lidc_idri_luna16_idc_v25", "c4kc_kits_idc_v25", "colorectal_liver_metastases_idc_v25", "rider_lung_ct_idc_v25",
}


def test_shipped_definitions_load():
    defs = datasets.load_all()
    assert set(defs) >= EXPECTED
    for name, d in defs.items():
        assert d.name == name
        if d.source.kind == "idc":
            assert d.source.idc_version >= 1  # pinned, never "current"


def test_label_conventions_are_explicit():
    defs = datasets.load_all()
    # Hosny et al. count early censoring as alive; the Pai et al. replication drops it.
    assert defs["nsclc_radiomics_idc_v16"].endpoints[0].censored_before_horizon == "alive"
    assert defs["nsclc_radiogenomics_idc_v25"].endpoints[0].censored_before_horizon == "drop"
    assert defs["nsclc_radiogenomics_idc_v25"].endpoints[0].time_from_dates is not None


def _copy_data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(packaged_data_dir(), root)
    return root


def _write(root: Path, name: str, text: str) -> Path:
    path = root / "datasets" / f"{name}.yaml"
    path.write_text(text)
    return path


def test_unknown_dataset_version_lists_known_ones():
    with pytest.raises(DatasetDefinitionError, match=r"unknown dataset version 'nope'.*demo_v1"):
        datasets.get("nope")


@pytest.mark.parametrize(
    "text, message",
    [
        ("title: [unclosed", "not valid YAML"),
        ("- a list", "must be a mapping"),
        ("title: t\ndescription: d\nsource: {kind: idc}\nselection: {collections: [x], modalities: [CT]}\n"
         "seeds: {source: mask, segment_labels: [GTV-1]}\n", r"source\.idc_version: Field required"),
        ("title: t\ndescription: d\nsource: {kind: idc, idc_version: 16}\nselection: {collections: [x], modalities: [CT]}\n"
         "seeds: {source: mask, segment_labels: [GTV-1]}\nsurprise: 1\n", r"surprise: Extra inputs are not permitted"),
        ("title: t\ndescription: d\nsource: {kind: idc, idc_version: 16}\nselection: {collections: [x], modalities: [CT]}\n"
         "seeds: {source: mask, segment_labels: [GTV-1]}\nendpoints: [{name: os, kind: survival, time_column: t}]\n",
         r"endpoints\.0.*needs \['event_column', 'event_values', 'horizon_days', 'censored_before_horizon'\]"),
        ("title: t\ndescription: d\nsource: {kind: idc, idc_version: 16}\n"
         "selection: {collections: [x], modalities: [CT], patients_from: {table: reference/missing.csv, column: id}}\n"
         "seeds: {source: mask, segment_labels: [GTV-1]}\n", r"referenced table 'reference/missing.csv' not found"),
    ],
)
def test_malformed_definition_names_file_and_field(tmp_path, text, message):
    root = _copy_data(tmp_path)
    path = _write(root, "broken_v1", text)
    with pytest.raises(DatasetDefinitionError, match=message) as err:
        datasets.load_definition(path, root)
    assert "broken_v1.yaml" in str(err.value)


def test_partition_key_rules(tmp_path):
    root = _copy_data(tmp_path)
    path = _write(root, "Bad-Name", (root / "datasets" / "demo_v1.yaml").read_text())
    with pytest.raises(DatasetDefinitionError, match=r"Bad-Name\.yaml: dataset version name 'Bad-Name' is not valid: "
                                                     r"use 1 to 64 characters among a-z, 0-9 and _"):
        datasets.load_definition(path, root)


@pytest.mark.parametrize("field, value, message", [
    ("id_suffix_pattern", "'-(test'", r"clinical\.id_suffix_pattern: .*is not a valid regular expression"),
    ("segment_labels", "['GTV-[1']", r"seeds: .*segment label 'GTV-\[1' is not a valid regular expression"),
])
def test_a_regular_expression_that_does_not_compile_is_refused_at_load(tmp_path, field, value, message):
    root = _copy_data(tmp_path)
    text = (root / "datasets" / "nsclc_radiomics_idc_v16.yaml").read_text()
    if field == "id_suffix_pattern":
        text = text.replace("id_column: PatientID}", f"id_column: PatientID, id_suffix_pattern: {value}}}", 1)
    else:
        text = text.replace('segment_labels: ["GTV-1"]', f"segment_labels: {value}", 1)
    path = _write(root, "regex_v1", text)
    with pytest.raises(DatasetDefinitionError, match=r"regex_v1\.yaml: invalid dataset definition: " + message):
        datasets.load_definition(path, root)


def test_a_referenced_table_name_too_long_for_the_file_system_is_not_found(tmp_path):
    root = _copy_data(tmp_path)
    text = (root / "datasets" / "nsclc_radiomics_idc_v16.yaml").read_text()
    text = text.replace("reference/nsclc_radiomics/clinical.csv", "reference/" + "x" * 300 + ".csv", 1)
    path = _write(root, "long_v1", text)
    with pytest.raises(DatasetDefinitionError, match=r"long_v1\.yaml: referenced table 'reference/x+'\.\.\. \(314 "
                                                     r"characters\) not found"):
        datasets.load_definition(path, root)


# -- one invalid definition among valid ones ------------------------------------------------------

def _with_broken(tmp_path: Path) -> Path:
    """A copy of the shipped data/ plus broken_v1.yaml: demo_v1 without its source's idc_version."""
    root = _copy_data(tmp_path)
    text = (root / "datasets" / "demo_v1.yaml").read_text()
    _write(root, "broken_v1", text.replace("source: {kind: demo, idc_version: 1}", "source: {kind: demo}", 1))
    return root


def _shipped() -> set[str]:
    return {p.stem for p in (packaged_data_dir() / "datasets").glob("*.yaml")}


BROKEN = r"broken_v1\.yaml: invalid dataset definition: source\.idc_version: Field required"


def test_an_invalid_definition_is_reported_and_the_others_load(tmp_path):
    root = _with_broken(tmp_path)
    valid, invalid = datasets.scan_definitions(root)
    assert set(valid) == _shipped() >= EXPECTED
    assert list(invalid) == ["broken_v1"]
    assert re.search(BROKEN, invalid["broken_v1"]), invalid
    with pytest.raises(DatasetDefinitionError, match=BROKEN):  # asked for by name, the same error
        datasets.get("broken_v1", root)


def test_datasets_list_shows_the_valid_ones_and_names_the_invalid_one(tmp_path):
    root = _with_broken(tmp_path)
    env = {"RADASSETS_DATA_DIR": str(root), "RADASSETS_HOME": str(tmp_path / "home")}
    table = run_cli("datasets", "list", env=env)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line for line in table.stdout.splitlines()}
    assert set(rows) == _shipped() | {"broken_v1"}
    assert re.search(r"invalid: .*" + BROKEN, rows["broken_v1"]), rows["broken_v1"]
    assert "Demo collection, release 1" in rows["demo_v1"]

    listed = run_cli("datasets", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert set(json.loads(listed.stdout)) == _shipped()  # standard output stays a mapping of valid definitions
    assert re.fullmatch(r"radassets: warning: .*" + BROKEN + r"\n", listed.stderr), listed.stderr

    shown = run_cli("cohort", "show", "broken_v1", env=env)
    assert shown.returncode == 2
    assert re.fullmatch(r"radassets: error: .*" + BROKEN + r"\n", shown.stderr), shown.stderr
