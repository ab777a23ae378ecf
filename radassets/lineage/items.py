"""What each asset wrote, as lineage: its output folder, a facet of its settings, and its item rows.

Items are the things a researcher traces one by one: series → DICOM files → volume → seed → patch →
embedding → report and figure. Each item has a logical id (``series:<crdc_series_uuid>``,
``dicom:<crdc>``, ``volume:<crdc>``, ``seed:<seed_id>``, ``patch:<seed_id>``,
``embedding:<model>:<seed_id>``, ``report:<lineage_id>``, ``figure:<lineage_id>/<file>``) that is
unique within one version of
one asset partition; its parents are logical ids in the same version (a figure's report) or in
the versions its run read (the run's inputs), so "this seed's volume" means the volume in the
``volumes`` version the seeds run consumed.

The readers here know what is in the files each step writes (manifests, parquet tables, metrics.json);
where they are is the ``Layout``'s. They read them after the step succeeded, so the items are exactly
what the run left. They read through the paths' own ``open`` (a local folder or the artifact store's ``UPath``),
and an item's ``path`` names its file relative to the artifact root (``Layout.relative``), so the items of a
root are the same wherever the root is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from radassets.layout import Layout
from radassets.storage import sha256_file

MAX_LIST = 50  # longer lists in a settings facet are replaced by their length (the items hold the rows)


def _trim(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _trim(v) for k, v in value.items()}
    if isinstance(value, list):
        return {"items": len(value)} if len(value) > MAX_LIST else [_trim(v) for v in value]
    return value


def settings_facet(record: Path) -> dict[str, Any]:
    """The output's own record of how it was made (its manifest, lockfile or metrics), long lists trimmed."""
    if not record.is_file():
        return {}
    return {"file": record.name, "sha256": sha256_file(record), "content": _trim(json.loads(record.read_text()))}


def _records(path: Path) -> list[dict[str, Any]]:
    import pandas as pd  # here, not at the top: the code location (every run worker) imports this module

    with path.open("rb") as f:
        frame = pd.read_parquet(f)
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _cohort(layout: Layout, folder: Path, partition) -> list[dict]:
    lock = json.loads((folder / "cohort.lock.json").read_text())
    keep = ("SeriesInstanceUID", "PatientID", "StudyInstanceUID", "Modality", "collection_id",
            "series_revised_idc_version", "instanceCount")
    items = [{"item_id": f"series:{s['crdc_series_uuid']}", "kind": "series", "name": s["SeriesInstanceUID"],
              "attributes": {k: s.get(k) for k in keep}} for s in lock["series"]]
    # Series the index showed are not volumes: never fetched, yet the volumes' QC table names them (excluded).
    return items + [{"item_id": f"series:{s['crdc_series_uuid']}", "kind": "series", "name": s["SeriesInstanceUID"],
                     "status": "excluded", "attributes": {k: s.get(k) for k in ("PatientID", "Modality", "reason")}}
                    for s in lock.get("excluded", [])]


def _dicom(layout: Layout, folder: Path, partition) -> list[dict]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return [{"item_id": f"dicom:{s['crdc_series_uuid']}", "kind": "dicom", "name": s["SeriesInstanceUID"],
             "status": s.get("status"), "path": s.get("folder"), "parents": [f"series:{s['crdc_series_uuid']}"],
             "attributes": {k: s.get(k) for k in ("Modality", "PatientID", "files", "bytes", "how", "reason")}}
            for s in manifest["series"]]


def volume_item(r: dict[str, Any]) -> dict[str, Any]:
    """The item of one row of the volumes' QC table (a CT volume, a mask series, or a series not converted). What
    the output is, not how a run came by it: whether this run reused the volume is the run's metadata, so that a
    rerun's items are the first run's."""
    return {"item_id": f"volume:{r['crdc_series_uuid']}", "kind": "volume" if r["Modality"] == "CT" else "mask",
            "name": r["SeriesInstanceUID"], "status": r["status"], "sha256": r.get("sha256"), "path": r.get("path"),
            # A series the cohort left out (``excluded_by_index``) was never fetched: its parent is the cohort's row.
            "parents": [f"{'series' if r.get('code') == 'excluded_by_index' else 'dicom'}:{r['crdc_series_uuid']}"],
            "attributes": {"Modality": r["Modality"], "PatientID": r["PatientID"], "code": r.get("code"),
                           "message": r.get("message")}}


def _volumes(layout: Layout, folder: Path, partition) -> list[dict]:
    return [volume_item(r) for r in _records(folder / "qc.parquet")]


def _seeds(layout: Layout, folder: Path, partition) -> list[dict]:
    items = []
    for r in _records(folder / "seeds.parquet"):
        parents = [f"volume:{r['crdc_series_uuid']}"]
        if r.get("mask_path"):  # masks/<mask crdc_series_uuid>/<segment>.nrrd
            parents.append(f"volume:{Path(r['mask_path']).parent.name}")
        items.append({"item_id": f"seed:{r['seed_id']}", "kind": "seed", "name": r["seed_id"], "parents": parents,
                      "attributes": {k: r.get(k) for k in ("PatientID", "SeriesInstanceUID", "segment_label", "source",
                                                           "coordX", "coordY", "coordZ", "volume_ml")}})
    return items


def patch_item(r: dict[str, Any]) -> dict[str, Any]:
    """The item of one row of ``patches.parquet``."""
    return {"item_id": f"patch:{r['seed_id']}", "kind": "patch", "name": str(r["index"]),
            "parents": [f"seed:{r['seed_id']}"],
            "attributes": {"index": r["index"], "at_border": r["at_border"], "padded_fraction": r["padded_fraction"]}}


def _patches(layout: Layout, folder: Path, partition) -> list[dict]:
    return [patch_item(r) for r in _records(folder / "patches.parquet")]


def _rows_of_volumes_result(result: Any) -> list[dict[str, Any]]:
    """A volumes data-plane result: a CT task's QC row, a mask task's (QC row, segments), or the rows the step
    decided itself (reused, not downloaded, not converted)."""
    if isinstance(result, tuple):
        return [result[0]]
    return list(result) if isinstance(result, list) else [result]


# The assets whose items the data-plane workers record, chunk by chunk, from each task's result
# (radassets.lineage.chunks): a result → its items. Their COMPLETE event carries no items.
ITEMS_OF_RESULTS: dict[str, Callable[[Any], list[dict[str, Any]]]] = {
    "volumes": lambda result: [volume_item(r) for r in _rows_of_volumes_result(result)],
    "patches": lambda rows: [patch_item(r) for r in rows],
}


def _embeddings(layout: Layout, folder: Path, partition) -> list[dict]:
    import pandas as pd

    with (folder / "embeddings.parquet").open("rb") as f:
        table = pd.read_parquet(f, columns=["seed_id", "PatientID", "status", "reason", "model"])
    return [{"item_id": f"embedding:{r['model']}:{r['seed_id']}", "kind": "embedding", "name": r["seed_id"],
             "status": r["status"], "parents": [f"patch:{r['seed_id']}"],
             "attributes": {"PatientID": r["PatientID"], "reason": r["reason"]}}
            for r in table.astype(object).where(table.notna(), None).to_dict("records")]


FIGURE_SUFFIXES = (".png", ".pdf", ".svg")  # what evaluation.figures writes of each figure
REPORT_FILES = ("*.md", "report.pdf", "*.bib")  # beside metrics.json: the report in its other forms, its references


def _report(layout: Layout, folder: Path, parents: list[str]) -> list[dict]:
    """The report (metrics.json, and report.html where written), its other forms, and every figure beside it in each
    of its formats."""
    metrics = json.loads((folder / "metrics.json").read_text())
    lineage_id = metrics["lineage_id"]
    report = f"report:{lineage_id}"
    main = folder / "report.html" if (folder / "report.html").is_file() else folder / "metrics.json"
    items = [{"item_id": report, "kind": "report", "name": main.name, "sha256": sha256_file(main), "path": layout.relative(main),
              "parents": parents, "attributes": {"lineage_id": lineage_id}}]
    figures = (p for p in folder.glob("*.*") if p.suffix in FIGURE_SUFFIXES and p.name != "report.pdf")
    for path in sorted(figures, key=lambda p: p.name):
        items.append({"item_id": f"figure:{lineage_id}/{path.name}", "kind": "figure", "name": path.name,
                      "sha256": sha256_file(path), "path": layout.relative(path), "parents": [report],
                      "attributes": {"lineage_id": lineage_id}})
    for path in [*sorted(p for pattern in REPORT_FILES for p in folder.glob(pattern)), folder / "metrics.json"]:
        if path.is_file() and path != main:
            items.append({"item_id": f"file:{lineage_id}/{path.name}", "kind": "report_file", "name": path.name,
                          "sha256": sha256_file(path), "path": layout.relative(path), "parents": [report],
                          "attributes": {"lineage_id": lineage_id}})
    return items


def _embedded_seeds(layout: Layout, partition: dict[str, str]) -> list[str]:
    import pandas as pd

    with (layout.partition_dir("embeddings", partition) / "embeddings.parquet").open("rb") as f:
        table = pd.read_parquet(f, columns=["seed_id", "status"])
    return [f"embedding:{partition['model']}:{s}" for s in table.loc[table["status"] == "ok", "seed_id"]]


def _evaluation(layout: Layout, folder: Path, partition) -> list[dict]:
    return _report(layout, folder, _embedded_seeds(layout, partition))


def _comparison(layout: Layout, folder: Path, partition) -> list[dict]:
    parents = []
    for model in json.loads((folder / "metrics.json").read_text())["models"]:
        evaluated = layout.record("evaluation", partition["dataset_version"], model)
        parents.append(f"report:{json.loads(evaluated.read_text())['lineage_id']}")
    return _report(layout, folder, parents)


def _unparented_report(layout: Layout, folder: Path, partition) -> list[dict]:
    return _report(layout, folder, [])


READERS: dict[str, Callable[[Layout, Path, dict | None], list[dict]]] = {
    "cohort": _cohort, "dicom": _dicom, "volumes": _volumes, "seeds": _seeds, "patches": _patches,
    "embeddings": _embeddings,
    "evaluation": _evaluation, "comparison": _comparison, "seed_stability": _evaluation,
    "hosny2018_figure2": _unparented_report,
}


def output_record(layout: Layout, asset: str, partition: dict[str, str] | None,
                  with_items: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(settings facet, items) of what ``asset`` wrote for ``partition``, found where ``layout`` says; no items
    with ``with_items=False`` (an asset whose workers recorded them: ``ITEMS_OF_RESULTS``)."""
    partition = partition or {}
    folder = layout.partition_dir(asset, partition)
    reader = READERS.get(asset) if with_items else None
    return (settings_facet(layout.record(asset, partition.get("dataset_version"), partition.get("model"))),
            reader(layout, folder, partition) if reader else [])
