"""``radassets dicom``: a dataset version's DICOM files."""

from __future__ import annotations

import sys

import click

from radassets.cli.output import print_json, progress
from radassets.cli.settings import current_layout, current_settings


@click.group(help="DICOM files")
def dicom() -> None:
    pass


@dicom.command("fetch", help="download and verify a dataset version's series")
@click.argument("dataset_version")
def fetch(dataset_version: str) -> None:
    # Inside: radassets.idc (pandas, pyarrow, pydicom) takes about 1 s to import, which `radassets --help` would pay.
    from radassets import datasets
    from radassets.idc.cohort import Cohort
    from radassets.idc.dicom import fetch_dataset_dicom

    settings, layout = current_settings(), current_layout()
    definition = datasets.get(dataset_version, settings.resolved_data_dir())
    cohort = Cohort.read(layout.cohort_lockfile(dataset_version))
    report = fetch_dataset_dicom(definition, cohort, layout, idc_mirror=settings.mirror(),
                                 progress=lambda done, total, msg: progress(f"[{done}/{total}] {msg}"))
    print_json(report.summary())
    if report.failed:
        sys.exit(1)
