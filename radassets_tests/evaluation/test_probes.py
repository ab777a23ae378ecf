"""Probes against scikit-learn used directly: the exact k search equals fitting KNeighborsClassifier for every
k; the linear probe's out-of-fold scores equal cross_val_predict; a known signal is found, noise is not; a
patient's probe score is the same bits whatever batch it is scored in."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from radassets.evaluation.probes import (knn_probabilities, knn_protocol, linear_probe, linear_probe_folds,
                                         probe_scores)


def data(n=160, d=24, signal=1.5, seed=3):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.45).astype(int)
    x = rng.normal(size=(n, d))
    x[:, :3] += signal * y[:, None]  # the label shifts three dimensions
    return x, y


def test_one_ranking_gives_every_k_of_kneighborsclassifier():
    x, y = data()
    train, query = np.arange(100), np.arange(100, 160)
    probs = knn_probabilities(x[train], y[train], x[query], 50)
    for k in (1, 2, 7, 25, 50):
        knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(x[train], y[train])
        assert np.allclose(probs[k - 1], knn.predict_proba(x[query])[:, 1], atol=1e-12), k


def reference_protocol(x, y, n_splits=10, k_max=50):
    """TumorImagingBench's loop with the tuner replaced by trying every k: a classifier per k and split."""
    aucs, ks = [], []
    for seed in range(n_splits):
        train_val, test = train_test_split(np.arange(len(y)), test_size=48, stratify=y, random_state=seed)
        train, val = train_test_split(train_val, test_size=32, stratify=y[train_val], random_state=seed)
        best_k, best = None, -1.0
        for k in range(1, min(k_max, len(train)) + 1):
            knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(x[train], y[train])
            auc = roc_auc_score(y[val], knn.predict_proba(x[val])[:, 1])
            if auc > best:
                best_k, best = k, auc
        knn = KNeighborsClassifier(n_neighbors=best_k, metric="cosine", algorithm="brute").fit(x[train], y[train])
        aucs.append(roc_auc_score(y[test], knn.predict_proba(x[test])[:, 1]))
        ks.append(best_k)
    return aucs, ks


def test_knn_protocol_equals_the_reference_loop_and_finds_the_signal():
    x, y = data()
    result = knn_protocol(x, y)
    aucs, ks = reference_protocol(x, y)
    assert [s["test_auc"] for s in result.splits] == pytest.approx(aucs, abs=1e-12)
    assert [s["k"] for s in result.splits] == ks
    assert [s["seed"] for s in result.splits] == list(range(10))
    assert {(s["n_train"], s["n_val"], s["n_test"]) for s in result.splits} == {(80, 32, 48)}
    sd = np.std(aucs, ddof=1)
    assert result.auc_mean == pytest.approx(np.mean(aucs))
    assert result.auc_ci_high - result.auc_mean == pytest.approx(1.96 * sd / np.sqrt(10))
    assert result.auc_mean > 0.75
    noise_x, _ = data(signal=0.0, seed=4)
    assert abs(knn_protocol(noise_x, y).auc_mean - 0.5) < 0.1


def test_linear_probe_is_cross_val_predict():
    x, y = data()
    oof, fitted = linear_probe(x, y, seed=11)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    expected = cross_val_predict(model, x, y, cv=StratifiedKFold(10, shuffle=True, random_state=11),
                                 method="predict_proba")[:, 1]
    assert np.allclose(oof, expected)
    assert roc_auc_score(y, oof) > 0.8
    assert fitted.predict_proba(x).shape == (len(y), 2)


def test_linear_probe_folds_give_the_out_of_fold_scores():
    """Scoring each patient with the model of the fold that held it out reproduces linear_probe exactly: the
    seed-perturbation stability scores moved seeds with the same probes as the evaluation."""
    x, y = data()
    oof, _ = linear_probe(x, y, seed=11)
    folds = linear_probe_folds(x, y, seed=11)
    held_out = np.concatenate([test for test, _ in folds])
    assert sorted(held_out) == list(range(len(y)))  # every patient held out exactly once
    again = np.zeros(len(y))
    for test, model in folds:
        again[test] = probe_scores(model, x[test])
    assert np.array_equal(again, oof)  # bit for bit: the evaluation and the perturbation score alike


def test_a_patients_score_is_the_same_bits_alone_or_in_any_batch():
    """A score depends on the patient's row only: alone, in pairs (the perturbation's trials), in its fold or
    in reverse order, the same float64. scikit-learn's predict_proba goes through BLAS, whose result for a
    row depends on the batch around it; the median patient's score is the high-risk threshold, so one last
    bit changed its class (issue 13: kappa 0.965 with the seeds not moved)."""
    x, y = data(d=107)  # as many features as the radiomics model
    x = x * np.geomspace(0.01, 1e4, x.shape[1])  # features of very different scales, as radiomics gives
    model = linear_probe_folds(x, y, seed=11)[0][1]
    batch = probe_scores(model, x)
    alone = np.array([probe_scores(model, x[i:i + 1])[0] for i in range(len(x))])
    assert np.array_equal(alone, batch)
    for size in (2, 3, 7, 16):
        assert np.array_equal(np.concatenate([probe_scores(model, x[i:i + size]) for i in range(0, len(x), size)]),
                              batch), size
    assert np.array_equal(probe_scores(model, x[::-1])[::-1], batch)
    assert np.array_equal(probe_scores(model, x[5]), batch[5:6])  # one row given as a vector
    assert batch.dtype == np.float64
    assert np.allclose(batch, model.predict_proba(x)[:, 1], rtol=0, atol=1e-12)  # scikit-learn's probability


def test_the_exact_auc_of_every_k_is_roc_auc_score_and_the_chosen_k_is_nanargmax_of_the_loop():
    """2U / (2 n1 n0) of the votes equals roc_auc_score of the probabilities for every k, and best_k picks what
    nanargmax over the whole loop of roc_auc_score picks (the same k, the same float), on data with many ties
    (few patients, many k, ties between k)."""
    from sklearn.metrics.pairwise import cosine_distances

    from radassets.evaluation.probes import best_k, knn_votes, twice_mann_whitney_u

    for seed, (n, signal) in enumerate([(160, 1.5), (60, 0.0), (40, 3.0), (90, 0.4)]):
        x, y = data(n=n, signal=signal, seed=seed)
        train, val = np.arange(n // 2), np.arange(n // 2, n)
        kk = min(50, len(train))
        votes = knn_votes(cosine_distances(x[val], x[train]), y[train], kk)
        loop = [roc_auc_score(y[val], votes[:, k - 1] / k) for k in range(1, kk + 1)]
        n1, n0 = int(y[val].sum()), int((1 - y[val]).sum())
        assert np.allclose(twice_mann_whitney_u(y[val], votes) / (2 * n1 * n0), loop, rtol=0, atol=1e-14)
        k, auc = best_k(y[val], votes)
        assert (k, auc) == (int(np.nanargmax(loop)) + 1, loop[int(np.nanargmax(loop))])


def test_patients_with_the_same_embedding_tie_exactly_and_rank_by_training_position():
    """Duplicated embeddings (a table model, a patient entered twice) with different labels: their distances to
    every patient are equal, and the protocol's k and AUCs are those of a reference that ranks by (distance, training
    position), with each distance computed pair by pair (scipy), where equal embeddings give equal floats."""
    from scipy.spatial.distance import cdist

    from radassets.evaluation.probes import best_k, cosine_distance_matrix

    rng = np.random.default_rng(11)
    base, y = data(n=60, d=8, signal=1.0, seed=5)
    copies = rng.integers(0, 60, 60)
    x = np.concatenate([base, base[copies]])  # 60 patients more, each with another's embedding
    y = np.concatenate([y, rng.integers(0, 2, 60)])  # and labels of their own
    d = cosine_distance_matrix(x)
    assert np.array_equal(d[60:], d[copies]) and np.array_equal(d[:, 60:], d[:, copies])
    pairwise = np.round(cdist(x, x, "cosine"), 12)  # equal inputs, equal floats; others differ by far more
    result = knn_protocol(x, y)
    for split in result.splits:
        n_test, n_val = round(0.3 * len(y)), round(0.2 * len(y))
        train_val, test = train_test_split(np.arange(len(y)), test_size=n_test, stratify=y, random_state=split["seed"])
        train, val = train_test_split(train_val, test_size=n_val, stratify=y[train_val], random_state=split["seed"])

        k, val_auc = best_k(y[val], reference_votes(pairwise, y, train, val, min(50, len(train))))
        assert (split["k"], split["val_auc"]) == (k, val_auc)
        assert split["test_auc"] == roc_auc_score(y[test], reference_votes(pairwise, y, train, test, k)[:, k - 1] / k)


def reference_votes(pairwise, y, train, query, k_max):
    """Positives among the k nearest, training patients ranked by (distance, position in the training part)."""
    order = [sorted(range(len(train)), key=lambda j: (pairwise[q, train[j]], j))[:k_max] for q in query]
    return np.cumsum(y[train][np.array(order)], axis=1)
