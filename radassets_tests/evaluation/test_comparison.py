"""Model comparison statistics: DeLong's test (written here) against its defining properties and a paired
bootstrap; mutual kNN alignment against known geometry."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from radassets.evaluation.comparison import delong, delong_test, mutual_knn, rank_models


def scores(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.4).astype(int)
    strong = y * 1.2 + rng.normal(size=n)
    weak = y * 0.5 + rng.normal(size=n) + 0.3 * strong  # correlated with the strong one, as two models are
    return y, strong, weak


def test_delong_auc_is_sklearns_even_with_ties():
    y, strong, weak = scores()
    tied = np.round(weak, 1)  # many ties
    aucs, cov = delong(y, np.vstack([strong, tied]))
    assert aucs == pytest.approx([roc_auc_score(y, strong), roc_auc_score(y, tied)], abs=1e-12)
    assert cov.shape == (2, 2) and np.all(np.linalg.eigvalsh(cov) >= -1e-15)


def test_identical_scores_give_no_difference():
    y, strong, _ = scores()
    result = delong_test(y, strong, strong.copy())
    assert result["difference"] == 0 and result["z"] == 0 and result["p"] == 1.0


def test_delong_agrees_with_a_paired_bootstrap():
    y, strong, weak = scores()
    result = delong_test(y, strong, weak)
    rng = np.random.default_rng(1)
    diffs = []
    for _ in range(2000):
        i = rng.integers(0, len(y), len(y))
        diffs.append(roc_auc_score(y[i], strong[i]) - roc_auc_score(y[i], weak[i]))
    bootstrap_se = np.std(diffs, ddof=1)
    delong_se = result["difference"] / result["z"]
    assert delong_se == pytest.approx(bootstrap_se, rel=0.15)
    assert result["difference"] > 0 and result["p"] < 0.05  # AUC difference 0.08, SE 0.035


def test_mutual_knn_of_known_geometry():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 16))
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert mutual_knn(x, x @ rotation) == pytest.approx(1.0)  # a rotation keeps every cosine neighbour
    assert mutual_knn(x, 3.0 * x) == pytest.approx(1.0)
    unrelated = mutual_knn(x, rng.normal(size=(120, 16)))
    assert unrelated == pytest.approx(10 / 119, abs=0.05)  # chance: k / (n - 1)


def test_ranks_share_ties():
    assert rank_models({"a": 0.7, "b": 0.8, "c": 0.7}) == {"b": 1, "a": 2, "c": 2}
