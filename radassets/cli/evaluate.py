"""``radassets evaluate``: evaluate a score table against clinical follow-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click


@click.group(help="evaluation")
def evaluate() -> None:
    pass


@evaluate.command("scores",
                  help="evaluate a per-patient score table (higher = higher risk) against clinical follow-up")
@click.option("--scores", required=True, help="CSV or parquet of scores")
@click.option("--id-column", required=True)
@click.option("--score-column", required=True)
@click.option("--clinical", required=True, help="CSV or parquet of follow-up")
@click.option("--clinical-id-column", required=True)
@click.option("--time-column", required=True)
@click.option("--time-unit", default="days", type=click.Choice(["days", "months"]))
@click.option("--event-column", required=True)
@click.option("--event-value", multiple=True,
              help="value of the event column that means the event happened (repeatable; default 1)")
@click.option("--censored-value", multiple=True,
              help="value of the event column that means censored (repeatable; default 0, false, no, alive, "
                   "censored); any other value that is not an event value is an error")
@click.option("--horizon-days", type=int, required=True)
@click.option("--censored-before-horizon", required=True, type=click.Choice(["alive", "drop"]),
              help="patients censored before the horizon: survivors (alive, Hosny 2018) or excluded (drop)")
@click.option("--threshold", type=float, default=None, help="high risk above this score")
@click.option("--threshold-from", default=None, help="table whose column's median is the threshold")
@click.option("--threshold-column", default=None)
@click.option("--reference-column", default=None,
              help="a second score column of the same table (the original model a replication reproduces): paired "
                   "DeLong test and agreement of the high/low risk groups on the patients both scored")
@click.option("--reference-name", default=None, help="name of the reference model in the report (default: its column)")
@click.option("--reference-threshold", type=float, default=None,
              help="high risk above this reference score (default: the same rule as for --score-column)")
@click.option("--seed", type=int, default=20261124, help="bootstrap seed (recorded)")
@click.option("--out", required=True, help="output folder")
def scores(scores: str, id_column: str, score_column: str, clinical: str, clinical_id_column: str, time_column: str,
           time_unit: Literal["days", "months"], event_column: str, event_value: tuple[str, ...],
           censored_value: tuple[str, ...], horizon_days: int, censored_before_horizon: Literal["alive", "drop"],
           threshold: float | None, threshold_from: str | None, threshold_column: str | None,
           reference_column: str | None, reference_name: str | None, reference_threshold: float | None, seed: int,
           out: str) -> None:
    # Inside: lifelines, scikit-learn and matplotlib take about 3 s to import, which `radassets --help` would pay.
    from radassets.cli.settings import current_settings
    from radassets.evaluation.scores import ScoreInputError, evaluate_scores

    if threshold is not None and threshold_from is not None:
        raise ScoreInputError("give --threshold or --threshold-from, not both")
    if reference_column is None and (reference_name is not None or reference_threshold is not None):
        raise ScoreInputError("--reference-name and --reference-threshold need --reference-column")
    metrics = evaluate_scores(
        Path(scores), id_column, score_column, Path(clinical), clinical_id_column,
        time_column, event_column, horizon_days, censored_before_horizon, Path(out),
        event_values=tuple(event_value or ["1"]),
        censored_values=tuple(censored_value) if censored_value else None, threshold=threshold,
        threshold_from=Path(threshold_from) if threshold_from else None,
        threshold_column=threshold_column, time_unit=time_unit, seed=seed, reference_column=reference_column,
        reference_name=reference_name, reference_threshold=reference_threshold,
        stamp=current_settings().figure_stamp)
    for key, value in metrics.headline().items():
        print(f"{key:24s} {value:.4g}" if isinstance(value, float) else f"{key:24s} {value}")
    for key, value in metrics.replication_headline().items():
        print(f"{key:24s} {value:.4g}" if isinstance(value, float) else f"{key:24s} {value}")
    for cause, n in metrics.excluded.items():
        print(f"excluded: {cause}: {n}")
    print(f"wrote {Path(out) / 'metrics.json'}, roc and km (.png, .pdf, .svg), report.md, report.html, report.pdf, "
          f"references.bib (lineage id {metrics.lineage_id})")
