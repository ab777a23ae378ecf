"""What a user types or writes, refused on one line before it can do harm.

Names become paths and partition keys, so a bad one (trailing newline, 300 characters, ``../``,
upper case, empty) is an error with exit status 2 and nothing written. Registry entries are
validated when loaded, and ``models list`` shows an invalid one as such while the others still
list. ``lineage sql`` runs queries only; ``lineage export`` never writes over a file.

The CLI is called in-process through ``radassets.cli.main`` (the code a user's command runs), and
once per command as a subprocess, as a user runs it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import traceback
from pathlib import Path

import pytest

from radassets import datasets
from radassets.cli import main
from radassets.lineage import store
from radassets.models import registry
from radassets.models.registry import RegistryError
from radassets.layout import Layout
from radassets.names import InvalidNameError, check_name
from radassets.packaged import packaged_data_dir
from radassets_tests.test_cli import run_cli

BAD_NAMES = ["nl\n", "x" * 300, "../../outside/x", "Upper", "", "with space", "caf\u00e9", "a/b", "demo_v1\x00"]
NAME_ERROR = "is not valid: use 1 to 64 characters among a-z, 0-9 and _"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit status, stdout, stderr); an escaping exception is status 1
    with its traceback on stderr, as Python would print it."""
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except Exception:  # noqa: BLE001 - a traceback is what these tests must not see
        code = 1
        print(traceback.format_exc(), file=__import__("sys").stderr)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str) -> str:
    """The single line a user error prints; fails when stderr holds anything else (a traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("radassets: error: "), err
    return lines[0]


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash: what must not change."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def data(tmp_path, monkeypatch) -> Path:
    """A private copy of data/ (definitions and registry) and a private RADASSETS_HOME."""
    root = tmp_path / "data"
    shutil.copytree(packaged_data_dir(), root)
    monkeypatch.setenv("RADASSETS_DATA_DIR", str(root))
    monkeypatch.delenv("RADASSETS_MODELS_DIR", raising=False)
    monkeypatch.setenv("RADASSETS_HOME", str(tmp_path / "home"))
    return root


# -- names ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_check_name_refuses_with_the_rule(name):
    with pytest.raises(InvalidNameError, match=NAME_ERROR) as err:
        check_name("model", name)
    assert "\n" not in str(err.value) and len(str(err.value)) < 200  # one readable line, even for 300 characters


def test_check_name_accepts_the_longest_name():
    assert check_name("model", "a" * 64) == "a" * 64
    with pytest.raises(InvalidNameError, match="1 to 64 characters"):
        check_name("model", "a" * 65)


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
@pytest.mark.parametrize("command", [["cohort", "show"], ["cohort", "build"], ["datasets", "add-local"],
                                     ["models", "add"]], ids=" ".join)
def test_a_bad_name_is_one_line_exit_2_and_nothing_written(data, tmp_path, capsys, command, name):
    folder = tmp_path / "dicom"
    folder.mkdir()
    # What ../../outside/x would reach from data/datasets/ (and from data/models/): a valid definition.
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(data / "datasets" / "nsclc_radiomics_idc_v16.yaml", outside / "x.yaml")
    extra = {"datasets": [name, str(folder)], "models": [name, "--table", str(tmp_path / "t.csv"), "--id-column", "id"]}
    args = [*command, *extra.get(command[0], [name])]
    before = tree(tmp_path)
    code, _, err = cli(capsys, *args)
    assert code == 2, err
    assert NAME_ERROR in one_error_line(err)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", [["cohort", "show", "../../outside/x"], ["datasets", "add-local", "nl\n", "{empty}"],
                                     ["models", "add", "x" * 300, "--table", "t.csv", "--id-column", "id"]],
                         ids=lambda c: " ".join(c[:2]))
def test_a_bad_name_as_a_user_runs_it(data, tmp_path, command):
    (tmp_path / "outside").mkdir()
    shutil.copyfile(data / "datasets" / "nsclc_radiomics_idc_v16.yaml", tmp_path / "outside" / "x.yaml")
    (tmp_path / "empty").mkdir()
    command = [arg.replace("{empty}", str(tmp_path / "empty")) for arg in command]
    out = run_cli(*command, env={"RADASSETS_DATA_DIR": str(data), "RADASSETS_HOME": str(tmp_path / "home")})
    assert out.returncode == 2 and NAME_ERROR in one_error_line(out.stderr)
    assert not (tmp_path / "home").exists()


def test_a_definition_file_with_a_bad_name_is_reported_not_loaded(data):
    (data / "datasets" / "Bad-Name.yaml").write_text((data / "datasets" / "demo_v1.yaml").read_text())
    with pytest.raises(datasets.DatasetDefinitionError, match=r"Bad-Name\.yaml: dataset version name 'Bad-Name' is not"):
        datasets.load_all(data)
    assert datasets.get("demo_v1", data).name == "demo_v1"  # the others still load one by one


def test_a_definition_whose_name_field_is_bad_is_reported(data):
    text = (data / "datasets" / "demo_v1.yaml").read_text()
    (data / "datasets" / "demo_v9.yaml").write_text("name: \"demo_v9\\n\"\n" + text)
    with pytest.raises(datasets.DatasetDefinitionError, match=r"demo_v9\.yaml: invalid dataset definition: name: .*"
                                                             r"'demo_v9\\n' is not valid"):
        datasets.get("demo_v9", data)


# -- non-UTF-8 YAML -------------------------------------------------------------------------------

def test_a_definition_that_is_not_utf8_is_one_line_naming_the_file(data, capsys):
    (data / "datasets" / "latin_v1.yaml").write_bytes("title: Br\u00fcssel\n".encode("latin-1"))
    code, _, err = cli(capsys, "cohort", "show", "latin_v1")
    assert code == 2
    assert "latin_v1.yaml: a dataset definition must be UTF-8 text; byte 9 is not" in one_error_line(err)


def test_a_model_definition_that_is_not_utf8_is_named(data):
    (data / "models" / "latin.yaml").write_bytes(b"title: \xff\xfe\n")
    with pytest.raises(RegistryError, match=r"latin\.yaml: a model definition must be UTF-8 text; byte 7"):
        registry.get("latin", data / "models")


def test_a_yaml_syntax_error_is_one_line(data, capsys):
    (data / "datasets" / "broken_v1.yaml").write_text("title: [unclosed\ndescription: x\n")
    code, _, err = cli(capsys, "cohort", "show", "broken_v1")
    assert code == 2 and "broken_v1.yaml: not valid YAML: " in one_error_line(err)


# -- registry entries -------------------------------------------------------------------------------

def _entry_text(data: Path, model: str, old: str, new: str) -> str:
    text = (data / "models" / f"{model}.yaml").read_text()
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize("old, new, message", [
    ("input_size: [48, 48, 48]", "input_size: [0, 48, 48]", r"preprocessing\.input_size\.0: .*greater than or equal to 1"),
    ("input_size: [48, 48, 48]", "input_size: [48, -5, 48]", r"preprocessing\.input_size\.1: .*greater than or equal to 1"),
    ("input_size: [48, 48, 48]", "input_size: [48, 48, 100000]", r"preprocessing\.input_size\.2: .*less than or equal to 512"),
    ("family: ct_fm_segresenc", "family: no_such_net", r"family: .*unknown model family 'no_such_net'; known: .*fmcib_resnet50"),
    ("spacing_mm: 1.0", "spacing_mm: .nan", r"preprocessing\.spacing_mm: .*finite number"),
])
def test_a_bad_registry_entry_names_file_and_field(data, old, new, message):
    (data / "models" / "ct_fm.yaml").write_text(_entry_text(data, "ct_fm", old, new))
    with pytest.raises(RegistryError, match=r"ct_fm\.yaml: invalid model definition: " + message):
        registry.get("ct_fm", data / "models")


def test_models_list_shows_an_invalid_entry_and_the_others(data, capsys):
    (data / "models" / "ct_fm.yaml").write_text(_entry_text(data, "ct_fm", "input_size: [48, 48, 48]",
                                                            "input_size: [0, 48, 48]"))
    (data / "models" / "odd.yaml").write_bytes(b"\xff")
    code, out, err = cli(capsys, "models", "list")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert set(lines) == {p.stem for p in (data / "models").glob("*.yaml")}
    assert "invalid" in lines["ct_fm"] and "input_size.0" in lines["ct_fm"] and "ready" not in lines["ct_fm"]
    assert "invalid" in lines["odd"] and "UTF-8" in lines["odd"]
    assert "ready" in lines["radiomics"]
    code, out, err = cli(capsys, "models", "list", "--json")
    assert code == 0 and "ct_fm" not in json.loads(out) and "radiomics" in json.loads(out)
    assert "invalid model definition" in err  # said on stderr, so the JSON stays entries only


def test_an_invalid_entry_does_not_stop_the_sensor_or_the_default_models(data, tmp_path):
    """The partition sync and the default model list skip a bad file with its reason; the others go on."""
    from radassets.defs.models import registry_partition_changes
    from radassets.models.pipeline import default_models

    (data / "models" / "odd.yaml").write_bytes(b"\xff")
    added, orphaned, invalid = registry_partition_changes({"odd"})
    assert "radiomics" in added and "odd" not in added and orphaned == [] and "UTF-8" in invalid["odd"]
    run, skipped = default_models(Layout(tmp_path / "home").weights_dir(), data / "models", data)
    assert "radiomics" in run and skipped["odd"].startswith("invalid registry entry") and "UTF-8" in skipped["odd"]


def test_the_shipped_registry_is_valid():
    entries, invalid = registry.scan_registry()
    assert not invalid and {"fmcib", "radiomics", "untrained_cnn"} <= set(entries)


# -- lineage ------------------------------------------------------------------------------------------

@pytest.fixture
def lineage_home(tmp_path, monkeypatch) -> Path:
    """A RADASSETS_HOME whose lineage store holds one run."""
    home = tmp_path / "home"
    monkeypatch.setenv("RADASSETS_HOME", str(home))
    run = {"run_id": "6f1c3a52-0d7e-4b8e-9a51-3f2d8c1b7e40", "dagster_run_id": "0b7f5e2a-1c9d-4e3f-8a6b-5d4c3b2a1908",
           "partition_key": "demo_v1", "partition": {"dataset_version": "demo_v1"},
           "code_version": "seeds-1", "git_commit": "abc"}
    job = {"namespace": "radassets", "name": "seeds"}
    root = Layout(home).lineage_dir()
    store.write_event({"event_type": "START", "run": run, "job": job}, root)
    store.write_event({"event_type": "COMPLETE", "run": run, "job": job, "inputs": [],
                       "outputs": [{"asset": "seeds", "partition_key": "demo_v1", "version": "s1", "items": []}]}, root)
    store.merge(root)
    return home


@pytest.mark.parametrize("query", [
    "SET threads=1", "RESET threads", "PRAGMA enable_profiling", "PRAGMA threads=2", "ATTACH ':memory:' AS m",
    "INSTALL httpfs", "LOAD httpfs", "COPY runs TO 'runs.csv'", "EXPORT DATABASE 'dump'", "CALL pragma_version()",
    "CHECKPOINT", "CREATE TABLE t (a INT)", "DELETE FROM runs", "SELECT 1; SET threads=1", "BEGIN", "", "  ;  ",
])
def test_lineage_sql_refuses_what_is_not_a_query(lineage_home, capsys, query):
    before = tree(lineage_home)
    code, out, err = cli(capsys, "lineage", "sql", query)
    assert code == 2, err
    line = one_error_line(err)
    assert "lineage sql runs one query" in line
    assert tree(lineage_home) == before and not out


def test_lineage_sql_error_is_one_line(lineage_home, capsys):
    code, _, err = cli(capsys, "lineage", "sql", "SELECT nope FROM runs")
    assert code == 2 and "query failed: " in one_error_line(err)


@pytest.mark.parametrize("query, expected", [
    ("SELECT job_name FROM runs", "seeds"), ("WITH r AS (SELECT * FROM runs) SELECT job_name FROM r", "seeds"),
    ("FROM runs SELECT status", "COMPLETE"), ("DESCRIBE runs", "job_name"), ("SHOW TABLES", "runs"),
    ("SUMMARIZE runs", "job_name"), ("PRAGMA show_tables", "runs"),
])
def test_lineage_sql_answers_queries(lineage_home, capsys, query, expected):
    code, out, err = cli(capsys, "lineage", "sql", query, "--csv")
    assert code == 0, err
    assert expected in out


def test_lineage_sql_set_as_a_user_runs_it(lineage_home):
    before = tree(lineage_home)
    out = run_cli("lineage", "sql", "SET threads=1", env={"RADASSETS_HOME": str(lineage_home)})
    assert out.returncode == 2 and "lineage sql runs one query" in one_error_line(out.stderr)
    assert tree(lineage_home) == before


def test_lineage_export_into_an_existing_file_is_refused(lineage_home, tmp_path, capsys):
    target = tmp_path / "events.json"
    target.write_text("the user's file")
    code, _, err = cli(capsys, "lineage", "export", "--openlineage", str(target))
    assert code == 2
    assert f"{target} is a file, not a folder" in one_error_line(err)
    assert target.read_text() == "the user's file"


def test_lineage_export_into_a_new_folder(lineage_home, tmp_path, capsys):
    code, out, err = cli(capsys, "lineage", "export", "--openlineage", str(tmp_path / "ol"))
    assert code == 0, err
    assert "2 OpenLineage run events" in out and len(list((tmp_path / "ol").glob("*.json"))) == 2


# -- models add: the preprocessing spec ----------------------------------------------------------------

@pytest.mark.parametrize("spec_bytes, expected", [
    (b"spacing_mm: 1.0\ninput_size: [0, 16, 16]\naxes: SPL\nintensity: {kind: scale_range, a_min: -1024, "
     b"a_max: 2048, b_min: 0, b_max: 1, clip: false}\n", "input_size"),
    (b"spacing_mm: \xff\n", "UTF-8"),
    (b"spacing_mm: [1.0\n", "not valid YAML"),
], ids=["input_size 0", "not UTF-8", "YAML syntax"])
def test_models_add_with_a_bad_preprocessing_spec_is_one_line(data, tmp_path, capsys, spec_bytes, expected):
    import torch

    from radassets_tests.standins import TinyEncoder

    network = tmp_path / "tiny.pt"
    torch.jit.script(TinyEncoder()).save(str(network))
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(spec_bytes)
    code, _, err = cli(capsys, "models", "add", "tiny", "--torchscript", str(network), "--preprocessing", str(spec))
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (data / "models" / "tiny.yaml").exists()
