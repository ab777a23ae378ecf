"""``radassets.layout``: every artifact's path under the root, the same for a local folder and an object-store
URL (fsspec's in-memory file system here, a real one, no mock), "step finished?" answered by the file a step
writes last, and the atomic writers on both."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from upath import UPath

from radassets.layout import Layout, StepInputMissing, StorageRootError
from radassets.storage import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
    sha256_file,
)

# (what, the call, the path under the root): every asset's folder and record, and the named places.
EXPECTED = [
    ("cohort folder", lambda l: l.asset_dir("cohort", "demo_v1"), "cohort/demo_v1"),
    ("cohort lockfile", lambda l: l.cohort_lockfile("demo_v1"), "cohort/demo_v1/cohort.lock.json"),
    ("dicom manifest", lambda l: l.dicom_manifest("demo_v1"), "dicom/demo_v1/manifest.json"),
    ("dicom series", lambda l: l.dicom_series_dir(), "dicom/series"),
    ("volumes", lambda l: l.manifest("volumes", "demo_v1"), "volumes/demo_v1/manifest.json"),
    ("seeds", lambda l: l.record("seeds", "demo_v1"), "seeds/demo_v1/manifest.json"),
    ("seeds table", lambda l: l.seeds_table("demo_v1"), "seeds/demo_v1/seeds.parquet"),
    ("patches", lambda l: l.record("patches", "demo_v1"), "patches/demo_v1/manifest.json"),
    ("embeddings of a model", lambda l: l.record("embeddings", "demo_v1", "radiomics"),
     "embeddings/demo_v1/radiomics/manifest.json"),
    ("embeddings of every model", lambda l: l.asset_dir("embeddings", "demo_v1"), "embeddings/demo_v1"),
    ("evaluation", lambda l: l.record("evaluation", "demo_v1", "radiomics"), "evaluation/demo_v1/radiomics/metrics.json"),
    ("comparison", lambda l: l.record("comparison", "demo_v1"), "comparison/demo_v1/metrics.json"),
    ("seed stability", lambda l: l.record("seed_stability", "demo_v1", "radiomics"),
     "stability/demo_v1/radiomics/metrics.json"),
    ("hosny2018_figure2", lambda l: l.record("hosny2018_figure2"), "reports/hosny2018_figure2/metrics.json"),
    ("a partition as its dimensions", lambda l: l.partition_dir("embeddings", {"dataset_version": "demo_v2",
                                                                              "model": "fmcib"}),
     "embeddings/demo_v2/fmcib"),
    ("unpartitioned as dimensions", lambda l: l.partition_dir("hosny2018_figure2", None), "reports/hosny2018_figure2"),
    ("a report", lambda l: l.report_dir("mine"), "reports/mine"),
    ("demo collection", lambda l: l.demo_root(), "demo"),
    ("local source", lambda l: l.local_root("my_study"), "local/my_study"),
]


@pytest.mark.parametrize("what, path_of, relative", EXPECTED, ids=[e[0] for e in EXPECTED])
def test_every_path_under_a_local_root(tmp_path, what, path_of, relative):
    path = path_of(Layout(tmp_path))
    assert type(path) is type(Path())  # a plain local path: what SimpleITK, numpy and DuckDB open
    assert path == tmp_path / relative


@pytest.mark.parametrize("what, path_of, relative", EXPECTED, ids=[e[0] for e in EXPECTED])
def test_the_same_paths_under_an_object_store_url(what, path_of, relative):
    root = "memory://radassets-layout-test/prefix"
    path = path_of(Layout(root))
    assert isinstance(path, UPath) and not isinstance(path, Path)
    assert str(path) == f"{root}/{relative}"


def test_local_state_and_weights(tmp_path):
    local = Layout(tmp_path)
    assert (local.lineage_dir(), local.locks_dir(), local.weights_dir()) == (
        tmp_path / "lineage", tmp_path / ".locks", tmp_path / "weights")
    assert local.lock_file("embeddings", "demo_v1|radiomics") == tmp_path / ".locks" / "embeddings" / "demo_v1+radiomics.lock"
    assert local.lock_file("hosny2018_figure2", None) == tmp_path / ".locks" / "hosny2018_figure2" / "all.lock"
    assert Layout(tmp_path, weights_dir=tmp_path / "w").weights_dir() == tmp_path / "w"
    assert Layout(f"file://{tmp_path}").root == tmp_path  # a file:// URL is the local folder
    # An object store cannot hold flock locks or a DuckDB file: those stay on this machine, in a folder of their own.
    remote = Layout("memory://radassets-layout-test/prefix", state_dir=tmp_path / "state")
    assert isinstance(remote.lineage_dir(), Path) and remote.lineage_dir() == tmp_path / "state" / "lineage"
    assert remote.lock_file("cohort", "demo_v1") == tmp_path / "state" / ".locks" / "cohort" / "demo_v1.lock"
    # Series are fetched and verified in place under a local root, on this machine under a URL root.
    assert local.dicom_work_dir() == local.dicom_series_dir()
    assert remote.dicom_work_dir() == tmp_path / "state" / "dicom" / "series"


@pytest.mark.parametrize("root", ["local", "memory"])
def test_a_step_is_finished_when_its_record_written_last_is_there(tmp_path, root):
    layout = Layout(tmp_path if root == "local" else f"memory://radassets-layout-{uuid.uuid4().hex}")
    assert not layout.is_finished("patches", "demo_v1")
    atomic_write_json(layout.asset_dir("patches", "demo_v1") / "patches.parquet", {"not": "the record"})
    assert not layout.is_finished("patches", "demo_v1")  # outputs without their manifest: unfinished
    with pytest.raises(StepInputMissing, match=r"embeddings of 'demo_v1' needs 'patches', which is not materialized "
                                               r"\(no .*patches/demo_v1/manifest.json\); materialize 'patches' first"):
        layout.require_finished("patches", "demo_v1", "embeddings")
    atomic_write_json(layout.manifest("patches", "demo_v1"), {"content_hash": "x"})
    assert layout.is_finished("patches", "demo_v1")
    assert json.loads(layout.require_finished("patches", "demo_v1", "embeddings").read_text()) == {"content_hash": "x"}
    atomic_write_json(layout.cohort_lockfile("demo_v1"), {"series": []})
    assert layout.is_finished("cohort", "demo_v1") and not layout.is_finished("evaluation", "demo_v1", "radiomics")


def test_an_atomic_write_to_an_object_store_is_one_put_of_the_whole_object():
    """On an object store a write is one put: the object appears whole, with no temporary object beside it."""
    bucket = f"radassets-layout-{uuid.uuid4().hex}"
    layout = Layout(f"memory://{bucket}/prefix")
    fs = layout.root.fs  # type: ignore[attr-defined]
    puts = []
    original = fs.pipe_file

    def counted(path, value, *args, **kwargs):
        puts.append(path)
        return original(path, value, *args, **kwargs)

    fs.pipe_file = counted  # the real in-memory file system, its calls counted
    try:
        target = layout.manifest("volumes", "demo_v1")
        atomic_write_text(target, "first\n")
        atomic_write_json(target, {"b": 1, "a": [1, 2]})
    finally:
        del fs.pipe_file
    assert puts == [f"/{bucket}/prefix/volumes/demo_v1/manifest.json"] * 2
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'  # as the local writer formats it
    assert fs.ls(f"/{bucket}/prefix/volumes/demo_v1", detail=False) == [f"/{bucket}/prefix/volumes/demo_v1/manifest.json"]
    assert sha256_file(target) == hashlib.sha256(target.read_bytes()).hexdigest()  # read back through fsspec
    assert remove_stale_temporaries(layout.asset_dir("volumes", "demo_v1")) == []  # nothing partial to remove


def test_atomic_path_uploads_a_finished_local_file_once(tmp_path):
    """A third-party writer (parquet, NRRD) writes a local temporary file; only a finished one is uploaded."""
    layout = Layout(f"memory://radassets-layout-{uuid.uuid4().hex}")
    target = layout.seeds_table("demo_v1")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("the writer failed")
    assert not target.exists()  # nothing of a failed write reaches the store
    with atomic_path(target) as tmp:
        assert isinstance(tmp, Path)
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and not tmp.exists()


def test_local_writes_are_byte_identical_through_the_layout(tmp_path):
    """The layout changes where, never what: the same bytes as a write to the plain path."""
    atomic_write_json(Layout(tmp_path / "a").manifest("seeds", "demo_v1"), {"x": [1.5, None]})
    atomic_write_json(tmp_path / "b" / "seeds" / "demo_v1" / "manifest.json", {"x": [1.5, None]})
    assert (tmp_path / "a" / "seeds" / "demo_v1" / "manifest.json").read_bytes() == \
        (tmp_path / "b" / "seeds" / "demo_v1" / "manifest.json").read_bytes()


def test_what_only_a_local_root_can_hold_is_refused_under_a_url_root_with_the_root_named(tmp_path):
    """A local source's index of this machine's files (``datasets add-local``) cannot live in a bucket: refused
    before anything is written, with one line."""
    Layout(tmp_path).require_local("radassets datasets add-local")  # a local root: allowed
    remote = Layout("memory://radassets-layout-steps/prefix", state_dir=tmp_path / "state")
    with pytest.raises(StorageRootError, match=r"radassets datasets add-local needs a local artifact root; "
                                               r"memory://radassets-layout-steps/prefix is not one"):
        remote.require_local("radassets datasets add-local")


@pytest.mark.parametrize("root", ["local", "memory://radassets-layout-relative/prefix"])
def test_records_name_artifacts_relative_to_the_root_and_resolve_back(root, tmp_path):
    layout = Layout(tmp_path / "home" if root == "local" else root)
    path = layout.asset_dir("volumes", "demo_v1") / "ct" / "u.nrrd"
    assert layout.relative(path) == "volumes/demo_v1/ct/u.nrrd"
    assert str(layout.resolve("volumes/demo_v1/ct/u.nrrd")) == str(path)
    assert str(layout.resolve(str(path))) == str(path)  # as an earlier version recorded it
    assert layout.relative("/data/clinic/1.dcm") == "/data/clinic/1.dcm"  # outside the root: as it is
    assert layout.resolve("/data/clinic/1.dcm") == Path("/data/clinic/1.dcm")
