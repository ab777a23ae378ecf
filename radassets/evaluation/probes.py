"""Probes of embeddings: the kNN protocol of TumorImagingBench and a cross-validated linear probe.

kNN (TumorImagingBench): for each of 10 splits (seeds 0..9, recorded), a stratified 50 / 20 / 30 %
train / validation / test split; cosine-distance kNN with uniform weights; k in 1..50 (at most
the training size) chosen by validation AUC (ties: the smallest k); the chosen k, fitted on the
training part, gives the test AUC. Reported: the mean test AUC with CI mean ± 1.96 · SD / √10
(SD with ddof = 1). k is searched exactly: per split, scikit-learn's ``NearestNeighbors`` ranks the
training patients once for every validation and test patient, and the predicted probability for
each k is the positive fraction of the first k of that ranking, which is what
``KNeighborsClassifier(k, metric="cosine", algorithm="brute")`` predicts. No stochastic tuner is
needed for a one-dimensional integer search. The cosine distances between all patients are computed
once per partition (scikit-learn's ``cosine_distances``, one row per distinct embedding) and every split
ranks its part: the splits share one matrix product instead of two per split, the cost of the
protocol on large embeddings. Equal distances are ranked by the training patient's position
(a stable sort), so the neighbours of a patient are defined where distances tie (patients with the
same embedding, which one distinct row makes exactly equal): scikit-learn leaves their order to its
partial sort.

"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.metrics.pairwise import cosine_distances
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

K_MAX = 50
N_SPLITS = 10


@dataclass
class KnnResult:
    auc_mean: float
    auc_ci_low: float
    auc_ci_high: float
    splits: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"protocol": "TumorImagingBench kNN: stratified 50/20/30 splits, cosine kNN, k by validation AUC",
                "auc_mean": self.auc_mean, "auc_ci_low": self.auc_ci_low, "auc_ci_high": self.auc_ci_high,
                "ci": "mean ± 1.96 SD/sqrt(n_splits), SD with ddof=1", "splits": self.splits}


def cosine_distance_matrix(x: np.ndarray) -> np.ndarray:
    """(n, n) cosine distances between the rows of ``x`` (scikit-learn's ``cosine_distances``), computed from one
    row per distinct embedding: a matrix product rounds a dot product by its place in the matrix, so two
    patients with the same embedding could otherwise differ in the last bit from a third one, and a tie become
    an order."""
    rows = np.ascontiguousarray(np.asarray(x, float) + 0.0)  # + 0.0: -0.0 becomes 0.0, the same embedding
    first: dict[bytes, int] = {}  # a row's bytes -> its distinct row (hashing: np.unique(axis=0) sorts, slowly)
    inverse = np.array([first.setdefault(row.tobytes(), len(first)) for row in rows], dtype=np.intp)
    distinct = np.unique(inverse, return_index=True)[1]  # the first patient of each distinct embedding
    return cosine_distances(rows[distinct])[np.ix_(inverse, inverse)]


def knn_votes(distances: np.ndarray, train_y: np.ndarray, k_max: int) -> np.ndarray:
    """(n_query, k_max) integers: column k-1 is the number of positives among the k nearest training patients,
    ``distances`` being (n_query, n_train); equal distances rank by training position (a stable sort)."""
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :k_max]
    return np.cumsum(train_y[nearest], axis=1)


def knn_probabilities(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, k_max: int) -> np.ndarray:
    """(k_max, n_query) probabilities: row k-1 is the positive fraction among the k nearest (cosine)."""
    distances = cosine_distance_matrix(np.concatenate([np.asarray(query_x, float), np.asarray(train_x, float)]))
    n = len(query_x)
    return knn_votes(distances[:n, n:], train_y, k_max).T / np.arange(1, k_max + 1)[:, None]


def twice_mann_whitney_u(y: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """2U of every column of ``votes`` (patients × k) against the binary labels ``y``: exact integers (mid-ranks
    are half-integers, their sums exact in float64). AUC_k = 2U_k / (2 n1 n0); a column's order is that of its
    probabilities (votes / k), so this is the AUC roc_auc_score computes, without its rounding."""
    ranks = rankdata(votes, axis=0)  # mid-ranks per column, ties shared as roc_auc_score counts them (½)
    n1 = int(y.sum())
    return 2 * ranks[y == 1].sum(axis=0) - n1 * (n1 + 1)


def best_k(y: np.ndarray, votes: np.ndarray) -> tuple[int, float]:
    """(k, validation AUC): the k of the highest roc_auc_score of the probabilities votes / k, the smallest among
    ties, exactly as ``nanargmax`` over every k's ``roc_auc_score`` picks it, with one roc_auc_score per tied
    candidate instead of one per k. Two AUCs that differ differ by at least 1 / (2 n1 n0), far above the last-bit
    rounding of roc_auc_score, so the float maximum is among the k of the largest exact 2U; among those, the
    first float maximum is taken, as nanargmax does."""
    u2 = twice_mann_whitney_u(y, votes)
    candidates = np.flatnonzero(u2 == u2.max())
    aucs = [_auc(y, votes[:, k] / (k + 1)) for k in candidates]
    first = int(np.argmax(aucs))  # the first of equal floats
    return int(candidates[first]) + 1, aucs[first]


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def knn_protocol(x: np.ndarray, y: np.ndarray, n_splits: int = N_SPLITS, k_max: int = K_MAX) -> KnnResult:
    x, y = np.asarray(x, float), np.asarray(y, int)
    distances = cosine_distance_matrix(x)  # every pair once; each split ranks its part
    splits = []
    for seed in range(n_splits):
        # Integer sizes: a fractional test_size of 0.2 / 0.7 rounds up past 20 % for some n (float error).
        n_test, n_val = round(0.3 * len(y)), round(0.2 * len(y))
        train_val, test = train_test_split(np.arange(len(y)), test_size=n_test, stratify=y, random_state=seed)
        train, val = train_test_split(train_val, test_size=n_val, stratify=y[train_val], random_state=seed)
        kk = min(k_max, len(train))
        # One ranking of the training patients serves every k, for the validation and the test patients.
        votes = knn_votes(distances[np.ix_(val, train)], y[train], kk)
        if len(np.unique(y[val])) < 2:
            raise ValueError(f"split {seed}: the validation part has one class only; no k can be chosen")
        k, val_auc = best_k(y[val], votes)
        test_p = knn_votes(distances[np.ix_(test, train)], y[train], k)[:, k - 1] / k
        splits.append({"seed": seed, "k": k, "val_auc": val_auc, "test_auc": _auc(y[test], test_p),
                       "n_train": len(train), "n_val": len(val), "n_test": len(test)})
    aucs = np.array([s["test_auc"] for s in splits])
    mean, half = float(np.mean(aucs)), float(1.96 * np.std(aucs, ddof=1) / np.sqrt(len(aucs)))
    return KnnResult(mean, mean - half, mean + half, splits)


def _probe(c: float) -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def _folds(y: np.ndarray, seed: int, folds: int) -> StratifiedKFold:
    folds = min(folds, int(np.bincount(y).min()))
    if folds < 2:
        raise ValueError(f"too few patients in the smaller class ({int(np.bincount(y).min())}) to cross-validate")
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)


def probe_scores(model: Any, x: np.ndarray) -> np.ndarray:
    """The positive-class probability of a fitted probe (``_probe``) for each row of ``x``, in float64.

    A row's score depends on that row only, bit for bit, whatever the batch it is scored in (see the
    module docstring); it equals ``model.predict_proba(x)[:, 1]`` up to rounding."""
    scaler, logistic = model[0], model[-1]
    z = (np.asarray(x, float) - scaler.mean_) / scaler.scale_  # what StandardScaler.transform computes
    products = np.atleast_2d(z * logistic.coef_[0])
    intercept = float(logistic.intercept_[0])
    decision = np.array([math.fsum([*row.tolist(), intercept]) for row in products], dtype=float)
    return expit(decision)


def linear_probe(x: np.ndarray, y: np.ndarray, seed: int, folds: int = 10, c: float = 1.0) -> tuple[np.ndarray, Any]:
    """Out-of-fold probabilities of a standardised L2 logistic regression (each patient scored by the fold's
    model that did not see it, ``linear_probe_folds``), and the model refit on all data."""
    x, y = np.asarray(x, float), np.asarray(y, int)
    oof = np.full(len(y), np.nan)
    for held_out, model in linear_probe_folds(x, y, seed, folds, c):
        oof[held_out] = probe_scores(model, x[held_out])
    return oof, _probe(c).fit(x, y)


def linear_probe_folds(x: np.ndarray, y: np.ndarray, seed: int, folds: int = 10,
                       c: float = 1.0) -> list[tuple[np.ndarray, Any]]:
    """The fitted probe of every fold of ``linear_probe`` (same splits): (held-out indices, model fitted on the
    rest). Each patient's out-of-fold score is its fold's model applied to it (``probe_scores``), so new
    inputs of the same patients (e.g. moved seeds) are scored by a probe that never saw them."""
    x, y = np.asarray(x, float), np.asarray(y, int)
    return [(test, _probe(c).fit(x[train], y[train])) for train, test in _folds(y, seed, folds).split(x, y)]
