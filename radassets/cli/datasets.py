"""``radassets datasets``: the dataset versions defined in data/datasets."""

from __future__ import annotations

from pathlib import Path

import click

from radassets.cli.output import print_json
from radassets.cli.settings import current_layout, current_settings


@click.group(help="dataset versions")
def datasets() -> None:
    pass


@datasets.command("list", help="list the dataset versions defined in data/datasets")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    from radassets import datasets  # pydantic: 0.2 s that `radassets --help` need not pay

    # An invalid definition is listed as such; the others still are.
    defs, invalid = datasets.scan_definitions(current_settings().resolved_data_dir())
    if as_json:
        for reason in invalid.values():  # on stderr, so that standard output stays a mapping of definitions
            click.echo(f"radassets: warning: {reason}", err=True)
        print_json({name: d.model_dump() for name, d in defs.items()})
        return
    rows = {name: None for name in invalid} | dict(defs)
    for name in sorted(rows):
        d = rows[name]
        if d is None:
            print(f"{name:40s} {'?':6s} {'?':4s} invalid: {invalid[name]}")
            continue
        print(f"{name:40s} {d.source.kind:6s} v{d.source.idc_version:<3d} {d.title}")


@datasets.command("add-local", help="index a folder of your own CT plus SEG/RTSTRUCT files as a new dataset version")
@click.argument("name", help="new dataset version name, [a-z0-9_]")
@click.argument("path", help="folder of DICOM files (any names, any nesting)")
@click.option("--title", default=None)
@click.option("--segment-label", multiple=True,
              help="segment label (regex) to take seeds from; repeatable; default: every segment")
def add_local(name: str, path: str, title: str | None, segment_label: tuple[str, ...]) -> None:
    from radassets.idc.local import add_local_dataset  # pydicom, highdicom: 1 s

    current_layout().require_local("radassets datasets add-local")
    result = add_local_dataset(name, Path(path), current_layout(), title=title, segment_labels=list(segment_label) or None,
                               data_root=current_settings().resolved_data_dir())
    print(f"{'re-indexed' if result.reindexed else 'indexed'} {result.series} series ({result.instances} files) "
          f"of {result.patients} patients from {path}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} files that are not readable DICOM:")
        for reason in result.skipped[:20]:
            print(f"  {reason}")
        if len(result.skipped) > 20:
            print(f"  ... and {len(result.skipped) - 20} more")
    if result.linked:
        print(f"{len(result.linked)} file name(s) are not valid UTF-8; indexed through links under "
              f"{result.index_root / 'links'} (first: {result.linked[0]})")
    if result.reindexed:
        print("the definition is kept as it was; series whose files changed have new ids and are converted again")
    print(f"definition: {result.definition_path}")
    print(f"index:      {result.index_root / 'index'}")
    print(f"next:       radassets cohort show {name}")
