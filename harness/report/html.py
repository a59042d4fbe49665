"""Render a report as one self-contained HTML file.

Figures are inline PNGs (data: URIs), the style sheet is inline, there is no script and no
reference to anything outside the file, so it opens from disk, offline, without a server.
The page is the template ``harness/templates/report.html.j2``; jinja2 autoescapes every piece of
text, and :func:`br` (the template's ``br`` filter) turns newlines into line breaks.
"""

from __future__ import annotations

import base64
import io

import matplotlib
from jinja2 import Environment, PackageLoader
from markupsafe import Markup, escape
from matplotlib.figure import Figure

from harness.report.model import Bullets, Cell, Paragraph, Plot, Report, Subheading, Table
from harness.report.style import rc

DPI = 110

_TONE_CLASS = {"agrees": "t-agrees", "disagrees": "t-disagrees",
               "inconclusive": "t-inconclusive", "n/a": "t-na", "failed": "t-failed"}


def br(value: object) -> Markup:
    """Escape text for HTML (quotes included); newlines become line breaks."""
    return escape(str(value)).replace("\n", Markup("<br>"))


def png(plot: Plot) -> bytes:
    """The plot as PNG bytes, drawn at its natural size with the report style."""
    with matplotlib.rc_context(rc()):
        fig = Figure(figsize=plot.size)
        plot.draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None},
                    facecolor="white")
    return buf.getvalue()


def _cell_class(table: Table, column: int, cell: Cell) -> str:
    classes = ("num" if column in table.numeric else "", _TONE_CLASS.get(cell.tone or "", ""))
    return " ".join(c for c in classes if c)


def _kind(block: object) -> str:
    if not isinstance(block, (Paragraph, Subheading, Bullets, Table, Plot)):
        raise TypeError(f"cannot render a {type(block).__name__} block")
    return type(block).__name__


_ENV = Environment(loader=PackageLoader("harness", "templates"), autoescape=True,
                   keep_trailing_newline=True)
_ENV.filters["br"] = br
_ENV.globals.update(kind=_kind, cell_class=_cell_class,
                    png_base64=lambda plot: base64.b64encode(png(plot)).decode("ascii"))


def render_html(report: Report) -> str:
    """The whole report as one HTML document (a string)."""
    return _ENV.get_template("report.html.j2").render(report=report)
