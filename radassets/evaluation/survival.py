"""Risk scores against outcomes: AUC with a bootstrap CI, Kaplan–Meier groups, log-rank, Cox and C-index.

Everything is computed by lifelines and scikit-learn; this module only arranges their calls:

- AUC (``sklearn.metrics.roc_auc_score``) of the score against the binary label at the horizon,
  with a percentile bootstrap 95 % CI over patients (``n_boot`` resamples from a recorded seed;
  resamples with a single class are skipped and counted; each resample's AUC is the
  Mann-Whitney U / (n1 n0) from scipy's ranks, the same statistic, checked equal on the full sample);
- high vs low risk: score above the threshold (a higher score means a higher risk);
- log-rank test of the two groups over the full follow-up (``lifelines.statistics.logrank_test``);
- hazard ratio of the high-risk group with its 95 % CI and Wald p (``lifelines.CoxPHFitter`` on the
  full follow-up, one binary covariate);
- Harrell's C-index of the score (``lifelines.utils.concordance_index``, with the score negated as
  lifelines expects higher predictions to mean longer survival).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceError
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from radassets.errors import RadassetsError

N_BOOT = 2000
BOOTSTRAP_BLOCK_VALUES = 1 << 20  # resampled scores ranked at once (8 MiB of float64)


class SurvivalFitError(RadassetsError, ValueError):
    """The survival model cannot be fitted to these patients (the message says why)."""


def _auc_mann_whitney(label: np.ndarray, score: np.ndarray) -> float:
    """AUC as the Mann-Whitney U of positives over negatives divided by n1 n0, from scipy's average
    ranks (ties count half): U = R1 - n1 (n1 + 1) / 2. The same number as ``roc_auc_score``
    without its per-call input validation, which would dominate 2000 bootstrap resamples."""
    positive = label == 1
    n1, n0 = int(positive.sum()), int((~positive).sum())
    return (float(rankdata(score)[positive].sum()) - n1 * (n1 + 1) / 2) / (n1 * n0)


def _bootstrap_aucs(label: np.ndarray, score: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """The Mann-Whitney AUC of each of ``n_boot`` resamples with replacement that holds both classes, in draw
    order; a block of resamples at a time, ranked together (``rankdata`` along rows).

    The draws are one ``rng.integers`` call per resample, as a loop would make them: one call for all of
    them would consume the generator's stream differently. The AUC of each row is the same float as
    ``_auc_mann_whitney``'s: rank sums are sums of half-integers far below 2**53, exact in any order, and the
    last subtraction and division are the same IEEE operations."""
    n = len(label)
    aucs = []
    block = max(1, BOOTSTRAP_BLOCK_VALUES // max(n, 1))  # bounded memory for large cohorts
    for start in range(0, n_boot, block):
        rows = np.stack([rng.integers(0, n, n) for _ in range(min(block, n_boot - start))])
        positive = label[rows] == 1
        n1 = positive.sum(axis=1)
        both = (n1 > 0) & (n1 < n)  # a resample of one class has no AUC: skipped
        rows, positive, n1 = rows[both], positive[both], n1[both]
        rank_sums = np.where(positive, rankdata(score[rows], axis=1), 0.0).sum(axis=1)
        aucs.append((rank_sums - n1 * (n1 + 1) / 2) / (n1 * (n - n1)))
    return np.concatenate(aucs) if aucs else np.empty(0)


def auc_with_bootstrap_ci(label: np.ndarray, score: np.ndarray, seed: int, n_boot: int = N_BOOT,
                          level: float = 0.95) -> dict[str, Any]:
    label, score = np.asarray(label, int), np.asarray(score, float)
    if len(np.unique(label)) < 2:
        raise ValueError(f"AUC needs both classes; all {len(label)} labels are {label[0] if len(label) else 'absent'}")
    auc = float(roc_auc_score(label, score))
    if not np.isclose(_auc_mann_whitney(label, score), auc, rtol=0, atol=1e-12):
        raise AssertionError("Mann-Whitney and scikit-learn AUCs disagree")  # they are the same statistic
    draws = _bootstrap_aucs(label, score, np.random.default_rng(seed), n_boot)
    skipped = n_boot - len(draws)
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return {"auc": auc, "auc_ci_low": float(low), "auc_ci_high": float(high), "bootstrap_seed": seed,
            "bootstrap_resamples": n_boot, "bootstrap_resamples_skipped": skipped, "ci_level": level}


def risk_groups(time_days: np.ndarray, event: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, Any]:
    """Log-rank and Cox hazard ratio of score > threshold (high risk) vs the rest, over the full follow-up."""
    high = np.asarray(score, float) > threshold
    time_days, event = np.asarray(time_days, float), np.asarray(event, bool)
    if high.all() or not high.any():
        raise ValueError(f"threshold {threshold:g} puts every patient in one group; no comparison is possible")
    lr = logrank_test(time_days[high], time_days[~high], event_observed_A=event[high], event_observed_B=event[~high])
    cox = CoxPHFitter()
    try:
        cox.fit(pd.DataFrame({"time": time_days, "event": event.astype(int), "high_risk": high.astype(int)}),
                duration_col="time", event_col="event")
    except ConvergenceError as e:  # e.g. every event in one group: no finite hazard ratio
        raise SurvivalFitError(f"the Cox model of high vs low risk does not converge ({int(high.sum())} high-risk "
                               f"patients with {int(event[high].sum())} events, {int((~high).sum())} low-risk with "
                               f"{int(event[~high].sum())}): {str(e).splitlines()[0]}") from None
    row = cox.summary.loc["high_risk"]
    return {"threshold": float(threshold), "n_high": int(high.sum()), "n_low": int((~high).sum()),
            "logrank_p": float(lr.p_value), "logrank_statistic": float(lr.test_statistic),
            "hazard_ratio": float(row["exp(coef)"]), "hr_ci_low": float(row["exp(coef) lower 95%"]),
            "hr_ci_high": float(row["exp(coef) upper 95%"]), "cox_p": float(row["p"])}


def c_index(time_days: np.ndarray, event: np.ndarray, score: np.ndarray) -> float:
    """Harrell's C-index; NaN when no pair of patients can be ordered (e.g. no event)."""
    try:
        return float(concordance_index(np.asarray(time_days, float), -np.asarray(score, float),
                                       np.asarray(event, bool)))
    except ZeroDivisionError:  # lifelines: "No admissable pairs in the dataset."
        return float("nan")
