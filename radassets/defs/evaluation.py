"""Evaluation assets: ``evaluation`` per (dataset version × model), and ``hosny2018_figure2``: the Figure 2
analysis of Hosny et al. 2018 (the study radassets builds on), reproduced from the published CNN scores on LUNG1
and the clinical table.

No ``from __future__ import annotations`` here: Dagster inspects the context annotation at runtime.

Each asset imports its library function in its body: the statistics stack (scipy.stats, scikit-learn, lifelines)
costs about 1.8 s of the 5 s it takes to load the code location, which every command, every run worker and the
UI do; a run pays for it only in the step that computes statistics.
"""

import base64
import warnings

from dagster import (
    AssetCheckResult,
    Config,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    BetaWarning,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    asset,
)

from radassets.defs.lineage import recorded
from radassets import datasets
from radassets.defs.automation import COMPARES_WHAT_EXISTS, FOLLOWS_PATCHES
from radassets.defs.imaging import patches, seeds
from radassets.defs.metadata import markdown_table, progress_logger, user_failure
from radassets.defs.models import ModelsResource, embeddings, embeddings_partitions
from radassets.defs.partitions import dataset_version_partitions
from radassets.defs.resources import StorageResource
from radassets.evaluation import SD_VOXELS, TRIALS
from radassets.idc.index import source_root

# Assets with this tag are left out of `radassets pipeline run` and `models backfill` unless selected by name
# (they cost many times their upstream step); the UI shows and runs them as any other.
OPT_IN = {"radassets/opt_in": "true"}

HOSNY = {
    "scores": "reference/nsclc_radiomics/published_scores_hosny_subset.csv",
    "clinical": "reference/nsclc_radiomics/clinical.csv",
    "threshold_from": "reference/nsclc_radiomics/hosny_tuning_cohort_logits.csv",
}


def _png(path) -> MetadataValue:
    return MetadataValue.md(f"![{path.name}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})")


@asset(
    group_name="evaluation",
    kinds={"python", "png"},
    code_version="hosny2018-figure2-2",
    description=(
        "Hosny et al. 2018, Figure 2, reproduced: the published CNN scores (CNN_logit0, the cloud "
        "re-implementation) of the 206 LUNG1 patients against 2-year survival (censored before two years = alive, "
        "the authors' convention), high risk above the median logit of the tuning cohort. AUC with a bootstrap "
        "CI, Kaplan-Meier high vs low risk with numbers at risk, log-rank p, Cox hazard ratio, C-index; and the "
        "seed study's comparison with the original model (baseline_logit0) on the same patients: paired DeLong "
        "test (AUC difference, z, two-sided p) and agreement of the two models' risk groups (Cohen's kappa)."
    ),
)
@recorded
def hosny2018_figure2(context: AssetExecutionContext, storage: StorageResource) -> MaterializeResult:
    from radassets.evaluation.replication import NOTEBOOK_HOSNY
    from radassets.evaluation.citations import hosny2018_citations
    from radassets.evaluation.scores import evaluate_scores

    settings = storage.settings()
    root = settings.resolved_data_dir()
    out = settings.layout().asset_dir("hosny2018_figure2")
    report = evaluate_scores(
        root / HOSNY["scores"], "PatientID", "CNN_logit0", root / HOSNY["clinical"], "PatientID", "Survival.time",
        "deadstatus.event", 730, "alive", out, threshold_from=root / HOSNY["threshold_from"],
        threshold_column="logit_0", title="Hosny et al. 2018, LUNG1 (n=206), CNN",
        reference_column="baseline_logit0", reference_name="baseline_logit0 (original model)",
        reference_published=NOTEBOOK_HOSNY, citations=hosny2018_citations(), stamp=settings.figure_stamp)
    replication = report.replication_headline()
    kappa = replication["risk_group_kappa"]  # None when both models put every patient in one group
    context.log.info(f"AUC {report.auc:.3f} ({report.auc_ci_low:.3f}-{report.auc_ci_high:.3f}), "
                     f"HR {report.hazard_ratio:.2f}, log-rank p {report.logrank_p:.3g}; against the original model: "
                     f"AUC difference {replication['auc_difference']:+.4f}, DeLong p {replication['delong_p']:.3g}, "
                     f"risk-group kappa {'undefined' if kappa is None else f'{kappa:.3f}'}")
    return MaterializeResult(
        metadata={
            **report.headline(),
            **{k: v for k, v in replication.items() if v is not None},
            "lineage_id": report.lineage_id,
            "kaplan_meier": _png(out / "km.png"),
            "roc": _png(out / "roc.png"),
            "report": MetadataValue.path(str(out / "report.html")),
            "metrics_json": MetadataValue.path(str(out / "metrics.json")),
        },
        data_version=DataVersion(report.lineage_id),
    )


with warnings.catch_warnings():  # the mapping is marked beta; it is the documented way for multi → single
    warnings.simplefilter("ignore", BetaWarning)
    OF_DATASET_VERSION = MultiToSingleDimensionPartitionMapping(partition_dimension_name="dataset_version")


@asset(
    partitions_def=embeddings_partitions,
    deps=[embeddings, AssetDep(seeds, partition_mapping=OF_DATASET_VERSION)],
    group_name="evaluation",
    kinds={"scikitlearn", "png", "html"},
    code_version="evaluation-3",
    automation_condition=FOLLOWS_PATCHES,
    check_specs=[AssetCheckSpec("endpoints_evaluated", asset="evaluation",
                                description="every endpoint had enough patients of each class to evaluate")],
    description=(
        "Per endpoint of the dataset version: the recorded label definition (horizon, censoring convention), the "
        "kNN protocol of TumorImagingBench (10 stratified 50/20/30 splits, cosine kNN, k by validation AUC), a "
        "10-fold linear probe with a bootstrap CI, and survival on the probe's risk (Kaplan-Meier with numbers at "
        "risk, log-rank, Cox hazard ratio, C-index); test-retest cosine stability. metrics.json, a Markdown and "
        "HTML report, ROC and KM figures carrying the lineage id."
    ),
)
@recorded
def evaluation(context: AssetExecutionContext, storage: StorageResource) -> MaterializeResult:
    from radassets.evaluation.report import evaluate_model

    keys = context.partition_key.keys_by_dimension
    dataset_version, model = keys["dataset_version"], keys["model"]
    settings = storage.settings()
    layout = settings.layout()
    definition = datasets.get(dataset_version, settings.resolved_data_dir())
    out = layout.asset_dir("evaluation", dataset_version, model)
    with user_failure():
        report = evaluate_model(definition, model, layout.asset_dir("embeddings", dataset_version, model),
                                layout.seeds_table(dataset_version), out,
                                source_root=source_root(definition, layout), layout=layout,
                                stamp=settings.figure_stamp, registry_dir=settings.resolved_models_dir())
    metadata: dict = {"lineage_id": report.lineage_id, "patients": report.patients,
                      "definition_sha256": report.definition_sha256,
                      "report": MetadataValue.path(str(out / "report.html")),
                      "report_pdf": MetadataValue.path(str(out / "report.pdf")),
                      "metrics_json": MetadataValue.path(str(out / "metrics.json"))}
    if report.nothing_evaluated:  # no clinical table: nothing to check either
        context.log.warning(f"{dataset_version} × {model}: {report.nothing_evaluated}")
        return MaterializeResult(
            metadata={**metadata, "nothing evaluated": report.nothing_evaluated},
            data_version=DataVersion(report.lineage_id),
            check_results=[AssetCheckResult(check_name="endpoints_evaluated", passed=False,
                                            severity=AssetCheckSeverity.WARN,
                                            metadata={"not evaluable": MetadataValue.text(report.nothing_evaluated)})])
    rows = []
    not_evaluable = {f.item: f.reason for f in report.failures}
    for e in report.endpoints:
        row = {"endpoint": e.endpoint, "kNN AUC": f"{e.knn_auc:.3f} ({e.knn_auc_ci_low:.3f}-{e.knn_auc_ci_high:.3f})",
               "probe AUC": f"{e.probe_auc:.3f} ({e.probe_auc_ci_low:.3f}-{e.probe_auc_ci_high:.3f})", "n": e.patients}
        if e.survival is not None:
            s = e.survival
            row.update({"HR": f"{s.hazard_ratio:.2f} ({s.hr_ci_low:.2f}-{s.hr_ci_high:.2f})",
                        "log-rank p": f"{s.logrank_p:.3g}", "C-index": f"{s.c_index:.3f}"})
            metadata[f"{e.endpoint}: hazard ratio"] = s.hazard_ratio
            metadata[f"{e.endpoint}: kaplan_meier"] = _png(out / f"{e.endpoint}_km.png")
        metadata[f"{e.endpoint}: knn auc"] = e.knn_auc
        metadata[f"{e.endpoint}: probe auc"] = e.probe_auc
        rows.append(row)
    if rows:
        metadata["results"] = MetadataValue.md(markdown_table(rows, list(rows[0])))
    if not_evaluable:
        metadata["not evaluable"] = MetadataValue.json(not_evaluable)
        context.log.warning(f"{dataset_version} × {model}: not evaluable: {not_evaluable}")
    if report.test_retest_cosine_mean is not None:
        metadata["test-retest cosine (mean)"] = report.test_retest_cosine_mean
    context.log.info(f"{dataset_version} × {model}: " + "; ".join(f"{r['endpoint']} kNN {r['kNN AUC']}" for r in rows))
    return MaterializeResult(
        metadata=metadata, data_version=DataVersion(report.lineage_id),
        check_results=[AssetCheckResult(check_name="endpoints_evaluated", passed=not not_evaluable,
                                        severity=AssetCheckSeverity.WARN,
                                        metadata={"not evaluable": MetadataValue.json(not_evaluable)})])


@asset(
    partitions_def=dataset_version_partitions,
    deps=[AssetDep(evaluation, partition_mapping=OF_DATASET_VERSION)],
    group_name="evaluation",
    kinds={"scipy", "png", "html"},
    code_version="comparison-3",
    automation_condition=COMPARES_WHAT_EXISTS,
    check_specs=[AssetCheckSpec("evaluations_current", asset="comparison",
                                description="every evaluation compared was made under the current dataset definition "
                                            "from the current embeddings, seeds and clinical table")],
    description=(
        "Every evaluated model of the dataset version side by side: AUCs with CIs and ranks per endpoint, DeLong "
        "tests between models on the same patients, and a mutual-kNN (k = 10) embedding-similarity heatmap. "
        "An evaluation made under another definition of the dataset version or from other inputs is stale: "
        "left out of the ranking and named (check evaluations_current). "
        "metrics.json, a Markdown and HTML report, figures carrying the lineage id."
    ),
)
@recorded
def comparison(context: AssetExecutionContext, storage: StorageResource) -> MaterializeResult:
    from radassets.evaluation.compare_report import compare_models

    dataset_version = context.partition_key
    settings = storage.settings()
    layout = settings.layout()
    definition = datasets.get(dataset_version, settings.resolved_data_dir())
    out = layout.asset_dir("comparison", dataset_version)
    with user_failure():
        report = compare_models(definition, layout.asset_dir("evaluation", dataset_version),
                                layout.asset_dir("embeddings", dataset_version), layout.seeds_table(dataset_version),
                                out, source_root=source_root(definition, layout), layout=layout,
                                stamp=settings.figure_stamp, registry_dir=settings.resolved_models_dir())
    metadata: dict = {"lineage_id": report.lineage_id, "models": len(report.models),
                      "report": MetadataValue.path(str(out / "report.html")),
                      "report_pdf": MetadataValue.path(str(out / "report.pdf"))}
    if report.nothing_compared:
        metadata["nothing compared"] = report.nothing_compared
        context.log.warning(f"{dataset_version}: {report.nothing_compared}")
    stale = {f.item: f.reason for f in report.failures}
    if stale:
        metadata["stale evaluations (left out)"] = MetadataValue.json(stale)
        context.log.warning(f"{dataset_version}: stale evaluations left out of the comparison: {stale}")
    for endpoint, ranking in report.rankings.items():
        rows = [{"rank": r.rank, "model": r.model, "probe AUC": f"{r.probe_auc:.3f}", "kNN AUC": f"{r.knn_auc:.3f}"}
                for r in ranking]
        metadata[f"{endpoint}: ranking"] = MetadataValue.md(markdown_table(rows, list(rows[0])))
        metadata[f"{endpoint}: auc_figure"] = _png(out / f"auc_{endpoint}.png")
    if "mutual_knn.png" in report.figures:  # not a heatmap left by an earlier comparison
        metadata["mutual_knn"] = _png(out / "mutual_knn.png")
    return MaterializeResult(
        metadata=metadata, data_version=DataVersion(report.lineage_id),
        check_results=[AssetCheckResult(check_name="evaluations_current", passed=not stale,
                                        severity=AssetCheckSeverity.WARN,
                                        metadata={"stale": MetadataValue.json(stale)})])


class SeedStabilityConfig(Config):
    trials: int = TRIALS
    sd_voxels: float = SD_VOXELS


@asset(
    partitions_def=embeddings_partitions,
    deps=[embeddings, AssetDep(seeds, partition_mapping=OF_DATASET_VERSION),
          AssetDep(patches, partition_mapping=OF_DATASET_VERSION)],
    group_name="evaluation",
    kinds={"pytorch", "scikitlearn", "png"},
    tags=OPT_IN,
    pool="gpu",
    code_version="seed-stability-3",
    description=(
        "Seed-perturbation stability (the FMCIB protocol, opt-in: trials × patients forward passes): each "
        "evaluated patient's seed moved 50 times by N(0, 16 voxel²) per axis, the patch extracted again and "
        "embedded, scored by the linear probe of the evaluation fold that held the patient out; Cohen's kappa of "
        "the high/low-risk predictions against the unperturbed ones, AUC per trial, embedding cosine similarity."
    ),
)
@recorded
def seed_stability(context: AssetExecutionContext, config: SeedStabilityConfig,
                   models: ModelsResource, storage: StorageResource) -> MaterializeResult:
    from radassets.evaluation.perturbation import run_seed_stability

    keys = context.partition_key.keys_by_dimension
    dataset_version, model = keys["dataset_version"], keys["model"]
    settings = storage.settings()
    layout = settings.layout()
    definition = datasets.get(dataset_version, settings.resolved_data_dir())
    out = layout.asset_dir("seed_stability", dataset_version, model)
    with user_failure():
        report = run_seed_stability(
            definition, model, layout.asset_dir("embeddings", dataset_version, model),
            layout.seeds_table(dataset_version), layout.asset_dir("patches", dataset_version), out,
            trials=config.trials, sd_voxels=config.sd_voxels, batch_size=models.batch_size, device=models.device,
            download=models.download_weights, progress=progress_logger(context),
            source_root=source_root(definition, layout), registry_dir=settings.resolved_models_dir(),
            weights_dir=layout.weights_dir(), data_root=settings.resolved_data_dir(), layout=layout,
            stamp=settings.figure_stamp)
    rows = [{"endpoint": e.endpoint, "patients": e.patients,
             "kappa": f"{e.kappa_mean:.3f} ± {e.kappa_sd:.3f} (min {e.kappa_min:.3f})",
             "changed": f"{e.changed_mean:.1%}",
             "AUC": f"{e.unperturbed_auc:.3f} → {e.auc_mean:.3f} ± {e.auc_sd:.3f}"}
            for e in report.endpoints]
    context.log.info(f"{dataset_version} × {model}: " + "; ".join(f"{r['endpoint']} kappa {r['kappa']}" for r in rows))
    return MaterializeResult(
        metadata={
            "lineage_id": report.lineage_id, "patients_perturbed": report.patients_perturbed,
            "trials": report.trials, "sd_mm": report.sd_mm,
            **{f"{e.endpoint}: kappa mean": e.kappa_mean for e in report.endpoints},
            "results": MetadataValue.md(markdown_table(rows, list(rows[0]))),
            "figure": _png(out / "seed_stability.png"),
            "report": MetadataValue.path(str(out / "report.html")),
        },
        data_version=DataVersion(report.lineage_id),
    )
