"""Evaluation of one model's embeddings on one dataset version, for every endpoint it declares.

Patients: one embedding per patient, from the first scan (re-scans of test-retest pairs are kept
for stability only) and, if a scan has several lesions, the largest. Per endpoint:

- the label definition (horizon, censoring convention, counts excluded) is recorded;
- the kNN protocol of TumorImagingBench and the linear probe (``probes``);
- survival: the linear probe's risk score (out-of-fold for every patient with a binary label; for
  patients without one, e.g. censored early under ``drop``, the probe fitted on all labelled
  patients, which never saw them) split at its median: Kaplan–Meier, log-rank, Cox hazard ratio,
  C-index over the full follow-up (``survival``).

Stability: for test-retest pairs, the cosine similarity of the two scans' embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from radassets.datasets import DatasetVersion
from radassets.evaluation.labels import Labels, labels_for
from radassets.evaluation.probes import knn_protocol, linear_probe, probe_scores
from radassets.evaluation.survival import auc_with_bootstrap_ci, c_index, risk_groups

SEED = 20261124
# Each split's validation part (20 %) needs a patient of each class: 5 of the smaller class at least.
MIN_PER_CLASS = 5


@dataclass
class EndpointResult:
    endpoint: str
    metrics: dict[str, Any]
    # Per-patient rows used by the figures: PatientID, label (NaN if none), time_days, event, risk.
    patients: pd.DataFrame = field(repr=False)


def test_retest_pairs(definition: DatasetVersion, table: pd.DataFrame | None) -> list[tuple[str, str]]:
    """(test, retest) SeriesInstanceUID pairs declared by the dataset version (series-column form)."""
    tr = definition.test_retest
    if tr is None or table is None or tr.test_column is None:
        return []
    return [(str(a), str(b)) for a, b in zip(table[tr.test_column], table[tr.retest_column])]


def patient_embeddings(rows: list[dict], matrix: np.ndarray, seeds: pd.DataFrame,
                       retest_series: set[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per patient (first scan, largest lesion) and its embedding."""
    frame = pd.DataFrame(rows)
    frame["row"] = np.arange(len(frame))
    volume = seeds.set_index("seed_id")["volume_ml"] if "volume_ml" in seeds else pd.Series(dtype=float)
    frame["volume_ml"] = frame["seed_id"].map(volume).fillna(0.0)
    frame = frame[~frame["SeriesInstanceUID"].isin(retest_series)]
    frame = frame.sort_values(["PatientID", "volume_ml"], ascending=[True, False]).drop_duplicates("PatientID")
    return frame.reset_index(drop=True), matrix[frame["row"].to_numpy()]


def cosine_stability(rows: list[dict], matrix: np.ndarray, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    by_series: dict[str, int] = {}
    for i, r in enumerate(rows):
        by_series.setdefault(r["SeriesInstanceUID"], i)  # the first lesion of the series: GTV-1 where selected
    sims = []
    for test, retest in pairs:
        if test in by_series and retest in by_series:
            a, b = matrix[by_series[test]], matrix[by_series[retest]]
            sims.append({"test": test, "retest": retest,
                         "cosine": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))})
    values = np.array([s["cosine"] for s in sims])
    return {"pairs_declared": len(pairs), "pairs_embedded": len(sims),
            "cosine_mean": float(values.mean()) if len(values) else None,
            "cosine_median": float(np.median(values)) if len(values) else None,
            "cosine_min": float(values.min()) if len(values) else None, "pairs": sims}


def endpoint_labels(definition: DatasetVersion, endpoint_index: int, clinical: pd.DataFrame,
                    patients: pd.DataFrame) -> tuple[Labels, pd.DataFrame]:
    """The endpoint's labels, and the patients that have a clinical row joined to them: columns ``index``
    (the patient's row in ``patients`` and its embedding matrix), PatientID, label (NaN if none),
    time_days, event."""
    labels = labels_for(clinical, definition.clinical.id_column, definition.endpoints[endpoint_index])
    if definition.clinical.id_suffix_pattern:
        labels.frame["PatientID"] = labels.frame["PatientID"].str.replace(definition.clinical.id_suffix_pattern, "",
                                                                          regex=True)
    return labels, patients[["PatientID"]].reset_index().merge(labels.frame, on="PatientID", how="inner")


def evaluable(y: np.ndarray) -> bool:
    """Whether binary labels have enough patients of each class for the stratified protocols."""
    return len(y) > 0 and int(min(y.sum(), len(y) - y.sum())) >= MIN_PER_CLASS


def evaluate_endpoint(definition: DatasetVersion, endpoint_index: int, clinical: pd.DataFrame,
                      patients: pd.DataFrame, x: np.ndarray, seed: int = SEED) -> EndpointResult:
    endpoint = definition.endpoints[endpoint_index]
    labels, joined = endpoint_labels(definition, endpoint_index, clinical, patients)
    no_clinical = int(len(patients) - len(joined))
    labelled = joined[joined["label"].notna()]
    y = labelled["label"].to_numpy(int)
    xl = x[labelled["index"].to_numpy()]
    if not evaluable(y):
        reason = (f"{int(y.sum())} positive and {int(len(y) - y.sum())} negative patients with a label; the "
                  f"stratified protocols need at least {MIN_PER_CLASS} of each")
        return EndpointResult(endpoint.name, {"status": "not evaluable", "reason": reason,
                                              "label_definition": labels.definition, "labels": labels.summary(),
                                              "patients_evaluated": int(len(y)), "positives": int(y.sum()),
                                              "patients_without_clinical_row": no_clinical},
                              joined.drop(columns=["index"]).assign(risk=np.nan))
    knn = knn_protocol(xl, y)
    oof, fitted = linear_probe(xl, y, seed)
    probe_auc = auc_with_bootstrap_ci(y, oof, seed)
    metrics: dict[str, Any] = {
        "status": "evaluated", "label_definition": labels.definition, "labels": labels.summary(),
        "patients_evaluated": int(len(labelled)), "positives": int(y.sum()),
        "patients_without_clinical_row": no_clinical,
        "knn": knn.as_dict(),
        "linear_probe": {"model": "StandardScaler + LogisticRegression(C=1, L2)", "folds": 10, "seed": seed,
                         **probe_auc},
    }
    risk = pd.Series(np.nan, index=joined.index)
    risk[labelled.index] = oof
    unlabelled = joined[joined["label"].isna()]
    if len(unlabelled):
        risk[unlabelled.index] = probe_scores(fitted, x[unlabelled["index"].to_numpy()])
    joined = joined.assign(risk=risk)
    if endpoint.kind == "survival":
        threshold = float(joined["risk"].median())
        metrics["survival"] = {
            "risk_score": "linear probe: out-of-fold for labelled patients, the probe fitted on all labelled "
                          "patients for the others", "threshold": "median risk",
            "n": int(len(joined)), "events": int(joined["event"].sum()),
            **risk_groups(joined["time_days"], joined["event"], joined["risk"], threshold),
            "c_index": c_index(joined["time_days"], joined["event"], joined["risk"]),
        }
    return EndpointResult(endpoint.name, metrics, joined.drop(columns=["index"]))
