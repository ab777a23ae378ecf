"""``radassets dicom``: a dataset version's DICOM files."""

from __future__ import annotations

import sys

import click

from radassets.cli.output import print_json, progress


@click.group(help="DICOM files")
def dicom() -> None:
    pass


@dicom.command("fetch", help="download and verify a dataset version's series")
@click.argument("dataset_version")
def fetch(dataset_version: str) -> None:
    # Inside: radassets.idc (pandas, pyarrow, pydicom) takes about 1 s to import, which `radassets --help` would pay.
    from radassets import datasets
    from radassets.idc.cohort import Cohort, lockfile_path
    from radassets.idc.dicom import fetch_dataset_dicom

    definition = datasets.get(dataset_version)
    cohort = Cohort.read(lockfile_path(dataset_version))
    report = fetch_dataset_dicom(definition, cohort, progress=lambda done, total, msg: progress(f"[{done}/{total}] {msg}"))
    print_json(report.summary())
    if report.failed:
        sys.exit(1)
