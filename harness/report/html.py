"""Render a report as one self-contained HTML file.

Every figure is an interactive chart: a Vega-Lite spec whose data is inlined as JSON, drawn
by the Vega bundle inlined once at the end of the page (harness.report.vega), with a small
script of our own for the log/linear switches. The style sheet is inline and nothing refers
outside the file, so it opens from disk, offline, without a server.
``document.body.dataset.charts`` counts the charts drawn ("3/3"), so a browser test can wait
for them.
The page is the template ``harness/templates/report.html.j2``; jinja2 autoescapes every piece of
text, and :func:`br` (the template's ``br`` filter) turns newlines into line breaks.
"""

from __future__ import annotations

import json
from typing import Any

from jinja2 import Environment, PackageLoader
from markupsafe import Markup, escape

from harness.report import vega
from harness.report.model import (
    Bullets,
    Cell,
    Chart,
    Paragraph,
    Report,
    Subheading,
    Table,
)

_TONE_CLASS = {"agrees": "t-agrees", "disagrees": "t-disagrees",
               "inconclusive": "t-inconclusive", "n/a": "t-na", "failed": "t-failed"}


def br(value: object) -> Markup:
    """Escape text for HTML (quotes included); newlines become line breaks."""
    return escape(str(value)).replace("\n", Markup("<br>"))


def _cell_class(table: Table, column: int, cell: Cell) -> str:
    classes = ("num" if column in table.numeric else "", _TONE_CLASS.get(cell.tone or "", ""))
    return " ".join(c for c in classes if c)


def spec_json(chart: Chart) -> Markup:
    """The chart's spec as JSON safe inside a <script type="application/json"> element:
    ``<``, ``>`` and ``&`` are written as JSON escapes, so no string from the results can
    close the element or start markup."""
    text = json.dumps(chart.spec, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                     ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, esc)
    return Markup(text)


#: The page's own script: draw every chart, wire its log/linear switch, count what drew.
BOOT = """(function () {
  var charts = document.querySelectorAll('div.vl');
  var done = 0, failed = 0;
  function mark() {
    document.body.dataset.charts = done + '/' + charts.length;
    if (failed) { document.body.dataset.chartErrors = String(failed); }
  }
  function linear(node, key) {
    if (Array.isArray(node)) { return node.map(function (n) { return linear(n, key); }); }
    if (!node || typeof node !== 'object') { return node; }
    var out = {};
    Object.keys(node).forEach(function (k) {
      var v = node[k];
      if (k === 'y' && v && v.scale && v.scale.type === 'log') {
        v = Object.assign({}, v, {scale: Object.assign({}, v.scale, {type: 'linear'})});
      }
      out[k] = linear(v, k);
    });
    return out;
  }
  function draw(div, spec, first) {
    return vegaEmbed(div, spec, {actions: false, renderer: 'svg', mode: 'vega-lite'})
      .then(function () { if (first) { done += 1; mark(); } })
      .catch(function (e) {
        failed += 1; mark();
        div.textContent = 'This chart could not be drawn: ' + e;
      });
  }
  charts.forEach(function (div) {
    var spec = JSON.parse(document.getElementById(div.id + '-spec').textContent);
    draw(div, spec, true);
    document.querySelectorAll('input[name="' + div.id + '-scale"]').forEach(function (input) {
      input.addEventListener('change', function () {
        draw(div, input.value === 'log' ? spec : linear(spec, ''), false);
      });
    });
  });
  mark();
})();"""


def has_charts(report: Report) -> bool:
    return any(isinstance(b, Chart) for s in report.sections for b in s.blocks)


def _kind(block: object) -> str:
    if not isinstance(block, (Paragraph, Subheading, Bullets, Table, Chart)):
        raise TypeError(f"cannot render a {type(block).__name__} block")
    return type(block).__name__


_ENV = Environment(loader=PackageLoader("harness", "templates"), autoescape=True,
                   keep_trailing_newline=True)
_ENV.filters["br"] = br
_ENV.globals.update(kind=_kind, cell_class=_cell_class, spec_json=spec_json)


def _scripts(report: Report) -> dict[str, Any]:
    if not has_charts(report):
        return {"bundle": None, "boot": None}
    return {"bundle": Markup(vega.bundle()), "boot": Markup(BOOT)}


def render_html(report: Report) -> str:
    """The whole report as one HTML document (a string)."""
    return _ENV.get_template("report.html.j2").render(report=report, **_scripts(report))
