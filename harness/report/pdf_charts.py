"""Vector charts on the PDF report's pages.

The page layout (harness.report.pdf) leaves each chart's box empty and notes where it is;
once matplotlib has written the pages, :func:`overlay` lays the chart's own one-page PDF -
Vega's drawing of the same spec the HTML embeds (harness.report.vega) - onto its page at
that box with pypdf, scaled to fit. The chart stays vector: lines are paths and labels are
text in embedded fonts (searchable, sharp at any zoom), not an image.

Why an overlay: matplotlib can put a foreign drawing on a page only as a raster image
(``imshow``), and a PNG at print resolution is larger than the vector chart and blurs
when zoomed; reading Vega's SVG back into matplotlib artists would need an SVG parser.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from pypdf import PageObject, PdfReader, PdfWriter, Transformation
from pypdf.generic import DictionaryObject

from harness.report import vega
from harness.report.model import Chart

CSS_PX_PER_INCH = 96.0  # a chart's natural size, as the browser draws it


@dataclass(frozen=True)
class VectorChart:
    """A chart ready to place: its PDF page (one point per CSS pixel) and natural size in
    inches, so the page layout sizes it as the browser would."""

    pdf: bytes
    size: tuple[float, float]
    caption: str
    alt: str


@dataclass(frozen=True)
class Placement:
    """Where a chart goes: page index, lower-left corner in PDF points (origin at the foot
    of the page) and the chart's width there in points (its height keeps the proportions)."""

    page: int
    chart: VectorChart
    x: float
    y: float
    width: float


def vector_chart(chart: Chart) -> VectorChart:
    """Draw the chart's spec as a vector PDF and read its size from the page."""
    data = vega.pdf(chart.spec)
    box = PdfReader(io.BytesIO(data)).pages[0].mediabox
    return VectorChart(data, (float(box.width) / CSS_PX_PER_INCH,
                              float(box.height) / CSS_PX_PER_INCH), chart.caption, chart.alt)


def _sort_keys(node: DictionaryObject) -> None:
    """Put ``node``'s keys, and its nested dictionaries' keys, in sorted order (in place).

    Vega's PDF lists its fonts in a hash-map order that changes from run to run, and pypdf
    numbers the objects it copies in the order it meets them: sorted keys make two renders
    of the same report the same file.
    """
    items = sorted(node.items())
    node.clear()
    for key, value in items:
        node[key] = value
        if isinstance(value, DictionaryObject):
            _sort_keys(value)


def overlay(document: bytes, placements: Sequence[Placement]) -> bytes:
    """``document`` with every chart drawn onto its page at its box."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(document)))
    pages = set()
    for place in placements:
        chart: PageObject = PdfReader(io.BytesIO(place.chart.pdf)).pages[0]
        resources = chart["/Resources"].get_object()
        if isinstance(resources, DictionaryObject):
            _sort_keys(resources)
        box = chart.mediabox
        scale = place.width / float(box.width)
        writer.pages[place.page].merge_transformed_page(
            chart, Transformation().translate(-float(box.left), -float(box.bottom))
            .scale(scale, scale).translate(place.x, place.y))
        pages.add(place.page)
    for page in sorted(pages):  # merging leaves the page's drawing uncompressed
        writer.pages[page].compress_content_streams()
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
