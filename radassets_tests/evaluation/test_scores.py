"""`radassets evaluate scores`: its numbers against lifelines and scikit-learn called directly on generated
data with a known effect; the label conventions; bad input; and the published Hosny et al. labels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index
from sklearn.metrics import roc_auc_score

from radassets import datasets
from radassets.evaluation.figures import lineage_id_of
from radassets.evaluation.labels import binary_at_horizon, survival_labels
from radassets.evaluation.scores import ScoreInputError, evaluate_scores
from radassets_tests.conftest import REPO
from radassets_tests.test_cli import run_cli

HORIZON = 730


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """400 patients, exponential survival with log-hazard 0.9 × score, uniform censoring: a known effect."""
    rng = np.random.default_rng(7)
    n = 400
    score = rng.normal(size=n)
    event_time = rng.exponential(900 / np.exp(0.9 * score))
    censor = rng.uniform(100, 2500, size=n)
    folder = tmp_path_factory.mktemp("cohort")
    ids = [f"P{i:03d}" for i in range(n)]
    pd.DataFrame({"ID": ids, "risk": score}).to_csv(folder / "scores.csv", index=False)
    pd.DataFrame({"pid": ids, "days": np.round(np.minimum(event_time, censor), 1),
                  "dead": (event_time <= censor).astype(int)}).to_csv(folder / "clinical.csv", index=False)
    return folder


def _evaluate(folder, out, **kw):
    """500 bootstrap resamples instead of 2000: the CI's width is not what these tests examine."""
    return evaluate_scores(folder / "scores.csv", "ID", "risk", folder / "clinical.csv", "pid", "days", "dead",
                           HORIZON, kw.pop("convention", "drop"), out, n_boot=kw.pop("n_boot", 500), **kw)


def test_numbers_equal_lifelines_and_sklearn_called_directly(cohort, tmp_path):
    metrics = _evaluate(cohort, tmp_path / "out")
    scores = pd.read_csv(cohort / "scores.csv")
    clinical = pd.read_csv(cohort / "clinical.csv")
    d = scores.merge(clinical, left_on="ID", right_on="pid")
    # Binary label at 730 days, censored early dropped.
    keep = d.dead.astype(bool) | (d.days >= HORIZON)
    label = (d.dead.astype(bool) & (d.days <= HORIZON)).astype(int)
    assert metrics["n"] == 400 and metrics["n_binary"] == int(keep.sum())
    assert metrics["n_events_before_horizon"] == int(label[keep].sum())
    assert metrics["auc"] == pytest.approx(roc_auc_score(label[keep], d.risk[keep]), abs=1e-12)
    assert metrics["auc_ci_low"] < metrics["auc"] < metrics["auc_ci_high"]
    # Threshold: the median score; Cox on the binary group, log-rank, C-index over the full follow-up.
    threshold = d.risk.median()
    high = d.risk > threshold
    assert metrics["threshold"] == pytest.approx(threshold)
    cox = CoxPHFitter().fit(pd.DataFrame({"t": d.days, "e": d.dead, "h": high.astype(int)}), "t", "e")
    assert metrics["hazard_ratio"] == pytest.approx(float(np.exp(cox.params_["h"])), rel=1e-9)
    assert metrics["hr_ci_low"] == pytest.approx(float(np.exp(cox.confidence_intervals_.loc["h"].iloc[0])), rel=1e-9)
    assert metrics["cox_p"] == pytest.approx(float(cox.summary.loc["h", "p"]), rel=1e-9)
    lr = logrank_test(d.days[high], d.days[~high], d.dead[high], d.dead[~high])
    assert metrics["logrank_p"] == pytest.approx(lr.p_value, rel=1e-9)
    assert metrics["c_index"] == pytest.approx(concordance_index(d.days, -d.risk, d.dead), abs=1e-12)
    # The known effect: log-hazard 0.9 per SD; splitting at the median gives HR ≈ exp(0.9 × 1.6) ≈ 4.
    assert 2.5 < metrics["hazard_ratio"] < 6.5 and metrics["logrank_p"] < 1e-10 and metrics["auc"] > 0.7
    # Files: metrics.json as returned; both figures carry the lineage id.
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["auc"] == metrics["auc"]
    for name in ("roc.png", "km.png"):
        assert lineage_id_of(tmp_path / "out" / name) == metrics["lineage_id"]


def test_conventions_change_n_and_are_recorded(cohort, tmp_path):
    drop = _evaluate(cohort, tmp_path / "drop", convention="drop")
    alive = _evaluate(cohort, tmp_path / "alive", convention="alive")
    assert alive["n_binary"] == 400 > drop["n_binary"]
    assert alive["n_events_before_horizon"] == drop["n_events_before_horizon"]
    assert drop["label_definition"]["censored_before_horizon"] == "drop"
    assert drop["excluded"]["clinical: censored before the horizon (drop)"] == 400 - drop["n_binary"]
    # Same bootstrap seed, same CI; another seed, another CI.
    again = _evaluate(cohort, tmp_path / "again", convention="drop")
    assert (again["auc_ci_low"], again["auc_ci_high"]) == (drop["auc_ci_low"], drop["auc_ci_high"])
    other = _evaluate(cohort, tmp_path / "other", convention="drop", seed=1)
    assert other["bootstrap_seed"] == 1 and other["auc_ci_low"] != drop["auc_ci_low"]


def test_binary_label_at_the_horizon():
    time = np.array([100, 730, 731, 400, 800, 730])
    event = np.array([1, 1, 1, 0, 0, 0], bool)
    drop, early = binary_at_horizon(time, event, 730, "drop")
    assert np.array_equal(drop, [1, 1, 0, np.nan, 0, 0], equal_nan=True)
    assert early.tolist() == [False, False, False, True, False, False]
    alive, _ = binary_at_horizon(time, event, 730, "alive")
    assert alive.tolist() == [1, 1, 0, 0, 0, 0]


def test_unusable_rows_are_counted_not_dropped(cohort, tmp_path):
    scores = pd.read_csv(cohort / "scores.csv")
    scores.loc[0, "risk"] = np.nan
    scores.loc[len(scores)] = ["STRANGER", 0.3]
    scores.to_csv(tmp_path / "scores.csv", index=False)
    clinical = pd.read_csv(cohort / "clinical.csv")
    clinical.loc[1, "days"] = np.nan
    clinical.to_csv(tmp_path / "clinical.csv", index=False)
    metrics = _evaluate(tmp_path, tmp_path / "out")
    assert metrics["n"] == 398
    assert metrics["excluded"] == {"clinical: missing or unreadable time": 1,
                                   "clinical: censored before the horizon (drop)": metrics["excluded"][
                                       "clinical: censored before the horizon (drop)"],
                                   "scores: missing score": 1, "scores: no usable clinical row": 2,
                                   "clinical: no score": 1}


@pytest.mark.parametrize("edit, message", [
    (lambda s, c: s.rename(columns={"risk": "r"}), "no column(s) ['risk']"),
    (lambda s, c: s.assign(ID="X" + s.ID), "matches the clinical table"),
    (lambda s, c: s.assign(risk=s.risk.astype(object).where(s.index != 5, "high")), "1 non-numeric value(s), e.g. ['high']"),
    (lambda s, c: c.assign(days=c.days.where(c.index != 3, -5)), "1 negative time(s) in 'days', e.g. patients ['P003']"),
    (lambda s, c: pd.concat([s, s.head(1)]), "ids listed more than once"),
])
def test_bad_input_is_a_clear_error(cohort, tmp_path, edit, message):
    scores, clinical = pd.read_csv(cohort / "scores.csv"), pd.read_csv(cohort / "clinical.csv")
    out = edit(scores, clinical)
    (out if "ID" in out or "r" in out else scores).to_csv(tmp_path / "scores.csv", index=False)
    (out if "pid" in out else clinical).to_csv(tmp_path / "clinical.csv", index=False)
    with pytest.raises(ScoreInputError) as err:
        _evaluate(tmp_path, tmp_path / "out")
    assert message in str(err.value)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_hosny_labels_are_the_published_ones():
    """The LUNG1 definition (death within 730 days, censored early = alive) gives the authors' surv2yr."""
    definition = datasets.get("nsclc_radiomics_idc_v16")
    clinical = pd.read_csv(REPO / "data" / "reference" / "nsclc_radiomics" / "clinical.csv")
    labels = survival_labels(clinical, "PatientID", definition.endpoints[0]).frame.set_index("PatientID")
    published = pd.read_csv(REPO / "data" / "reference" / "nsclc_radiomics" / "published_scores_hosny_subset.csv")
    joined = published.set_index("PatientID").join(labels, how="inner")
    assert len(joined) == 206 and (joined["label"] == 1 - joined["surv2yr"]).all()


def test_cli_on_the_published_hosny_scores(tmp_path):
    ref = REPO / "data" / "reference" / "nsclc_radiomics"
    out = run_cli("evaluate", "scores", "--scores", str(ref / "published_scores_hosny_subset.csv"),
                  "--id-column", "PatientID", "--score-column", "CNN_logit0", "--clinical", str(ref / "clinical.csv"),
                  "--clinical-id-column", "PatientID", "--time-column", "Survival.time",
                  "--event-column", "deadstatus.event", "--horizon-days", "730", "--censored-before-horizon", "alive",
                  "--threshold-from", str(ref / "hosny_tuning_cohort_logits.csv"), "--threshold-column", "logit_0",
                  "--out", str(tmp_path / "hosny"))
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "hosny" / "metrics.json").read_text())
    tuning = pd.read_csv(ref / "hosny_tuning_cohort_logits.csv")
    assert metrics["threshold"] == pytest.approx(tuning["logit_0"].median())
    assert metrics["n"] == 206 and metrics["n_events_before_horizon"] == 146
    for key in ("auc", "auc_ci_low", "auc_ci_high", "threshold", "hazard_ratio", "hr_ci_low", "hr_ci_high", "cox_p",
                "logrank_p", "c_index"):
        assert isinstance(metrics[key], float), key
    assert (tmp_path / "hosny" / "roc.png").is_file() and (tmp_path / "hosny" / "km.png").is_file()
    bad = run_cli("evaluate", "scores", "--scores", str(ref / "clinical.csv"), "--id-column", "PatientID",
                  "--score-column", "CNN_logit0", "--clinical", str(ref / "clinical.csv"), "--clinical-id-column",
                  "PatientID", "--time-column", "Survival.time", "--event-column", "deadstatus.event",
                  "--horizon-days", "730", "--censored-before-horizon", "alive", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "no column(s) ['CNN_logit0']" in bad.stderr and "Traceback" not in bad.stderr
