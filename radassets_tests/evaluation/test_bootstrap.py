"""The AUC bootstrap of ``auc_with_bootstrap_ci``: its resamples, ranked a block at a time, give exactly the floats
of one resample at a time (the loop it replaced, kept here as the reference)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from radassets.evaluation import survival
from radassets.evaluation.survival import auc_with_bootstrap_ci


def one_resample_at_a_time(label: np.ndarray, score: np.ndarray, seed: int, n_boot: int) -> tuple[list[float], int]:
    """The earlier loop: a draw, skipped if of one class, else its AUC from the positives' average ranks."""
    rng = np.random.default_rng(seed)
    draws, skipped = [], 0
    for _ in range(n_boot):
        i = rng.integers(0, len(label), len(label))
        if label[i].min() == label[i].max():
            skipped += 1
            continue
        positive = label[i] == 1
        n1, n0 = int(positive.sum()), int((~positive).sum())
        draws.append((float(rankdata(score[i])[positive].sum()) - n1 * (n1 + 1) / 2) / (n1 * n0))
    return draws, skipped


def cohorts():
    rng = np.random.default_rng(7)
    n = 207  # odd: the bounded integer draws of one call per resample differ from one call for all
    label = (rng.random(n) < 0.35).astype(int)
    yield "continuous", label, rng.normal(size=n) + label
    yield "many ties", label, np.round(rng.normal(size=n) + label, 1)
    small = np.array([1, 0, 0, 0, 0, 1, 0])  # small and unbalanced: many resamples of one class are skipped
    yield "small", small, np.array([0.9, 0.1, 0.4, 0.4, 0.2, 0.3, 0.8])


@pytest.mark.parametrize("name,label,score", list(cohorts()), ids=[c[0] for c in cohorts()])
@pytest.mark.parametrize("block_values", [1 << 20, 1000])  # one block, and many blocks (of 4 and 142 resamples)
def test_the_blocked_bootstrap_gives_the_floats_of_one_resample_at_a_time(monkeypatch, name, label, score,
                                                                          block_values):
    monkeypatch.setattr(survival, "BOOTSTRAP_BLOCK_VALUES", block_values)
    draws, skipped = one_resample_at_a_time(label, score, seed=3, n_boot=600)
    result = auc_with_bootstrap_ci(label, score, seed=3, n_boot=600)
    low, high = np.quantile(draws, [0.025, 0.975])
    assert result["bootstrap_resamples_skipped"] == skipped
    assert (result["auc_ci_low"], result["auc_ci_high"]) == (float(low), float(high))
    assert result["auc"] == roc_auc_score(label, score)
    if name == "small":
        assert skipped > 0
    assert np.array_equal(survival._bootstrap_aucs(label, score, np.random.default_rng(3), 600), np.array(draws))
