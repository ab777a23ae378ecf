"""Where the demo is generated: only a demo collection this project made, an empty folder or a new one
is ever replaced; a user's folder or ``$RADASSETS_HOME`` is an error naming it, with nothing deleted.
A generation killed half-way leaves the previous collection whole. An invalid ``RADASSETS_DEMO_SPEC``
is one line naming the variable."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from radassets.demo import DemoError, DemoSpec, ensure_demo_collection, generate_demo_collection
from radassets.demo.generator import MANIFEST, SPEC_ENV
from radassets.settings import Settings
from radassets_tests.conftest import REPO
from radassets_tests.test_cli import run_cli

TINY = DemoSpec(n_patients=1, n_added_in_release_2=0, n_revised_in_release_2=0, n_test_retest=0)
TINY_ENV = {SPEC_ENV: json.dumps({"n_patients": 1, "n_added_in_release_2": 0, "n_revised_in_release_2": 0,
                                  "n_test_retest": 0})}


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def a_users_folder(path: Path) -> Path:
    (path / "thesis").mkdir(parents=True)
    (path / "thesis" / "chapter1.md").write_text("months of work")
    (path / "notes.txt").write_text("my notes")
    return path


def a_radassets_home(path: Path) -> Path:
    """Artifacts and the lineage store, as materializing leaves them (their content does not matter here)."""
    for name, text in {"lineage/lineage.duckdb": "store", "lineage/events/merged/e1.json": "{}",
                       "steps/volumes/demo_v1/manifest.json": "{}", "cohort/demo_v1/cohort.lock.json": "{}"}.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def test_generate_refuses_a_folder_that_is_not_a_demo_collection(tmp_path):
    folder = a_users_folder(tmp_path / "mine")
    before = tree(folder)
    with pytest.raises(DemoError, match=f"{folder} is not a demo collection .* is not empty: it is left as it is"):
        generate_demo_collection(folder, TINY, workers=1)
    assert tree(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no partial collection beside it either


def test_ensure_refuses_it_too(tmp_path):
    folder = a_users_folder(tmp_path / "mine")
    before = tree(folder)
    with pytest.raises(DemoError, match="is not a demo collection"):
        ensure_demo_collection(folder, TINY)
    assert tree(folder) == before


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("make", [a_users_folder, a_radassets_home], ids=["users_folder", "radassets_home"])
def test_demo_generate_root_never_deletes_other_files(tmp_path, make, force):
    folder = make(tmp_path / "folder")
    before = tree(folder)
    args = ["demo", "generate", "--root", str(folder)] + (["--force"] if force else [])
    out = run_cli(*args, env={"RADASSETS_HOME": str(folder), **TINY_ENV})
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"radassets: error: {folder} is not a demo collection"), out.stderr
    assert tree(folder) == before


def test_a_file_is_not_replaced(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_text("not a folder")
    with pytest.raises(DemoError, match=f"{path} is a file, not a demo collection"):
        generate_demo_collection(path, TINY, workers=1)
    assert path.read_text() == "not a folder"


def test_an_empty_or_missing_folder_and_a_demo_collection_are_replaced(tmp_path):
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "empty", tmp_path / "new" / "demo"):
        assert generate_demo_collection(root, TINY, workers=1).counts["patients_release_1"] == 1
        assert json.loads((root / MANIFEST).read_text())["spec"]["n_patients"] == 1
    # A collection made by another spec is regenerated in place, with or without force.
    other = DemoSpec(n_patients=2, n_added_in_release_2=0, n_revised_in_release_2=0, n_test_retest=0)
    assert ensure_demo_collection(tmp_path / "empty", other).counts["patients_release_1"] == 2
    assert generate_demo_collection(tmp_path / "empty", TINY, workers=1).counts["patients_release_1"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "new"]  # no .partial or .old left


def test_a_link_to_a_collection_is_followed(tmp_path):
    target = generate_demo_collection(tmp_path / "real", TINY, workers=1).root
    (tmp_path / "link").symlink_to(target)
    other = DemoSpec(n_patients=2, n_added_in_release_2=0, n_revised_in_release_2=0, n_test_retest=0)
    generate_demo_collection(tmp_path / "link", other, workers=1)
    assert (tmp_path / "link").is_symlink()
    assert json.loads((target / MANIFEST).read_text())["spec"]["n_patients"] == 2


def _complete(root: Path) -> dict:
    """The collection's manifest, after checking every file it lists has its recorded hash."""
    manifest = json.loads((root / MANIFEST).read_text())
    for name, digest in manifest["sha256"].items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name
    return manifest


def test_a_generation_killed_half_way_leaves_the_previous_collection(tmp_path):
    root = generate_demo_collection(tmp_path / "demo", TINY, workers=1).root
    before = tree(root)
    bigger = {"n_patients": 4, "n_added_in_release_2": 0, "n_revised_in_release_2": 0, "n_test_retest": 0}
    process = subprocess.Popen([sys.executable, "-m", "radassets.cli", "demo", "generate", "--root", str(root), "--force"],
                               cwd=REPO, env={**os.environ, SPEC_ENV: json.dumps(bigger)}, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / ".demo.partial"
    try:
        while not partial.exists() and process.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the CLI and its worker processes
        process.wait()
    # Killed while writing beside it (or, had it finished first, after the swap): never a half collection.
    manifest = _complete(root)
    if manifest["spec"]["n_patients"] == 1:
        assert tree(root) == before
    # The next run removes the killed run's partial collection and completes.
    assert generate_demo_collection(root, DemoSpec(**bigger), workers=1).counts["patients_release_1"] == 4
    assert _complete(root)["spec"]["n_patients"] == 4 and not partial.exists()


# -- RADASSETS_DEMO_SPEC ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("{", "is not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"n_patient": 5}', "unknown fields 'n_patient'; known: n_patients"),
    ('{"n_patients": 0}', "n_patients must be in 1..2000, got 0"),
    ('{"n_patients": 100000}', "n_patients must be in 1..2000, got 100000"),
    ('{"n_patients": 1.5}', "n_patients must be a whole number, got 1.5"),
    ('{"n_patients": "60"}', "n_patients must be a whole number, got '60'"),
    ('{"n_test_retest": true}', "n_test_retest must be a whole number, got True"),
    ('{"seed": -1}', "seed must be in 0..9223372036854775807, got -1"),
    ('{"n_patients": 5, "n_test_retest": 4, "n_revised_in_release_2": 4}', "must not exceed n_patients \\(5\\)"),
    ('{"n_patients": null}', "n_patients must be a whole number, got None"),
])
def test_an_invalid_spec_names_the_variable(monkeypatch, text, message):
    monkeypatch.setenv(SPEC_ENV, text)
    with pytest.raises(DemoError, match=f"{SPEC_ENV} .*{message}") as err:
        Settings.load().demo()
    assert "\n" not in str(err.value)


def test_a_valid_spec_from_the_environment(monkeypatch):
    monkeypatch.setenv(SPEC_ENV, '{"n_patients": 120, "n_test_retest": 20}')
    assert Settings.load().demo() == DemoSpec(n_patients=120, n_test_retest=20)


def test_an_invalid_spec_is_one_line_exit_2(tmp_path):
    out = run_cli("demo", "generate", "--root", str(tmp_path / "demo"), env={SPEC_ENV: '{"n_patients": -3}'})
    assert out.returncode == 2
    assert out.stderr.strip() == (f"radassets: error: {SPEC_ENV} is not a valid demo spec: n_patients must be in "
                                  "1..2000, got -3")
    assert not (tmp_path / "demo").exists()
