"""Evaluation assets. ``hosny2018_figure2``: the Figure 2 analysis of Hosny et al. 2018 (the study
radassets builds on), reproduced from the published CNN scores on LUNG1 and the clinical table.

No ``from __future__ import annotations`` here: Dagster inspects the context annotation at runtime.
"""

import base64

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset

from radassets.datasets import data_dir
from radassets.evaluation.scores import evaluate_scores
from radassets.storage import storage_root

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
    code_version="hosny2018-figure2-1",
    description=(
        "Hosny et al. 2018, Figure 2, reproduced: the published CNN scores (CNN_logit0, the cloud "
        "re-implementation) of the 206 LUNG1 patients against 2-year survival (censored before two years = alive, "
        "the authors' convention), high risk above the median logit of the tuning cohort. AUC with a bootstrap "
        "CI, Kaplan-Meier high vs low risk with numbers at risk, log-rank p, Cox hazard ratio, C-index."
    ),
)
def hosny2018_figure2(context: AssetExecutionContext) -> MaterializeResult:
    root = data_dir()
    out = storage_root() / "reports" / "hosny2018_figure2"
    metrics = evaluate_scores(
        root / HOSNY["scores"], "PatientID", "CNN_logit0", root / HOSNY["clinical"], "PatientID", "Survival.time",
        "deadstatus.event", 730, "alive", out, threshold_from=root / HOSNY["threshold_from"],
        threshold_column="logit_0", title="Hosny et al. 2018, LUNG1 (n=206), CNN")
    context.log.info(f"AUC {metrics['auc']:.3f} ({metrics['auc_ci_low']:.3f}-{metrics['auc_ci_high']:.3f}), "
                     f"HR {metrics['hazard_ratio']:.2f}, log-rank p {metrics['logrank_p']:.3g}")
    return MaterializeResult(
        metadata={
            **{k: metrics[k] for k in ("n", "n_events_before_horizon", "auc", "auc_ci_low", "auc_ci_high", "threshold",
                                       "hazard_ratio", "hr_ci_low", "hr_ci_high", "cox_p", "logrank_p", "c_index")},
            "lineage_id": metrics["lineage_id"],
            "kaplan_meier": _png(out / "km.png"),
            "roc": _png(out / "roc.png"),
            "metrics_json": MetadataValue.path(str(out / "metrics.json")),
        },
        data_version=DataVersion(metrics["lineage_id"]),
    )
