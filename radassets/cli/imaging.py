"""``radassets imaging``: seed points from a folder of the user's own files."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import click

from radassets.cli.output import progress
from radassets.storage import atomic_write_text


@click.group(help="volumes, masks and seed points")
def imaging() -> None:
    pass


@imaging.command("seeds", help="one seed per lesion (LPS mm centroid) from a folder of your own CT plus SEG/RTSTRUCT files")
@click.argument("dicom_dir", help="folder of DICOM files (any names, any nesting)")
@click.option("--out", required=True, help="CSV to write ('-' for standard output)")
@click.option("--label", multiple=True,
              help="keep segments whose label matches this regular expression; repeatable; default: all")
def seeds(dicom_dir: str, out: str, label: tuple[str, ...]) -> None:
    # Inside: SimpleITK, pydicom and highdicom take about 2 s to import, which `radassets --help` would pay.
    from radassets.imaging.folder import SEED_CSV_COLUMNS, seeds_from_folder

    rows, failures, scan = seeds_from_folder(Path(dicom_dir), list(label) or None, progress=progress)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SEED_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if out == "-":
        sys.stdout.write(buffer.getvalue())
    else:
        atomic_write_text(Path(out), buffer.getvalue())
    for failure in failures:
        progress(f"failed: {failure}")
    progress(f"{len(rows)} lesion(s) from {len(scan.masks)} mask file(s) on {len(scan.ct_series)} CT series; "
             f"{len(failures)} failure(s); {scan.skipped} other file(s) skipped"
             + ("" if out == "-" else f"; wrote {out}"))
    if failures:
        sys.exit(1)
