"""The reproduced Hosny et al. 2018 Figure 2 analysis, materialized as an asset in a real instance."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from dagster import AssetCheckSeverity, AssetKey, MultiPartitionKey, materialize

from radassets.definitions import defs
from radassets.evaluation.figures import lineage_id_of
from radassets.layout import Layout
from radassets.settings import Settings
from radassets_tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_hosny2018_figure2_asset(instance, storage):
    result = materialize(list(defs.assets), instance=instance, selection=["hosny2018_figure2"],
                         resources=defs.resources)
    assert result.success
    meta = instance.get_latest_materialization_event(AssetKey("hosny2018_figure2")).asset_materialization.metadata
    assert meta["n"].value == 206 and meta["n_events_before_horizon"].value == 146
    tuning = pd.read_csv(REPO / "data" / "reference" / "nsclc_radiomics" / "hosny_tuning_cohort_logits.csv")
    assert meta["threshold"].value == pytest.approx(tuning["logit_0"].median())
    assert meta["auc_ci_low"].value < meta["auc"].value < meta["auc_ci_high"].value
    assert meta["kaplan_meier"].value.startswith("![km.png](data:image/png;base64,")
    out = storage / "reports" / "hosny2018_figure2"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label_definition"]["censored_before_horizon"] == "alive"
    # The seed study's comparison with the original model, in the metadata as in metrics.json.
    replication = metrics["replication"]
    assert meta["delong_p"].value == replication["delong"]["p"] and meta["delong_p"].value == pytest.approx(0.4118, abs=1e-4)
    assert meta["auc_difference"].value == replication["delong"]["difference"]
    assert meta["risk_group_kappa"].value == replication["agreement"]["cohen_kappa"]
    assert replication["published"]["agrees_with_p"]
    assert lineage_id_of(out / "km.png") == lineage_id_of(out / "roc.png") == meta["lineage_id"].value
    # Its report cites Hosny et al., Bontempi et al. and LUNG1 (non-commercial: flagged), with a references.bib.
    assert [w["key"] for w in metrics["citations"]["works"]] == ["hosny2018deep", "bontempi2024endtoend"]
    report = (out / "report.md").read_text()
    assert "> ⚠ Licence restriction: nsclc_radiomics (doi:10.7937/K9/TCIA.2015.PF0M9REI): CC BY-NC 3.0" in report
    assert "@article{hosny2018deep," in (out / "references.bib").read_text()
    assert meta["report"].value == str(out / "report.html")
    # Its lineage: no cohort, the three published tables it read, each with its sha256.
    from radassets.lineage.store import LineageError, reader
    from radassets.lineage.trace import trace

    with reader(Layout(storage).lineage_dir()) as con:
        t = trace(con, str(out / "km.png"))
        with pytest.raises(LineageError, match="neither a file nor a recorded item"):
            trace(con, "no-such-figure")
    assert t["cohort"] is None and t["series_count"] == 0 and [r["status"] for r in t["runs"]] == ["COMPLETE"]
    assert {f["input"]: f["sha256"] for f in t["files"]} == {k: v["sha256"] for k, v in metrics["inputs"].items()}


def test_radiomics_recovers_the_demo_hazard_model(instance, default_demo_home, tmp_path, capsys):
    """The demo's survival follows exp(0.8 z_log_volume + 0.6 z_heterogeneity): the radiomics probe's risk
    must find it (direction and rough size), through every asset from the cohort to the report. Then the
    opt-in seed-perturbation stability of the same partition, and the lineage of it all: a comparison
    figure traced back to the cohort, and the OpenLineage export read back (one materialization serves
    all three: the pipeline up to the evaluation takes most of this test's time)."""
    from radassets.defs.run import materialize_dataset_versions

    assert materialize_dataset_versions(["demo_v1"], settings=Settings.load(), models=["radiomics"],
                                        progress=lambda m: None)
    key = AssetKey("evaluation")
    meta = instance.get_latest_materialization_event(key).asset_materialization.metadata
    out = default_demo_home / "evaluation" / "demo_v1" / "radiomics"
    metrics = json.loads((out / "metrics.json").read_text())
    endpoint = metrics["endpoints"]["os_2y"]
    assert endpoint["label_definition"]["censored_before_horizon"] == "drop"
    assert endpoint["labels"]["excluded"]["censored before the horizon (drop)"] >= 1
    survival = endpoint["survival"]
    assert survival["hazard_ratio"] > 2.0 and survival["logrank_p"] < 0.01 and survival["c_index"] > 0.65
    assert endpoint["linear_probe"]["auc"] > 0.7 and endpoint["knn"]["auc_mean"] > 0.6
    assert metrics["stability"]["test_retest"]["pairs_embedded"] == 12
    assert meta["os_2y: hazard ratio"].value == survival["hazard_ratio"]
    assert meta["os_2y: kaplan_meier"].value.startswith("![os_2y_km.png](data:image/png;base64,")
    for figure in ("os_2y_roc.png", "os_2y_km.png"):
        assert lineage_id_of(out / figure) == metrics["lineage_id"]
    report = (out / "report.html").read_text()
    assert metrics["lineage_id"] in report and "data:image/png;base64," in report
    # The report cites the demo collection as the cohort lockfile records it, and the model as the registry does.
    [collection] = json.loads((default_demo_home / "cohort" / "demo_v1" / "cohort.lock.json").read_text())["collections"]
    assert f"doi:{collection['source_DOI']}, {collection['license_short_name']}" in report
    assert metrics["citations"]["models"][0]["licence"] == "BSD-3-Clause (pyradiomics)"
    assert (out / "references.bib").is_file()
    # The comparison ran after the model partitions, over the one model evaluated.
    comparison = json.loads((default_demo_home / "comparison" / "demo_v1" / "metrics.json").read_text())
    assert list(comparison["models"]) == ["radiomics"]
    assert comparison["endpoints"]["os_2y"]["models"]["radiomics"]["rank"] == 1
    assert lineage_id_of(default_demo_home / "comparison" / "demo_v1" / "auc_os_2y.png") == comparison["lineage_id"]

    check_seed_stability(instance, default_demo_home, metrics)
    check_lineage(default_demo_home, metrics, tmp_path)


def check_seed_stability(instance, home, evaluation_metrics):
    from sklearn.metrics import cohen_kappa_score

    from radassets import datasets
    from radassets.evaluation.perturbation import run_seed_stability

    key = AssetKey("seed_stability")
    assert instance.get_latest_materialization_event(key) is None  # opt-in: not part of the default run
    result = materialize(list(defs.assets), instance=instance, selection=["seed_stability"], resources=defs.resources,
                         partition_key=MultiPartitionKey({"dataset_version": "demo_v1", "model": "radiomics"}),
                         run_config={"ops": {"seed_stability": {"config": {"trials": 3}}}})
    assert result.success
    meta = instance.get_latest_materialization_event(key).asset_materialization.metadata
    out = home / "stability" / "demo_v1" / "radiomics"
    metrics = json.loads((out / "metrics.json").read_text())
    e = metrics["endpoints"]["os_2y"]
    assert metrics["protocol"]["trials"] == 3 and metrics["protocol"]["sd_mm"] == 4.0
    assert metrics["patients_perturbed"] == e["patients"] == evaluation_metrics["endpoints"]["os_2y"]["patients_evaluated"]
    # Unperturbed, the probes are the evaluation's: the same out-of-fold AUC, split at the median OOF risk.
    assert e["unperturbed_auc"] == pytest.approx(evaluation_metrics["endpoints"]["os_2y"]["linear_probe"]["auc"], abs=1e-12)
    predictions = pd.read_parquet(home / "evaluation" / "demo_v1" / "radiomics" / "os_2y_predictions.parquet")
    predictions = predictions[predictions["label"].notna()].set_index("PatientID")["risk"]
    assert e["threshold"] == pytest.approx(predictions.median(), abs=1e-12)
    # Trial 0's kappa, from the per-patient table and the evaluation's own predictions.
    table = pd.read_parquet(out / "perturbations.parquet")
    trial = table[table["trial"] == 0].set_index("PatientID")
    base = predictions.loc[trial.index] > e["threshold"]
    assert e["trials"][0]["kappa"] == pytest.approx(cohen_kappa_score(base, trial["score_os_2y"] > e["threshold"]))
    assert len(table) == 3 * e["patients"] and table["embedded"].all()
    assert meta["os_2y: kappa mean"].value == pytest.approx(e["kappa_mean"])
    assert meta["figure"].value.startswith("![seed_stability.png](data:image/png;base64,")
    assert lineage_id_of(out / "seed_stability.png") == metrics["lineage_id"] == meta["lineage_id"].value
    for form in ("seed_stability.pdf", "seed_stability.svg", "report.pdf", "report.html"):
        assert lineage_id_of(out / form) == metrics["lineage_id"], form
    # It cites what it ran, as the evaluation does: the model with its weights, the collection from the lockfile.
    assert [m["name"] for m in metrics["citations"]["models"]] == ["radiomics"]
    assert "## How to cite" in (out / "report.md").read_text() and (out / "references.bib").is_file()
    # No movement, no change: every prediction and AUC as unperturbed.
    layout = Layout(home)
    still = run_seed_stability(datasets.get("demo_v1"), "radiomics",
                               layout.asset_dir("embeddings", "demo_v1", "radiomics"),
                               layout.seeds_table("demo_v1"), layout.asset_dir("patches", "demo_v1"),
                               home / "still", trials=2, sd_voxels=0.0, source_root=layout.demo_root(),
                               layout=layout)
    s = next(e for e in still.endpoints if e.endpoint == "os_2y")
    assert s.kappa_min == 1.0 and s.changed_mean == 0.0 and s.auc_mean == pytest.approx(s.unperturbed_auc)
    assert still.to_json()["cosine"]["min"] > 0.99999


def check_lineage(home, evaluation_metrics, tmp_path):
    import shutil

    from radassets.cli import main as cli_main
    from radassets.lineage.openlineage import read_event

    def cli_json(*args):
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            cli_main(list(args))
        return out.getvalue()

    figure = home / "comparison" / "demo_v1" / "auc_os_2y.png"
    (tmp_path / "paper").mkdir()
    copied = tmp_path / "paper" / figure.name
    shutil.copy(figure, copied)  # found by the lineage id embedded in the PNG, wherever it is
    t = json.loads(cli_json("lineage", "trace", str(copied), "--json", "--full"))
    renamed = tmp_path / "figure_3b.png"  # renamed too: the lineage id names the version
    shutil.copy(figure, renamed)
    assert json.loads(cli_json("lineage", "trace", str(renamed), "--json"))["version_id"] == t["version_id"]
    lock = json.loads((home / "cohort" / "demo_v1" / "cohort.lock.json").read_text())
    assert t["found_by"].startswith("lineage id") and t["asset"] == "comparison"
    assert (t["cohort"], t["idc_version"], t["cohort_hash"]) == ("demo_v1", lock["idc_version"], lock["content_hash"])
    assert t["series_count"] == len(lock["series"]) == 144
    assert sorted(s["SeriesInstanceUID"] for s in t["series"]) == sorted(s["SeriesInstanceUID"] for s in lock["series"])
    assert t["model"] == "radiomics" and t["weights_sha256"] is None  # radiomics has no weights
    assert t["conversion"][0]["settings"]["ct_reader"].startswith("pydicom")
    assert t["seeds"][0]["source"] == "mask" and t["patches"][0]["spec"]["size"] == 64
    evaluation = next(e for e in t["evaluation"] if e["asset"] == "evaluation")
    assert evaluation["lineage_id"] == evaluation_metrics["lineage_id"]
    assert evaluation["endpoints"]["os_2y"]["label_definition"]["censored_before_horizon"] == "drop"
    assert set(t["code_version"]) >= {"cohort", "dicom", "volumes", "seeds", "patches", "embeddings", "evaluation",
                                      "comparison"}
    assert {r["asset"] for r in t["runs"]} == set(t["code_version"]) and {r["status"] for r in t["runs"]} == {"COMPLETE"}
    # A journal's vector figures trace as the PNG does, by the id in their own metadata (PDF document info, SVG
    # <metadata>), copied and renamed; so does the report's PDF.
    for source, copy in ((figure.with_suffix(".pdf"), "figure_3b.pdf"), (figure.with_suffix(".svg"), "figure_3b.svg"),
                         (home / "comparison" / "demo_v1" / "report.pdf", "supplement.pdf")):
        shutil.copy(source, tmp_path / "paper" / copy)
        by_metadata = json.loads(cli_json("lineage", "trace", str(tmp_path / "paper" / copy), "--json"))
        assert by_metadata["version_id"] == t["version_id"] and by_metadata["found_by"].startswith("lineage id"), copy
    # A printed figure keeps only its stamp: 'radassets' and 8 hex digits, typed back as read, or as a bare prefix.
    lineage_id = t["version_id"].rsplit("@", 1)[1]
    for typed in (f"radassets {lineage_id[:8]}", lineage_id[:8].upper(), lineage_id[:11]):
        by_prefix = json.loads(cli_json("lineage", "trace", typed, "--json"))
        assert by_prefix["version_id"] == t["version_id"], typed
        assert by_prefix["found_by"].startswith(f"lineage id {lineage_id} from the prefix"), typed
    # A screenshot of the printed figure, cropped: no metadata, not a file the pipeline wrote; its stamp traces.
    from radassets_tests.evaluation.test_figures import screenshot_with_stamp

    read = screenshot_with_stamp(figure.with_suffix(".pdf"), tmp_path / "paper" / "screenshot.png")
    with pytest.raises(SystemExit):
        cli_main(["lineage", "trace", str(tmp_path / "paper" / "screenshot.png")])
    assert json.loads(cli_json("lineage", "trace", read, "--json"))["version_id"] == t["version_id"]
    for too_short in (lineage_id[:7], "radassets 0000000000"):
        with pytest.raises(SystemExit) as refused:
            cli_main(["lineage", "trace", too_short])
        assert refused.value.code != 0, too_short
    # The HTML report carries the id in a <meta> tag; a file without an embedded id (the Markdown report, the
    # references) is found by its content hash.
    evaluated = home / "evaluation" / "demo_v1" / "radiomics"
    shutil.copy(evaluated / "report.html", tmp_path / "report.html")
    by_meta = json.loads(cli_json("lineage", "trace", str(tmp_path / "report.html"), "--json"))
    assert by_meta["found_by"] == f"lineage id {evaluation_metrics['lineage_id']} in report.html"
    shutil.copy(evaluated / "report.md", tmp_path / "report.md")
    by_hash = json.loads(cli_json("lineage", "trace", str(tmp_path / "report.md"), "--json"))
    assert by_hash["found_by"].startswith("content hash") and by_hash["asset"] == "evaluation"
    assert "cohort hash" in cli_json("lineage", "trace", str(figure))  # the text form
    assert "144" in cli_json("lineage", "sql", "SELECT count(*) AS n FROM items WHERE kind = 'series'")
    for statement in ("DELETE FROM runs", f"COPY runs TO '{tmp_path / 'runs.csv'}'"):  # read-only, no files
        with pytest.raises(SystemExit) as refused:
            cli_main(["lineage", "sql", statement])
        assert refused.value.code == 2, statement
    assert not (tmp_path / "runs.csv").exists()
    # OpenLineage: every exported event reads back into the client's classes; the comparison's run has the
    # evaluation it read as input and its own version as output.
    out = tmp_path / "openlineage"
    cli_json("lineage", "export", "--openlineage", str(out))
    events = [read_event(p) for p in sorted(out.glob("*.json"))]
    assert len(events) >= 2 * len(t["runs"])
    done = next(e for e in events if e.job.name == "comparison" and e.eventType.value == "COMPLETE")
    assert [(d.name, d.facets["version"].datasetVersion) for d in done.inputs] == [
        ("evaluation[demo_v1|radiomics]", evaluation_metrics["lineage_id"])]
    comparison = json.loads((home / "comparison" / "demo_v1" / "metrics.json").read_text())
    assert [(d.name, d.facets["version"].datasetVersion) for d in done.outputs] == [
        ("comparison[demo_v1]", comparison["lineage_id"])]
    folder = home / "comparison" / "demo_v1"
    figures = len(list(folder.glob("*.png")))  # one model: no mutual-kNN heatmap
    report_files = [p.name for p in folder.iterdir() if p.name in ("report.md", "report.pdf", "metrics.json")
                    or p.suffix == ".bib"]
    assert done.outputs[0].facets["radassets"].items == {"figure": 3 * figures, "report": 1,  # PNG, PDF, SVG
                                                         "report_file": len(report_files)}


def test_the_comparison_leaves_out_an_evaluation_of_another_definition(instance, small_demo_home, tmp_path,
                                                                       monkeypatch):
    """Two models evaluated; the dataset definition's horizon changes and only one is evaluated again: the
    comparison ranks that one alone and names the other as stale (metrics, report, a failed WARN check).
    Then the definition loses its clinical table: evaluation and comparison succeed, saying so."""
    import shutil

    import yaml

    from radassets.defs.run import materialize_dataset_versions

    data = tmp_path / "data"
    shutil.copytree(REPO / "data", data)
    monkeypatch.setenv("RADASSETS_DATA_DIR", str(data))
    models = tmp_path / "models"
    models.mkdir()
    for model in ("radiomics", "untrained_cnn"):
        shutil.copy(REPO / "data" / "models" / f"{model}.yaml", models)
    monkeypatch.setenv("RADASSETS_MODELS_DIR", str(models))
    assert materialize_dataset_versions(["demo_v1"], settings=Settings.load(), models=["radiomics", "untrained_cnn"],
                                        progress=lambda m: None)
    compared = json.loads((small_demo_home / "comparison" / "demo_v1" / "metrics.json").read_text())
    assert sorted(compared["models"]) == ["radiomics", "untrained_cnn"] and compared["stale"] == {}

    definition_path = data / "datasets" / "demo_v1.yaml"
    definition = yaml.safe_load(definition_path.read_text())
    definition["endpoints"][0]["horizon_days"] = 365
    definition_path.write_text(yaml.safe_dump(definition, sort_keys=False))
    evaluation_partition = MultiPartitionKey({"dataset_version": "demo_v1", "model": "radiomics"})
    assert materialize(list(defs.assets), instance=instance, selection=["evaluation"], resources=defs.resources,
                       partition_key=evaluation_partition).success
    radiomics = json.loads((small_demo_home / "evaluation" / "demo_v1" / "radiomics" / "metrics.json").read_text())
    assert radiomics["endpoints"]["os_2y"]["label_definition"]["horizon_days"] == 365
    result = materialize(list(defs.assets), instance=instance, selection=["comparison"], resources=defs.resources,
                         partition_key="demo_v1")
    assert result.success
    out = small_demo_home / "comparison" / "demo_v1"
    compared = json.loads((out / "metrics.json").read_text())
    assert list(compared["models"]) == ["radiomics"] and list(compared["stale"]) == ["untrained_cnn"]
    [cause] = compared["stale"]["untrained_cnn"]["causes"]
    assert cause.startswith("evaluated under another definition of the dataset version")
    assert compared["stale"]["untrained_cnn"]["rematerialize"] == "evaluation, partition demo_v1|untrained_cnn"
    assert "**Left out, stale:** the evaluation of `untrained_cnn`" in (out / "report.md").read_text()
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "evaluations_current" and not check.passed
    assert check.severity == AssetCheckSeverity.WARN and "untrained_cnn" in check.metadata["stale"].value
    meta = instance.get_latest_materialization_event(AssetKey("comparison")).asset_materialization.metadata
    assert "another definition" in meta["stale evaluations (left out)"].value["untrained_cnn"]

    # A dataset version without a clinical table (as `datasets add-local` writes them): nothing to evaluate.
    del definition["clinical"], definition["endpoints"], definition["test_retest"]
    definition_path.write_text(yaml.safe_dump(definition, sort_keys=False))
    result = materialize(list(defs.assets), instance=instance, selection=["evaluation"], resources=defs.resources,
                         partition_key=evaluation_partition)
    assert result.success
    evaluation = json.loads((small_demo_home / "evaluation" / "demo_v1" / "radiomics" / "metrics.json").read_text())
    assert evaluation["status"] == "nothing to evaluate" and "has no clinical table" in evaluation["reason"]
    assert "has no clinical table, so no endpoint can be evaluated" in (
        small_demo_home / "evaluation" / "demo_v1" / "radiomics" / "report.md").read_text()
    assert materialize(list(defs.assets), instance=instance, selection=["comparison"], resources=defs.resources,
                       partition_key="demo_v1").success
    compared = json.loads((out / "metrics.json").read_text())
    assert compared["status"] == "nothing to compare" and "has no clinical table" in compared["reason"]
    assert "Nothing compared: dataset version 'demo_v1' has no clinical table" in (out / "report.md").read_text()
