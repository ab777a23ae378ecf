"""The command line through click's CliRunner: the same ``cli.main`` the console script runs, in this process.

Help on every group and command, usage errors and user errors as one line with status 2, and the
output of the commands a script reads (``--json``). The console script itself, its interrupts and
exit statuses as a shell sees them, are tested through subprocesses in radassets_tests/test_cli.py,
test_user_input.py and defs/test_run_reliability.py.
"""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner, Result

from radassets.cli import cli

GROUPS = sorted(cli.commands)
COMMANDS = [(group, name) for group in GROUPS for name in sorted(cli.commands[group].commands)]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def one_error_line(result: Result) -> str:
    """The single line a refused command prints on stderr, with status 2 and nothing on stdout."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("radassets: error: "), result.stderr
    assert "Traceback" not in result.output and not result.stdout
    return lines[0]


def test_the_groups_are_the_documented_ones():
    assert GROUPS == ["cohort", "datasets", "demo", "dicom", "evaluate", "imaging", "lineage", "models", "pipeline"]


def test_help_lists_every_group():
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: radassets [OPTIONS] COMMAND")
    for group in GROUPS:
        assert f"\n  {group} " in result.stdout, group


@pytest.mark.parametrize("group", GROUPS)
def test_group_help_lists_its_commands(group):
    result = invoke(group, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: radassets {group} [OPTIONS] COMMAND")
    for name in cli.commands[group].commands:
        assert f"\n  {name} " in result.stdout, name


@pytest.mark.parametrize("group, name", COMMANDS)
def test_command_help(group, name):
    result = invoke(group, name, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: radassets {group} {name} ")
    command = cli.commands[group].commands[name]
    assert command.help and " ".join(command.help.split()[:3]) in " ".join(result.stdout.split())


def test_a_group_without_its_command_shows_its_help_with_status_2():
    result = invoke("models")
    assert result.exit_code == 2 and "Usage: radassets models" in result.stderr and "backfill" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["cohort", "show"], "Missing argument 'DATASET_VERSION'."),
    (["datasets", "list", "--jsn"], "No such option '--jsn'. Did you mean '--json'?"),
    (["nope"], "No such command 'nope'."),
    (["lineage", "export"], "Missing option '--openlineage'."),
    (["models", "add", "m", "--id-kind", "patient"], "Invalid value for '--id-kind': 'patient' is not one of"),
    (["evaluate", "scores", "--horizon-days", "two years"], "Invalid value for '--horizon-days': 'two years' is not"),
    (["evaluate", "scores", "--threshold", "high"], "Invalid value for '--threshold': 'high' is not a valid float"),
])
def test_a_usage_error_is_one_line_with_status_2(args, message):
    line = one_error_line(invoke(*args))
    assert message in line, line
    assert line.endswith("--help)"), line  # where to look: the help of the command that refused it


def test_a_user_error_is_one_line_with_status_2():
    line = one_error_line(invoke("cohort", "show", "no_such_version"))
    assert line.startswith("radassets: error: unknown dataset version 'no_such_version'"), line
    assert "nsclc_radiomics_idc_v16" in line  # the known ones


@pytest.mark.parametrize("query", ["DELETE FROM runs", "COPY runs TO 'runs.csv'", "SELECT 1; SELECT 2", ""])
def test_lineage_sql_refuses_what_is_not_one_query(storage, query):
    line = one_error_line(invoke("lineage", "sql", query))
    assert "lineage sql runs one query (SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE), not: " in line, line
    assert not storage.exists()  # refused before the store is opened


def test_datasets_list_json_parses():
    result = invoke("datasets", "list", "--json")
    assert result.exit_code == 0, result.output
    definitions = json.loads(result.stdout)
    assert definitions["demo_v1"]["source"]["kind"] == "demo"
    assert definitions["nsclc_radiomics_idc_v16"]["source"]["idc_version"] == 16


def test_datasets_list_one_line_each():
    result = invoke("datasets", "list")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split()[1:3] for line in result.stdout.splitlines()}
    assert lines["nsclc_radiomics_idc_v16"] == ["idc", "v16"] and lines["demo_v1"] == ["demo", "v1"]


def test_models_list():
    result = invoke("models", "list")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert rows["radiomics"] == "radiomics"
    listed = json.loads(invoke("models", "list", "--json").stdout)
    assert set(listed) == set(rows) and listed["radiomics"]["kind"] == "radiomics"


def test_repeatable_options_are_multiple():
    command = cli.commands["evaluate"].commands["scores"]
    multiple = {p.name for p in command.params if isinstance(p, click.Option) and p.multiple}
    assert multiple == {"event_value", "censored_value"}
