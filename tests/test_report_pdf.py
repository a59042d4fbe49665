"""The PDF report's charts: Vega's vector drawing of the spec laid onto the page.

Reports are built from model blocks here (no results needed), so each test knows which
chart goes where: its axis titles and legend must be text on the expected page, inside the
margins and in the box between what precedes it and its caption, with no image on the page.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pypdf import PdfReader

from harness.report.model import Bullets, Chart, Paragraph, Report, Section
from harness.report.pdf import MARGIN_BOTTOM, MARGIN_TOP, MARGIN_X, H, W, render_pdf


def chart(name: str, width: int = 400, caption: str = "") -> Chart:
    """A line chart whose axis titles and legend entries carry ``name``."""
    values = [{"n": n, "v": n * k, "s": f"{name}series{k}"} for k in (1, 2) for n in (1, 2, 4)]
    spec = {"$schema": "https://vega.github.io/schema/vega-lite/v6.json",
            "width": width, "height": 160, "data": {"values": values}, "mark": "line",
            "encoding": {"x": {"field": "n", "type": "quantitative", "title": f"{name}xaxis"},
                         "y": {"field": "v", "type": "quantitative", "title": f"{name}yaxis"},
                         "color": {"field": "s", "type": "nominal",
                                   "title": f"{name}legend"}}}
    return Chart(spec, caption or f"{name}caption", f"{name} alt")


def pages_text(path: Path) -> list[str]:
    return [page.extract_text() for page in PdfReader(path).pages]


def words(path: Path, page: int) -> dict[str, tuple[float, float, float, float]]:
    """word -> (xMin, yMin, xMax, yMax) in points from the top left, by poppler's pdftotext."""
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) not installed")
    html = subprocess.run(["pdftotext", "-bbox", "-f", str(page), "-l", str(page), str(path),
                           "-"], capture_output=True, text=True, check=True).stdout
    out = {}
    for m in re.finditer(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" '
                         r'yMax="([\d.]+)">([^<]*)</word>', html):
        out[m.group(5)] = tuple(float(m.group(i)) for i in range(1, 5))
    return out


@pytest.fixture(scope="module")
def report_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Page 1: text and two charts; then a page of bullets pushes a wide chart to a later
    page."""
    report = Report("Charts", "made of blocks", [
        Section("one", "First", [Paragraph("Before the charts."), chart("alpha"),
                                 chart("gamma")]),
        Section("two", "Second", [Bullets(tuple(f"filler line {i}" for i in range(60))),
                                  chart("beta", width=1400)]),
    ])
    return render_pdf(report, tmp_path_factory.mktemp("pdf") / "charts.pdf")


def test_chart_labels_are_text_on_the_chart_page(report_pdf):
    texts = pages_text(report_pdf)
    assert len(texts) >= 3
    for name, page in (("alpha", 0), ("gamma", 0), ("beta", len(texts) - 1)):
        for word in ("xaxis", "yaxis", "legend", "series1", "series2"):
            assert [i for i, t in enumerate(texts) if name + word in t] == [page], name + word


def test_charts_are_vector_not_images(report_pdf):
    for page in PdfReader(report_pdf).pages:
        xobjects = page["/Resources"].get_object().get("/XObject")
        xobjects = xobjects.get_object() if xobjects is not None else {}
        kinds = [xobjects[name].get_object().get("/Subtype") for name in xobjects]
        assert "/Image" not in kinds


@pytest.mark.parametrize(("name", "page"), [("alpha", 1), ("beta", -1)])
def test_chart_sits_in_its_box_inside_the_margins(report_pdf, name, page):
    if page < 0:
        page = len(PdfReader(report_pdf).pages)
    found = words(report_pdf, page)
    chart_words = [box for word, box in found.items() if word.startswith(name)
                   and word != f"{name}caption"]
    assert len(chart_words) >= 5
    for x0, y0, x1, y1 in chart_words:
        assert x0 >= MARGIN_X and x1 <= W - MARGIN_X
        assert y0 >= MARGIN_TOP and y1 <= H - MARGIN_BOTTOM
    caption_top = found[f"{name}caption"][1]
    assert max(y1 for *_, y1 in chart_words) < caption_top  # above its caption
    if name == "alpha":  # below the text before it, and above the chart after it
        assert found["Before"][3] < min(y0 for _, y0, *_ in chart_words)
        assert caption_top < min(box[1] for word, box in found.items()
                                 if word.startswith("gamma"))
    else:  # 1400 px is wider than the page: scaled down to the text width
        span = max(x1 for *_, x1, _ in chart_words) - min(x0 for x0, *_ in chart_words)
        assert span > 0.6 * (W - 2 * MARGIN_X)


def test_every_page_renders_with_poppler(report_pdf, tmp_path):
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) not installed")
    proc = subprocess.run(["pdftoppm", "-r", "20", "-png", str(report_pdf),
                           str(tmp_path / "page")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    assert len(list(tmp_path.glob("page*.png"))) == len(PdfReader(report_pdf).pages)


def test_two_renders_with_charts_are_the_same_file(tmp_path):
    report = Report("Twice", "", [Section("s", "S", [chart("gamma"), chart("delta")])])
    first = render_pdf(report, tmp_path / "a.pdf").read_bytes()
    second = render_pdf(report, tmp_path / "b.pdf").read_bytes()
    assert first == second
    assert b"/CreationDate" not in first
