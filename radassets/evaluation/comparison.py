"""All evaluated models of one dataset version side by side: AUCs with CIs and ranks, DeLong tests between
models on the same patients, and how alike their embedding spaces are (mutual kNN).

- Per endpoint, each model's linear-probe AUC (out-of-fold, bootstrap CI) and kNN-protocol AUC,
  ranked by the probe AUC.
- DeLong's test of two correlated AUCs (DeLong et al. 1988) on the patients both models scored,
  with the fast algorithm of Sun & Xu (2014) on SciPy's mid-ranks. Written here: scikit-learn,
  lifelines and SciPy do not provide it. Checked in the tests against its defining properties (the AUC is scikit-learn's,
  identical scores give z = 0, its p-values agree with a paired bootstrap).
- Mutual kNN alignment (k = 10) of two embedding spaces on their common patients: the mean
  fraction of each patient's k nearest neighbours (cosine, scikit-learn) that both spaces share;
  1 means the same neighbourhoods, k / (n − 1) is what unrelated spaces share by chance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm, rankdata
from sklearn.neighbors import NearestNeighbors

MUTUAL_K = 10


def delong(label: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of each row of ``scores`` (models × patients) and their DeLong covariance matrix."""
    label = np.asarray(label, int)
    scores = np.atleast_2d(np.asarray(scores, float))
    positive, negative = scores[:, label == 1], scores[:, label == 0]
    m, n = positive.shape[1], negative.shape[1]
    aucs, v01, v10 = [], [], []
    for pos, neg in zip(positive, negative):
        tx, ty, tz = rankdata(pos), rankdata(neg), rankdata(np.concatenate([pos, neg]))
        aucs.append(tz[:m].sum() / (m * n) - (m + 1) / (2 * n))
        v01.append((tz[:m] - tx) / n)
        v10.append(1.0 - (tz[m:] - ty) / m)
    sx, sy = np.atleast_2d(np.cov(np.array(v01))), np.atleast_2d(np.cov(np.array(v10)))
    return np.array(aucs), sx / m + sy / n


def delong_test(label: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> dict[str, float]:
    """Two-sided DeLong test of AUC(a) = AUC(b) on the same patients."""
    aucs, cov = delong(label, np.vstack([score_a, score_b]))
    variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    z = 0.0 if variance <= 0 else float((aucs[0] - aucs[1]) / np.sqrt(variance))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": float(aucs[0] - aucs[1]), "z": z,
            "p": float(2 * norm.sf(abs(z)))}


def mutual_knn(a: np.ndarray, b: np.ndarray, k: int = MUTUAL_K) -> float:
    """Mean fraction of shared k nearest neighbours (cosine) of the same patients in two spaces."""
    k = min(k, len(a) - 1)
    neighbours = []
    for x in (a, b):
        _, idx = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(x).kneighbors(x)
        neighbours.append([set(row[row != i][:k]) for i, row in enumerate(idx)])
    return float(np.mean([len(na & nb) / k for na, nb in zip(*neighbours)]))


def rank_models(aucs: dict[str, float]) -> dict[str, int]:
    """1 = highest AUC; ties share the better rank."""
    ordered = sorted(aucs.values(), reverse=True)
    return {model: ordered.index(v) + 1 for model, v in aucs.items()}


def compare_endpoint(predictions: dict[str, Any], metrics: dict[str, dict]) -> dict[str, Any]:
    """``predictions``: model → DataFrame (PatientID, label, risk) of one endpoint; ``metrics``: model → its
    endpoint metrics. Returns the AUC table, ranks and pairwise DeLong tests on common patients."""
    models = sorted(predictions)
    table = {m: {"probe_auc": metrics[m]["linear_probe"]["auc"], "probe_auc_ci": [
        metrics[m]["linear_probe"]["auc_ci_low"], metrics[m]["linear_probe"]["auc_ci_high"]],
        "knn_auc": metrics[m]["knn"]["auc_mean"], "knn_auc_ci": [metrics[m]["knn"]["auc_ci_low"],
                                                                 metrics[m]["knn"]["auc_ci_high"]],
        "patients": metrics[m]["patients_evaluated"]} for m in models}
    ranks = rank_models({m: table[m]["probe_auc"] for m in models})
    for m in models:
        table[m]["rank"] = ranks[m]
    tests = []
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            pa = predictions[a][predictions[a]["label"].notna()].set_index("PatientID")
            pb = predictions[b][predictions[b]["label"].notna()].set_index("PatientID")
            common = pa.index.intersection(pb.index)
            if len(common) < 4 or pa.loc[common, "label"].nunique() < 2:
                continue
            result = delong_test(pa.loc[common, "label"].to_numpy(int), pa.loc[common, "risk"].to_numpy(float),
                                 pb.loc[common, "risk"].to_numpy(float))
            tests.append({"model_a": a, "model_b": b, "patients": int(len(common)), **result})
    return {"models": table, "delong": tests}
