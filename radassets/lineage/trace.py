"""Trace a figure, report or artifact back to the cohort it came from.

A target is resolved to one version of one asset partition: a figure or report (PNG, PDF or SVG) by the lineage id
in its metadata (``evaluation.figures``), any file by its sha256 (a copy elsewhere still matches; a local file or a
URL of the artifact store, such as ``s3://bucket/root/evaluation/.../os_2y_km.png``), or an id: an
item id (``figure:<lineage id>/km.png``), a lineage id or data version, a version id
(``asset[partition]@version``) or a run id. A lineage id may be typed in part, as read off a figure's stamp
(``radassets c390e2ed``): a prefix of at least 8 hex digits that one recorded version starts with.
From there the chain follows each version's producing run to the versions that run read, recursively (one recursive
query), and the facets recorded at each step give what a reader of a paper needs: IDC release and cohort hash, series, conversion
settings and library versions, seed source, patch parameters, model and weights, evaluation
parameters and label definitions, the files read from outside the pipeline (clinical tables,
published scores) with their sha256, and every run with its times, code version and git commit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import duckdb

from radassets.layout import as_path
from radassets.lineage.store import LineageError

CHAIN = """
WITH RECURSIVE chain(version_id, depth) AS (
    SELECT ?::VARCHAR, 0
    UNION
    SELECT ri.version_id, c.depth + 1
    FROM chain c JOIN dataset_versions v ON v.version_id = c.version_id JOIN run_inputs ri ON ri.run_id = v.produced_by
)
SELECT c.version_id, min(c.depth) AS depth, d.asset, d.partition_key, v.version, v.facets,
       r.run_id, r.dagster_run_id, r.status, r.started_at, r.ended_at, r.code_version, r.git_commit, r.partition,
       r.radassets_version
FROM chain c JOIN dataset_versions v USING (version_id) JOIN datasets d USING (dataset_name)
LEFT JOIN runs r ON r.run_id = v.produced_by
GROUP BY ALL ORDER BY r.started_at NULLS FIRST, d.asset, d.partition_key
"""


# When several versions hold a match (a figure made again, a volume reused by two dataset versions), the newest
# version is taken, figures and reports before other kinds; ``found_by`` says how many matched.
NEWEST = "ORDER BY (i.kind IN ('figure', 'report')) DESC, v.created_at DESC NULLS LAST"


def _first(con: duckdb.DuckDBPyConnection, query: str, params: list) -> tuple[str | None, int]:
    rows = con.execute(query, params).fetchall()
    return (rows[0][0] if rows else None), len(rows)


def _found(how: str, matches: int) -> str:
    return how + (f" (the newest of {matches} matches)" if matches > 1 else "")


def _file_target(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[str, str]:
    from radassets.evaluation.figures import TRACEABLE_SUFFIXES, lineage_id_of
    from radassets.storage import sha256_file

    if path.suffix.lower() in TRACEABLE_SUFFIXES:
        lineage_id = lineage_id_of(path)
        if lineage_id:
            vid, n = _first(con, f"SELECT i.version_id FROM items i JOIN dataset_versions v USING (version_id) "
                                 f"WHERE i.kind = 'figure' AND i.item_id = ? {NEWEST}",
                            [f"figure:{lineage_id}/{path.name}"])
            if vid is None:  # renamed: the version the lineage id names
                vid, n = _first(con, "SELECT version_id FROM dataset_versions WHERE version = ? AND produced_by IS NOT "
                                     "NULL ORDER BY created_at DESC", [lineage_id])
            if vid:
                return vid, _found(f"lineage id {lineage_id} in {path.name}", n)
    digest = sha256_file(path)
    vid, n = _first(con, f"SELECT i.version_id FROM items i JOIN dataset_versions v USING (version_id) "
                         f"WHERE i.sha256 = ? {NEWEST}", [digest])
    if vid:
        return vid, _found(f"content hash {digest[:12]}… of {path.name}", n)
    raise LineageError(f"{path}: no recorded figure or artifact has its lineage id or its sha256 ({digest[:12]}…)")


def _file(target: str) -> Path | None:
    """The file a target names (a local path or a URL of the artifact store), or None when it names no file."""
    try:
        path = cast(Path, as_path(target)) if "://" in target else Path(target).expanduser()
        return path if path.is_file() else None
    except (OSError, ValueError):  # a URL of an unknown scheme or an unreachable store: not a file here
        return None


def resolve(con: duckdb.DuckDBPyConnection, target: str) -> tuple[str, str]:
    """(version id, how it was found) for a file path or URL, or an id."""
    path = _file(target)
    if path is not None:
        return _file_target(con, path)
    for query, how in (
        (f"SELECT i.version_id FROM items i JOIN dataset_versions v USING (version_id) WHERE i.item_id = ? {NEWEST}",
         "item"),
        ("SELECT version_id FROM dataset_versions WHERE version_id = ?", "version id"),
        ("SELECT version_id FROM dataset_versions WHERE version = ? AND produced_by IS NOT NULL "
         "ORDER BY created_at DESC", "data version"),
        ("SELECT version_id FROM run_outputs WHERE run_id = ?", "run"),
        # A Dagster run materializes several assets: its last output is the most downstream one.
        ("SELECT o.version_id FROM runs r JOIN run_outputs o USING (run_id) WHERE r.dagster_run_id = ? "
         "ORDER BY r.ended_at DESC", "Dagster run, its last output,"),
    ):
        vid, n = _first(con, query, [target])
        if vid:
            return vid, _found(f"{how} {target}", n if how == "item" or how == "data version" else 1)
    if prefix := _hex_prefix(target):
        return _by_prefix(con, prefix, target)
    raise LineageError(f"{target!r} is neither a file nor a recorded item, version, lineage id or run id")


MIN_PREFIX = 8  # hex digits: what a figure's stamp prints


def _hex_prefix(target: str) -> str | None:
    """The hex digits of a typed lineage id or of a stamp read off a figure ('radassets c390e2ed'), or None."""
    text = target.strip().lower().removeprefix("radassets").strip()
    return text if len(text) >= MIN_PREFIX and all(c in "0123456789abcdef" for c in text) else None


def _by_prefix(con: duckdb.DuckDBPyConnection, prefix: str, target: str) -> tuple[str, str]:
    """The newest version of the one lineage id or data version that starts with ``prefix``."""
    rows = con.execute("SELECT version, version_id FROM dataset_versions WHERE starts_with(version, ?) AND "
                       "produced_by IS NOT NULL ORDER BY created_at DESC", [prefix]).fetchall()
    versions = list(dict.fromkeys(v for v, _ in rows))
    if not versions:
        raise LineageError(f"{target!r}: no recorded lineage id or data version starts with {prefix!r}")
    if len(versions) > 1:
        shown = ", ".join(versions[:5]) + (" …" if len(versions) > 5 else "")
        raise LineageError(f"{target!r}: {len(versions)} recorded versions start with {prefix!r} ({shown}); "
                           f"type more digits")
    return rows[0][1], _found(f"lineage id {versions[0]} from the prefix {prefix}", len(rows))


def _settings(row: dict) -> dict[str, Any]:
    facets = json.loads(row["facets"]) if row["facets"] else {}
    return facets.get("settings", {}).get("content", {})


def trace(con: duckdb.DuckDBPyConnection, target: str, full: bool = False) -> dict[str, Any]:
    version_id, found_by = resolve(con, target)
    cursor = con.execute(CHAIN, [version_id])
    columns = [c[0] for c in cursor.description]
    chain = [dict(zip(columns, r)) for r in cursor.fetchall()]
    by_asset: dict[str, list[dict]] = {}
    for row in chain:
        by_asset.setdefault(row["asset"], []).append(row)
    cohorts = by_asset.get("cohort", [])
    cohort_versions = [c["version_id"] for c in cohorts]
    series_count = con.execute("SELECT count(*) FROM items WHERE kind = 'series' AND list_contains(?, version_id)",
                               [cohort_versions]).fetchone()[0]
    models = [{"name": json.loads(e["partition"] or "{}").get("model"), **{k: _settings(e).get(k) for k in
              ("weights_sha256", "preprocessing_hash", "torch")}} for e in by_asset.get("embeddings", [])]
    target_row = next(r for r in chain if r["version_id"] == version_id)

    def one_or_list(values: list) -> Any:
        unique = list(dict.fromkeys(v for v in values if v is not None))
        return None if not unique else unique[0] if len(unique) == 1 else unique

    result = {
        "target": target, "found_by": found_by, "version_id": version_id, "asset": target_row["asset"],
        "partition_key": target_row["partition_key"],
        "cohort": one_or_list([c["partition_key"] for c in cohorts]),
        "idc_version": one_or_list([_settings(c).get("idc_version") for c in cohorts]),
        "idc_release_date": one_or_list([_settings(c).get("idc_release_date") for c in cohorts]),
        "cohort_hash": one_or_list([c["version"] for c in cohorts]),
        "series_count": series_count,
        "conversion": [{"dataset_version": v["partition_key"], **{k: _settings(v).get(k) for k in ("settings", "settings_hash")}}
                       for v in by_asset.get("volumes", [])],
        "seeds": [{"dataset_version": s["partition_key"], **{k: _settings(s).get(k) for k in ("source", "reference")}}
                  for s in by_asset.get("seeds", [])],
        "patches": [{"dataset_version": p["partition_key"], "spec": _settings(p).get("spec")}
                    for p in by_asset.get("patches", [])],
        "model": one_or_list([m["name"] for m in models]),
        "weights_sha256": one_or_list([m["weights_sha256"] for m in models]) if models else None,
        "models": models,
        "evaluation": [_evaluation_parameters(e) for e in by_asset.get("evaluation", []) + by_asset.get("seed_stability", [])],
        "files": [{"asset": r["asset"], "partition_key": r["partition_key"], "input": name, "path": f.get("path"),
                   "sha256": f.get("sha256")}
                  for r in chain for name, f in (_settings(r).get("inputs") or {}).items()
                  if isinstance(f, dict) and f.get("sha256")],
        "code_version": {r["asset"]: r["code_version"] for r in chain if r["code_version"]},
        "git_commit": one_or_list([r["git_commit"] for r in chain]),
        "radassets_version": one_or_list([r["radassets_version"] for r in chain]),
        "runs": [{"asset": r["asset"], "partition_key": r["partition_key"], "run_id": r["run_id"],
                  "dagster_run_id": r["dagster_run_id"], "status": r["status"],
                  "started_at": r["started_at"].isoformat() if r["started_at"] else None,
                  "ended_at": r["ended_at"].isoformat() if r["ended_at"] else None,
                  "code_version": r["code_version"], "git_commit": r["git_commit"], "version": r["version"]}
                 for r in chain],
    }
    if full:  # every series, with what the cohort recorded of it
        rows = con.execute("SELECT item_id, name, attributes FROM items WHERE kind = 'series' AND "
                           "list_contains(?, version_id) ORDER BY name", [cohort_versions]).fetchall()
        result["series"] = [{"SeriesInstanceUID": n, **json.loads(a or "{}"), "crdc_series_uuid": i.split(":", 1)[1]}
                            for i, n, a in rows]
    return result


def _evaluation_parameters(row: dict) -> dict[str, Any]:
    s = _settings(row)
    endpoints = {name: {"label_definition": e.get("label_definition"), "status": e.get("status")}
                 for name, e in (s.get("endpoints") or {}).items()}
    return {"asset": row["asset"], "partition_key": row["partition_key"], "lineage_id": s.get("lineage_id"),
            "seed": s.get("seed"), "patient_rule": s.get("patient_rule"), "protocol": s.get("protocol"),
            "endpoints": endpoints}


def format_trace(t: dict[str, Any]) -> str:
    """The trace for a reader: one block per step, from the cohort to the target."""
    def kv(d: Any) -> str:
        return json.dumps(d, sort_keys=True, default=str) if not isinstance(d, str) else d

    lines = [f"{t['target']}", f"  found by {t['found_by']}: {t['asset']} [{t['partition_key'] or '-'}]", ""]
    if t["cohort"] is None:
        lines.append("cohort        none: not made from images of an IDC cohort (see the input files)")
    else:
        lines += [f"cohort        {t['cohort']}  (IDC release v{t['idc_version']}, {t['idc_release_date']})",
                  f"cohort hash   {t['cohort_hash']}", f"series        {t['series_count']}"]
    for s in t.get("series", []):
        lines.append(f"                {s['SeriesInstanceUID']}  {s.get('Modality', '')}  {s.get('PatientID', '')}  "
                     f"crdc {s['crdc_series_uuid']}")
    for c in t["conversion"]:
        lines.append(f"conversion    {c['dataset_version']}: {kv(c['settings'])}")
    for s in t["seeds"]:
        lines.append(f"seeds         {s['dataset_version']}: source {s['source']}; reference {kv(s['reference'])}")
    for p in t["patches"]:
        lines.append(f"patches       {p['dataset_version']}: {kv(p['spec'])}")
    for m in t["models"]:
        lines.append(f"model         {m['name']}: weights sha256 {m['weights_sha256'] or 'none (no weights)'}; "
                     f"preprocessing {m['preprocessing_hash']}; torch {m['torch']}")
    for e in t["evaluation"]:
        lines.append(f"{e['asset']:<14}{e['partition_key']}: seed {e['seed']}, lineage id {e['lineage_id']}")
        for name, d in e["endpoints"].items():
            lines.append(f"                endpoint {name}: {kv(d['label_definition'])}")
        if e["protocol"]:
            lines.append(f"                protocol {kv(e['protocol'])}")
    for f in t["files"]:
        lines.append(f"input file    {f['asset']}[{f['partition_key'] or ''}] {f['input']}: {f['path']} "
                     f"(sha256 {f['sha256']})")
    code_versions = ", ".join(f"{a} {v}" for a, v in t["code_version"].items())
    lines += ["", f"code          radassets {t['radassets_version']}, git {t['git_commit']}; {code_versions}", "runs"]
    for r in t["runs"]:
        lines.append(f"  {r['asset']:<18} {r['partition_key'] or '-':<24} {r['status'] or '?':<8} "
                     f"{r['started_at'] or '?'} → {r['ended_at'] or '?'}  run {r['run_id']} (Dagster {r['dagster_run_id']})")
    return "\n".join(lines)
