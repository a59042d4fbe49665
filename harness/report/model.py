"""The report as data: sections of paragraphs, bullet lists, tables and figures.

The content is built once (harness.report.build) and rendered twice, to HTML and to
PDF, so the two formats cannot drift apart. All text here is plain text: renderers escape
it (HTML) or protect it (matplotlib), never interpret it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cell:
    """One table cell; ``text`` may hold newlines (line breaks), ``tone`` colours it: agrees,
    disagrees, inconclusive, n/a, failed or header."""

    text: str
    tone: str | None = None
    detail: str = ""  # the full story behind a compact cell: a hover title in HTML


@dataclass
class Table:
    """A table: header, rows of cells, right-aligned numeric columns, a caption."""

    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    numeric: frozenset[int] = frozenset()
    compact: bool = False  # one-line cells, centred marks, details on hover (HTML)

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table row has {len(row)} cells for {len(self.columns)} "
                                 f"columns: {[c.text for c in row][:3]}")

    def drop_blank(self, *names: str) -> Table:
        """This table without the named columns where every cell is empty or "–"."""
        drop = {i for i, c in enumerate(self.columns) if c in names
                and all(row[i].text in ("", "–") for row in self.rows)}
        if not drop:
            return self
        keep = [i for i in range(len(self.columns)) if i not in drop]
        return Table([self.columns[i] for i in keep],
                     [[row[i] for i in keep] for row in self.rows], self.caption,
                     frozenset(k for k, i in enumerate(keep) if i in self.numeric),
                     self.compact)


@dataclass
class Chart:
    """An interactive figure: a Vega-Lite spec with its data inlined (``values``).

    The HTML embeds the spec (hover, legend toggles, a log/linear switch); the PDF draws the
    same spec as a static vector figure (harness.report.vega, harness.report.pdf_charts).
    ``spec`` is plain JSON data.
    """

    spec: dict[str, Any]
    caption: str
    alt: str
    log_switch: bool = True  # offer the log/linear switch (the spec's log scales)


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: str = "p"  # "p", "alert" (a finding that must not be missed), "small"


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Subheading:
    text: str


Block = Paragraph | Bullets | Subheading | Table | Chart


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Report:
    title: str
    subtitle: str
    sections: list[Section]
