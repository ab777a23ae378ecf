"""The evaluation of one (dataset version, model): inputs read from the earlier steps, figures, metrics.json,
and a report in Markdown and HTML whose figures and footer carry the lineage id.

Reads: the model's embeddings, the seeds (lesion volumes), the dataset version's clinical table
and test-retest table. Writes under ``out_dir``: ``metrics.json``, ``report.md``, ``report.html`` (figures inline),
``report.pdf`` (for the record: text, tables and the figures as vector pages) and per endpoint ``<endpoint>_roc`` and
``<endpoint>_km`` figures, each as .png, .pdf and .svg (``figures``). ``metrics.json`` records the
sha256 of the dataset definition it evaluated (``definition_sha256``) and of every input file, so
the comparison can tell an evaluation made under another definition or from other inputs.

A dataset version without a clinical table or endpoint (e.g. one added with ``datasets add-local``)
has nothing to evaluate: its metrics.json and report say so, and nothing else is computed.

The inputs and outputs may be on the artifact store (``UPath`` folders): the tables are read through file
objects, the figures drawn to a local temporary file and put whole (``storage.atomic_path``). ``metrics.json``
names its input files relative to the artifact root (``Layout.relative``), so it is the same bytes on every root,
and so is the lineage id hashed from it.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radassets.datasets import DatasetVersion
from radassets.evaluation.citations import Citations, write_bibtex
from radassets.evaluation.evaluate import (EndpointResult, SEED, cosine_stability, evaluate_endpoint,
                                           patient_embeddings, test_retest_pairs)
from radassets.evaluation.figures import (LINEAGE_KEY, FigureWriter, km_figure, roc_figure, stamp_text,
                                          table_caption)
from radassets.evaluation.report_pdf import write_report_pdf
from radassets.evaluation.step_reports import EvaluationReport
from radassets.idc.index import resolve_table
from radassets.layout import Layout
from radassets.storage import atomic_path, atomic_write_json, atomic_write_text, sha256_file, sha256_json
from radassets.errors import RadassetsError


def _table(definition: DatasetVersion, source_root: Path | None, table: str,
           id_column: str | None = None) -> tuple[pd.DataFrame, Path]:
    path = resolve_table(table, source_root, definition.data_root)
    with path.open("rb") as f:
        return pd.read_csv(f, dtype={id_column: str} if id_column else None), path


class EvaluationInputError(RadassetsError, ValueError):
    """What an evaluation needs is missing: a clinical table or endpoint, or the step before it."""


@dataclass
class EvaluationInputs:
    """What the evaluation of one (dataset version, model) reads, with each file's sha256."""

    rows: list[dict[str, Any]]  # embedded seeds, as read_embeddings returns them
    matrix: np.ndarray  # their embeddings
    patients: pd.DataFrame  # one row per patient (patient_embeddings)
    x: np.ndarray  # the patients' embeddings
    clinical: pd.DataFrame
    pairs: list[tuple[str, str]]  # test-retest series pairs
    manifest: dict[str, Any]  # the embeddings manifest
    files: dict[str, dict[str, str]]  # name → path (relative to the artifact root where under it) and sha256


def definition_sha256(definition: DatasetVersion) -> str:
    """The sha256 of a dataset definition's canonical JSON: any change to it (horizon, selection...) changes it."""
    return sha256_json(definition.model_dump(mode="json"))


def nothing_to_evaluate(definition: DatasetVersion) -> str | None:
    """Why this dataset version has no endpoint to evaluate (no clinical table, no endpoint), or None."""
    if definition.clinical is None:
        return (f"dataset version {definition.name!r} has no clinical table, so no endpoint can be evaluated; "
                f"declare 'clinical' and 'endpoints' in its definition to evaluate it")
    if not definition.endpoints:
        return f"dataset version {definition.name!r} declares no endpoint; declare 'endpoints' in its definition"
    return None


def recorded_path(path: Path, layout: Layout | None) -> str:
    """How a record names an input file: relative to the artifact root of ``layout`` (``Layout.relative``), as
    given without one."""
    return layout.relative(path) if layout is not None else str(path)


def read_evaluation_inputs(definition: DatasetVersion, model: str, embeddings_dir: Path,
                           seeds_parquet: Path, source_root: Path | None = None,
                           layout: Layout | None = None) -> EvaluationInputs:
    """What an evaluation reads; ``source_root`` is the folder of the source's own tables (``source:...``);
    ``layout``: the artifact root the input files are named relative to."""
    from radassets.models.embed import read_embeddings

    if why := nothing_to_evaluate(definition):
        raise EvaluationInputError(why)
    for needed in (embeddings_dir / "manifest.json", seeds_parquet):
        if not needed.is_file():
            raise EvaluationInputError(f"{definition.name} × {model}: {needed} is missing; materialize the steps "
                                       f"before 'evaluation' first")
    rows, matrix = read_embeddings(embeddings_dir)
    with seeds_parquet.open("rb") as f:
        seeds = pd.read_parquet(f)
    clinical, clinical_path = _table(definition, source_root, definition.clinical.table, definition.clinical.id_column)
    pairs: list[tuple[str, str]] = []
    files = {"embeddings": {"path": recorded_path(embeddings_dir / "embeddings.parquet", layout),
                            "sha256": sha256_file(embeddings_dir / "embeddings.parquet")},
             "seeds": {"path": recorded_path(seeds_parquet, layout), "sha256": sha256_file(seeds_parquet)},
             "clinical": {"path": recorded_path(clinical_path, layout), "sha256": sha256_file(clinical_path)}}
    if definition.test_retest is not None:
        retest, retest_path = _table(definition, source_root, definition.test_retest.table)
        pairs = test_retest_pairs(definition, retest)
        files["test_retest"] = {"path": recorded_path(retest_path, layout), "sha256": sha256_file(retest_path)}
    patients, x = patient_embeddings(rows, matrix, seeds, {b for _, b in pairs})
    manifest = json.loads((embeddings_dir / "manifest.json").read_text())
    return EvaluationInputs(rows, matrix, patients, x, clinical, pairs, manifest, files)


def evaluate_model(definition: DatasetVersion, model: str, embeddings_dir: Path, seeds_parquet: Path,
                   out_dir: Path, seed: int = SEED, *, source_root: Path | None = None,
                   layout: Layout | None = None, registry_dir: Path | None = None,
                   stamp: bool = True) -> EvaluationReport:
    """Evaluate and write the outputs under ``out_dir`` (the module docstring); ``layout``: the artifact root the
    inputs are named relative to in ``metrics.json``, and where the cohort lockfile the report cites is;
    ``registry_dir``: the model registry the model's citation and licence are read from (default: the shipped
    one); ``stamp``: the lineage id's stamp on the figures."""
    if why := nothing_to_evaluate(definition):
        citations = Citations.of_dataset(definition, layout, {model: None}, registry_dir)
        return EvaluationReport.of(write_not_evaluated(definition, model, why, out_dir, seed, citations), out_dir)
    read = read_evaluation_inputs(definition, model, embeddings_dir, seeds_parquet, source_root, layout)
    rows, matrix, patients, x, clinical, pairs = read.rows, read.matrix, read.patients, read.x, read.clinical, read.pairs
    manifest, inputs = read.manifest, read.files
    definition_hash = definition_sha256(definition)
    lineage_id = sha256_json({"inputs": inputs, "seed": seed, "dataset_version": definition.name,
                              "definition_sha256": definition_hash, "model": model})[:16]
    results: list[EndpointResult] = []
    figures: dict[str, list[str]] = {}
    writer = FigureWriter(lineage_id, stamp=stamp, keep=True)  # kept for report.pdf
    for i, endpoint in enumerate(definition.endpoints):
        result = evaluate_endpoint(definition, i, clinical, patients, x, seed)
        results.append(result)
        if result.metrics["status"] != "evaluated":
            continue
        p = result.patients
        # Per-patient scores, for comparing models on the same patients (the comparison asset).
        with atomic_path(out_dir / f"{endpoint.name}_predictions.parquet") as tmp:
            p.to_parquet(tmp, index=False)
        labelled = p[p["label"].notna()]
        title = f"{definition.name} × {model}: {endpoint.name}"
        names = [roc_figure(labelled["label"].to_numpy(int), labelled["risk"].to_numpy(float),
                            result.metrics["linear_probe"], f"{title}\nlinear probe, out-of-fold",
                            out_dir / f"{endpoint.name}_roc.png", writer).name]
        if "survival" in result.metrics:
            s = result.metrics["survival"]
            names.append(km_figure(p["time_days"], p["event"], p["risk"].to_numpy() > s["threshold"], s,
                                   f"{title}\nprobe risk, split at the median", out_dir / f"{endpoint.name}_km.png",
                                   writer).name)
        figures[endpoint.name] = names
    metrics = {
        "dataset_version": definition.name, "model": model, "lineage_id": lineage_id, "seed": seed,
        "definition_sha256": definition_hash,
        "weights_sha256": manifest.get("weights_sha256"), "preprocessing_hash": manifest.get("preprocessing_hash"),
        "patients": int(len(patients)), "patient_rule": "first scan (re-scans kept for stability), largest lesion",
        "endpoints": {r.endpoint: r.metrics for r in results},
        "stability": {"test_retest": cosine_stability(rows, matrix, pairs)} if pairs else {},
        "figures": figures, "inputs": inputs,
        # After the lineage id: what the result cites is not one of its inputs.
        "citations": Citations.of_dataset(definition, layout, {model: manifest.get("weights_sha256")},
                                          registry_dir).as_json(),
    }
    atomic_write_json(out_dir / "metrics.json", json.loads(json.dumps(metrics, default=float)))
    write_report(metrics, out_dir, writer)
    return EvaluationReport.of(metrics, out_dir)


def write_not_evaluated(definition: DatasetVersion, model: str, why: str, out_dir: Path, seed: int,
                        citations: Citations | None = None) -> dict[str, Any]:
    """metrics.json and the report of a dataset version with nothing to evaluate, saying why."""
    definition_hash = definition_sha256(definition)
    metrics = {"dataset_version": definition.name, "model": model, "seed": seed, "status": "nothing to evaluate",
               "reason": why, "definition_sha256": definition_hash,
               "lineage_id": sha256_json({"dataset_version": definition.name, "model": model, "reason": why,
                                          "definition_sha256": definition_hash})[:16],
               "weights_sha256": None, "preprocessing_hash": None, "patients": 0, "endpoints": {}, "stability": {},
               "figures": {}, "inputs": {},
               "citations": (citations or Citations.of_dataset(definition, None, {model: None})).as_json()}
    atomic_write_json(out_dir / "metrics.json", metrics)
    write_report(metrics, out_dir)
    return metrics


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def report_markdown(metrics: dict[str, Any], embed_images: bool = False, folder: Path | None = None) -> str:
    m = metrics
    lines = [f"# Evaluation: {m['dataset_version']} × {m['model']}", ""]
    if m.get("status") == "nothing to evaluate":
        return "\n".join([*lines, f"Nothing evaluated: {m['reason']}.", "", *citations_lines(m), "---",
                          f"radassets evaluation · lineage id `{m['lineage_id']}`"]) + "\n"
    lines += licence_warning_lines(m)
    lines += [f"Patients: {m['patients']} ({m['patient_rule']}). Weights sha256: `{m['weights_sha256'] or 'none'}`; "
              f"preprocessing `{m['preprocessing_hash'][:12]}`.", ""]
    for name, e in m["endpoints"].items():
        d = e["label_definition"]
        if e["status"] != "evaluated":
            lines += [f"## Endpoint `{name}`", "", f"Not evaluable: {e['reason']}.", ""]
            continue
        lines += [f"## Endpoint `{name}`", "",
                  "Label: " + ", ".join(f"{k} {v}" for k, v in d.items()) + f"; {e['patients_evaluated']} patients "
                  f"with a label ({e['positives']} positive); excluded: {e['labels']['excluded'] or 'none'}.", "",
                  "| measure | value | 95 % CI |", "|---|---|---|",
                  f"| kNN (TumorImagingBench, 10 splits) test AUC | {_fmt(e['knn']['auc_mean'])} | "
                  f"{_fmt(e['knn']['auc_ci_low'])}–{_fmt(e['knn']['auc_ci_high'])} |",
                  f"| linear probe AUC (10-fold, out-of-fold) | {_fmt(e['linear_probe']['auc'])} | "
                  f"{_fmt(e['linear_probe']['auc_ci_low'])}–{_fmt(e['linear_probe']['auc_ci_high'])} |"]
        if "survival" in e:
            s = e["survival"]
            lines += [f"| hazard ratio, high vs low risk (n={s['n']}) | {_fmt(s['hazard_ratio'])} | "
                      f"{_fmt(s['hr_ci_low'])}–{_fmt(s['hr_ci_high'])} |",
                      f"| log-rank p | {_fmt(s['logrank_p'])} | |", f"| Cox p | {_fmt(s['cox_p'])} | |",
                      f"| C-index of the probe's risk | {_fmt(s['c_index'])} | |"]
        lines += ["", table_caption(f"endpoint {name}, {m['dataset_version']} × {m['model']}", m["lineage_id"]), ""]
        for fig in m["figures"].get(name, []):
            src = f"data:image/png;base64,{base64.b64encode((folder / fig).read_bytes()).decode()}" \
                if embed_images and folder else fig
            lines += [f"![{fig}]({src})", "", f"*{fig} · lineage id `{m['lineage_id']}`*", ""]
    st = m.get("stability", {}).get("test_retest")
    if st:
        lines += ["## Stability", "", f"Test-retest: {st['pairs_embedded']} of {st['pairs_declared']} pairs embedded; "
                  f"cosine similarity mean {_fmt(st['cosine_mean'])}, median {_fmt(st['cosine_median'])}, "
                  f"min {_fmt(st['cosine_min'])}. (On unnormalised features such as radiomics, the cosine is "
                  f"dominated by the largest-valued features.)", ""]
    lines += citations_lines(m)
    lines += ["---", f"radassets evaluation · lineage id `{m['lineage_id']}` (also in every figure's metadata, PNG, "
                     f"PDF and SVG, and its stamp `{stamp_text(m['lineage_id'])}`)"]
    return "\n".join(lines) + "\n"


def licence_warning_lines(metrics: dict[str, Any]) -> list[str]:
    """The licence restrictions of what a report used, for its top (the citations section repeats them)."""
    return Citations.from_json(metrics["citations"]).warning_lines() if "citations" in metrics else []


def citations_lines(metrics: dict[str, Any]) -> list[str]:
    """The "How to cite" section of a report from its metrics' ``citations`` (none in a record written before
    reports cited)."""
    return Citations.from_json(metrics["citations"]).markdown_lines() if "citations" in metrics else []


def write_citations(metrics: dict[str, Any], out_dir: Path) -> None:
    """``references.bib`` beside a report, from its metrics' ``citations``."""
    if "citations" in metrics:
        write_bibtex(Citations.from_json(metrics["citations"]), out_dir)


def write_report(metrics: dict[str, Any], out_dir: Path, figures: FigureWriter | None = None) -> None:
    """references.bib, report.md, report.html (figures inline) and report.pdf (the figures ``figures`` kept, as
    vector pages)."""
    write_citations(metrics, out_dir)
    markdown = report_markdown(metrics)
    atomic_write_text(out_dir / "report.md", markdown)
    write_html(out_dir / "report.html", report_markdown(metrics, embed_images=True, folder=out_dir),
               "radassets evaluation", metrics["lineage_id"])
    write_report_pdf(out_dir / "report.pdf", markdown, figures or FigureWriter(metrics["lineage_id"]),
                     f"radassets evaluation: {metrics['dataset_version']} × {metrics['model']}")


def write_html(path: Path, markdown: str, title: str, lineage_id: str, image_width_px: int = 560) -> None:
    """A self-contained HTML page of a report's Markdown (images already embedded as data URIs), with the lineage
    id in a ``<meta>`` tag (``figures.lineage_id_of``)."""
    style = ("body{font-family:sans-serif;max-width:900px;margin:2em auto}table{border-collapse:collapse}"
             f"td,th{{border:1px solid #ccc;padding:4px 8px}}img{{max-width:{image_width_px}px}}"
             "blockquote.warning{border-left:5px solid #c0392b;background:#fdecea;margin:0.5em 0;padding:4px 12px;"
             "font-weight:bold}")
    atomic_write_text(path, f"<!doctype html><meta charset='utf-8'><meta name='{LINEAGE_KEY}' "
                            f"content='{html.escape(lineage_id)}'><title>{html.escape(title)}</title>"
                            f"<style>{style}</style>\n{markdown_to_html(markdown)}")


def markdown_to_html(text: str) -> str:
    """The small Markdown subset the report uses (headings, tables, images, paragraphs, code spans, and quoted
    lines, shown as warnings: the licence restrictions)."""
    import re

    def inline(s: str) -> str:
        s = html.escape(s, quote=False)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", s)

    out, table = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                table.append([c.strip() for c in line.strip("|").split("|")])
            continue
        if table:
            head, *rest = table
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rest)
                       + "</table>")
            table = []
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line.lstrip('# '))}</h{level}>")
        elif line.startswith("![") and "](" in line:
            alt, src = line[2:].split("](", 1)
            out.append(f"<p><img alt='{html.escape(alt)}' src='{src.rstrip(')')}'></p>")
        elif line == "---":
            out.append("<hr>")
        elif line.startswith("> "):
            out.append(f"<blockquote class='warning'>{inline(line[2:])}</blockquote>")
        elif line:
            out.append(f"<p>{inline(line)}</p>")
    return "\n".join(out)

