"""Figures of an evaluation: ROC curve and Kaplan–Meier curves with numbers at risk.

Every figure is written three times, as PNG (the report's inline picture), PDF and SVG (vector, what a journal
takes), and each file carries the lineage id in its own metadata, so a figure copied into a manuscript can be traced
back (``radassets lineage trace``):

- PNG: a text chunk ``radassets:lineage_id``;
- PDF: the document info's Subject (``radassets lineage id <id>``) and Keywords (``radassets:lineage_id=<id>``);
- SVG: the Dublin Core ``<dc:identifier>`` (``radassets:lineage_id=<id>``) and ``<dc:description>`` in
  ``<metadata>``.

Metadata does not survive a screenshot, a crop or a print, so each figure also carries a small grey stamp,
``radassets <first 8 hex digits of the id>``, in its top right corner (``figure_stamp = false`` turns it off), which
``lineage trace`` takes as typed. The files are deterministic: no creation date, and SVG ids salted by the lineage
id, so the same figure is the same bytes on every run. A figure is drawn to a local temporary file and put in place
whole (``storage.atomic_path``), also on the artifact store. Drawn with matplotlib (Agg) and lifelines' own KM
plotting and at-risk table.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from radassets.storage import atomic_path

LINEAGE_KEY = "radassets:lineage_id"
FORMATS = ("png", "pdf", "svg")  # each figure is written in all three, the PNG first
HTML_SUFFIXES = (".html", ".htm")
TRACEABLE_SUFFIXES = tuple(f".{f}" for f in FORMATS) + HTML_SUFFIXES  # what lineage_id_of reads
DPI = 130
STAMP_DIGITS = 8  # as many as `lineage trace` needs of a prefix
_TAGGED = re.compile(re.escape(LINEAGE_KEY) + r"[=:]\s*([0-9a-fA-F]{8,64})")


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def stamp_text(lineage_id: str) -> str:
    """The id as a person reads it off a figure or a table caption."""
    return f"radassets {lineage_id[:STAMP_DIGITS]}"


def table_caption(what: str, lineage_id: str) -> str:
    """A report table's caption (Markdown), ending in the stamp, so a table copied out of the report still traces."""
    return f"*Table: {what} · {stamp_text(lineage_id)}*"


def file_metadata(fmt: str, lineage_id: str, title: str | None = None) -> dict[str, Any]:
    """The metadata matplotlib writes into a file of ``fmt``: the lineage id, and no date (the same bytes each
    time)."""
    tagged = f"{LINEAGE_KEY}={lineage_id}"
    if fmt == "png":
        return {LINEAGE_KEY: lineage_id}
    if fmt == "pdf":
        return {"Subject": f"radassets lineage id {lineage_id}", "Keywords": tagged, "CreationDate": None,
                **({"Title": title} if title else {})}
    if fmt == "svg":
        return {"Identifier": tagged, "Description": f"radassets lineage id {lineage_id}", "Date": None,
                **({"Title": title} if title else {})}
    raise ValueError(f"no lineage metadata for format {fmt!r}")


@dataclass
class FigureWriter:
    """Writes the figures of one result, all carrying its lineage id; ``keep`` holds on to them for the report's
    PDF (``radassets.evaluation.report_pdf``). Each is closed in pyplot once saved, so a step that fails before its
    report leaks no figure into a long-lived process (``dagster dev``, an in-process run): a kept figure is only
    an object, which can still be drawn to another file."""

    lineage_id: str
    stamp: bool = True
    keep: bool = False
    kept: list[tuple[str, Any]] = field(default_factory=list)  # (PNG file name, figure)

    def save(self, fig, path: Path) -> Path:
        """Write ``fig`` as ``path`` (a .png) and beside it as .pdf and .svg; returns ``path``."""
        import matplotlib

        if self.stamp:
            fig.text(0.998, 0.998, stamp_text(self.lineage_id), ha="right", va="top", fontsize=5.5,
                     color="#8c8c8c", family="DejaVu Sans Mono")
        # SVG element ids are hashes salted at random unless a salt is set; the lineage id keeps them stable. Fonts
        # go into the PDF as TrueType (Type 42), as journals ask, not as Type 3: the text stays text.
        with matplotlib.rc_context({"svg.hashsalt": self.lineage_id, "pdf.fonttype": 42}):
            for fmt in FORMATS:
                with atomic_path(path.with_suffix(f".{fmt}")) as tmp:
                    fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight",
                                metadata=file_metadata(fmt, self.lineage_id))
        pyplot().close(fig)
        if self.keep:
            self.kept.append((path.name, fig))
        return path


def save_figure(fig, path: Path, figures: FigureWriter | str) -> Path:
    """``figures.save(fig, path)``; a bare lineage id gives a stamped writer that keeps nothing."""
    writer = figures if isinstance(figures, FigureWriter) else FigureWriter(figures)
    return writer.save(fig, path)


def lineage_id_of(path: Path) -> str | None:
    """The lineage id in a figure's or report's metadata (PNG, PDF, SVG, or a report's HTML), or None if it has
    none; ``path`` local or on the artifact store."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        try:
            with path.open("rb") as f, Image.open(f) as image:
                return image.text.get(LINEAGE_KEY) if hasattr(image, "text") else None
        except (OSError, Image.UnidentifiedImageError):  # not a PNG after all: found by its sha256, if at all
            return None
    if suffix == ".pdf":
        return _pdf_lineage_id(path.read_bytes())
    if suffix == ".svg":
        return _svg_lineage_id(path.read_bytes())
    if suffix in HTML_SUFFIXES:  # a report: the <meta> tag report.write_html puts in its head (any quotes, as a
        # browser's "save as" rewrites them)
        match = re.search(r"<meta\s+name=[\"']" + re.escape(LINEAGE_KEY) + r"[\"']\s+content=[\"']([0-9a-fA-F]{8,64})[\"']",
                          path.read_text(errors="replace")[:4096])
        return match.group(1).lower() if match else None
    return None


def _pdf_lineage_id(data: bytes) -> str | None:
    # pdfium reads the document info wherever a writer put it (a cross-reference stream, an object stream, after an
    # incremental update), which a pattern over the bytes would not.
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError:
        return None
    try:
        info = document.get_metadata_dict(skip_empty=True)
    finally:
        document.close()
    for key in ("Keywords", "Subject"):
        if match := _TAGGED.search(info.get(key, "")) or re.search(r"lineage id ([0-9a-fA-F]{8,64})",
                                                                   info.get(key, "")):
            return match.group(1).lower()
    return None


def _svg_lineage_id(data: bytes) -> str | None:
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return None
    for element in root.iter():  # Dublin Core's identifier, or its description where an editor dropped that
        if element.tag.endswith(("}identifier", "}description")) and element.text and \
                (match := _TAGGED.search(element.text)):
            return match.group(1).lower()
    return None


def roc_figure(label: np.ndarray, score: np.ndarray, auc: dict, title: str, path: Path, figures: FigureWriter | str) -> Path:
    from sklearn.metrics import roc_curve

    plt = pyplot()
    fpr, tpr, _ = roc_curve(np.asarray(label, int), np.asarray(score, float))
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot(fpr, tpr, color="#c0392b", lw=2,
            label=f"AUC {auc['auc']:.3f} (95% CI {auc['auc_ci_low']:.3f}–{auc['auc_ci_high']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower right", fontsize=8)
    n_pos, n = int(np.sum(label)), len(label)
    ax.text(0.98, 0.30, f"n = {n}, events = {n_pos}", ha="right", fontsize=8, transform=ax.transAxes)
    return save_figure(fig, path, figures)


def km_figure(time_days: np.ndarray, event: np.ndarray, high: np.ndarray, groups: dict, title: str, path: Path,
              figures: FigureWriter | str, time_unit: str = "days") -> Path:
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts

    plt = pyplot()
    time_days, event, high = np.asarray(time_days, float), np.asarray(event, bool), np.asarray(high, bool)
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    fitters = []
    for mask, name, color in ((~high, "low risk", "#2471a3"), (high, "high risk", "#c0392b")):
        kmf = KaplanMeierFitter(label=f"{name} (n={int(mask.sum())})")
        kmf.fit(time_days[mask], event[mask])
        kmf.plot_survival_function(ax=ax, ci_show=True, color=color, show_censors=True,
                                   censor_styles={"ms": 4, "marker": "|"})
        fitters.append(kmf)
    ax.set(xlabel=f"time ({time_unit})", ylabel="survival probability", ylim=(0, 1.02), title=title)
    ax.legend(loc="lower left", fontsize=8)  # the statistics sit top right
    ax.text(0.98, 0.96, f"log-rank p = {groups['logrank_p']:.3g}\nHR {groups['hazard_ratio']:.2f} "
                        f"({groups['hr_ci_low']:.2f}–{groups['hr_ci_high']:.2f}), p = {groups['cox_p']:.3g}",
            ha="right", va="top", fontsize=8, transform=ax.transAxes)
    add_at_risk_counts(*fitters, ax=ax, rows_to_show=["At risk"])
    fig.tight_layout()
    return save_figure(fig, path, figures)


def seed_stability_figure(metrics: dict, table, title: str, path: Path, figures: FigureWriter | str) -> Path:
    """Seed-perturbation stability: Cohen's kappa and AUC per trial for each endpoint (unperturbed AUC
    marked), and the embedding's cosine similarity against how far the seed moved."""
    plt = pyplot()
    names = list(metrics["endpoints"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    rng = np.random.default_rng(0)  # horizontal jitter of the points only
    for ax, key, label in ((axes[0], "kappa", "Cohen's kappa vs unperturbed"), (axes[1], "auc", "AUC per trial")):
        values = [[t[key] for t in metrics["endpoints"][n]["trials"]] for n in names]
        ax.boxplot(values, showfliers=False, widths=0.5)
        for i, v in enumerate(values, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(v)), v, s=8, color="#2471a3", alpha=0.6, zorder=3)
        ax.set_xticks(range(1, len(names) + 1), names)
        floor = 0.0 if key == "kappa" else 0.5  # kappa 0: chance agreement; AUC 0.5: chance
        ax.set(ylabel=label, ylim=(min(floor, np.nanmin(np.concatenate(values)) - 0.05), 1.02))
    for i, n in enumerate(names, start=1):
        axes[1].scatter([i], [metrics["endpoints"][n]["unperturbed_auc"]], marker="D", color="#c0392b", zorder=4,
                        label="unperturbed" if i == 1 else None)
    axes[1].legend(loc="lower left", fontsize=8)
    distance = np.sqrt(table["dx_mm"] ** 2 + table["dy_mm"] ** 2 + table["dz_mm"] ** 2)
    axes[2].scatter(distance, table["cosine"], s=4, alpha=0.35, color="#555555")
    axes[2].set(xlabel="seed displacement (mm)", ylabel="cosine to the stored embedding")
    p = metrics["protocol"]
    fig.suptitle(f"{title}\n{metrics['patients_perturbed']} patients × {p['trials']} trials, "
                 f"seed moved by N(0, {p['sd_mm']:g}² mm²) per axis", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, figures)
