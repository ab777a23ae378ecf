"""A replicated model against the original it reproduces, on the patients both scored.

The seed study (Bontempi et al., ImagingDataCommons/idc-radiomics-reproducibility) compared its cloud
re-implementation of the Hosny et al. 2018 CNN (``CNN_logit0``) with the original model's published outputs
(``baseline_logit0``) on the same 206 LUNG1 patients: a paired DeLong test of the two AUCs of 2-year survival and
Kaplan-Meier curves of each model's high/low risk groups, both split at the same threshold. Here:

- DeLong's paired test (``comparison.delong_test``): each AUC, their difference (replicated − reference), z and
  the two-sided p.
- The agreement of the two models' binary predictions, the risk groups the notebook drew (high risk: score above
  the threshold, ``group_replicated_cat`` / ``group_baseline_cat`` there): the 2×2 counts, percent agreement and
  Cohen's kappa (scikit-learn). The notebook reports no test of the discordant pairs, so none is made here.
- What the notebook printed, and how it relates to our p (``NOTEBOOK_HOSNY``): its cell passed the log10 p-value of
  the Yandex ``delong_roc_test`` to the natural ``exp``, so it printed exp(log10 p), not p.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import cohen_kappa_score

from radassets.errors import RadassetsError
from radassets.evaluation.comparison import delong_test

# Where the seed study printed its DeLong result (read at the commit PROVENANCE.tsv names for its data files).
NOTEBOOK_HOSNY: dict[str, Any] = {
    "repository": "ImagingDataCommons/idc-radiomics-reproducibility",
    "commit": "981035d8568640f4a58879762cb2fa6d9f4185d1",
    "path": "notebooks/hosny_results_comparison.ipynb",
    "cell": "rWYP7hLcQiAE (execution count 27)",
    "code": "delong_log_pval = delong_roc_test(y_true, y_pred_baseline, y_pred_replication); "
            "delong_pval = exp(delong_log_pval)",
    "printed": 0.6802650987584817,
    "printed_is": "exp_of_log10_p",
    "label": "surv2yr column (1 = alive at two years); scores 1 − logit0 (the probability of surviving)",
    "threshold_printed": 0.9721243980000001,
    "risk_groups": "group_baseline_cat / group_replicated_cat: logit0 > median_threshold for both models, the "
                   "median logit_0 of Radboud.csv (the tuning cohort), printed in cell 7oHGPVSk8df8 (execution "
                   "count 17)",
    "orientation": "The AUCs are those of the risk scores against death before two years (the same 206 labels); "
                   "the sign of its difference and z is the reverse of ours, as it tested baseline against "
                   "replication.",
}

# The printed value has 16 significant digits; it and our p come from the same mid-rank AUCs and covariances by
# different float paths (numpy/scipy versions, summation order), and ln/10** amplify a relative error by |ln p|
# (< 1 here). 1e-9 is far above that and far below any difference that would change a reported digit.
PRINTED_REL_TOL = 1e-9


class ReplicationInputError(RadassetsError, ValueError):
    """The two models' scores cannot be compared as given."""


def _agreement(high_replicated: np.ndarray, high_reference: np.ndarray) -> dict[str, Any]:
    both_high = int((high_replicated & high_reference).sum())
    both_low = int((~high_replicated & ~high_reference).sum())
    replicated_only = int((high_replicated & ~high_reference).sum())
    reference_only = int((~high_replicated & high_reference).sum())
    n = both_high + both_low + replicated_only + reference_only
    # Kappa is 0/0 when both models put every patient in the same one group; say so instead of NaN.
    single = len(set(high_replicated.tolist()) | set(high_reference.tolist())) == 1
    kappa = None if single else float(cohen_kappa_score(high_replicated.astype(int), high_reference.astype(int)))
    return {"n": n, "both_high": both_high, "both_low": both_low, "replicated_high_only": replicated_only,
            "reference_high_only": reference_only, "discordant": replicated_only + reference_only,
            "percent_agreement": 100.0 * (both_high + both_low) / n, "cohen_kappa": kappa}


def _published(published: dict[str, Any], p: float) -> dict[str, Any]:
    """The notebook's printed number, what it is, and whether it agrees with our p once undone."""
    out = dict(published)
    if published.get("printed_is") == "exp_of_log10_p":
        recovered = 10 ** math.log(published["printed"])
        out["p_from_printed"] = recovered
    elif published.get("printed_is") == "log10_p":
        recovered = 10 ** published["printed"]
        out["p_from_printed"] = recovered
    else:
        recovered = published["printed"]
        out["p_from_printed"] = recovered
    out["agrees_with_p"] = math.isclose(recovered, p, rel_tol=PRINTED_REL_TOL)
    return out


def compare_to_reference(label: Any, replicated: Any, reference: Any, threshold_replicated: float,
                         threshold_reference: float, *, replicated_name: str = "replicated",
                         reference_name: str = "reference", threshold_rule: str = "",
                         published: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compare two models' scores (higher = higher risk) of the same patients, in the same order.

    ``label``: 1 = event before the horizon, 0 = none, NaN = no binary label (left out of DeLong, kept in the
    agreement of the risk groups). Patients without both scores are left out of everything (counted).
    ``published``: what the original notebook printed (``NOTEBOOK_HOSNY``); its relation to our p is recorded."""
    label = np.asarray(label, float)
    replicated = np.asarray(replicated, float)
    reference = np.asarray(reference, float)
    if not (len(label) == len(replicated) == len(reference)):
        raise ReplicationInputError(f"{len(label)} labels, {len(replicated)} {replicated_name} and "
                                    f"{len(reference)} {reference_name} scores: one per patient each")
    both = np.isfinite(replicated) & np.isfinite(reference)
    if not both.any():
        raise ReplicationInputError(f"no patient has both a {replicated_name} and a {reference_name} score")
    labelled = both & np.isfinite(label)
    y = label[labelled].astype(int)
    if len(set(y.tolist())) < 2:
        raise ReplicationInputError(f"the {int(labelled.sum())} patients scored by both models with a label are all "
                                    f"of one class; DeLong's test needs both")
    test = delong_test(y, replicated[labelled], reference[labelled])
    high_replicated = replicated[both] > threshold_replicated
    high_reference = reference[both] > threshold_reference
    result: dict[str, Any] = {
        "replicated": replicated_name, "reference": reference_name,
        "n_scored_by_both": int(both.sum()), "n_missing_a_score": int((~both).sum()),
        "delong": {"n": int(labelled.sum()), "n_events": int(y.sum()),
                   "auc_replicated": test["auc_a"], "auc_reference": test["auc_b"],
                   "difference": test["difference"], "z": test["z"], "p": test["p"],
                   "test": "DeLong et al. 1988, paired, two-sided; difference = replicated − reference"},
        "agreement": {"binary_prediction": "high risk = score above the threshold (the notebook's risk groups)",
                      "threshold_replicated": float(threshold_replicated),
                      "threshold_reference": float(threshold_reference), "threshold_rule": threshold_rule,
                      **_agreement(high_replicated, high_reference)},
    }
    if published is not None:
        result["published"] = _published(published, test["p"])
    return result


def _fmt(value: Any, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def replication_markdown(replication: dict[str, Any], caption: str | None = None) -> list[str]:
    """A report section: the DeLong and agreement table (``caption`` under it) and a paragraph relating our p to
    the published one."""
    d, a = replication["delong"], replication["agreement"]
    rep, ref = replication["replicated"], replication["reference"]
    lines = [
        f"## Replicated ({rep}) against the original ({ref})", "",
        f"Patients scored by both: {replication['n_scored_by_both']} "
        f"({d['n']} with a binary label, {d['n_events']} events before the horizon).", "",
        "| quantity | value |", "|---|---|",
        f"| AUC {rep} | {d['auc_replicated']:.4f} |", f"| AUC {ref} | {d['auc_reference']:.4f} |",
        f"| difference ({rep} − {ref}) | {d['difference']:+.4f} |", f"| DeLong z | {d['z']:.4f} |",
        f"| DeLong p (two-sided) | {d['p']:.4f} |",
        f"| high risk by both / low by both | {a['both_high']} / {a['both_low']} |",
        f"| high by {rep} only / by {ref} only | {a['replicated_high_only']} / {a['reference_high_only']} |",
        f"| agreement of the risk groups | {a['percent_agreement']:.1f} % of {a['n']} |",
        f"| Cohen's kappa | {_fmt(a['cohen_kappa'])} |", "",
        *([caption, ""] if caption else []),
        f"Risk groups: {a['binary_prediction']}; thresholds {a['threshold_replicated']:.6g} ({rep}) and "
        f"{a['threshold_reference']:.6g} ({ref}){'; ' + a['threshold_rule'] if a['threshold_rule'] else ''}.",
    ]
    published = replication.get("published")
    if published:
        lines += ["", _published_paragraph(published, d)]
    return lines


def _published_paragraph(published: dict[str, Any], d: dict[str, Any]) -> str:
    where = (f"{published['repository']}@{published['commit'][:12]} `{published['path']}`, cell "
             f"{published['cell']}")
    if published.get("printed_is") == "exp_of_log10_p":
        relation = (f"That cell applies the natural `exp` to the log10 p-value that `delong_roc_test` returns, so it "
                    f"printed exp(log10 p), not p: 10^ln({published['printed']:.10g}) = "
                    f"{published['p_from_printed']:.10g}, ")
    elif published.get("printed_is") == "log10_p":
        relation = f"It printed log10 p: 10^{published['printed']:.10g} = {published['p_from_printed']:.10g}, "
    else:
        relation = f"It printed p = {published['printed']:.10g}, "
    agrees = ("which is our two-sided p" if published["agrees_with_p"]
              else f"which differs from our two-sided p = {d['p']:.10g}")
    return (f"The seed study printed {published['printed']!r} for this comparison ({where}). {relation}{agrees} "
            f"({d['p']:.4f}). Its label: {published['label']}. {published.get('orientation', '')}").rstrip()
