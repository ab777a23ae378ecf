"""What the imaging steps leave on disk: outputs readable by collaborators (the mode follows the umask), and
no temporary files of killed runs after a rerun, which gives the same bytes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from radassets import datasets
from radassets.idc.cohorts import cohort_for, write_cohort
from radassets.idc.dicom import fetch_dataset_dicom
from radassets.demo import DemoSpec, ensure_demo_source
from radassets.imaging.pipeline import run_patches, run_seeds, run_volumes
from radassets.layout import Layout
from radassets.storage import atomic_write_text
from radassets_tests.conftest import SMALL_DEMO_SPEC

STEPS = ("volumes", "seeds", "patches")


def with_umask(mask: int, work):
    previous = os.umask(mask)
    try:
        return work()
    finally:
        os.umask(previous)


def imaging_steps(layout: Layout) -> None:
    definition = datasets.get("demo_v1")
    run_volumes(definition, layout)
    run_seeds(definition, layout)
    run_patches(definition, layout)


def outputs(layout: Layout) -> dict[Path, bytes]:
    return {p: p.read_bytes() for step in STEPS for p in sorted(layout.asset_dir(step, "demo_v1").rglob("*"))
            if p.is_file()}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_an_atomic_write_has_the_mode_of_a_plain_write(tmp_path, umask, expected):
    path = with_umask(umask, lambda: atomic_write_text(tmp_path / "out.txt", "x"))
    assert mode(path) == expected


def test_outputs_follow_the_umask_and_a_rerun_removes_stale_temporaries(demo_layout):
    layout = demo_layout
    definition = datasets.get("demo_v1")
    ensure_demo_source(definition, layout, DemoSpec(**SMALL_DEMO_SPEC))
    cohort = cohort_for(definition, layout)
    write_cohort(cohort, layout)
    assert not fetch_dataset_dicom(definition, cohort, layout).failed
    with_umask(0o022, lambda: imaging_steps(layout))
    first = outputs(layout)
    assert len(first) > 20
    assert {path.name: mode(path) for path in first if mode(path) != 0o644} == {}
    # What kill -9 leaves: atomic-write temporaries in each step's folders (330 MB of them at LUNG1 scale).
    # A killed patch writer leaves zarr's "<chunk>.<uuid hex>.partial" beside the chunk (radassets.imaging.patch_store).
    stale = [layout.asset_dir("patches", "demo_v1") / ".patches.parquet.k3x9q2.tmp",
             layout.asset_dir("patches", "demo_v1") / "patches.zarr" / "masks" / "c" / "1" / "0" / "0"
             / "0.0123456789abcdef0123456789abcdef.partial",
             layout.asset_dir("seeds", "demo_v1") / ".seeds.parquet.zz11yy.tmp",
             layout.asset_dir("volumes", "demo_v1") / "ct" / ".half.nrrd.4f4f4f.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 4096)
    with_umask(0o002, lambda: imaging_steps(layout))
    assert [p for p in stale if p.exists()] == []
    again = outputs(layout)
    assert again.keys() == first.keys()
    # Byte-identical, the volumes' QC table and manifest included (they record no timing, nor what was reused).
    assert [p.name for p in first if again[p] != first[p]] == []
    patches = layout.asset_dir("patches", "demo_v1")
    chunk = patches / "patches.zarr" / "patches" / "c" / "0" / "0" / "0" / "0"
    assert mode(chunk) == mode(patches / "manifest.json") == 0o664  # written again under 002
