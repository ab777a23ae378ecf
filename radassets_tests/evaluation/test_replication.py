"""The replicated Hosny CNN against the original model on the same 206 LUNG1 patients (the seed study's comparison):
DeLong against its defining O(m·n) computation, the AUCs against scikit-learn, kappa against a hand count, the
notebook's printed number, and the plain run's lineage id left as it was."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from radassets.evaluation.replication import (NOTEBOOK_HOSNY, ReplicationInputError, compare_to_reference,
                                              replication_markdown)
from radassets.evaluation.scores import ScoreInputError, evaluate_scores
from radassets_tests.conftest import REPO
from radassets_tests.test_cli import run_cli

DATA = REPO / "data" / "reference" / "nsclc_radiomics"
SCORES, CLINICAL, TUNING = "published_scores_hosny_subset.csv", "clinical.csv", "hosny_tuning_cohort_logits.csv"
# The lineage id of this plain run (relative paths, no reference column), computed at main d7e848a before the
# comparison existed: adding the comparison must not change it.
PLAIN_LINEAGE_ID_AT_MAIN = "d1fcefcbe4f4f495"


def _run(folder: Path, out: Path, **kw):
    """The Hosny run of the asset. 200 bootstrap resamples: the CI is not examined here."""
    return evaluate_scores(folder / SCORES, "PatientID", "CNN_logit0", folder / CLINICAL, "PatientID",
                           "Survival.time", "deadstatus.event", 730, "alive", out, threshold_from=folder / TUNING,
                           threshold_column="logit_0", n_boot=200, **kw)


@pytest.fixture(scope="module")
def hosny(tmp_path_factory):
    out = tmp_path_factory.mktemp("hosny")
    _run(DATA, out, reference_column="baseline_logit0", reference_published=NOTEBOOK_HOSNY)
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def patients():
    """Scores joined to the clinical table, with the label by hand: died within 730 days (censored = alive)."""
    d = pd.read_csv(DATA / SCORES).merge(pd.read_csv(DATA / CLINICAL), on="PatientID")
    d["label"] = ((d["deadstatus.event"] == 1) & (d["Survival.time"] <= 730)).astype(int)
    return d


def _delong_by_definition(label: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """DeLong et al. 1988 written out: ψ(x, y) = 1, ½, 0 for every (positive, negative) pair, the placement values
    of each positive and each negative, their covariance across the two models, z and the two-sided p."""
    placements10, placements01 = [], []
    for s in (a, b):
        x, y = s[label == 1], s[label == 0]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])  # m × n
        placements10.append(psi.mean(axis=1))
        placements01.append(psi.mean(axis=0))
    m, n = len(placements10[0]), len(placements01[0])
    auc_a, auc_b = placements10[0].mean(), placements10[1].mean()
    s10, s01 = np.cov(placements10), np.cov(placements01)
    variance = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    z = (auc_a - auc_b) / math.sqrt(variance)
    return auc_a, auc_b, z, 2 * norm.sf(abs(z))


def test_the_label_is_the_published_surv2yr_reversed(patients):
    assert len(patients) == 206 and (patients["label"] == 1 - patients["surv2yr"]).all()


def test_delong_equals_its_definition_computed_pairwise(hosny, patients):
    d = hosny["replication"]["delong"]
    auc_a, auc_b, z, p = _delong_by_definition(patients["label"].to_numpy(), patients["CNN_logit0"].to_numpy(),
                                               patients["baseline_logit0"].to_numpy())
    # Both sides compute the same rational numbers in a different order: the error is a few ulps of each sum.
    assert d["n"] == 206 and d["n_events"] == int(patients["label"].sum()) == 146
    assert d["auc_replicated"] == pytest.approx(auc_a, abs=1e-12)
    assert d["auc_reference"] == pytest.approx(auc_b, abs=1e-12)
    assert d["difference"] == pytest.approx(auc_a - auc_b, abs=1e-12)
    assert d["z"] == pytest.approx(z, rel=1e-9)
    assert d["p"] == pytest.approx(p, rel=1e-9)


def test_aucs_equal_scikit_learn(hosny, patients):
    d = hosny["replication"]["delong"]
    assert d["auc_replicated"] == pytest.approx(roc_auc_score(patients["label"], patients["CNN_logit0"]), abs=1e-12)
    assert d["auc_reference"] == pytest.approx(roc_auc_score(patients["label"], patients["baseline_logit0"]),
                                               abs=1e-12)
    assert hosny["auc"] == pytest.approx(d["auc_replicated"], abs=1e-12)  # the headline AUC is the same number


def test_kappa_equals_the_hand_count_of_the_two_by_two_table(hosny, patients):
    a = hosny["replication"]["agreement"]
    threshold = pd.read_csv(DATA / TUNING)["logit_0"].median()  # the notebook's one threshold for both models
    assert a["threshold_replicated"] == a["threshold_reference"] == pytest.approx(threshold, rel=1e-12)
    assert threshold == pytest.approx(NOTEBOOK_HOSNY["threshold_printed"], rel=1e-12)  # the notebook's groups
    cnn, base = patients["CNN_logit0"] > threshold, patients["baseline_logit0"] > threshold
    both_high, both_low = int((cnn & base).sum()), int((~cnn & ~base).sum())
    cnn_only, base_only = int((cnn & ~base).sum()), int((~cnn & base).sum())
    assert (a["both_high"], a["both_low"], a["replicated_high_only"], a["reference_high_only"]) == (
        both_high, both_low, cnn_only, base_only) == (43, 145, 11, 7)
    n = 206
    observed = (both_high + both_low) / n
    chance = ((both_high + cnn_only) * (both_high + base_only) + (both_low + base_only) * (both_low + cnn_only)) / n**2
    assert a["percent_agreement"] == pytest.approx(100 * observed, rel=1e-12)
    assert a["cohen_kappa"] == pytest.approx((observed - chance) / (1 - chance), rel=1e-12)
    assert a["discordant"] == 18 and "mcnemar" not in json.dumps(a)  # the notebook tests no discordant pairs


def test_the_notebook_printed_exp_of_log10_p(hosny):
    """Its cell: delong_pval = exp(delong_roc_test(...)), where delong_roc_test returns log10 p."""
    d, published = hosny["replication"]["delong"], hosny["replication"]["published"]
    assert published["printed"] == 0.6802650987584817
    assert math.exp(math.log10(d["p"])) == pytest.approx(published["printed"], rel=1e-9)
    assert published["p_from_printed"] == pytest.approx(d["p"], rel=1e-9) and published["agrees_with_p"]
    assert abs(published["printed"] - d["p"]) > 0.25  # read as a p-value, the printed number is wrong
    assert d["p"] == pytest.approx(0.41184, abs=5e-6)


def test_markdown_section_quotes_the_notebook_and_its_location(hosny):
    lines = replication_markdown(hosny["replication"])
    text = "\n".join(lines)
    assert lines[0].startswith("## ") and "| DeLong p (two-sided) | 0.4118 |" in lines
    assert "| Cohen's kappa | 0.7686 |" in lines and "| difference (CNN_logit0 − baseline_logit0) | -0.0236 |" in lines
    assert "0.6802650987584817" in text and "exp(log10 p), not p" in text
    assert "idc-radiomics-reproducibility@981035d85686" in text and "rWYP7hLcQiAE" in text


def test_plain_lineage_id_is_unchanged_and_the_reference_changes_it(tmp_path, monkeypatch):
    for name in (SCORES, CLINICAL, TUNING):
        shutil.copy(DATA / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)  # relative paths, as when the pinned id was computed
    plain = _run(Path("."), Path("plain"))
    assert plain.lineage_id == PLAIN_LINEAGE_ID_AT_MAIN and "replication" not in plain.metrics
    assert plain.replication is None and plain.replication_headline() == {}
    compared = _run(Path("."), Path("compared"), reference_column="baseline_logit0")
    assert compared.lineage_id != plain.lineage_id
    assert {k: v for k, v in compared.metrics.items() if k not in ("replication", "lineage_id")} == {
        k: v for k, v in plain.metrics.items() if k != "lineage_id"}


def test_missing_reference_column_is_a_one_line_error(tmp_path):
    with pytest.raises(ScoreInputError, match=r"no column 'nope' \(--reference-column\); it has \['PatientID'"):
        _run(DATA, tmp_path, reference_column="nope")
    with pytest.raises(ScoreInputError, match="--reference-threshold needs --reference-column"):
        _run(DATA, tmp_path, reference_threshold=0.5)


def test_cli_reports_the_comparison_and_names_a_missing_column(tmp_path):
    args = ["evaluate", "scores", "--scores", str(DATA / SCORES), "--id-column", "PatientID", "--score-column",
            "CNN_logit0", "--clinical", str(DATA / CLINICAL), "--clinical-id-column", "PatientID", "--time-column",
            "Survival.time", "--event-column", "deadstatus.event", "--horizon-days", "730",
            "--censored-before-horizon", "alive", "--threshold-from", str(DATA / TUNING), "--threshold-column",
            "logit_0", "--out", str(tmp_path)]
    ok = run_cli(*args, "--reference-column", "baseline_logit0")
    assert ok.returncode == 0, ok.stderr
    assert "delong_p                 0.4118" in ok.stdout and "risk_group_kappa         0.7686" in ok.stdout
    bad = run_cli(*args, "--reference-column", "baseline_logit")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "no column 'baseline_logit' (--reference-column)" in bad.stderr


def test_identical_models_agree_fully_and_unscored_patients_are_left_out():
    label = np.array([1, 0, 1, 0, 1, 0, np.nan])
    score = np.array([0.9, 0.1, 0.7, 0.4, 0.6, 0.5, 0.3])
    reference = score.copy()
    reference[0] = np.nan
    result = compare_to_reference(label, score, reference, 0.45, 0.45)
    assert result["n_scored_by_both"] == 6 and result["n_missing_a_score"] == 1
    assert result["delong"]["n"] == 5 and result["delong"]["z"] == 0.0 and result["delong"]["p"] == 1.0
    assert result["agreement"]["cohen_kappa"] == 1.0 and result["agreement"]["discordant"] == 0
    with pytest.raises(ReplicationInputError, match="all of one class"):
        compare_to_reference(np.ones(4), score[:4], score[:4], 0.5, 0.5)
