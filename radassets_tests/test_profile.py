"""radassets.profile: one JSON line per phase when enabled, nothing at all when not (bench/demo.py reads them)."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from radassets import profile
from radassets.settings import CONFIG_ENV, Settings


@pytest.fixture(autouse=True)
def off_afterwards():
    yield
    profile.enable(None)


def test_disabled_phases_write_nothing(tmp_path):
    profile.enable(None)
    with profile.phase("function", asset="volumes"):
        pass
    profile.mark("noticed")
    assert not profile.enabled()
    assert list(tmp_path.iterdir()) == []


def test_enabled_phases_append_one_line_each_with_their_labels(tmp_path):
    path = tmp_path / "sub" / "profile.jsonl"
    profile.enable(path)
    with profile.phase("function", asset="volumes", partition="demo_v1"):
        pass
    with pytest.raises(ValueError), profile.phase("recording", asset="volumes"):
        raise ValueError("the step's own error goes on")
    profile.mark("command: noticed the run's end", run_id="r1")
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert {k: first[k] for k in ("phase", "asset", "partition")} == {"phase": "function", "asset": "volumes",
                                                                       "partition": "demo_v1"}
    assert first["seconds"] >= 0 and first["start"] > 0 and isinstance(first["pid"], int)
    assert "error" not in first
    assert (second["phase"], second["error"]) == ("recording", "ValueError")
    assert (third["phase"], third["run_id"]) == ("command: noticed the run's end", "r1")
    assert profile.read(path) == [first, second, third]
    assert profile.read(tmp_path / "missing.jsonl") == []


def _write_lines(path: str, n: int) -> None:
    profile.enable(path)
    for i in range(n):
        with profile.phase("item", asset="patches", i=i, padding="x" * 200):
            pass


def test_processes_sharing_one_file_never_interleave_lines(tmp_path):
    path = tmp_path / "profile.jsonl"
    processes = [multiprocessing.get_context("spawn").Process(target=_write_lines, args=(str(path), 200))
                 for _ in range(3)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
        assert p.exitcode == 0
    lines = profile.read(path)  # every line parses
    assert len(lines) == 600
    assert sorted(line["i"] for line in lines) == sorted(list(range(200)) * 3)


def test_an_unwritable_profile_does_not_fail_the_phase(tmp_path):
    profile.enable(tmp_path)  # a folder: os.open fails
    with profile.phase("function"):
        value = 1
    assert value == 1


def test_the_profile_setting_comes_from_radassets_profile(tmp_path, monkeypatch):
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.delenv("RADASSETS_PROFILE", raising=False)
    assert Settings.load(cwd=tmp_path, venv=tmp_path).profile is None
    monkeypatch.setenv("RADASSETS_PROFILE", "out/profile.jsonl")
    monkeypatch.chdir(tmp_path)
    assert Settings.load(cwd=tmp_path, venv=tmp_path).profile == Path(tmp_path / "out" / "profile.jsonl").resolve()
