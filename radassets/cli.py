"""The ``radassets`` command line. Every command calls the same library functions as the assets.

Errors a user can fix (unknown dataset version, bad definition, unreachable bucket...) print one
line naming the item and the cause, and exit with status 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from radassets.errors import RadassetsError

def _settings():
    """The settings, read once per command (environment, radassets.toml, defaults)."""
    from radassets.settings import Settings

    return Settings.load()


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- datasets ---------------------------------------------------------------------------------

def cmd_datasets_list(args: argparse.Namespace) -> None:
    from radassets import datasets

    defs = datasets.load_all(_settings().resolved_data_dir())
    if args.json:
        _print_json({name: d.model_dump() for name, d in defs.items()})
        return
    for name, d in defs.items():
        print(f"{name:40s} {d.source.kind:6s} v{d.source.idc_version:<3d} {d.title}")


def cmd_datasets_add_local(args: argparse.Namespace) -> None:
    from radassets.idc.local import add_local_dataset

    settings = _settings()
    result = add_local_dataset(args.name, Path(args.path), settings.layout(), title=args.title,
                               segment_labels=args.segment_label, data_root=settings.resolved_data_dir())
    print(f"{'re-indexed' if result.reindexed else 'indexed'} {result.series} series ({result.instances} files) "
          f"of {result.patients} patients from {args.path}")
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
    print(f"next:       radassets cohort show {args.name}")


# -- cohorts ----------------------------------------------------------------------------------

def _cohort(name: str, rebuild: bool):
    from radassets import datasets
    from radassets.idc.cohort import Cohort
    from radassets.idc.cohorts import cohort_for

    settings = _settings()
    definition = datasets.get(name, settings.resolved_data_dir())
    path = settings.layout().cohort_lockfile(name)
    if path.is_file() and not rebuild:
        return Cohort.read(path), f"lockfile {path}"
    computed = cohort_for(definition, settings.layout(), demo_spec=settings.demo())
    return computed, "computed from the index (not materialized yet)"


def cmd_cohort_show(args: argparse.Namespace) -> None:
    cohort, origin = _cohort(args.dataset_version, args.rebuild)
    stats = cohort.stats()
    if args.json:
        _print_json(dict(stats, collections=cohort.collections, origin=origin))
        return
    print(f"{cohort.dataset_version}: IDC release {cohort.idc_version} ({cohort.idc_release_date}), {origin}")
    for key in ("patients", "studies", "series", "instances", "size_gb", "modalities", "index", "hash"):
        print(f"  {key:10s} {stats[key]}")
    print("  cite:")
    for c in cohort.collections:
        print(f"    {c['collection_id']}: DOI {c['source_DOI']} ({c['license_short_name']}), {c['series']} series")


def cmd_cohort_build(args: argparse.Namespace) -> None:
    from radassets import datasets
    from radassets.idc.cohorts import cohort_for, write_cohort

    settings = _settings()
    cohort = cohort_for(datasets.get(args.dataset_version, settings.resolved_data_dir()), settings.layout(),
                        demo_spec=settings.demo())
    path = write_cohort(cohort, settings.layout())
    print(f"wrote {path} ({len(cohort.series)} series, hash {cohort.content_hash[:12]})")


def cmd_cohort_diff(args: argparse.Namespace) -> None:
    from radassets.idc.cohort import diff_cohorts

    a, _ = _cohort(args.a, args.rebuild)
    b, _ = _cohort(args.b, args.rebuild)
    diff = diff_cohorts(a, b)
    if args.json:
        _print_json({"summary": diff.summary(), "added": diff.added, "removed": diff.removed, "revised": diff.revised})
        return
    s = diff.summary()
    print(f"{a.dataset_version} (IDC v{a.idc_version}) -> {b.dataset_version} (IDC v{b.idc_version}): "
          f"{s['added']} added, {s['removed']} removed, {s['revised']} revised")
    for label, rows in (("added", diff.added), ("removed", diff.removed)):
        for r in rows:
            print(f"  {label:8s} {r['PatientID']:16s} {r['Modality']:9s} {r['SeriesInstanceUID']}")
    for r in diff.revised:
        print(f"  revised  {r['PatientID']:16s} {r['Modality']:9s} {r['SeriesInstanceUID']} "
              f"({r['crdc_series_uuid_a']} -> {r['crdc_series_uuid_b']})")


# -- demo and DICOM -----------------------------------------------------------------------------

def cmd_demo_generate(args: argparse.Namespace) -> None:
    from radassets.demo import ensure_demo_collection, generate_demo_collection

    settings = _settings()
    root = Path(args.root) if args.root else settings.layout().demo_root()
    spec = settings.demo()
    collection = (generate_demo_collection(root, spec, progress=_progress) if args.force
                  else ensure_demo_collection(root, spec, progress=_progress))
    print(f"demo collection at {collection.root}")


def cmd_dicom_fetch(args: argparse.Namespace) -> None:
    from radassets import datasets
    from radassets.idc.cohort import Cohort
    from radassets.idc.dicom import fetch_dataset_dicom

    settings = _settings()
    definition = datasets.get(args.dataset_version, settings.resolved_data_dir())
    cohort = Cohort.read(settings.layout().cohort_lockfile(args.dataset_version))
    report = fetch_dataset_dicom(definition, cohort, settings.layout(), mirror=settings.mirror(),
                                 progress=lambda done, total, msg: _progress(f"[{done}/{total}] {msg}"))
    _print_json(report.summary())
    if report.failed:
        sys.exit(1)


# -- imaging ------------------------------------------------------------------------------------

def cmd_imaging_seeds(args: argparse.Namespace) -> None:
    import csv
    import io

    from radassets.imaging.folder import SEED_CSV_COLUMNS, seeds_from_folder
    from radassets.storage import atomic_write_text

    rows, failures, scan = seeds_from_folder(Path(args.dicom_dir), args.label, progress=_progress)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SEED_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if args.out == "-":
        sys.stdout.write(buffer.getvalue())
    else:
        atomic_write_text(Path(args.out), buffer.getvalue())
    for failure in failures:
        _progress(f"failed: {failure}")
    _progress(f"{len(rows)} lesion(s) from {len(scan.masks)} mask file(s) on {len(scan.ct_series)} CT series; "
              f"{len(failures)} failure(s); {scan.skipped} other file(s) skipped"
              + ("" if args.out == "-" else f"; wrote {args.out}"))
    if failures:
        sys.exit(1)


# -- pipeline -----------------------------------------------------------------------------------

def cmd_pipeline_run(args: argparse.Namespace) -> None:
    from radassets.defs.run import materialize_dataset_versions

    models = args.models.split(",") if args.models else None
    ok = materialize_dataset_versions(args.dataset_version, settings=_settings(), selection=args.select, models=models,
                                      progress=_progress)
    if not ok:
        sys.exit(1)


# -- evaluation -----------------------------------------------------------------------------------

def cmd_evaluate_scores(args: argparse.Namespace) -> None:
    from radassets.evaluation.scores import ScoreInputError, evaluate_scores

    if args.threshold is not None and args.threshold_from is not None:
        raise ScoreInputError("give --threshold or --threshold-from, not both")
    metrics = evaluate_scores(
        Path(args.scores), args.id_column, args.score_column, Path(args.clinical), args.clinical_id_column,
        args.time_column, args.event_column, args.horizon_days, args.censored_before_horizon, Path(args.out),
        event_values=tuple(args.event_value or ["1"]),
        censored_values=tuple(args.censored_value) if args.censored_value else None, threshold=args.threshold,
        threshold_from=Path(args.threshold_from) if args.threshold_from else None,
        threshold_column=args.threshold_column, time_unit=args.time_unit, seed=args.seed)
    keys = ["n", "n_events_before_horizon", "auc", "auc_ci_low", "auc_ci_high", "threshold", "hazard_ratio",
            "hr_ci_low", "hr_ci_high", "cox_p", "logrank_p", "c_index"]
    for key in keys:
        value = metrics[key]
        print(f"{key:24s} {value:.4g}" if isinstance(value, float) else f"{key:24s} {value}")
    for cause, n in metrics["excluded"].items():
        print(f"excluded: {cause}: {n}")
    print(f"wrote {Path(args.out) / 'metrics.json'}, roc.png, km.png (lineage id {metrics['lineage_id']})")


# -- models ---------------------------------------------------------------------------------------

def cmd_models_list(args: argparse.Namespace) -> None:
    from radassets.models import registry
    from radassets.models.pipeline import runnable_here

    settings = _settings()
    entries, invalid = registry.scan_registry(settings.resolved_models_dir())  # an invalid entry is listed as such
    if args.json:
        for reason in invalid.values():  # on stderr, so that standard output stays a mapping of entries
            print(f"radassets: warning: {reason}", file=sys.stderr)
        _print_json({name: e.model_dump(mode="json") for name, e in entries.items()})
        return
    rows = {name: None for name in invalid} | dict(entries)
    for name in sorted(rows):
        e = rows[name]
        if e is None:
            print(f"{name:16s} {'?':11s} {'?':>5} {'invalid':13s} {invalid[name]}")
            continue
        ok, why = runnable_here(e, settings.layout().weights_dir(), settings.resolved_data_dir())
        pinned = "" if e.weights is None or e.weights.sha256 else "  (weights sha256 not pinned)"
        print(f"{name:16s} {e.kind:11s} {e.embedding_dim or '?':>5} {'ready' if ok else 'needs weights':13s} "
              f"{e.title}{pinned}")


def cmd_models_add(args: argparse.Namespace) -> None:
    from radassets.models.add import add_model

    entry, path = add_model(args.name, torchscript=args.torchscript, onnx=args.onnx, table=args.table,
                            preprocessing=args.preprocessing, id_column=args.id_column, id_kind=args.id_kind,
                            title=args.title, licence=args.licence, registry_dir=_settings().resolved_models_dir(),
                            weights_dir=_settings().layout().weights_dir())
    print(f"registered {entry.name} ({entry.kind}, {entry.embedding_dim}-d) in {path}")
    _sync_partitions()
    print(f"next: radassets models backfill {entry.name}   (or launch a backfill of its partitions in the UI)")


def _sync_partitions() -> None:
    import os

    _settings().export_dagster_home()
    if not os.environ.get("DAGSTER_HOME"):
        print("DAGSTER_HOME is not set: the sensor model_registry_sensor adds the partition when the UI runs")
        return
    from dagster import DagsterInstance

    from radassets.defs.run import sync_model_partitions

    added = sync_model_partitions(DagsterInstance.get())
    print(f"model partitions added: {', '.join(added)}" if added else "model partitions already match the registry")


def cmd_models_sync(args: argparse.Namespace) -> None:
    _sync_partitions()


def cmd_models_backfill(args: argparse.Namespace) -> None:
    from radassets.defs.run import backfill_model

    if not backfill_model(args.name, args.dataset_version or None, settings=_settings(), progress=_progress):
        sys.exit(1)


def cmd_lineage_trace(args: argparse.Namespace) -> None:
    from radassets.lineage.store import reader
    from radassets.lineage.trace import format_trace, trace

    with reader(_settings().layout().lineage_dir()) as con:
        result = trace(con, args.target, full=args.full)
    print(json.dumps(result, indent=2, default=str) if args.json else format_trace(result))


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


def cmd_lineage_sql(args: argparse.Namespace) -> None:
    import duckdb

    from radassets.datasets import one_line
    from radassets.lineage.store import LineageError, is_damage, reader

    _only_a_query(args.query)
    with reader(_settings().layout().lineage_dir()) as con:  # read-only: a statement that writes is refused by DuckDB
        con.execute("SET enable_external_access = false")  # nor may a query read or write other files
        try:
            frame = con.sql(args.query).df()
        except duckdb.Error as e:
            if is_damage(e):  # the file, not the query: let reader() name the rebuild
                raise
            raise LineageError(f"query failed: {one_line(str(e))}") from None
    print(frame.to_csv(index=False) if args.csv else frame.to_string(index=False, max_colwidth=80))


def cmd_lineage_export(args: argparse.Namespace) -> None:
    from radassets.lineage.openlineage import export_events
    from radassets.lineage.store import reader

    with reader(_settings().layout().lineage_dir()) as con:
        written = export_events(con, args.openlineage)
    print(f"{len(written)} OpenLineage run events written to {args.openlineage}")


def cmd_lineage_rebuild(args: argparse.Namespace) -> None:
    from radassets.lineage.store import rebuild

    report = rebuild(_settings().layout().lineage_dir())
    print(f"rebuilt {report.database} from {report.events} merged event files")
    for name, reason in report.set_aside:
        print(f"set aside, no longer readable: events/rejected/{name} ({reason})")
    if report.kept:
        print(f"the file it replaced is kept as {report.kept}")
    if report.pending:
        print(f"then merged {report.pending} pending event files")


# -- parser ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="radassets", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="group", required=True)

    def command(group: argparse._SubParsersAction, name: str, fn: Callable, help: str) -> argparse.ArgumentParser:
        c = group.add_parser(name, help=help, description=help)
        c.set_defaults(fn=fn)
        return c

    ds = sub.add_parser("datasets", help="dataset versions").add_subparsers(dest="cmd", required=True)
    c = command(ds, "list", cmd_datasets_list, "list the dataset versions defined in data/datasets")
    c.add_argument("--json", action="store_true")
    c = command(ds, "add-local", cmd_datasets_add_local,
                "index a folder of your own CT plus SEG/RTSTRUCT files as a new dataset version")
    c.add_argument("name", help="new dataset version name, [a-z0-9_]")
    c.add_argument("path", help="folder of DICOM files (any names, any nesting)")
    c.add_argument("--title", default=None)
    c.add_argument("--segment-label", action="append", default=None,
                   help="segment label (regex) to take seeds from; repeatable; default: every segment")

    co = sub.add_parser("cohort", help="cohort lockfiles").add_subparsers(dest="cmd", required=True)
    c = command(co, "show", cmd_cohort_show, "summarise a dataset version's cohort")
    c.add_argument("dataset_version")
    c.add_argument("--json", action="store_true")
    c.add_argument("--rebuild", action="store_true", help="recompute from the index even if a lockfile exists")
    c = command(co, "build", cmd_cohort_build, "write a dataset version's cohort lockfile")
    c.add_argument("dataset_version")
    c = command(co, "diff", cmd_cohort_diff, "series added, removed and revised between two dataset versions")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--json", action="store_true")
    c.add_argument("--rebuild", action="store_true")

    de = sub.add_parser("demo", help="the generated demo collection").add_subparsers(dest="cmd", required=True)
    c = command(de, "generate", cmd_demo_generate, "generate the demo collection (skipped if already current)")
    c.add_argument("--root", default=None, help="output folder (default: $RADASSETS_HOME/demo)")
    c.add_argument("--force", action="store_true", help="regenerate even if present")

    di = sub.add_parser("dicom", help="DICOM files").add_subparsers(dest="cmd", required=True)
    c = command(di, "fetch", cmd_dicom_fetch, "download and verify a dataset version's series")
    c.add_argument("dataset_version")

    im = sub.add_parser("imaging", help="volumes, masks and seed points").add_subparsers(dest="cmd", required=True)
    c = command(im, "seeds", cmd_imaging_seeds,
                "one seed per lesion (LPS mm centroid) from a folder of your own CT plus SEG/RTSTRUCT files")
    c.add_argument("dicom_dir", help="folder of DICOM files (any names, any nesting)")
    c.add_argument("--out", required=True, help="CSV to write ('-' for standard output)")
    c.add_argument("--label", action="append", default=None,
                   help="keep segments whose label matches this regular expression; repeatable; default: all")

    pi = sub.add_parser("pipeline", help="run assets through Dagster").add_subparsers(dest="cmd", required=True)
    c = command(pi, "run", cmd_pipeline_run,
                "materialize assets for dataset versions in the Dagster instance at $DAGSTER_HOME")
    c.add_argument("dataset_version", nargs="+")
    c.add_argument("--select", default=None,
                   help="Dagster asset selection (default: every asset but the opt-in ones, e.g. seed_stability, "
                        "which run only when selected: --select seed_stability)")
    c.add_argument("--models", default=None,
                   help="comma-separated models for the assets partitioned by model "
                        "(default: every registered model that runs without a download)")

    ev = sub.add_parser("evaluate", help="evaluation").add_subparsers(dest="cmd", required=True)
    c = command(ev, "scores", cmd_evaluate_scores,
                "evaluate a per-patient score table (higher = higher risk) against clinical follow-up")
    c.add_argument("--scores", required=True, help="CSV or parquet of scores")
    c.add_argument("--id-column", required=True)
    c.add_argument("--score-column", required=True)
    c.add_argument("--clinical", required=True, help="CSV or parquet of follow-up")
    c.add_argument("--clinical-id-column", required=True)
    c.add_argument("--time-column", required=True)
    c.add_argument("--time-unit", default="days", choices=["days", "months"])
    c.add_argument("--event-column", required=True)
    c.add_argument("--event-value", action="append", default=None,
                   help="value of the event column that means the event happened (repeatable; default 1)")
    c.add_argument("--censored-value", action="append", default=None,
                   help="value of the event column that means censored (repeatable; default 0, false, no, alive, "
                        "censored); any other value that is not an event value is an error")
    c.add_argument("--horizon-days", type=int, required=True)
    c.add_argument("--censored-before-horizon", required=True, choices=["alive", "drop"],
                   help="patients censored before the horizon: survivors (alive, Hosny 2018) or excluded (drop)")
    c.add_argument("--threshold", type=float, default=None, help="high risk above this score")
    c.add_argument("--threshold-from", default=None, help="table whose column's median is the threshold")
    c.add_argument("--threshold-column", default=None)
    c.add_argument("--seed", type=int, default=20261124, help="bootstrap seed (recorded)")
    c.add_argument("--out", required=True, help="output folder")

    mo = sub.add_parser("models", help="the model registry (data/models)").add_subparsers(dest="cmd", required=True)
    c = command(mo, "list", cmd_models_list, "registered models, and whether each can run here")
    c.add_argument("--json", action="store_true")
    c = command(mo, "add", cmd_models_add,
                "register your own model: a TorchScript or ONNX file with a preprocessing spec, or a table of "
                "precomputed embeddings")
    c.add_argument("name", help="model name, [a-z0-9_]: its partition key")
    c.add_argument("--torchscript", type=Path, default=None, help="a TorchScript file (torch.jit.save)")
    c.add_argument("--onnx", type=Path, default=None, help="an ONNX file")
    c.add_argument("--table", type=Path, default=None, help="a CSV or parquet table of embeddings")
    c.add_argument("--preprocessing", type=Path, default=None,
                   help="YAML: spacing_mm, input_size, axes, intensity (for --torchscript and --onnx)")
    c.add_argument("--id-column", default=None, help="--table: the id column")
    c.add_argument("--id-kind", default="PatientID", choices=["PatientID", "SeriesInstanceUID", "seed_id"])
    c.add_argument("--title", default=None)
    c.add_argument("--licence", default="as stated by the model's authors")
    c = command(mo, "sync", cmd_models_sync, "add a 'model' partition for every registered model (what the sensor does)")
    c = command(mo, "backfill", cmd_models_backfill,
                "materialize a model's embeddings for every dataset version with patches; nothing upstream reruns")
    c.add_argument("name")
    c.add_argument("--dataset-version", action="append", default=None, help="only these (repeatable)")

    li = sub.add_parser("lineage", help="the lineage store (DuckDB)").add_subparsers(dest="cmd", required=True)
    c = command(li, "trace", cmd_lineage_trace,
                "trace a figure, report or artifact id back to the cohort: IDC release, series, settings, model, runs")
    c.add_argument("target", help="a figure or report file, or an item id, lineage id, version id or run id")
    c.add_argument("--full", action="store_true", help="list every series UID")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c = command(li, "sql", cmd_lineage_sql, "run a read-only SQL query on the lineage store (tables: docs/lineage.md)")
    c.add_argument("query")
    c.add_argument("--csv", action="store_true")
    c = command(li, "export", cmd_lineage_export, "write every run as OpenLineage run events, one JSON file each")
    c.add_argument("--openlineage", type=Path, required=True, metavar="DIR")
    command(li, "rebuild", cmd_lineage_rebuild,
            "re-create lineage.duckdb from the merged event files (when DuckDB cannot read it); the old file is "
            "kept aside as lineage.duckdb.corrupt-TIME")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    # Our progress at INFO; other libraries only when they warn (alembic, opening the Dagster instance, logs
    # every migration plugin at INFO).
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("radassets").setLevel(logging.INFO)
    from radassets.interrupts import Interrupted, stop_on_interrupts

    # Ctrl-C, SIGTERM and SIGHUP stop the whole command (not just the current run): one line, exit 128 + signal
    # number (130 for Ctrl-C). A run they interrupt is marked failed in the instance.
    try:
        with stop_on_interrupts():
            _settings().export_dagster_home()  # Dagster reads DAGSTER_HOME from the environment
            args.fn(args)
    except RadassetsError as e:
        print(f"radassets: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        during = f" during run {e.run_id} (marked failed)" if e.run_id else ""
        print(f"radassets: interrupted by {e.signal_name}{during}: stopped, no later run started", file=sys.stderr)
        sys.exit(e.exit_status)
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stderr.close()
        sys.exit(0)


if __name__ == "__main__":
    main()
