"""Local copies of artifact-store files (``radassets.staging``), on fsspec's in-memory store and on local paths."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from upath import UPath

from radassets.staging import local_file, local_files, put_folder


def memory_root() -> UPath:
    return UPath(f"memory://radassets-staging-{uuid.uuid4().hex}/root")


def test_local_paths_are_given_back_as_they_are(tmp_path):
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    with local_files([a, b]) as local:
        assert local == [a, b]


def test_remote_files_are_copied_in_order_and_removed_after_the_block():
    root = memory_root()
    paths = []
    for i, name in enumerate(["1.dcm", "2.dcm", "1.dcm"]):  # a name may repeat across folders
        path = root / f"s{i}" / name
        path.write_bytes(f"slice {i}".encode())
        paths.append(path)
    with local_files(paths) as local:
        assert all(isinstance(p, Path) and p.is_file() for p in local)
        assert [p.read_bytes() for p in local] == [b"slice 0", b"slice 1", b"slice 2"]
        assert [p.name for p in local] == ["1.dcm", "2.dcm", "1.dcm"]
        scratch = local[0].parent.parent
    assert not scratch.exists()


def test_one_remote_file(tmp_path):
    path = memory_root() / "volumes" / "ct.nrrd"
    path.write_bytes(b"NRRD0004")
    with local_file(path) as local:
        assert local.suffix == ".nrrd" and local.read_bytes() == b"NRRD0004"


def test_put_folder_writes_the_record_last(tmp_path):
    for name in ["_series.json", "a.dcm", "sub/b.dcm", "z.dcm"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    remote = memory_root() / "dicom" / "series" / "uuid"
    written = put_folder(tmp_path, remote, last="_series.json")
    assert [p.relative_to(remote).as_posix() for p in written] == ["a.dcm", "sub/b.dcm", "z.dcm", "_series.json"]
    assert (remote / "sub" / "b.dcm").read_text() == "sub/b.dcm"


def test_put_folder_refuses_a_local_target(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_text("a")
    with pytest.raises(ValueError, match="object store"):
        put_folder(tmp_path / "src", tmp_path / "dst")
