"""A Layout on an S3-compatible store (moto) sees what other processes wrote after it listed a folder."""

from __future__ import annotations

import subprocess
import sys

from radassets.layout import Layout


def test_a_file_written_by_another_process_after_a_listing_is_found(s3_root):
    layout = Layout(s3_root)
    folder = layout.asset_dir("volumes", "v1")
    (folder / "a.nrrd").write_bytes(b"a")
    assert [p.name for p in folder.iterdir()] == ["a.nrrd"]  # a listing, which s3fs would cache
    writer = f"from radassets.layout import Layout; (Layout({s3_root!r}).asset_dir('volumes', 'v1') / 'b.nrrd').write_bytes(b'b')"
    subprocess.run([sys.executable, "-c", writer], check=True, timeout=120)
    assert (folder / "b.nrrd").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["a.nrrd", "b.nrrd"]
