"""Evaluating any per-patient score table against clinical follow-up (``radassets evaluate scores``).

A higher score means a higher risk (event before the horizon). The binary label at the horizon
follows the recorded convention for patients censored before it (``alive`` or ``drop``, see
``labels``); the hazard ratio, log-rank test and C-index use the full follow-up of every matched
patient. The high-risk threshold is given, or the median of a column of another table (Hosny et
al. 2018 took the median score of their tuning cohort), or the median of the scores evaluated.

Bad input is an error (``ScoreInputError``, one line) naming the file, column and rows: a missing
column, ids that match nothing, non-numeric or infinite scores or times, a score column with no
value, negative times, duplicated ids, an event value that is neither an event nor a censoring
value, a horizon that is not a positive number of days, a threshold that is not finite or puts
every patient in one group, a constant score, and fewer than ``MIN_PER_CLASS`` patients with and
without the event before the horizon (the rule of the evaluation asset: below it an AUC and its
bootstrap CI say nothing, e.g. 1.0 [1.0, 1.0] on 3 patients). Rows that merely cannot be used (no
score, no clinical row, no follow-up) are counted by cause in ``metrics.json``.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from radassets.datasets import Endpoint
from radassets.evaluation.citations import Citations
from radassets.evaluation.figures import FigureWriter, km_figure, roc_figure, stamp_text, table_caption
from radassets.evaluation.evaluate import MIN_PER_CLASS
from radassets.evaluation.labels import LabelError, survival_labels
from radassets.evaluation.replication import replication_markdown
from radassets.evaluation.report import citations_lines, licence_warning_lines, write_citations, write_html
from radassets.evaluation.report_pdf import write_report_pdf
from radassets.evaluation.step_reports import ScoresReport
from radassets.evaluation.survival import N_BOOT, SurvivalFitError, auc_with_bootstrap_ci, c_index, risk_groups
from radassets.storage import atomic_write_json, atomic_write_text, sha256_file, sha256_json
from radassets.errors import RadassetsError

DEFAULT_SEED = 20261124
OWN_MEDIAN = "median of the scores evaluated"  # the threshold rule when none is given (each model its own median)


class ScoreInputError(RadassetsError, ValueError):
    """A score or clinical table cannot be evaluated as given."""


@dataclass(frozen=True)
class Table:
    path: Path
    frame: pd.DataFrame

    @classmethod
    def read(cls, path: Path, id_column: str, columns: list[str], what: str) -> Table:
        path = Path(path)
        try:
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={id_column: str})
        except (OSError, ValueError) as e:
            raise ScoreInputError(f"{what} {path}: cannot read it: {e}") from None
        missing = [c for c in [id_column, *columns] if c not in frame]
        if missing:
            raise ScoreInputError(f"{what} {path}: no column(s) {missing}; it has {list(frame.columns)}")
        frame[id_column] = frame[id_column].astype(str).str.strip()
        return cls(path, frame)


def _rows(mask: pd.Series) -> list[int]:
    """The first three flagged rows as line numbers of the file (the header is line 1)."""
    return [int(i) + 2 for i in mask[mask].index[:3]]


def _numeric(table: Table, column: str, what: str) -> pd.Series:
    """The column as finite numbers (NaN where empty); text or an infinite value is an error naming the rows."""
    raw = table.frame[column]
    values = pd.to_numeric(raw, errors="coerce").astype(float).set_axis(raw.index)
    bad = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
    if bad.any():
        examples = raw[bad].astype(str).head(3).tolist()
        raise ScoreInputError(f"{what} {table.path}: column {column!r} has {int(bad.sum())} non-numeric value(s), "
                              f"e.g. {examples} (rows {_rows(bad)})")
    infinite = values.abs() == math.inf
    if infinite.any():
        raise ScoreInputError(f"{what} {table.path}: column {column!r} has {int(infinite.sum())} infinite value(s) "
                              f"(rows {_rows(infinite)}); every value must be a finite number or empty")
    return values


def _reference_scores(table: Table, column: str | None, threshold: float | None) -> pd.Series | None:
    """The reference model's scores (NaN where empty), or None when no reference column is asked for."""
    if column is None:
        if threshold is not None:
            raise ScoreInputError("--reference-threshold needs --reference-column")
        return None
    if column not in table.frame:
        raise ScoreInputError(f"scores {table.path}: no column {column!r} (--reference-column); it has "
                              f"{list(table.frame.columns)}")
    if threshold is not None and not math.isfinite(threshold):
        raise ScoreInputError(f"reference threshold {threshold} (--reference-threshold): must be a finite number")
    values = _numeric(table, column, "scores")
    if values.isna().all():
        raise ScoreInputError(f"scores {table.path}: reference column {column!r} has no value in any of its "
                              f"{len(values)} row(s)")
    return values


def _replication(matched: pd.DataFrame, score_column: str, reference_column: str, reference_name: str | None,
                 threshold: float, threshold_source: str, reference_threshold: float | None,
                 published: dict[str, Any] | None) -> dict[str, Any]:
    """The replicated scores against the reference column on the matched patients (``compare_to_reference``)."""
    from radassets.evaluation.replication import ReplicationInputError, compare_to_reference

    if reference_threshold is not None:
        ref_threshold, rule = float(reference_threshold), "reference threshold given"
    elif threshold_source == OWN_MEDIAN:
        ref_threshold = float(matched["reference"].dropna().median())
        rule = "each model's median over the patients evaluated"
    else:
        ref_threshold, rule = threshold, f"the same threshold for both ({threshold_source})"
    try:
        return compare_to_reference(matched["label"], matched["score"], matched["reference"], threshold,
                                    ref_threshold, replicated_name=score_column,
                                    reference_name=reference_name or reference_column, threshold_rule=rule,
                                    published=published)
    except ReplicationInputError as e:
        raise ScoreInputError(f"reference column {reference_column!r}: {e}") from None


def evaluate_scores(scores: Path, id_column: str, score_column: str, clinical: Path, clinical_id_column: str,
                    time_column: str, event_column: str, horizon_days: int,
                    censored_before_horizon: Literal["alive", "drop"],
                    out_dir: Path, *, event_values: tuple[str, ...] = ("1",),
                    censored_values: tuple[str, ...] | None = None, threshold: float | None = None,
                    threshold_from: Path | None = None, threshold_column: str | None = None,
                    time_unit: Literal["days", "months"] = "days", seed: int = DEFAULT_SEED, n_boot: int = N_BOOT,
                    title: str | None = None, reference_column: str | None = None,
                    reference_name: str | None = None, reference_threshold: float | None = None,
                    reference_published: dict[str, Any] | None = None, citations: Citations | None = None,
                    stamp: bool = True) -> ScoresReport:
    """Evaluate, write ``metrics.json``, the ``roc`` and ``km`` figures (.png, .pdf, .svg), ``report.md``,
    ``report.html``, ``report.pdf`` and ``references.bib`` under ``out_dir``; return their report.
    ``censored_values``: the event column's values that mean censored (default: the known ones, see
    ``labels.KNOWN_CENSORING_VALUES``); any other value that is not an event value is an error.
    ``reference_column``: a second score column of the same table (the original model a replication reproduces);
    metrics.json then has ``replication`` (``replication.compare_to_reference``) on the patients both scored. Its
    threshold is ``reference_threshold`` or the same rule as the scores' (the given threshold, the median of the
    threshold table, or the median of its own scores evaluated); ``reference_published``: what the original
    analysis printed (``replication.NOTEBOOK_HOSNY``). ``citations``: what the result rests on (the data's
    collection, the works the scores come from, e.g. ``citations.hosny2018_citations()``); by default the software
    alone. ``stamp``: the lineage id's stamp on the figures."""
    if not (isinstance(horizon_days, (int, float)) and math.isfinite(horizon_days) and horizon_days > 0):
        raise ScoreInputError(f"horizon of {horizon_days} days (--horizon-days): the horizon must be a positive "
                              f"number of days")
    if threshold is not None and not math.isfinite(threshold):
        raise ScoreInputError(f"threshold {threshold} (--threshold): the threshold must be a finite number")
    score_table = Table.read(scores, id_column, [score_column], "scores")
    clinical_table = Table.read(clinical, clinical_id_column, [time_column, event_column], "clinical table")
    score = _numeric(score_table, score_column, "scores")
    reference = _reference_scores(score_table, reference_column, reference_threshold)
    if score.isna().all():
        raise ScoreInputError(f"scores {scores}: column {score_column!r} has no value in any of its "
                              f"{len(score)} row(s)")
    time = _numeric(clinical_table, time_column, "clinical table")
    if (time < 0).any():
        ids = clinical_table.frame.loc[time < 0, clinical_id_column].head(3).tolist()
        raise ScoreInputError(f"clinical table {clinical}: {int((time < 0).sum())} negative time(s) in "
                              f"{time_column!r}, e.g. patients {ids}")
    duplicated = score_table.frame[id_column][score_table.frame[id_column].duplicated()]
    if len(duplicated):
        raise ScoreInputError(f"scores {scores}: ids listed more than once, e.g. {duplicated.head(3).tolist()}")

    endpoint = Endpoint(name="score_evaluation", kind="survival", time_column=time_column, time_unit=time_unit,
                        event_column=event_column, event_values=list(event_values), horizon_days=horizon_days,
                        censored_before_horizon=censored_before_horizon)
    try:
        labels = survival_labels(clinical_table.frame, clinical_id_column, endpoint, censored_values)
    except LabelError as e:
        raise ScoreInputError(f"clinical table {clinical}: {e} (--event-value, --censored-value)") from None
    excluded = {f"clinical: {k}": v for k, v in labels.excluded.items()}
    scored = pd.DataFrame({"PatientID": score_table.frame[id_column], "score": score,
                           **({"reference": reference} if reference is not None else {})})
    no_score = scored["score"].isna()
    if no_score.any():
        excluded["scores: missing score"] = int(no_score.sum())
    scored = scored[~no_score]
    outcome = labels.frame
    matched = scored.merge(outcome, on="PatientID", how="inner")
    if matched.empty:
        raise ScoreInputError(f"no id of the scores ({id_column!r}, e.g. {scored['PatientID'].head(2).tolist()}) "
                              f"matches the clinical table ({clinical_id_column!r}, e.g. "
                              f"{outcome['PatientID'].head(2).tolist()})")
    unmatched_scores = int((~scored["PatientID"].isin(outcome["PatientID"])).sum())
    if unmatched_scores:
        excluded["scores: no usable clinical row"] = unmatched_scores
    unscored = int((~outcome["PatientID"].isin(scored["PatientID"])).sum())
    if unscored:
        excluded["clinical: no score"] = unscored

    if threshold is not None:
        threshold_source = "given"
    elif threshold_from is not None:
        if not threshold_column:
            raise ScoreInputError("--threshold-from needs --threshold-column")
        ref = Table.read(threshold_from, threshold_column, [], "threshold table")
        values = _numeric(ref, threshold_column, "threshold table").dropna()
        if values.empty:
            raise ScoreInputError(f"threshold table {threshold_from}: column {threshold_column!r} has no value")
        threshold = float(values.median())
        threshold_source = f"median of {threshold_column!r} in {Path(threshold_from).name} (n={len(values)})"
    else:
        threshold = float(matched["score"].median())
        threshold_source = OWN_MEDIAN

    n = len(matched)
    if matched["score"].nunique() == 1:
        raise ScoreInputError(f"scores {scores}: all {n} patients matched to the clinical table have the same "
                              f"{score_column!r} ({matched['score'].iloc[0]:g}); a constant score ranks no one")
    binary = matched[matched["label"].notna()]
    positives = int(binary["label"].sum())
    if min(positives, len(binary) - positives) < MIN_PER_CLASS:
        raise ScoreInputError(
            f"not evaluable: of the {n} patients matched, {positives} had the event before {horizon_days} days and "
            f"{len(binary) - positives} did not ({event_column!r} in {sorted(set(map(str, event_values)))}, "
            f"censored before the horizon: {censored_before_horizon}); the AUC and its bootstrap CI need at least "
            f"{MIN_PER_CLASS} of each")
    high = matched["score"] > threshold
    if high.all() or not high.any():
        raise ScoreInputError(
            f"threshold {threshold:g} ({threshold_source}) puts all {n} patients in the "
            f"{'high' if high.all() else 'low'}-risk group: their scores range from {matched['score'].min():g} to "
            f"{matched['score'].max():g}")
    auc = auc_with_bootstrap_ci(binary["label"].to_numpy(int), binary["score"].to_numpy(float), seed, n_boot)
    try:
        groups = risk_groups(matched["time_days"], matched["event"], matched["score"], threshold)
    except SurvivalFitError as e:
        raise ScoreInputError(f"scores {scores} against {clinical}: {e}") from None
    inputs = {"scores": {"path": str(scores), "sha256": sha256_file(scores), "id_column": id_column,
                         "score_column": score_column},
              "clinical": {"path": str(clinical), "sha256": sha256_file(clinical), "id_column": clinical_id_column,
                           "time_column": time_column, "event_column": event_column,
                           "event_values": list(event_values),
                           **({"censored_values": list(censored_values)} if censored_values else {})}}
    if threshold_from is not None:
        inputs["threshold_from"] = {"path": str(threshold_from), "sha256": sha256_file(threshold_from),
                                    "column": threshold_column}
    metrics: dict[str, Any] = {
        "n": int(len(matched)), "n_binary": int(len(binary)),
        "n_events_before_horizon": int(binary["label"].sum()), "n_events": int(matched["event"].sum()),
        **auc, **groups, "threshold_source": threshold_source,
        "c_index": c_index(matched["time_days"], matched["event"], matched["score"]),
        "label_definition": labels.definition, "excluded": excluded, "inputs": inputs,
    }
    identity = {"inputs": inputs, "horizon_days": horizon_days, "threshold": threshold,
                "convention": censored_before_horizon, "seed": seed}
    if reference_column is not None:
        # Hashed only when given: a plain run keeps the lineage id it had before the comparison existed.
        replication = _replication(matched, score_column, reference_column, reference_name, threshold,
                                   threshold_source, reference_threshold, reference_published)
        metrics["replication"] = replication
        identity["reference"] = {"column": reference_column, "name": replication["reference"],
                                 "threshold": replication["agreement"]["threshold_reference"],
                                 "published": reference_published}
    lineage_id = sha256_json(identity)[:16]
    metrics["lineage_id"] = lineage_id
    name = title or f"{Path(scores).stem}: {score_column}"
    # After the lineage id: what the result cites is not one of its inputs.
    cited = citations or Citations()
    metrics.update({"title": name, "horizon_days": horizon_days, "figures": list(FIGURES),
                    "software": cited.software.libraries, "citations": cited.as_json()})
    figures = FigureWriter(lineage_id, stamp=stamp, keep=True)  # kept for report.pdf
    roc_figure(binary["label"].to_numpy(int), binary["score"].to_numpy(float), auc,
               f"{name}\n{horizon_days}-day label, censored early = {censored_before_horizon}",
               out_dir / "roc.png", figures)
    km_figure(matched["time_days"], matched["event"], matched["score"].to_numpy() > threshold, groups,
              f"{name}\nhigh vs low risk (threshold {threshold:.4g})", out_dir / "km.png", figures)
    metrics = json.loads(json.dumps(metrics, default=float))
    atomic_write_json(out_dir / "metrics.json", metrics)
    write_scores_report(metrics, out_dir, figures)
    return ScoresReport.of(metrics, out_dir)


FIGURES = ("roc.png", "km.png")


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def scores_report_sections(m: dict[str, Any], embed_from: Path | None = None) -> list[list[str]]:
    """The report of a score evaluation as a list of sections (lists of Markdown lines), in order: a section is
    added by inserting its lines (e.g. a replication section between the figures and the citations)."""
    sections = [_heading(m), _results(m), _figures(m, embed_from)]
    if "replication" in m:  # the replicated model against the original one, on the same patients
        r = m["replication"]
        sections.append([*replication_markdown(r, table_caption(f"{r['replicated']} against {r['reference']} on the "
                                                                f"same patients", m["lineage_id"])), ""])
    sections.append(citations_lines(m))
    sections.append(["---", f"radassets score evaluation · lineage id `{m['lineage_id']}` (also in every figure's "
                            f"metadata, PNG, PDF and SVG, and its stamp `{stamp_text(m['lineage_id'])}`)"])
    return sections


def scores_report_markdown(m: dict[str, Any], embed_from: Path | None = None) -> str:
    return "\n".join(line for section in scores_report_sections(m, embed_from) for line in section) + "\n"


def write_scores_report(metrics: dict[str, Any], out_dir: Path, figures: FigureWriter | None = None) -> None:
    """report.md, report.html (figures embedded), report.pdf (the figures ``figures`` kept, as vector pages) and
    references.bib of a score evaluation."""
    write_citations(metrics, out_dir)
    markdown = scores_report_markdown(metrics)
    atomic_write_text(out_dir / "report.md", markdown)
    write_html(out_dir / "report.html", scores_report_markdown(metrics, out_dir), "radassets score evaluation",
               metrics["lineage_id"])
    write_report_pdf(out_dir / "report.pdf", markdown, figures or FigureWriter(metrics["lineage_id"]),
                     f"radassets score evaluation: {metrics['title']}")


def _heading(m: dict[str, Any]) -> list[str]:
    d = m["label_definition"]
    excluded = ", ".join(f"{k}: {v}" for k, v in m["excluded"].items()) or "none"
    return [f"# Score evaluation: {m['title']}", "",
            "Label: " + ", ".join(f"{k} {v}" for k, v in d.items()) + f". {m['n']} patients matched "
            f"({m['n_binary']} with a label at the horizon, {m['n_events_before_horizon']} with the event before "
            f"it; {m['n_events']} events over the whole follow-up); excluded: {excluded}.", "",
            *licence_warning_lines(m)]


def _results(m: dict[str, Any]) -> list[str]:
    return ["## Results", "", "| measure | value | 95 % CI |", "|---|---|---|",
            f"| AUC at the horizon (n={m['n_binary']}; bootstrap CI, {m['bootstrap_resamples']} resamples) | "
            f"{_fmt(m['auc'])} | {_fmt(m['auc_ci_low'])}–{_fmt(m['auc_ci_high'])} |",
            f"| hazard ratio, high vs low risk (n={m['n_high']} vs {m['n_low']}) | {_fmt(m['hazard_ratio'])} | "
            f"{_fmt(m['hr_ci_low'])}–{_fmt(m['hr_ci_high'])} |",
            f"| Cox p | {_fmt(m['cox_p'])} | |", f"| log-rank p | {_fmt(m['logrank_p'])} | |",
            f"| C-index of the score | {_fmt(m['c_index'])} | |", "",
            table_caption(f"discrimination and survival, {m['title']}", m["lineage_id"]), "",
            f"High risk: score above {m['threshold']:.4g} ({m['threshold_source']}).", ""]


def _figures(m: dict[str, Any], embed_from: Path | None) -> list[str]:
    lines = []
    for name in m["figures"]:
        src = f"data:image/png;base64,{base64.b64encode((embed_from / name).read_bytes()).decode()}" \
            if embed_from else name
        lines += [f"![{name}]({src})", "", f"*{name} · lineage id `{m['lineage_id']}`*", ""]
    return lines
