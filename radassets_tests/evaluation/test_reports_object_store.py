"""The steps after the patches on an ``s3://`` artifact root (moto's server, the real s3fs): embeddings, evaluation
and comparison read their inputs from the store and write their outputs there, the same bytes under the same names
as on a local root; the lineage readers give the same items from either root, and a figure on the store is traced
by its URL.

The inputs are made locally (the small demo up to its patches; for an evaluation with figures, embeddings of 30
patients written by ``write_embeddings``), copied to the store with ``copy_to_store``, and each step is run on
both roots."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radassets import datasets
from radassets.demo import DemoSpec, ensure_demo_source
from radassets.evaluation.compare_report import compare_models
from radassets.evaluation.figures import lineage_id_of
from radassets.evaluation.report import evaluate_model
from radassets.idc import download
from radassets.idc.cohorts import cohort_for, write_cohort
from radassets.idc.dicom import fetch_dataset_dicom
from radassets.idc.index import source_root
from radassets.imaging.pipeline import run_patches, run_seeds, run_volumes
from radassets.layout import Layout, as_path
from radassets.lineage import store
from radassets.lineage.items import output_record
from radassets.lineage.trace import trace
from radassets.models import registry
from radassets.models.embed import write_embeddings
from radassets.models.pipeline import run_model
from radassets_tests.conftest import SMALL_DEMO_SPEC, copy_to_store

# moto's S3 server with whole steps on it: minutes, so with the other services tests (make test-services).
pytestmark = pytest.mark.services

DEMO = "demo_v1"


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (local or on the store) by its path relative to it, with its bytes."""
    base = str(folder).rstrip("/") + "/"
    return {str(p)[len(base):]: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def evaluate(layout: Layout, model: str, dataset_version: str = DEMO):
    definition = datasets.get(dataset_version)
    return evaluate_model(definition, model, layout.asset_dir("embeddings", dataset_version, model),
                          layout.seeds_table(dataset_version), layout.asset_dir("evaluation", dataset_version, model),
                          source_root=source_root(definition, layout), layout=layout)


def compare(layout: Layout, dataset_version: str = DEMO):
    definition = datasets.get(dataset_version)
    return compare_models(definition, layout.asset_dir("evaluation", dataset_version),
                          layout.asset_dir("embeddings", dataset_version), layout.seeds_table(dataset_version),
                          layout.asset_dir("comparison", dataset_version), source_root=source_root(definition, layout),
                          layout=layout)


@pytest.fixture(scope="module")
def demo_patches(small_demo, tmp_path_factory) -> Layout:
    """A local root with the small demo's pipeline run up to its patches, and its radiomics embeddings."""
    home = tmp_path_factory.mktemp("local") / "home"
    home.mkdir()
    (home / "demo").symlink_to(small_demo)
    layout = Layout(home)
    definition = datasets.get(DEMO)
    ensure_demo_source(definition, layout, DemoSpec(**SMALL_DEMO_SPEC))
    cohort = cohort_for(definition, layout)
    write_cohort(cohort, layout)
    fetch_dataset_dicom(definition, cohort, layout, mirror=download.Mirror.local_folder(layout.demo_root() / "bucket"),
                        attempts=1)
    run_volumes(definition, layout)
    run_seeds(definition, layout)
    run_patches(definition, layout)
    run_model(DEMO, "radiomics", layout, device="cpu")
    return layout


def test_embeddings_evaluation_and_lineage_items_of_the_demo_on_s3_are_the_local_ones(demo_patches, s3_root):
    local, remote = demo_patches, Layout(s3_root)
    # The cohort lockfile too: the reports cite its collections.
    copy_to_store(local.root, s3_root, f"patches/{DEMO}", f"seeds/{DEMO}", "demo/truth", f"cohort/{DEMO}")
    (remote.demo_root() / "clinical.csv").write_bytes((local.demo_root() / "clinical.csv").read_bytes())

    report = run_model(DEMO, "radiomics", remote, device="cpu")
    assert report.out_dir == remote.asset_dir("embeddings", DEMO, "radiomics") and report.embedded > 0
    made_here = files_under(local.asset_dir("embeddings", DEMO, "radiomics"))
    made_there = files_under(remote.asset_dir("embeddings", DEMO, "radiomics"))
    assert sorted(made_there) == sorted(made_here) == ["embeddings.parquet", "manifest.json"]
    assert made_there == made_here  # the manifest too: it records no timing

    # Six patients: the endpoint is not evaluable, and metrics.json and the reports say so, the same on both roots.
    for layout in (local, remote):
        evaluate(layout, "radiomics")
        compare(layout)
    for asset, model in (("evaluation", "radiomics"), ("comparison", None)):
        here = files_under(local.asset_dir(asset, DEMO, model))
        assert files_under(remote.asset_dir(asset, DEMO, model)) == here
        assert {"metrics.json", "report.md", "report.html"} <= set(here)
    metrics = json.loads(files_under(local.asset_dir("evaluation", DEMO, "radiomics"))["metrics.json"])
    assert {k: v["path"] for k, v in metrics["inputs"].items()} == {
        "embeddings": f"embeddings/{DEMO}/radiomics/embeddings.parquet", "seeds": f"seeds/{DEMO}/seeds.parquet",
        "clinical": "demo/clinical.csv", "test_retest": "demo/truth/test_retest.csv"}

    for asset, partition in (("patches", {"dataset_version": DEMO}),
                             ("embeddings", {"dataset_version": DEMO, "model": "radiomics"}),
                             ("evaluation", {"dataset_version": DEMO, "model": "radiomics"}),
                             ("comparison", {"dataset_version": DEMO})):
        settings, items = output_record(remote, asset, partition)
        assert items == output_record(local, asset, partition)[1] and items, asset
        if asset != "embeddings":  # the embeddings manifest records the run's timings
            assert settings == output_record(local, asset, partition)[0], asset


def fake_inputs(layout: Layout, n: int = 30) -> None:
    """A dataset version's inputs to an evaluation with figures (``demo_v1``'s definition): two models' embeddings
    of ``n`` patients (3 of them re-scanned), the seeds' volumes, the clinical and test-retest tables."""
    rng = np.random.default_rng(3)
    patients = [f"P{i:03d}" for i in range(n)]
    event = np.array([i % 2 for i in range(n)])
    days = np.where(event == 1, rng.uniform(100, 700, n), rng.uniform(800, 2000, n)).round(1)
    demo = layout.demo_root()
    (demo / "truth").mkdir(parents=True)
    pd.DataFrame({"PatientID": patients, "survival_days": days, "event": event}).to_csv(demo / "clinical.csv",
                                                                                          index=False)
    scans = [(p, f"1.2.3.{i}", f"s{i}") for i, p in enumerate(patients)]
    retests = [(p, f"1.2.4.{i}", f"r{i}") for i, p in enumerate(patients[:3])]
    pd.DataFrame({"PatientID": patients[:3], "test_SeriesInstanceUID": [s[1] for s in scans[:3]],
                  "retest_SeriesInstanceUID": [r[1] for r in retests]}).to_csv(demo / "truth" / "test_retest.csv",
                                                                               index=False)
    rows = [{"seed_id": seed, "PatientID": p, "SeriesInstanceUID": uid, "crdc_series_uuid": str(uuid.UUID(int=i)),
             "segment_label": "GTV-1", "index": i} for i, (p, uid, seed) in enumerate(scans + retests)]
    seeds = layout.seeds_table(DEMO)
    seeds.parent.mkdir(parents=True)
    pd.DataFrame({"seed_id": [r["seed_id"] for r in rows], "volume_ml": rng.uniform(1, 50, len(rows))}).to_parquet(seeds)
    signal = np.concatenate([event, event[:3]]).astype(np.float32)
    for model, dim in (("radiomics", 8), ("untrained_cnn", 6)):
        vectors = rng.normal(size=(len(rows), dim)).astype(np.float32)
        vectors[:, 0] += 1.5 * signal  # an embedding that tells the endpoint, so that the probe's AUC is not chance
        write_embeddings(registry.get(model), None, vectors, rows, layout.asset_dir("embeddings", DEMO, model),
                         batch_size=8, device="cpu", started=time.monotonic())


def test_evaluation_figures_comparison_and_their_trace_on_s3_are_the_local_ones(tmp_path, s3_root):
    local, remote = Layout(tmp_path / "home"), Layout(s3_root, state_dir=tmp_path / "state")
    fake_inputs(local)
    copy_to_store(local.root, s3_root, "demo", f"seeds/{DEMO}", f"embeddings/{DEMO}")
    reports = {}
    for name, layout in (("local", local), ("s3", remote)):
        for model in ("radiomics", "untrained_cnn"):
            reports[name, model] = evaluate(layout, model)
        reports[name] = compare(layout)
    assert [e.endpoint for e in reports["s3", "radiomics"].endpoints] == ["os_2y"]
    for asset, model in (("evaluation", "radiomics"), ("evaluation", "untrained_cnn"), ("comparison", None)):
        here = files_under(local.asset_dir(asset, DEMO, model))
        there = files_under(remote.asset_dir(asset, DEMO, model))
        assert sorted(there) == sorted(here), asset
        for name in here:
            assert there[name] == here[name], f"{asset}/{model}/{name} differs on the s3 root"
    assert {"os_2y_km.png", "os_2y_roc.png", "os_2y_predictions.parquet"} <= set(
        files_under(remote.asset_dir("evaluation", DEMO, "radiomics")))
    assert {"auc_os_2y.png", "mutual_knn.png"} <= set(files_under(remote.asset_dir("comparison", DEMO)))
    assert reports["s3"].lineage_id == reports["local"].lineage_id and not reports["s3"].failures

    # The lineage items read from the store are those read from the local root, and a figure on the store is traced
    # from its URL (its lineage id read from the object) through the lineage store of the s3 root (local).
    km = remote.asset_dir("evaluation", DEMO, "radiomics") / "os_2y_km.png"
    lineage_id = reports["s3", "radiomics"].lineage_id
    assert lineage_id_of(km) == lineage_id
    version = {"dataset_version": DEMO, "model": "radiomics"}
    settings, items = output_record(remote, "evaluation", version)
    assert (settings, items) == output_record(local, "evaluation", version)
    figure = next(i for i in items if i["name"] == "os_2y_km.png")
    assert figure["path"] == f"evaluation/{DEMO}/radiomics/os_2y_km.png"
    assert remote.resolve(figure["path"]) == km
    for event in run_events("evaluation", f"{DEMO}|radiomics", lineage_id, items, settings):
        store.write_event(event, remote.lineage_dir())
    store.merge(remote.lineage_dir())
    with store.reader(remote.lineage_dir()) as con:
        traced = trace(con, str(km))
    assert traced["found_by"] == f"lineage id {lineage_id} in os_2y_km.png"
    with store.reader(remote.lineage_dir()) as con:  # its vector forms on the store, by their own metadata
        for suffix in (".pdf", ".svg"):
            assert trace(con, str(km.with_suffix(suffix)))["found_by"] == f"lineage id {lineage_id} in os_2y_km{suffix}"
    assert traced["version_id"] == store.version_id("evaluation", f"{DEMO}|radiomics", lineage_id)
    assert {f["input"]: f["path"] for f in traced["files"]}["clinical"] == "demo/clinical.csv"
    assert as_path(str(km)) == km


def run_events(asset: str, partition_key: str, version: str, items: list[dict], settings: dict) -> list[dict]:
    """The START and COMPLETE events of one run that wrote ``items`` (as the Dagster wrapper records them)."""
    run = {"run_id": str(uuid.uuid4()), "dagster_run_id": str(uuid.uuid4()), "partition_key": partition_key,
           "partition": {}, "code_version": f"{asset}-1", "git_commit": "abc"}
    job = {"namespace": "radassets", "name": asset}
    output = {"asset": asset, "partition_key": partition_key, "version": version, "items": items,
              "facets": {"settings": settings}}
    return [{"event_type": "START", "run": run, "job": job},
            {"event_type": "COMPLETE", "run": run, "job": job, "inputs": [], "outputs": [output]}]


def test_seed_perturbation_reads_the_volumes_named_relative_to_an_s3_root(tmp_path, s3_root):
    """The seeds table names its volumes relative to the root: the perturbed patches are extracted from the
    volume on the store (a local copy for SimpleITK), the same bits as from the local root."""
    from radassets.evaluation.perturbation import patch_spec_of, perturbed_embeddings
    from radassets.imaging.patches import PatchSpec, write_patches
    from radassets_tests.evaluation.test_perturbation import CENTRES, LesionCentroid, lesion_volume

    local, remote = Layout(tmp_path / "home"), Layout(s3_root)
    volume = local.asset_dir("volumes", "v1") / "ct" / "ct.nrrd"
    volume.parent.mkdir(parents=True)
    lesion_volume(volume, CENTRES)
    seeds = pd.DataFrame([{"seed_id": f"s{n}", "PatientID": f"P{n}", "SeriesInstanceUID": "1.2.3",
                           "crdc_series_uuid": "u", "source": "test", "segment_label": "GTV-1",
                           "ct_path": str(volume), "mask_path": None,
                           "coordX": c[0], "coordY": c[1], "coordZ": c[2]} for n, c in enumerate(CENTRES)])
    write_patches(seeds.to_dict("records"), local.asset_dir("patches", "v1"), PatchSpec(size=48))
    copy_to_store(local.root, s3_root, "volumes/v1", "patches/v1")
    seeds["ct_path"] = "volumes/v1/ct/ct.nrrd"
    patients = pd.DataFrame({"PatientID": ["P0", "P1"], "seed_id": ["s0", "s1"], "patch_index": [0, 1]})
    offsets = np.random.default_rng(1).normal(0.0, 4.0, size=(3, 2, 3))
    moved = {}
    for name, layout in (("local", local), ("s3", remote)):
        patches = layout.asset_dir("patches", "v1")
        moved[name] = perturbed_embeddings(LesionCentroid(), patients, seeds, patches, patch_spec_of(patches), offsets,
                                           layout=layout)
    assert moved["s3"].tobytes() == moved["local"].tobytes() and np.isfinite(moved["s3"]).all()


def test_hosny2018_figure2_on_s3_is_the_local_report(tmp_path, s3_root):
    """The unpartitioned report (the asset's call of ``evaluate_scores``) written to the store: the same bytes, and
    the same lineage items, as under a local root."""
    from radassets.defs.evaluation import HOSNY
    from radassets.evaluation.scores import evaluate_scores
    from radassets.packaged import packaged_data_dir

    data = packaged_data_dir()
    local, remote = Layout(tmp_path / "home"), Layout(s3_root)
    for layout in (local, remote):
        evaluate_scores(data / HOSNY["scores"], "PatientID", "CNN_logit0", data / HOSNY["clinical"], "PatientID",
                        "Survival.time", "deadstatus.event", 730, "alive", layout.asset_dir("hosny2018_figure2"),
                        threshold_from=data / HOSNY["threshold_from"], threshold_column="logit_0", n_boot=100)
    here = files_under(local.asset_dir("hosny2018_figure2"))
    assert sorted(here) == ["km.pdf", "km.png", "km.svg", "metrics.json", "references.bib", "report.html", "report.md",
                            "report.pdf", "roc.pdf", "roc.png", "roc.svg"]
    assert files_under(remote.asset_dir("hosny2018_figure2")) == here
    assert output_record(remote, "hosny2018_figure2", None) == output_record(local, "hosny2018_figure2", None)
