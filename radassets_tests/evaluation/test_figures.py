"""Figures for publication: PNG, PDF and SVG each carry the lineage id in their own metadata, are the same bytes
every time, and wear a readable stamp that survives rasterising and cropping; the report's PDF for the record."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image

from radassets.evaluation.figures import FORMATS, FigureWriter, km_figure, lineage_id_of, roc_figure, stamp_text
from radassets.evaluation.report_pdf import layout_lines, write_report_pdf

LINEAGE_ID = "c390e2ed5a1f0b77"


def draw(folder, stamp=True, keep=False) -> FigureWriter:
    rng = np.random.default_rng(7)
    label = rng.integers(0, 2, 60)
    score = label + rng.normal(0, 1, 60)
    figures = FigureWriter(LINEAGE_ID, stamp=stamp, keep=keep)
    roc_figure(label, score, {"auc": 0.8, "auc_ci_low": 0.7, "auc_ci_high": 0.9}, "roc", folder / "os_roc.png",
               figures)
    km_figure(rng.exponential(700, 60), rng.integers(0, 2, 60).astype(bool), score > np.median(score),
              {"logrank_p": 0.01, "hazard_ratio": 2.0, "hr_ci_low": 1.1, "hr_ci_high": 3.0, "cox_p": 0.02}, "km",
              folder / "os_km.png", figures)
    return figures


def stamp_box(pdf_path) -> tuple[tuple[float, float, float, float], tuple[float, float], str]:
    """(the stamp's box in PDF points (left, bottom, right, top), the page size, the text inside that box)."""
    document = pdfium.PdfDocument(str(pdf_path))
    page = document[0]
    text = page.get_textpage()
    searcher = text.search("radassets ")
    first, _ = searcher.get_next()
    boxes = [text.get_charbox(first + k) for k in range(len(stamp_text("0" * 16)))]
    box = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    read = text.get_text_bounded(box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1)
    return box, page.get_size(), read


def screenshot_with_stamp(pdf_path, out_png) -> str:
    """A reader's screenshot of the printed figure: the PDF rasterised at 216 dpi, cropped to its upper right part,
    saved without metadata as ``out_png``. Checks that the stamp is inside the crop and inked; returns the stamp's
    text (read from the PDF's own text layer inside the crop, where the stamp is: no OCR)."""
    (left, bottom, right, top), (width, height), read = stamp_box(pdf_path)
    scale = 3
    image = pdfium.PdfDocument(str(pdf_path))[0].render(scale=scale).to_pil()
    crop_box = (int(width * scale * 0.45), 0, int(width * scale), int(height * scale * 0.5))
    cropped = image.crop(crop_box)
    cropped.save(out_png)
    assert lineage_id_of(out_png) is None
    # The stamp's box, in the cropped image's pixels: inside it, and inked (grey glyphs on white).
    x0, x1 = left * scale - crop_box[0], right * scale - crop_box[0]
    y0, y1 = (height - top) * scale, (height - bottom) * scale
    assert 0 <= x0 < x1 <= cropped.width and 0 <= y0 < y1 <= cropped.height
    glyphs = np.asarray(cropped.convert("L"))[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))]
    assert glyphs.min() < 200 and (glyphs < 200).mean() > 0.05
    return read


def test_every_figure_is_written_as_png_pdf_and_svg_each_with_the_lineage_id_in_its_own_metadata(tmp_path):
    draw(tmp_path)
    for name in ("os_roc", "os_km"):
        for fmt in FORMATS:
            assert lineage_id_of(tmp_path / f"{name}.{fmt}") == LINEAGE_ID, (name, fmt)
    # Where it is, format by format: a PNG text chunk, the PDF document info, SVG's Dublin Core metadata.
    with Image.open(tmp_path / "os_roc.png") as png:
        assert png.text["radassets:lineage_id"] == LINEAGE_ID
    info = pdfium.PdfDocument(str(tmp_path / "os_roc.pdf")).get_metadata_dict()
    assert info["Keywords"] == f"radassets:lineage_id={LINEAGE_ID}" and LINEAGE_ID in info["Subject"]
    assert "CreationDate" not in info or not info["CreationDate"]  # no date: the same bytes every run
    root = ET.parse(tmp_path / "os_roc.svg").getroot()
    identifiers = [e.text for e in root.iter("{http://purl.org/dc/elements/1.1/}identifier")]
    assert identifiers == [f"radassets:lineage_id={LINEAGE_ID}"]
    assert root.find("{http://www.w3.org/2000/svg}metadata") is not None


def test_a_figure_is_the_same_bytes_every_time_it_is_drawn(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    draw(tmp_path / "a")
    draw(tmp_path / "b")
    for path in sorted((tmp_path / "a").iterdir()):
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(
            (tmp_path / "b" / path.name).read_bytes()).digest(), path.name


def test_a_figure_without_its_metadata_has_no_lineage_id(tmp_path):
    draw(tmp_path)
    with Image.open(tmp_path / "os_roc.png") as png:
        png.save(tmp_path / "stripped.png")  # PIL writes no text chunk unless asked
    assert lineage_id_of(tmp_path / "stripped.png") is None
    svg = (tmp_path / "os_roc.svg").read_text()
    start, end = svg.index("<metadata>"), svg.index("</metadata>") + len("</metadata>")
    (tmp_path / "stripped.svg").write_text(svg[:start] + svg[end:])
    assert lineage_id_of(tmp_path / "stripped.svg") is None
    assert lineage_id_of(tmp_path / "os_roc.csv") is None  # not a figure format


def test_the_stamp_survives_rasterising_and_cropping_where_the_metadata_does_not(tmp_path):
    """A reader's screenshot of the printed figure: the PDF rasterised, cropped to its upper right part, saved
    without metadata. The file carries no id, but the stamp is inside the crop and reads as the id's first 8
    digits (read here from the PDF's own text layer, where the stamp is; no OCR)."""
    draw(tmp_path)
    read = screenshot_with_stamp(tmp_path / "os_km.pdf", tmp_path / "screenshot.png")
    assert read == stamp_text(LINEAGE_ID) == f"radassets {LINEAGE_ID[:8]}"


def test_the_stamp_can_be_turned_off(tmp_path):
    draw(tmp_path, stamp=False)
    text = pdfium.PdfDocument(str(tmp_path / "os_km.pdf"))[0].get_textpage().get_text_range()
    assert "radassets" not in text and "radassets" not in (tmp_path / "os_km.svg").read_text().split("</metadata>")[1]
    assert lineage_id_of(tmp_path / "os_km.pdf") == LINEAGE_ID  # the metadata stays


def test_the_report_pdf_has_the_text_tables_and_every_figure_and_the_lineage_id(tmp_path):
    figures = draw(tmp_path, keep=True)
    markdown = "\n".join(["# Evaluation: demo_v1 × fmcib", "", "Patients: 40.", "",
                          "| measure | value |", "|---|---|", "| probe AUC | 0.81 |", "",
                          "![os_roc.png](os_roc.png)", "", *[f"paragraph {i}" for i in range(120)],
                          "---", f"radassets evaluation · lineage id `{LINEAGE_ID}`"])
    write_report_pdf(tmp_path / "report.pdf", markdown, figures, "radassets evaluation: demo_v1 × fmcib")
    assert figures.kept == []  # the figures were closed
    document = pdfium.PdfDocument(str(tmp_path / "report.pdf"))
    pages = [document[i].get_textpage().get_text_range() for i in range(len(document))]
    text_pages, figure_pages = pages[:-2], pages[-2:]
    assert len(text_pages) > 1  # 120 paragraphs do not fit one A4 page; none is lost between pages
    assert [line for p in text_pages for line in p.split("\r\n") if line.startswith("paragraph")] == \
        [f"paragraph {i}" for i in range(120)]
    assert "Evaluation: demo_v1 × fmcib" in text_pages[0] and "probe AUC" in text_pages[0]
    assert "os_roc.png" not in "".join(text_pages)  # images are pages of their own, not their Markdown
    assert all(f"lineage id {LINEAGE_ID}" in p for p in text_pages)  # every page's footer
    assert "1 − specificity" in figure_pages[0] and "At risk" in figure_pages[1]  # vector: text, not pixels
    assert lineage_id_of(tmp_path / "report.pdf") == LINEAGE_ID


@pytest.mark.parametrize("markdown, expected", [
    ("| a | bb |\n|---|---|\n| ccc | d |", [("table", "a    bb"), ("table", "---  --"), ("table", "ccc  d")]),
    ("## Endpoint `os_2y`", [("text", ""), ("h2", "Endpoint os_2y")]),
    ("*roc.png · lineage id `abc`*", [("text", "roc.png · lineage id abc")]),
])
def test_report_pdf_sets_markdown_as_plain_lines(markdown, expected):
    assert [line for line in layout_lines(markdown) if line != ("text", "")] == \
        [line for line in expected if line != ("text", "")]
