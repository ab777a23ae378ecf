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


class SurvivalFitError(RadassetsError, ValueError):
    """The survival model cannot be fitted to these patients (the message says why)."""


def _auc_mann_whitney(label: np.ndarray, score: np.ndarray) -> float:
    """AUC as the Mann-Whitney U of positives over negatives divided by n1 n0, from scipy's average
    ranks (ties count half): U = R1 - n1 (n1 + 1) / 2. The same number as ``roc_auc_score``
    without its per-call input validation, which would dominate 2000 bootstrap resamples."""
    positive = label == 1
    n1, n0 = int(positive.sum()), int((~positive).sum())
    return (float(rankdata(score)[positive].sum()) - n1 * (n1 + 1) / 2) / (n1 * n0)


def auc_with_bootstrap_ci(label: np.ndarray, score: np.ndarray, seed: int, n_boot: int = N_BOOT,
                          level: float = 0.95) -> dict[str, Any]:
    label, score = np.asarray(label, int), np.asarray(score, float)
    if len(np.unique(label)) < 2:
        raise ValueError(f"AUC needs both classes; all {len(label)} labels are {label[0] if len(label) else 'absent'}")
    auc = float(roc_auc_score(label, score))
    if not np.isclose(_auc_mann_whitney(label, score), auc, rtol=0, atol=1e-12):
        raise AssertionError("Mann-Whitney and scikit-learn AUCs disagree")  # they are the same statistic
    rng = np.random.default_rng(seed)
    draws, skipped = [], 0
    for _ in range(n_boot):
        i = rng.integers(0, len(label), len(label))
        if label[i].min() == label[i].max():
            skipped += 1
            continue
        draws.append(_auc_mann_whitney(label[i], score[i]))
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
