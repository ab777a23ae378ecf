"""The typed reports of the evaluation steps: what ``evaluate_model``, ``compare_models``, ``run_seed_stability``
and ``evaluate_scores`` return.

Each step writes its ``metrics.json`` (the record lineage and the reports read, unchanged); its report holds
that dict (``to_json()``) and the values a caller reads, as typed fields. The endpoints that could not be
evaluated, and the stale evaluations a comparison leaves out, are ``ItemFailure`` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radassets.reports import ItemFailure


@dataclass(frozen=True)
class SurvivalResult:
    """Kaplan-Meier high vs low risk on one endpoint: Cox hazard ratio with its CI, log-rank p, C-index."""

    hazard_ratio: float
    hr_ci_low: float
    hr_ci_high: float
    logrank_p: float
    c_index: float


@dataclass(frozen=True)
class EndpointEvaluation:
    """One evaluated endpoint of a model: the kNN protocol's and the linear probe's AUC with their CIs."""

    endpoint: str
    patients: int  # evaluated (labelled) patients
    knn_auc: float
    knn_auc_ci_low: float
    knn_auc_ci_high: float
    probe_auc: float
    probe_auc_ci_low: float
    probe_auc_ci_high: float
    survival: SurvivalResult | None


@dataclass(frozen=True)
class EvaluationReport:
    """What ``evaluate_model`` wrote under ``out_dir``."""

    out_dir: Path
    lineage_id: str
    patients: int
    definition_sha256: str
    nothing_evaluated: str | None  # why, when the dataset version has no clinical table or endpoint
    endpoints: list[EndpointEvaluation]  # the evaluated ones
    failures: list[ItemFailure]  # the endpoints that could not be evaluated, and why
    test_retest_cosine_mean: float | None
    metrics: dict[str, Any]

    @classmethod
    def of(cls, metrics: dict[str, Any], out_dir: Path) -> EvaluationReport:
        endpoints, failures = [], []
        for name, e in metrics["endpoints"].items():
            if e["status"] != "evaluated":
                failures.append(ItemFailure("evaluation", name, e["reason"]))
                continue
            knn, probe, s = e["knn"], e["linear_probe"], e.get("survival")
            survival = SurvivalResult(s["hazard_ratio"], s["hr_ci_low"], s["hr_ci_high"], s["logrank_p"],
                                      s["c_index"]) if s is not None else None
            endpoints.append(EndpointEvaluation(name, e["patients_evaluated"], knn["auc_mean"], knn["auc_ci_low"],
                                                knn["auc_ci_high"], probe["auc"], probe["auc_ci_low"],
                                                probe["auc_ci_high"], survival))
        retest = metrics["stability"].get("test_retest")
        nothing = metrics["reason"] if metrics.get("status") == "nothing to evaluate" else None
        return cls(out_dir, metrics["lineage_id"], metrics["patients"], metrics["definition_sha256"], nothing,
                   endpoints, failures, retest["cosine_mean"] if retest else None, metrics)

    def to_json(self) -> dict[str, Any]:
        """``metrics.json``, as written."""
        return self.metrics


@dataclass(frozen=True)
class RankedModel:
    """One model's place on one endpoint of a comparison."""

    model: str
    rank: int
    probe_auc: float
    knn_auc: float


@dataclass(frozen=True)
class ComparisonReport:
    """What ``compare_models`` wrote under ``out_dir``."""

    out_dir: Path
    lineage_id: str
    models: list[str]  # the models compared (current evaluations)
    nothing_compared: str | None  # why, when the dataset version has no clinical table or endpoint
    rankings: dict[str, list[RankedModel]]  # per endpoint that some model could be evaluated on, best first
    figures: list[str]  # file names under out_dir
    failures: list[ItemFailure]  # the stale evaluations left out, by model, and what to materialize again
    metrics: dict[str, Any]

    @classmethod
    def of(cls, metrics: dict[str, Any], out_dir: Path) -> ComparisonReport:
        rankings = {endpoint: sorted((RankedModel(m, r["rank"], r["probe_auc"], r["knn_auc"])
                                      for m, r in e["models"].items()), key=lambda r: r.rank)
                    for endpoint, e in metrics["endpoints"].items() if "models" in e}
        failures = [ItemFailure("comparison", m, f"{'; '.join(s['causes'])}. Materialize {s['rematerialize']} again.")
                    for m, s in metrics["stale"].items()]
        nothing = metrics["reason"] if metrics.get("status") == "nothing to compare" else None
        return cls(out_dir, metrics["lineage_id"], list(metrics["models"]), nothing, rankings,
                   list(metrics["figures"]), failures, metrics)

    def to_json(self) -> dict[str, Any]:
        """``metrics.json``, as written."""
        return self.metrics


@dataclass(frozen=True)
class EndpointStability:
    """Seed-perturbation stability of one endpoint: kappa of the perturbed predictions, AUC per trial."""

    endpoint: str
    patients: int
    kappa_mean: float
    kappa_sd: float
    kappa_min: float
    changed_mean: float  # fraction of predictions that changed class
    unperturbed_auc: float
    auc_mean: float
    auc_sd: float


@dataclass(frozen=True)
class StabilityReport:
    """What ``run_seed_stability`` wrote under ``out_dir``."""

    out_dir: Path
    lineage_id: str
    patients_perturbed: int
    trials: int
    sd_mm: float
    endpoints: list[EndpointStability]
    failures: list[ItemFailure]  # the endpoints that could not be evaluated, and why
    metrics: dict[str, Any]

    @classmethod
    def of(cls, metrics: dict[str, Any], out_dir: Path) -> StabilityReport:
        endpoints = [EndpointStability(name, e["patients"], e["kappa_mean"], e["kappa_sd"], e["kappa_min"],
                                       e["changed_mean"], e["unperturbed_auc"], e["auc_mean"], e["auc_sd"])
                     for name, e in metrics["endpoints"].items()]
        failures = [ItemFailure("seed_stability", name, why) for name, why in metrics["endpoints_not_evaluable"].items()]
        protocol = metrics["protocol"]
        return cls(out_dir, metrics["lineage_id"], metrics["patients_perturbed"], protocol["trials"],
                   protocol["sd_mm"], endpoints, failures, metrics)

    def to_json(self) -> dict[str, Any]:
        """``metrics.json``, as written."""
        return self.metrics


@dataclass(frozen=True)
class ScoresReport:
    """What ``evaluate_scores`` wrote under ``out_dir``: published risk scores against an endpoint."""

    out_dir: Path
    lineage_id: str
    n: int
    n_events_before_horizon: int
    auc: float
    auc_ci_low: float
    auc_ci_high: float
    threshold: float
    hazard_ratio: float
    hr_ci_low: float
    hr_ci_high: float
    cox_p: float
    logrank_p: float
    c_index: float
    excluded: dict[str, int]  # patients left out, by cause
    metrics: dict[str, Any]
    replication: dict[str, Any] | None = None  # against a reference model's scores (``replication.py``), if asked

    # The headline values, in the order ``radassets evaluate scores`` prints them.
    HEADLINE = ("n", "n_events_before_horizon", "auc", "auc_ci_low", "auc_ci_high", "threshold", "hazard_ratio",
                "hr_ci_low", "hr_ci_high", "cox_p", "logrank_p", "c_index")

    @classmethod
    def of(cls, metrics: dict[str, Any], out_dir: Path) -> ScoresReport:
        return cls(out_dir=out_dir, lineage_id=metrics["lineage_id"], **{k: metrics[k] for k in cls.HEADLINE},
                   excluded=metrics["excluded"], metrics=metrics, replication=metrics.get("replication"))

    def headline(self) -> dict[str, Any]:
        """The headline values (plain values, in print order)."""
        return {k: getattr(self, k) for k in self.HEADLINE}

    def replication_headline(self) -> dict[str, Any]:
        """The comparison with the reference model in a few plain values (empty without one)."""
        if self.replication is None:
            return {}
        d, a = self.replication["delong"], self.replication["agreement"]
        return {"reference": self.replication["reference"], "reference_auc": d["auc_reference"],
                "auc_difference": d["difference"], "delong_z": d["z"], "delong_p": d["p"],
                "risk_group_agreement_pct": a["percent_agreement"], "risk_group_kappa": a["cohen_kappa"]}

    def to_json(self) -> dict[str, Any]:
        """``metrics.json``, as written."""
        return self.metrics
