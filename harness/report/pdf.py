"""Render a report as a PDF with matplotlib's PdfPages: no LaTeX, no browser.

Pages are A4 landscape. Text, tables and figures flow down a page and continue on the
next; a table repeats its header on every page, a section continued on a new page repeats
its title. A chart (Chart) keeps an empty box of its size, and its own vector PDF, drawn
by Vega from the same spec as the HTML's, is laid onto it afterwards
(harness.report.pdf_charts).
Text is measured with the font's own glyph advances, so wrapping matches what is drawn. The
document carries no creation date, so two renders of the same results are the same file.

Why a layout engine of our own (tried against matplotlib's ``ax.table`` and wrapped
``fig.text``): matplotlib draws text and tables but does not wrap table cells, size rows to
their lines, or split a long table over pages with its header repeated - Table 1 at 7 pt
came out 1.4 page widths wide with its 4-line cells clipped, and the per-case table has a
row per case. Wrapping, paging and column fitting are therefore what this module is; a
flowing-document library (reportlab platypus, fpdf2 tables) would do them, but it is a new
dependency for what matplotlib's text and glyph metrics already give.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont
from matplotlib.ft2font import FT2Font, LoadFlags
from matplotlib.patches import Rectangle

from harness.report.fmt import mpl
from harness.report.model import (
    Block,
    Bullets,
    Cell,
    Chart,
    Paragraph,
    Report,
    Subheading,
    Table,
)
from harness.report.pdf_charts import Placement, VectorChart, overlay, vector_chart
from harness.report.style import rc

W, H = 842.0, 595.0  # A4 landscape, points
MARGIN_X, MARGIN_TOP, MARGIN_BOTTOM = 36.0, 34.0, 34.0
TEXT_W = W - 2 * MARGIN_X
BODY_SIZE, SMALL_SIZE = 9.0, 7.5
TABLE_SIZES = (7.5, 7.0, 6.5, 6.0, 5.5)
CELL_PAD_X, CELL_PAD_Y = 3.0, 1.8
MAX_CELL_LINES = 8
SECTION_ROOM = 150.0  # a section starts on a new page when less room than this is left
TONE_COLOUR = {"agrees": "#d4e6f6", "disagrees": "#fbd9bf", "inconclusive": "#f6f0c4",
               "n/a": "#efefef", "failed": "#fbe3d2"}
HEADER_COLOUR, LINE_COLOUR, MUTED, INK = "#e4e8ee", "#c8c8c8", "#555555", "#1d1d1f"


@cache
def _advances(bold: bool) -> tuple[FT2Font, dict[str, float]]:
    """The report font and a cache of glyph advances at 1 pt (scaled linearly)."""
    prop = FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal")
    font = FT2Font(findfont(prop))
    font.set_size(100, 72)
    return font, {}


@lru_cache(maxsize=65536)
def width(text: str, size: float, bold: bool = False) -> float:
    """Width of ``text`` in points as drawn (glyph advances; kerning ignored, < 1%)."""
    font, advances = _advances(bold)
    total = 0.0
    for ch in text:
        advance = advances.get(ch)
        if advance is None:
            glyph = font.load_char(ord(ch), flags=LoadFlags.NO_HINTING)
            advance = advances[ch] = glyph.linearHoriAdvance / 65536 / 100
        total += advance
    return total * size


def wrap(text: str, limit: float, size: float, bold: bool = False) -> list[str]:
    """Lines of ``text`` no wider than ``limit`` points (explicit newlines kept)."""
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if width(candidate, size, bold) <= limit:
                current = candidate
                continue
            if current:
                lines.append(current)
            while width(word, size, bold) > limit and len(word) > 1:
                cut = max(1, int(len(word) * limit / width(word, size, bold)))
                while cut > 1 and width(word[:cut], size, bold) > limit:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            current = word
        lines.append(current)
    return lines


class Pager:
    """Lays blocks out on pages, top to bottom, and writes the pages to a PdfPages."""

    def __init__(self, pdf: PdfPages, title: str) -> None:
        self.pdf = pdf
        self.title = title
        self.page: Figure | None = None
        self.sealed = False  # the page holds figures: more figures need a new page
        self.y = MARGIN_TOP
        self.number = 0
        self.section = ""
        self.charts: list[Placement] = []  # laid onto the pages once they are written

    # -- pages ---------------------------------------------------------------------------
    def flush(self) -> None:
        if self.page is not None:
            self.page.text(MARGIN_X / W, 14 / H, mpl(self.title), fontsize=6.5, color=MUTED,
                           parse_math=False)
            self.page.text(1 - MARGIN_X / W, 14 / H, f"page {self.number}", fontsize=6.5,
                           color=MUTED, ha="right")
            self.pdf.savefig(self.page)
            self.page = None

    def new_page(self, *, continued: bool = True) -> Figure:
        self.flush()
        self.number += 1
        self.page = Figure(figsize=(W / 72, H / 72))
        self.sealed = False
        self.y = MARGIN_TOP
        if continued and self.section:
            self.text(f"{self.section} (continued)", 10.5, bold=True, color=MUTED)
            self.y += 4
        return self.page

    @property
    def current(self) -> Figure:
        """The page being filled (a new one if none is open)."""
        if self.page is None:
            self.new_page()
        return self.page  # type: ignore[return-value]

    def room(self) -> float:
        return H - MARGIN_BOTTOM - self.y

    def need(self, height: float) -> None:
        if self.page is None or height > self.room():
            self.new_page()

    # -- text ----------------------------------------------------------------------------
    def text(self, line: str, size: float, *, bold: bool = False, color: str = INK,
             x: float = MARGIN_X) -> None:
        self.current.text(x / W, 1 - self.y / H, mpl(line), fontsize=size, va="top",
                          weight="bold" if bold else "normal", color=color, parse_math=False)
        self.y += size * 1.3

    def heading(self, text: str, size: float) -> None:
        self.need(size * 1.3 + 40)  # never a heading alone at the foot of a page
        self.y += 5
        self.text(text, size, bold=True)
        self.y += 2

    def paragraph(self, text: str, size: float = BODY_SIZE, *, color: str = INK,
                  bold: bool = False, indent: float = 0.0, bullet: str = "") -> None:
        hang = 10.0 if bullet else 0.0
        for i, line in enumerate(wrap(text, TEXT_W - indent - hang, size, bold)):
            self.need(size * 1.3)
            if bullet and i == 0:
                self.current.text((MARGIN_X + indent) / W, 1 - self.y / H, bullet,
                                  fontsize=size, va="top", color=color)
            self.text(line, size, bold=bold, color=color, x=MARGIN_X + indent + hang)
        self.y += size * 0.45

    def section_start(self, title: str) -> None:
        self.section = ""
        if self.page is None or self.room() < SECTION_ROOM:
            self.new_page(continued=False)
        elif self.y > MARGIN_TOP:
            self.y += 14
        self.section = title
        self.text(title, 15, bold=True)
        self.y += 5

    # -- tables --------------------------------------------------------------------------
    def table(self, table: Table) -> None:
        size, widths, header, rows = _layout(table)
        line_h = size * 1.25
        header_h = max(len(h) for h in header) * line_h + 2 * CELL_PAD_Y
        header_cells = [Cell("", "header")] * len(widths)
        first_h = max(len(c) for c in rows[0][1]) * line_h + 2 * CELL_PAD_Y if rows else 0
        self.need(header_h + first_h)
        self._row(header, header_cells, widths, size, header_h, bold=True, numeric=frozenset())
        for cells, lines in rows:
            height = max(len(c) for c in lines) * line_h + 2 * CELL_PAD_Y
            if height > self.room():
                self.new_page()
                self._row(header, header_cells, widths, size, header_h, bold=True,
                          numeric=frozenset())
            self._row(lines, cells, widths, size, height, bold=False, numeric=table.numeric)
        self.y += 3
        if table.caption:
            self.paragraph(table.caption, SMALL_SIZE, color=MUTED)
        self.y += 4

    def _row(self, lines: Sequence[list[str]], cells: Sequence[Cell], widths: Sequence[float],
             size: float, height: float, *, bold: bool, numeric: frozenset[int]) -> None:
        page = self.current
        x = MARGIN_X
        for i, (text_lines, cell, w) in enumerate(zip(lines, cells, widths, strict=True)):
            tone = HEADER_COLOUR if cell.tone == "header" else TONE_COLOUR.get(cell.tone or "")
            page.add_artist(Rectangle(
                (x / W, 1 - (self.y + height) / H), w / W, height / H,
                transform=page.transFigure, facecolor=tone or "white",
                edgecolor=LINE_COLOUR, linewidth=0.4))
            if any(text_lines):
                right = i in numeric
                page.text((x + w - CELL_PAD_X if right else x + CELL_PAD_X) / W,
                          1 - (self.y + CELL_PAD_Y) / H, mpl("\n".join(text_lines)),
                          fontsize=size, va="top", ha="right" if right else "left",
                          multialignment="right" if right else "left",
                          weight="bold" if bold else "normal", linespacing=1.25 / 1.2,
                          color=INK, parse_math=False)
            x += w
        self.y += height

    # -- figures -------------------------------------------------------------------------
    def plots(self, plots: Sequence[VectorChart]) -> None:
        """Figures below what is on the page, as many as fit; the rest on new pages."""
        group: list[tuple[VectorChart, float, list[str]]] = []
        start = self.y
        for plot in plots:
            scale = min(1.0, TEXT_W / 72 / plot.size[0])
            caption = wrap(plot.caption, TEXT_W, SMALL_SIZE)
            cap_h = len(caption) * SMALL_SIZE * 1.25 + 12
            full = H - MARGIN_TOP - MARGIN_BOTTOM - 30 - cap_h
            body = min(plot.size[1] * scale * 72, full)
            used = sum(b + len(c) * SMALL_SIZE * 1.25 + 12 for _, b, c in group)
            fits = self.page is not None and not self.sealed and \
                start + used + body + cap_h <= H - MARGIN_BOTTOM
            if not fits:
                if group:
                    self._place(group, start)
                    group = []
                self.new_page()
                start = self.y
            group.append((plot, body, caption))
        if group:
            self._place(group, start)

    def _place(self, group: list[tuple[VectorChart, float, list[str]]], top: float) -> None:
        page = self.current
        ratios = [top]
        for _, body, caption in group:
            ratios += [body, len(caption) * SMALL_SIZE * 1.25 + 12]
        ratios.append(max(H - sum(ratios), 1.0))
        subs: Any = page.subfigures(len(ratios), 1, height_ratios=ratios)
        for k, (plot, body, caption) in enumerate(group):
            # the chart's box stays empty until the overlay
            aspect = plot.size[0] / plot.size[1]
            drawn = min(plot.size[0] * 72, TEXT_W, body * aspect)
            bottom = sum(ratios[:2 + 2 * k]) - (body - drawn / aspect)
            self.charts.append(Placement(self.number - 1, plot, MARGIN_X, H - bottom, drawn))
            subs[2 + 2 * k].text(MARGIN_X / W, 0.85, mpl("\n".join(caption)),
                                 fontsize=SMALL_SIZE, va="top", color=MUTED,
                                 linespacing=1.2, parse_math=False)
        self.y = sum(ratios[:-1])
        self.sealed = True

    # -- blocks --------------------------------------------------------------------------
    def blocks(self, blocks: Sequence[Block]) -> None:
        items = [vector_chart(b) if isinstance(b, Chart) else b for b in blocks]
        i = 0
        while i < len(items):
            block = items[i]
            if isinstance(block, VectorChart):
                j = i
                while j < len(items) and isinstance(items[j], VectorChart):
                    j += 1
                self.plots([b for b in items[i:j] if isinstance(b, VectorChart)])
                i = j
                continue
            if isinstance(block, Paragraph):
                if block.kind == "alert":
                    self.paragraph(block.text, 10, bold=True, color="#a33a00")
                elif block.kind == "small":
                    self.paragraph(block.text, SMALL_SIZE, color=MUTED)
                else:
                    self.paragraph(block.text)
            elif isinstance(block, Subheading):
                self.heading(block.text, 11)
            elif isinstance(block, Bullets):
                for item in block.items:
                    self.paragraph(item, bullet="•", indent=6)
            elif isinstance(block, Table):
                self.table(block)
            else:
                raise TypeError(f"cannot render a {type(block).__name__} block")
            i += 1


def _natural(table: Table, size: float) -> list[float]:
    """Widest line per column; a header may wrap at its spaces, so only its longest word."""
    out = []
    for i, name in enumerate(table.columns):
        head = max((width(word, size, True) for word in name.split()), default=0.0)
        cells = [width(line, size) for row in table.rows for line in row[i].text.split("\n")]
        out.append(max([head, *cells]) + 2 * CELL_PAD_X)
    return out


def _layout(table: Table) -> tuple[float, list[float], list[list[str]],
                                   list[tuple[list[Cell], list[list[str]]]]]:
    """Font size, column widths and wrapped lines: shrink the font first, then wrap the
    widest columns (water-filling) until the table fits the page width."""
    size, widths = TABLE_SIZES[0], []
    for size in TABLE_SIZES:
        widths = _natural(table, size)
        if sum(widths) <= TEXT_W:
            break
    if sum(widths) > TEXT_W:
        lo, hi = 0.0, max(widths)
        for _ in range(40):  # the cap c with sum(min(width, c)) == TEXT_W
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if sum(min(n, mid) for n in widths) <= TEXT_W else (lo, mid)
        widths = [min(n, lo) for n in widths]
    header = [wrap(c, w - 2 * CELL_PAD_X, size, True) for c, w in
              zip(table.columns, widths, strict=True)]
    rows = []
    for row in table.rows:
        lines = []
        for cell, w in zip(row, widths, strict=True):
            wrapped = wrap(cell.text, w - 2 * CELL_PAD_X, size)
            if len(wrapped) > MAX_CELL_LINES:  # the HTML report has the full text
                last = wrapped[MAX_CELL_LINES - 1]
                while last and width(last + " …", size) > w - 2 * CELL_PAD_X:
                    last = last[:-1]
                wrapped = [*wrapped[:MAX_CELL_LINES - 1], last + " …"]
            lines.append(wrapped)
        rows.append((row, lines))
    return size, widths, header, rows


def render_pdf(report: Report, path: str | os.PathLike) -> Path:
    """Write the report to ``path`` as a PDF (no creation date: renders are reproducible)."""
    path = Path(path)
    pages = io.BytesIO()
    with matplotlib.rc_context(rc()), PdfPages(pages, metadata={
            "Title": report.title, "Creator": "harness report", "CreationDate": None}) as pdf:
        pager = Pager(pdf, report.title)
        pager.new_page(continued=False)
        pager.text(report.title, 20, bold=True)
        pager.y += 4
        pager.paragraph(report.subtitle, 10, color=MUTED)
        pager.paragraph("Contents: " + "; ".join(f"{i}. {s.title}" for i, s in
                                                  enumerate(report.sections, 1)),
                        SMALL_SIZE, color=MUTED)
        for number, section in enumerate(report.sections, 1):
            pager.section_start(f"{number}. {section.title}")
            pager.blocks(section.blocks)
        pager.flush()
    path.write_bytes(overlay(pages.getvalue(), pager.charts) if pager.charts
                     else pages.getvalue())
    return path
