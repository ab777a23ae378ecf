"""The comparison of one dataset version: every evaluated model read back, compared, drawn and reported.

Reads ``evaluation/<dataset_version>/<model>/`` (metrics and per-patient predictions) and each
model's embeddings (for the mutual kNN heatmap, on the patients all models embedded). Writes
``metrics.json``, ``report.md``, ``report.html``, ``report.pdf``, ``auc_<endpoint>`` (forest plot of AUCs with
CIs) and ``mutual_knn`` figures, each as .png, .pdf and .svg; every figure carries the lineage id (``figures``).

Only current evaluations are compared: one made under another definition of the dataset version
(its recorded ``definition_sha256`` is not the current definition's: a horizon, modality or
endpoint changed since) or from other embeddings, seeds or clinical table than those there now
is stale. A stale evaluation is left out of the ranking and named, with its causes and the
partition to materialize again, in ``metrics.json`` (``stale``) and the report. A dataset version
without a clinical table has nothing to compare: the report says so.

The folders may be on the artifact store (``UPath``): files are read through file objects and written whole
(``radassets.storage``); the stale causes name the files relative to the artifact root (``Layout.relative``), so
``metrics.json`` is the same bytes on every root.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radassets.datasets import DatasetVersion
from radassets.evaluation.citations import Citations
from radassets.evaluation.comparison import MUTUAL_K, compare_endpoint, mutual_knn
from radassets.evaluation.figures import FigureWriter, pyplot, stamp_text, table_caption
from radassets.evaluation.report_pdf import write_report_pdf
from radassets.evaluation.step_reports import ComparisonReport
from radassets.evaluation.report import (EvaluationInputError, citations_lines, definition_sha256,
                                         licence_warning_lines, nothing_to_evaluate, recorded_path, write_citations,
                                         write_html)
from radassets.layout import Layout
from radassets.storage import atomic_write_json, atomic_write_text, sha256_file, sha256_json


def _read_parquet(path: Path) -> pd.DataFrame:
    with path.open("rb") as f:
        return pd.read_parquet(f)


def evaluated_models(evaluation_root: Path) -> dict[str, dict]:
    """model → its evaluation metrics, for every complete evaluation partition of the dataset version."""
    out = {}
    for folder in sorted(p for p in evaluation_root.glob("*") if (p / "metrics.json").is_file()):
        out[folder.name] = json.loads((folder / "metrics.json").read_text())
    return out


def _forest(endpoint: str, table: dict[str, dict], path: Path, figures: FigureWriter, title: str) -> Path:
    plt = pyplot()
    models = sorted(table, key=lambda m: table[m]["rank"])
    fig, ax = plt.subplots(figsize=(6, 0.55 * len(models) + 1.4))
    for y, m in enumerate(models):
        for offset, key, color, name in ((-0.12, "probe", "#c0392b", "linear probe"), (0.12, "knn", "#2471a3", "kNN")):
            auc, (lo, hi) = table[m][f"{key}_auc"], table[m][f"{key}_auc_ci"]
            ax.errorbar(auc, y + offset, xerr=[[auc - lo], [hi - auc]], fmt="o", color=color, capsize=3,
                        label=name if y == 0 else None)
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set_yticks(range(len(models)), [f"{m} (#{table[m]['rank']})" for m in models])
    ax.invert_yaxis()
    ax.set(xlabel="AUC (95% CI)", title=title, xlim=(0.3, 1.0))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    return figures.save(fig, path)


def _heatmap(models: list[str], matrix: np.ndarray, n: int, path: Path, figures: FigureWriter, title: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * len(models) + 2.2, 1.0 * len(models) + 1.6))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(models)), models, rotation=40, ha="right")
    ax.set_yticks(range(len(models)), models)
    for i in range(len(models)):
        for j in range(len(models)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax, label=f"mutual kNN (k={MUTUAL_K})")
    ax.set_title(f"{title}\n{n} series; chance ≈ {MUTUAL_K / max(n - 1, 1):.2f}", fontsize=9)
    return figures.save(fig, path)


def stale_causes(evaluation: dict[str, Any], definition_hash: str, current_files: dict[str, Path],
                 layout: Layout | None = None) -> list[str]:
    """Why an evaluation no longer describes the current definition and inputs (empty: it is current).
    ``current_files``: input name → the file there now (embeddings, seeds, clinical), named relative to the
    artifact root of ``layout``."""
    causes = []
    recorded = evaluation.get("definition_sha256")
    if recorded != definition_hash:
        causes.append(f"evaluated under another definition of the dataset version (definition sha256 "
                      f"{(recorded or 'not recorded')[:12]}, now {definition_hash[:12]})")
    for name, path in current_files.items():
        then = evaluation.get("inputs", {}).get(name, {}).get("sha256")
        now = sha256_file(path) if path.is_file() else None
        if then != now:
            causes.append(f"its {name} changed since ({recorded_path(path, layout)}: sha256 {(then or 'not recorded')[:12]}, now "
                          f"{(now or 'missing')[:12]})")
    return causes


def compare_models(definition: DatasetVersion, evaluation_root: Path, embeddings_root: Path, seeds_parquet: Path,
                   out_dir: Path, *, source_root: Path | None = None, layout: Layout | None = None,
                   stamp: bool = True, registry_dir: Path | None = None) -> ComparisonReport:
    """Compare the evaluated models and write the outputs under ``out_dir`` (the module docstring); ``layout``: the
    artifact root files are named relative to, and where the cohort lockfile the report cites is; ``registry_dir``:
    the model registry the compared models' citations and licences are read from (default: the shipped one);
    ``stamp``: the lineage id's stamp on the figures."""
    from radassets.idc.index import resolve_table
    from radassets.models.embed import read_embeddings

    dataset_version = definition.name
    if why := nothing_to_evaluate(definition):
        nothing = {"dataset_version": dataset_version, "status": "nothing to compare", "reason": why,
                   "lineage_id": sha256_json({"dataset_version": dataset_version, "reason": why})[:16],
                   "models": {}, "stale": {}, "endpoints": {}, "figures": [],
                   "citations": Citations.of_dataset(definition, layout, {}, registry_dir).as_json()}
        return ComparisonReport.of(write_comparison(nothing, out_dir), out_dir)
    evaluations = evaluated_models(evaluation_root)
    if not evaluations:
        raise EvaluationInputError(f"no evaluated model for {dataset_version!r} under {evaluation_root}: materialize "
                         f"'evaluation' first")
    definition_hash = definition_sha256(definition)
    clinical = resolve_table(definition.clinical.table, source_root, definition.data_root)
    stale = {}
    for m, evaluation in evaluations.items():
        causes = stale_causes(evaluation, definition_hash, {"embeddings": embeddings_root / m / "embeddings.parquet",
                                                            "seeds": seeds_parquet, "clinical": clinical}, layout)
        if causes:
            stale[m] = {"causes": causes, "lineage_id": evaluation.get("lineage_id"),
                        "rematerialize": f"evaluation, partition {dataset_version}|{m}"}
    models = sorted(m for m in evaluations if m not in stale)
    # An evaluation's results, not what its report cites: the citations name the code's git commit and the
    # libraries' versions, which must not make the same results a new comparison (a new lineage id and stamp).
    inputs = {m: {"results_sha256": sha256_json({k: v for k, v in evaluations[m].items() if k != "citations"}),
                  "lineage_id": evaluations[m]["lineage_id"], "weights_sha256": evaluations[m]["weights_sha256"]}
              for m in models}
    lineage_id = sha256_json({"dataset_version": dataset_version, "definition_sha256": definition_hash,
                              "inputs": inputs, "stale": sorted(stale)})[:16]
    endpoints: dict[str, Any] = {}
    figures: list[str] = []
    writer = FigureWriter(lineage_id, stamp=stamp, keep=True)  # kept for report.pdf
    for endpoint in sorted({e for m in models for e in evaluations[m]["endpoints"]}):
        evaluated = [m for m in models if evaluations[m]["endpoints"].get(endpoint, {}).get("status") == "evaluated"]
        if not evaluated:
            endpoints[endpoint] = {"status": "no model could be evaluated"}
            continue
        predictions = {m: _read_parquet(evaluation_root / m / f"{endpoint}_predictions.parquet") for m in evaluated}
        result = compare_endpoint(predictions, {m: evaluations[m]["endpoints"][endpoint] for m in evaluated})
        endpoints[endpoint] = result
        figures.append(_forest(endpoint, result["models"], out_dir / f"auc_{endpoint}.png", writer,
                               f"{dataset_version}: {endpoint}").name)
    # Mutual kNN on the patients (first scan, largest lesion: the rows evaluated) that every model embedded.
    vectors = {}
    for m in models:
        rows, matrix = read_embeddings(embeddings_root / m)
        frame = pd.DataFrame(rows)
        frame["row"] = np.arange(len(frame))
        vectors[m] = frame.drop_duplicates("SeriesInstanceUID").set_index("SeriesInstanceUID")["row"], matrix
    common = sorted(set.intersection(*(set(v[0].index) for v in vectors.values()))) if vectors else []
    similarity = np.eye(len(models))
    for i, a in enumerate(models):
        for j in range(i + 1, len(models)):
            b = models[j]
            xa = vectors[a][1][vectors[a][0].loc[common].to_numpy()]
            xb = vectors[b][1][vectors[b][0].loc[common].to_numpy()]
            similarity[i, j] = similarity[j, i] = mutual_knn(xa, xb)
    if len(models) > 1 and len(common) > MUTUAL_K:
        figures.append(_heatmap(models, similarity, len(common), out_dir / "mutual_knn.png", writer,
                                f"{dataset_version}: embedding similarity").name)
    metrics = {"dataset_version": dataset_version, "lineage_id": lineage_id, "definition_sha256": definition_hash,
               "models": inputs, "stale": stale,
               "endpoints": endpoints, "mutual_knn": {"k": MUTUAL_K, "series": len(common), "models": models,
                                                      "matrix": similarity.round(4).tolist()},
               "figures": figures,
               # After the lineage id: what the result cites is not one of its inputs. The models compared (not
               # the stale ones), with the weights their evaluations recorded.
               "citations": Citations.of_dataset(definition, layout, {m: inputs[m]["weights_sha256"] for m in models},
                                                 registry_dir).as_json()}
    return ComparisonReport.of(write_comparison(metrics, out_dir, writer), out_dir)


def write_comparison(metrics: dict[str, Any], out_dir: Path, figures: FigureWriter | None = None) -> dict[str, Any]:
    """metrics.json, report.md, report.html (figures embedded), report.pdf (figures as vector pages) and
    references.bib of a comparison."""
    atomic_write_json(out_dir / "metrics.json", json.loads(json.dumps(metrics, default=float)))
    write_citations(metrics, out_dir)
    markdown = report_markdown(metrics)
    atomic_write_text(out_dir / "report.md", markdown)
    write_html(out_dir / "report.html", report_markdown(metrics, out_dir), "radassets comparison",
               metrics["lineage_id"], 640)
    write_report_pdf(out_dir / "report.pdf", markdown, figures or FigureWriter(metrics["lineage_id"]),
                     f"radassets comparison: {metrics['dataset_version']}")
    return metrics


def report_markdown(m: dict[str, Any], embed_from: Path | None = None) -> str:
    import base64

    def image(name: str) -> str:
        src = f"data:image/png;base64,{base64.b64encode((embed_from / name).read_bytes()).decode()}" \
            if embed_from else name
        return f"![{name}]({src})"

    lines = [f"# Model comparison: {m['dataset_version']}", "", *licence_warning_lines(m)]
    if m.get("status") == "nothing to compare":
        lines += [f"Nothing compared: {m['reason']}.", ""]
    for model, s in m.get("stale", {}).items():
        lines += [f"**Left out, stale:** the evaluation of `{model}` (lineage id `{s['lineage_id']}`): "
                  + "; ".join(s["causes"]) + f". Materialize {s['rematerialize']} again.", ""]
    if not m["models"] and m.get("stale"):
        lines += ["No current evaluation to compare.", ""]
    for endpoint, e in m["endpoints"].items():
        lines += [f"## Endpoint `{endpoint}`", ""]
        if "models" not in e:
            lines += [e["status"], ""]
            continue
        lines += ["| rank | model | linear probe AUC (95 % CI) | kNN AUC (95 % CI) | patients |", "|---|---|---|---|---|"]
        for model, r in sorted(e["models"].items(), key=lambda kv: kv[1]["rank"]):
            lines.append(f"| {r['rank']} | {model} | {r['probe_auc']:.3f} ({r['probe_auc_ci'][0]:.3f}–"
                         f"{r['probe_auc_ci'][1]:.3f}) | {r['knn_auc']:.3f} ({r['knn_auc_ci'][0]:.3f}–"
                         f"{r['knn_auc_ci'][1]:.3f}) | {r['patients']} |")
        lines += ["", table_caption(f"models ranked by linear-probe AUC, {endpoint}, {m['dataset_version']}",
                                    m["lineage_id"])]
        if e["delong"]:
            lines += ["", "DeLong tests of the linear-probe AUCs on the same patients:", "",
                      "| model a | model b | patients | AUC a − AUC b | z | p |", "|---|---|---|---|---|---|"]
            lines += [f"| {t['model_a']} | {t['model_b']} | {t['patients']} | {t['difference']:+.3f} | {t['z']:.2f} | "
                      f"{t['p']:.3g} |" for t in e["delong"]]
            lines += ["", table_caption(f"DeLong tests, {endpoint}, {m['dataset_version']}", m["lineage_id"])]
        lines += ["", image(f"auc_{endpoint}.png"), "", f"*auc_{endpoint}.png · lineage id `{m['lineage_id']}`*", ""]
    if "mutual_knn.png" in m["figures"]:
        lines += ["## Embedding similarity", "", f"Mutual kNN (k = {m['mutual_knn']['k']}) on "
                  f"{m['mutual_knn']['series']} series embedded by every model.", "", image("mutual_knn.png"), "",
                  f"*mutual_knn.png · lineage id `{m['lineage_id']}`*", ""]
    lines += citations_lines(m)
    lines += ["---", f"radassets comparison · lineage id `{m['lineage_id']}` (also in every figure's metadata, PNG, PDF "
              f"and SVG, and its stamp `{stamp_text(m['lineage_id'])}`)"]
    return "\n".join(lines) + "\n"
