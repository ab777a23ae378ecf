"""``radassets pipeline``: materialize assets through Dagster."""

from __future__ import annotations

import sys

import click

from radassets.cli.output import progress
from radassets.cli.settings import current_settings


@click.group(help="run assets through Dagster")
def pipeline() -> None:
    pass


@pipeline.command("run", help="materialize assets for dataset versions: runs submitted to the Dagster instance at "
                  "$DAGSTER_HOME (its queue and pools apply), followed with a progress bar each")
@click.argument("dataset_version", nargs=-1, required=True)
@click.option("--select", default=None,
              help="Dagster asset selection (default: every asset but the opt-in ones, e.g. seed_stability, "
                   "which run only when selected: --select seed_stability)")
@click.option("--models", default=None,
              help="comma-separated models for the assets partitioned by model "
                   "(default: every registered model that runs without a download)")
def run(dataset_version: tuple[str, ...], select: str | None, models: str | None) -> None:
    # Inside: Dagster and the definitions (torch among them) take over 10 s to import.
    from radassets.defs.run import materialize_dataset_versions

    names = models.split(",") if models else None
    ok = materialize_dataset_versions(list(dataset_version), settings=current_settings(), selection=select, models=names,
                                      progress=progress)
    if not ok:
        sys.exit(1)
