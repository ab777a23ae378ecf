"""`radassets evaluate scores`: its numbers against lifelines and scikit-learn called directly on generated
data with a known effect; the label conventions; bad input; and the published Hosny et al. labels."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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
    """The metrics as metrics.json records them. 500 bootstrap resamples instead of 2000: the CI's width is not
    what these tests examine."""
    return evaluate_scores(folder / "scores.csv", "ID", "risk", folder / "clinical.csv", "pid", "days", "dead",
                           HORIZON, kw.pop("convention", "drop"), out, n_boot=kw.pop("n_boot", 500), **kw).to_json()


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


def _cli(folder, out, *extra):
    """`radassets evaluate scores` on ``folder``'s scores.csv and clinical.csv, in this process."""
    from radassets.cli import main

    args = ["evaluate", "scores", "--scores", str(folder / "scores.csv"), "--id-column", "ID", "--score-column",
            "risk", "--clinical", str(folder / "clinical.csv"), "--clinical-id-column", "pid", "--time-column",
            "days", "--event-column", "dead", "--censored-before-horizon", "drop", "--out", str(out)]
    if "--horizon-days" not in extra:
        args += ["--horizon-days", str(HORIZON)]
    main([*args, *extra])


def _cli_error(folder, tmp_path, capsys, *extra) -> str:
    """The one-line error of the CLI (exit status 2, no traceback), with nothing written."""
    with pytest.raises(SystemExit) as exit_:
        _cli(folder, tmp_path / "out", *extra)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith("radassets: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out" / "metrics.json").exists()
    return err


@pytest.mark.parametrize("edit, message", [
    (lambda s, c: s.assign(risk=s.risk.astype(object).where(s.index != 7, "inf")),
     "column 'risk' has 1 infinite value(s) (rows [9]); every value must be a finite number or empty"),
    (lambda s, c: s.assign(risk=0.5), "all 400 patients matched to the clinical table have the same 'risk' (0.5); "
                                      "a constant score ranks no one"),
    (lambda s, c: c.assign(dead=0), "of the 400 patients matched, 0 had the event before 730 days"),
    (lambda s, c: s.assign(risk=np.nan), "column 'risk' has no value in any of its 400 row(s)"),
    (lambda s, c: s.head(3), "of the 3 patients matched, 1 had the event before 730 days and 2 did not ('dead' in "
                             "['1'], censored before the horizon: drop); the AUC and its bootstrap CI need at least 5 "
                             "of each"),
    (lambda s, c: c.assign(dead=c.dead.astype(object).where(c.index % 50 != 0, "yes")),
     "column 'dead' has value(s) that are neither an event ['1'] nor censored ['0', 'alive', 'censored', 'false', "
     "'no']: 'yes' (8 rows)"),
    (lambda s, c: c.assign(days=c.days.where(c.index != 4, np.inf)), "column 'days' has 1 infinite value(s) (rows [6])"),
])
def test_cli_bad_table_is_one_line(cohort, tmp_path, capsys, edit, message):
    scores, clinical = pd.read_csv(cohort / "scores.csv"), pd.read_csv(cohort / "clinical.csv")
    edited = edit(scores, clinical)
    (edited if "ID" in edited else scores).to_csv(tmp_path / "scores.csv", index=False)
    (edited if "pid" in edited else clinical).to_csv(tmp_path / "clinical.csv", index=False)
    assert message in _cli_error(tmp_path, tmp_path, capsys)


@pytest.mark.parametrize("extra, message", [
    (["--threshold", "nan"], "threshold nan (--threshold): the threshold must be a finite number"),
    (["--threshold", "inf"], "threshold inf (--threshold): the threshold must be a finite number"),
    (["--threshold", "1e9"], "threshold 1e+09 (given) puts all 400 patients in the low-risk group: their scores "
                             "range from"),
    (["--threshold=-1e9"], "puts all 400 patients in the high-risk group"),
    (["--horizon-days", "-5"], "horizon of -5 days (--horizon-days): the horizon must be a positive number of days"),
    (["--horizon-days", "0"], "horizon of 0 days (--horizon-days)"),
    (["--threshold", "0", "--threshold-from", "x.csv"], "give --threshold or --threshold-from, not both"),
])
def test_cli_bad_option_is_one_line(cohort, tmp_path, capsys, extra, message):
    assert message in _cli_error(cohort, tmp_path, capsys, *extra)


def test_cli_censoring_values_can_be_named(cohort, tmp_path, capsys):
    """Words in the event column: `dead` is the event (--event-value), `lost` a censoring value the defaults do
    not know (--censored-value); both matched case-insensitively, and 1.0 written for 1 still counts."""
    clinical = pd.read_csv(cohort / "clinical.csv")
    words = clinical.assign(dead=np.where(clinical.dead == 1, "Dead", "lost"))
    shutil.copy(cohort / "scores.csv", tmp_path / "scores.csv")
    words.to_csv(tmp_path / "clinical.csv", index=False)
    assert "'lost' (" in _cli_error(tmp_path, tmp_path, capsys, "--event-value", "dead")
    _cli(tmp_path, tmp_path / "words", "--event-value", "dead", "--censored-value", "LOST")
    as_numbers = _evaluate(cohort, tmp_path / "numbers")
    with_words = json.loads((tmp_path / "words" / "metrics.json").read_text())
    assert (with_words["n_events"], with_words["auc"]) == (as_numbers["n_events"], as_numbers["auc"])
    assert with_words["inputs"]["clinical"]["censored_values"] == ["LOST"]
    floats = clinical.assign(dead=clinical.dead.astype(float))  # a float column, as an empty cell makes it
    floats.loc[0, "dead"] = np.nan
    floats.to_csv(tmp_path / "clinical.csv", index=False)
    shutil.copy(cohort / "scores.csv", tmp_path / "scores.csv")
    metrics = _evaluate(tmp_path, tmp_path / "floats")
    assert metrics["n_events"] == as_numbers["n_events"] - int(clinical.dead.iloc[0])
    assert metrics["excluded"]["clinical: missing event"] == 1
    capsys.readouterr()


# Clean tables of 0-40 patients, then up to three cells replaced by anything a user's file may hold.
BAD_CELLS = st.one_of(st.sampled_from(["", " ", "P1", "p1", "P1 ", "high", "inf", "-inf", "nan", "1e400", "-5", "0",
                                       "1", "1.0", "yes", "true", "FALSE", "dead", "Alive", "2"]),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4))
CORRUPTIONS = st.lists(st.tuples(st.sampled_from(["ID", "risk", "pid", "days", "dead"]), st.integers(0, 39), BAD_CELLS),
                       max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 40), data=st.data(), corruptions=CORRUPTIONS, horizon=st.sampled_from([730, 365, 1, 0, -5]),
       threshold=st.one_of(st.none(), st.none(), st.floats(allow_nan=True, allow_infinity=True)),
       convention=st.sampled_from(["alive", "drop"]))
def test_any_table_gives_a_result_or_a_score_input_error(n, data, corruptions, horizon, threshold, convention):
    """Arbitrary score and clinical tables (ids missing, duplicated or near-duplicated; text, NaN, infinite or
    negative values; unknown event values; too few patients) are evaluated or refused with a ScoreInputError,
    never another exception."""
    ids = [f"P{i}" for i in range(n)]
    scores = pd.DataFrame({"ID": ids, "risk": data.draw(st.lists(st.floats(-5, 5), min_size=n, max_size=n))},
                          dtype=object)
    clinical = pd.DataFrame({"pid": ids, "days": data.draw(st.lists(st.floats(0, 2000), min_size=n, max_size=n)),
                             "dead": data.draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n))},
                            dtype=object)
    for column, row, value in corruptions:
        table = scores if column in scores else clinical
        if row < len(table):
            table.loc[row, column] = value
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        scores.to_csv(folder / "scores.csv", index=False)
        clinical.to_csv(folder / "clinical.csv", index=False)
        try:
            metrics = evaluate_scores(folder / "scores.csv", "ID", "risk", folder / "clinical.csv", "pid", "days",
                                      "dead", horizon, convention, folder / "out", threshold=threshold, n_boot=50).to_json()
        except ScoreInputError as e:
            assert "\n" not in str(e)
            return
    assert metrics["n_binary"] >= 10 and 0.0 <= metrics["auc"] <= 1.0
