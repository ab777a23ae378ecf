"""Dataset definitions: every shipped definition validates; bad ones fail naming file and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from radassets import datasets
from radassets.packaged import packaged_data_dir
from radassets.datasets import DatasetDefinitionError

EXPECTED = {
    "demo_v1", "demo_v2", "nsclc_radiomics_idc_v16", "nsclc_radiomics_idc_v25", "nsclc_radiogenomics_idc_v25",
    "lidc_idri_luna16_idc_v25", "c4kc_kits_idc_v25", "colorectal_liver_metastases_idc_v25", "rider_lung_ct_idc_v25",
}


def test_shipped_definitions_load():
    defs = datasets.load_all()
    assert EXPECTED <= set(defs)
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
