"""The imaging steps (volumes → seeds → patches) on an object-store root (moto's S3 server, the real s3fs): workers
of a process pool read their inputs from the bucket and write their outputs to it, and every output file is
byte-identical, at the same name, to a run on a local root; a refused series is recorded the same; a rerun reuses
the finished volumes. The records name files relative to the root."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import cast

import pyarrow.parquet as pq
import pytest
from upath import UPath

from radassets import datasets
from radassets.dataplane import Compute
from radassets.demo import DemoSpec, ensure_demo_source
from radassets.idc.cohorts import cohort_for, write_cohort
from radassets.idc.dicom import fetch_dataset_dicom, read_manifest
from radassets.imaging.pipeline import run_patches, run_seeds, run_volumes
from radassets.layout import Layout
from radassets.storage import atomic_write_json
from radassets_tests.conftest import SMALL_DEMO_SPEC, copy_to_store

# moto's S3 server with whole steps on it: minutes, so with the other services tests (make test-services).
pytestmark = pytest.mark.services

DV = "demo_v1"
STEPS = ("volumes", "seeds", "patches")
# The series of two patients, to keep the test short: DEMO-001's two CT scans (test and retest), each with a
# RTSTRUCT; DEMO-003's CT with a SEG.
PATIENTS = ("DEMO-001", "DEMO-003")


def local_outputs(layout: Layout) -> dict[str, bytes]:
    return {layout.relative(p): p.read_bytes() for step in STEPS for p in sorted(layout.asset_dir(step, DV).rglob("*"))
            if p.is_file()}


def store_outputs(layout: Layout) -> dict[str, bytes]:
    """Every object under the steps' folders, listed by the store itself (not through a cached listing)."""
    out = {}
    for step in STEPS:
        folder = cast(UPath, layout.asset_dir(step, DV))
        for key in sorted(folder.fs.find(folder.path)):
            out[f"{step}/{DV}/{key[len(folder.path):].lstrip('/')}"] = folder.fs.cat_file(key)
    return out


def run_steps(definition, layout: Layout, compute: Compute) -> set[str]:
    """volumes → seeds → patches, each on ``compute``; where the volumes' tasks ran."""
    places = set(run_volumes(definition, layout, compute=compute).places)
    run_seeds(definition, layout, compute=compute)
    run_patches(definition, layout, compute=compute)
    return places


@pytest.fixture
def local_inputs(demo_layout) -> tuple[Layout, str, str]:
    """The demo's cohort and DICOM on a local root; the dicom manifest cut to ``PATIENTS``' series and naming
    their folders relative to the root (as the dicom step records them); one CT series damaged (a truncated
    slice, written as a new file: the series' files are hard links into the shared demo). Returns the layout,
    the damaged series and its damaged file's name."""
    layout = demo_layout
    definition = datasets.get(DV)
    ensure_demo_source(definition, layout, DemoSpec(**SMALL_DEMO_SPEC))
    cohort = cohort_for(definition, layout)
    write_cohort(cohort, layout)
    assert not fetch_dataset_dicom(definition, cohort, layout).failed
    manifest = read_manifest(DV, layout)
    manifest["series"] = [dict(r, folder=layout.relative(r["folder"])) for r in manifest["series"]
                          if r["PatientID"] in PATIENTS]
    atomic_write_json(layout.dicom_manifest(DV), manifest)
    damaged = next(r for r in manifest["series"] if r["Modality"] == "CT")
    victim = sorted((layout.root / damaged["folder"]).glob("*.dcm"))[1]
    data = victim.read_bytes()
    victim.unlink()
    victim.write_bytes(data[:600])
    return layout, damaged["SeriesInstanceUID"], layout.relative(victim)


def test_the_imaging_steps_on_s3_write_the_bytes_of_a_local_root(local_inputs, s3_root):
    layout, damaged, damaged_file = local_inputs
    definition = datasets.get(DV)
    run_steps(definition, layout, Compute(workers=1))
    expected = local_outputs(layout)

    series = [r["folder"] for r in read_manifest(DV, layout)["series"]]
    copy_to_store(layout.root, s3_root, "cohort", f"dicom/{DV}", *series, "demo/truth")
    store = Layout(s3_root)
    places = run_steps(definition, store, Compute(workers=2))
    assert places and all(p.startswith("pid ") and p != f"pid {os.getpid()}" for p in places)  # pool processes
    written = store_outputs(store)

    assert sorted(written) == sorted(expected)
    assert {"volumes/demo_v1/qc.parquet", "volumes/demo_v1/manifest.json", "seeds/demo_v1/seeds.parquet",
            "seeds/demo_v1/manifest.json", "patches/demo_v1/patches.parquet", "patches/demo_v1/manifest.json",
            "patches/demo_v1/montage.png", "patches/demo_v1/patches.zarr/zarr.json",
            "patches/demo_v1/patches.zarr/patches/c/0/0/0/0"} <= set(expected)
    assert [name for name in sorted(expected) if written[name] != expected[name]] == []

    # The records name the artifacts relative to the root; the refused series names its damaged file so too.
    qc = pq.read_table(layout.asset_dir("volumes", DV) / "qc.parquet").to_pylist()
    assert {r["path"] for r in qc if r["status"] == "ok" and r["Modality"] == "CT"} == \
        {f"volumes/{DV}/ct/{r['crdc_series_uuid']}.nrrd" for r in qc if r["status"] == "ok" and r["Modality"] == "CT"}
    [refused] = [r for r in qc if r["SeriesInstanceUID"] == damaged]
    assert refused["status"] == "failed" and refused["code"] == "unreadable_file"
    assert damaged_file in refused["message"] and str(layout.root) not in refused["message"]
    seeds = pq.read_table(layout.seeds_table(DV)).to_pylist()
    assert seeds and all(s["ct_path"].startswith(f"volumes/{DV}/ct/") and s["mask_path"].startswith(f"volumes/{DV}/masks/")
                         for s in seeds)

    # A rerun reuses the finished volumes on the store as on a local root, and writes the same bytes.
    reused_here = run_volumes(definition, layout).reused
    reused_there = run_volumes(definition, store).reused
    assert reused_there == reused_here == sum(r["status"] == "ok" and r["Modality"] == "CT" for r in qc) > 0
    assert store_outputs(store) == written


def test_a_rerun_reads_volumes_recorded_with_absolute_paths(local_inputs):
    """A volumes partition written by an earlier version names its files with absolute paths: a rerun still reuses
    them, and the seeds still read them; what is written now names them relative to the root."""
    layout, _, _ = local_inputs
    definition = datasets.get(DV)
    run_volumes(definition, layout)
    manifest_path = layout.manifest("volumes", DV)
    manifest = json.loads(manifest_path.read_text())
    for row in manifest["qc"]:
        if row.get("path"):
            row["path"] = str(layout.root / row["path"])
    for row in manifest["segments"]:
        row["ct_path"], row["mask_path"] = str(layout.root / row["ct_path"]), str(layout.root / row["mask_path"])
    atomic_write_json(manifest_path, manifest)
    assert Path(manifest["segments"][0]["mask_path"]).is_absolute()

    seeds = run_seeds(definition, layout).seeds
    assert seeds and all(s["mask_path"].startswith(f"volumes/{DV}/masks/") for s in seeds)
    report = run_volumes(definition, layout)
    assert report.reused == report.ct_converted > 0
    assert {r["path"] for r in report.qc if r.get("path")} == \
        {f"volumes/{DV}/ct/{r['crdc_series_uuid']}.nrrd" for r in report.qc if r.get("path")}
