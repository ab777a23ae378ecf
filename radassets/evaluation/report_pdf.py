"""A report as one PDF for the record: its text and tables, then each figure on a page of its own.

Drawn with matplotlib's ``PdfPages`` (no browser, no LaTeX): the report's Markdown is set in type page by page
(headings, paragraphs wrapped, tables in aligned columns), then the figures follow as vector pages, the same figure
objects that were saved as PNG, PDF and SVG (``FigureWriter(keep=True)``). The file carries the lineage id in its
document info, as a figure's PDF does (``figures.file_metadata``), and in every page's footer, so ``lineage trace``
resolves it either way. No creation date: the same report is the same bytes.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from radassets.evaluation.figures import FigureWriter, file_metadata, pyplot, stamp_text
from radassets.storage import atomic_path

PAGE_INCHES = (8.27, 11.69)  # A4 portrait
MARGIN = 0.08  # of the page, each side
LINE = 0.0145  # of the page height, one line of body text
WRAP = 98  # characters of body text on a line
STYLES = {"h1": (13, "bold"), "h2": (10.5, "bold"), "text": (8, "normal"), "table": (7, "normal"),
          "rule": (8, "normal")}


def _plain(text: str) -> str:
    """Markdown's inline marks dropped: `code`, *emphasis*, **strong** (also nested: *a `b`*)."""
    for pattern in (r"`([^`]+)`", r"\*\*([^*]+)\*\*", r"\*([^*]+)\*"):
        text = re.sub(pattern, r"\1", text)
    return text


def _table(rows: list[list[str]]) -> list[tuple[str, str]]:
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        out.append(("table", "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()))
        if n == 0:
            out.append(("table", "  ".join("-" * w for w in widths)))
    return out


def layout_lines(markdown: str) -> list[tuple[str, str]]:
    """(style, text) lines of a report's Markdown; images are left out (their figures follow as pages)."""
    lines: list[tuple[str, str]] = []
    table: list[list[str]] = []
    for raw in [*markdown.splitlines(), ""]:
        if raw.startswith("|"):
            if not set(raw) <= set("|-: "):
                table.append([_plain(c.strip()) for c in raw.strip().strip("|").split("|")])
            continue
        if table:
            lines += _table(table)
            table = []
        if raw.startswith("!["):
            continue
        if raw.startswith("#"):
            level = len(raw) - len(raw.lstrip("#"))
            lines += [("text", ""), ("h1" if level == 1 else "h2", _plain(raw.lstrip("# ")))]
        elif raw == "---":
            lines.append(("rule", ""))
        elif raw.strip():
            lines += [("text", w) for w in textwrap.wrap(_plain(raw), WRAP)]
        elif lines and lines[-1] != ("text", ""):
            lines.append(("text", ""))
    return lines


def _height(style: str) -> float:
    """Of the page height, what a line of ``style`` takes."""
    return LINE * (1.6 if style in ("h1", "h2") else 1)


def _pages(lines: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    room = 1 - 2 * MARGIN - 2 * LINE  # two lines kept for the footer
    pages: list[list[tuple[str, str]]] = [[]]
    used = 0.0
    for style, text in lines:
        if used + _height(style) > room:
            pages.append([])
            used = 0.0
        if pages[-1] or (style, text) != ("text", ""):  # no blank line at the top of a page
            pages[-1].append((style, text))
            used += _height(style)
    return pages


def write_report_pdf(path: Path, markdown: str, figures: FigureWriter, title: str) -> Path:
    """Write ``path``: the report's pages, then every figure ``figures`` kept (dropped afterwards)."""
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages

    plt = pyplot()
    pages = _pages(layout_lines(markdown))
    footer = f"{title} · lineage id {figures.lineage_id} · {stamp_text(figures.lineage_id)}"
    total = len(pages) + len(figures.kept)
    try:
        # TrueType (Type 42) fonts, as in each figure's own PDF (figures.FigureWriter): the text stays text.
        with matplotlib.rc_context({"pdf.fonttype": 42}), atomic_path(path) as tmp, \
                PdfPages(tmp, metadata=file_metadata("pdf", figures.lineage_id, title)) as pdf:
            for number, page in enumerate(pages, start=1):
                fig = plt.figure(figsize=PAGE_INCHES)
                y = 1 - MARGIN
                for style, text in page:
                    size, weight = STYLES[style]
                    if style == "rule":
                        fig.add_artist(plt.Line2D([MARGIN, 1 - MARGIN], [y - LINE / 2] * 2, color="#999999", lw=0.6))
                    elif text:
                        fig.text(MARGIN, y, text, fontsize=size, fontweight=weight, va="top",
                                 family="DejaVu Sans Mono" if style == "table" else "DejaVu Sans")
                    y -= _height(style)
                fig.text(MARGIN, MARGIN / 2, f"{footer} · page {number} of {total}", fontsize=6,
                         color="#8c8c8c")
                pdf.savefig(fig)
                plt.close(fig)
            for _, figure in figures.kept:
                pdf.savefig(figure, bbox_inches="tight")
    finally:
        figures.kept.clear()  # pyplot let go of them when they were saved; now nothing holds them
    return path
