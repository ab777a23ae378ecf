"""``radassets cohort``: a dataset version's cohort lockfile, shown, built or compared."""

from __future__ import annotations

import click

from radassets.cli.output import print_json, progress
from radassets.cli.settings import current_layout, current_settings

# The library is imported inside the commands: radassets.idc (pandas, pyarrow, pydantic) takes about 1 s,
# which `radassets --help` would pay.


@click.group(help="cohort lockfiles")
def cohort() -> None:
    pass


def _cohort(name: str, rebuild: bool):
    from radassets import datasets
    from radassets.idc.cohort import Cohort
    from radassets.idc.cohorts import cohort_for

    definition = datasets.get(name, current_settings().resolved_data_dir())
    path = current_layout().cohort_lockfile(name)
    if path.is_file() and not rebuild:
        return Cohort.read(path), f"lockfile {path}"
    _ensure_demo_source(definition)
    return cohort_for(definition, current_layout()), "computed from the index (not materialized yet)"


def _ensure_demo_source(definition) -> None:
    """The demo collection is generated on first use; the idc layer only reads it."""
    from radassets.demo import ensure_demo_source

    if definition.source.kind == "demo":  # the demo spec is read (and checked) only for the demo
        ensure_demo_source(definition, current_layout(), current_settings().demo(), progress=progress)


@cohort.command("show", help="summarise a dataset version's cohort")
@click.argument("dataset_version")
@click.option("--json", "as_json", is_flag=True)
@click.option("--rebuild", is_flag=True, help="recompute from the index even if a lockfile exists")
def show(dataset_version: str, as_json: bool, rebuild: bool) -> None:
    cohort, origin = _cohort(dataset_version, rebuild)
    stats = cohort.stats()
    if as_json:
        print_json(dict(stats.to_json(), collections=cohort.collections, origin=origin))
        return
    print(f"{cohort.dataset_version}: IDC release {cohort.idc_version} ({cohort.idc_release_date}), {origin}")
    for key in ("patients", "studies", "series", "instances", "size_gb", "modalities", "index", "hash"):
        print(f"  {key:10s} {getattr(stats, key)}")
    if stats.excluded:
        print(f"  {'excluded':10s} {stats.excluded} series the index shows are not volumes (localizers, screens), "
              f"listed in the lockfile")
    print("  cite:")
    for c in cohort.collections:
        print(f"    {c['collection_id']}: DOI {c['source_DOI']} ({c['license_short_name']}), {c['series']} series")


@cohort.command("build", help="write a dataset version's cohort lockfile")
@click.argument("dataset_version")
def build(dataset_version: str) -> None:
    from radassets import datasets
    from radassets.idc.cohorts import cohort_for, write_cohort

    definition = datasets.get(dataset_version, current_settings().resolved_data_dir())
    _ensure_demo_source(definition)
    cohort = cohort_for(definition, current_layout())
    path = write_cohort(cohort, current_layout())
    print(f"wrote {path} ({len(cohort.series)} series, hash {cohort.content_hash[:12]})")


@cohort.command("diff", help="series added, removed and revised between two dataset versions")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True)
@click.option("--rebuild", is_flag=True)
def diff(a: str, b: str, as_json: bool, rebuild: bool) -> None:
    from radassets.idc.cohort import diff_cohorts

    first, _ = _cohort(a, rebuild)
    second, _ = _cohort(b, rebuild)
    diff = diff_cohorts(first, second)
    if as_json:
        print_json({"summary": diff.summary(), "added": diff.added, "removed": diff.removed, "revised": diff.revised})
        return
    s = diff.summary()
    print(f"{first.dataset_version} (IDC v{first.idc_version}) -> {second.dataset_version} (IDC v{second.idc_version}): "
          f"{s['added']} added, {s['removed']} removed, {s['revised']} revised")
    for label, rows in (("added", diff.added), ("removed", diff.removed)):
        for r in rows:
            print(f"  {label:8s} {r['PatientID']:16s} {r['Modality']:9s} {r['SeriesInstanceUID']}")
    for r in diff.revised:
        print(f"  revised  {r['PatientID']:16s} {r['Modality']:9s} {r['SeriesInstanceUID']} "
              f"({r['crdc_series_uuid_a']} -> {r['crdc_series_uuid_b']})")
