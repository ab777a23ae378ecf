"""``radassets lineage``: the lineage store (DuckDB): trace, query, export, rebuild."""

from __future__ import annotations

import json
from pathlib import Path

import click

from radassets.cli.settings import current_layout

# The library is imported inside the commands: DuckDB and the store take about 0.5 s, OpenLineage's client 1 s,
# which `radassets --help` would pay.


def _store() -> tuple[Path, Path]:
    """The lineage database's folder and the event folder of the current artifact root."""
    layout = current_layout()
    return layout.lineage_dir(), layout.lineage_events_dir()


@click.group(help="the lineage store (DuckDB)")
def lineage() -> None:
    pass


@lineage.command("trace", help="trace a figure, report or artifact id back to the cohort: IDC release, series, "
                               "settings, model, runs")
@click.argument("target", help="a figure (PNG, PDF or SVG) or report file, or an item id, lineage id (or its stamp "
                                "'radassets c390e2ed': a prefix of 8 or more hex digits), version id or run id")
@click.option("--full", is_flag=True, help="list every series UID")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def trace(target: str, full: bool, as_json: bool) -> None:
    from radassets.lineage.store import reader
    from radassets.lineage.trace import format_trace, trace

    with reader(*_store()) as con:
        result = trace(con, target, full=full)
    print(json.dumps(result, indent=2, default=str) if as_json else format_trace(result))


def _only_a_query(query: str) -> None:
    """Refuse anything but one query (SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE...): a SET, PRAGMA,
    ATTACH, INSTALL, LOAD, COPY, EXPORT or CALL would change the session or reach other files, and a
    second statement would run unseen."""
    import duckdb

    from radassets.datasets import one_line
    from radassets.lineage.store import LineageError

    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise LineageError(f"query failed: {one_line(str(e))}") from None
    kinds = [s.type for s in statements]
    if kinds != [duckdb.StatementType.SELECT]:
        found = ", ".join(k.name for k in kinds) or "no statement"
        raise LineageError(f"lineage sql runs one query (SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE), not: {found}")


@lineage.command("sql", help="run a read-only SQL query on the lineage store (tables: docs/lineage.md)")
@click.argument("query")
@click.option("--csv", "as_csv", is_flag=True)
def sql(query: str, as_csv: bool) -> None:
    import duckdb

    from radassets.datasets import one_line
    from radassets.lineage.store import LineageError, is_damage, reader

    _only_a_query(query)
    with reader(*_store()) as con:  # read-only: a statement that writes is refused by DuckDB
        con.execute("SET enable_external_access = false")  # nor may a query read or write other files
        try:
            frame = con.sql(query).df()
        except duckdb.Error as e:
            if is_damage(e):  # the file, not the query: let reader() name the rebuild
                raise
            raise LineageError(f"query failed: {one_line(str(e))}") from None
    print(frame.to_csv(index=False) if as_csv else frame.to_string(index=False, max_colwidth=80))


@lineage.command("export", help="write every run as OpenLineage run events, one JSON file each")
@click.option("--openlineage", type=click.Path(path_type=Path), required=True, metavar="DIR")
def export(openlineage: Path) -> None:
    from radassets.lineage.openlineage import export_events
    from radassets.lineage.store import reader

    with reader(*_store()) as con:
        written = export_events(con, openlineage)
    print(f"{len(written)} OpenLineage run events written to {openlineage}")


@lineage.command("rebuild", help="re-create lineage.duckdb from the merged event files (when DuckDB cannot read it); "
                                 "the old file is kept aside as lineage.duckdb.corrupt-TIME")
def rebuild() -> None:
    from radassets.lineage.store import rebuild

    report = rebuild(*_store())
    print(f"rebuilt {report.database} from {report.events} merged event files")
    for name, reason in report.set_aside:
        print(f"set aside, no longer readable: events/rejected/{name} ({reason})")
    if report.kept:
        print(f"the file it replaced is kept as {report.kept}")
    if report.pending:
        print(f"then merged {report.pending} pending event files")
