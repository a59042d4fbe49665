"""Vega-Lite for reports: the JavaScript the HTML inlines, and static renders for the PDF.

``vl-convert-python`` carries Vega, Vega-Lite and Vega-Embed (no network, no browser, no
node): :func:`bundle` is the one script an HTML report inlines, :func:`pdf` draws a spec the
way the browser does, as a one-page vector PDF (real text, fonts embedded) that the PDF
report lays onto its page. Both use the same pinned Vega-Lite version, so the interactive
and the printed figure come from one spec.

Why Vega-Lite and not plotly: the inlined bundle is about 0.9 MB against plotly.js's 3.5 MB
(the 5 MB budget of the Table-1 report), a chart is plain JSON (testable, escapable), and
vl-convert renders it without a browser.
"""

from __future__ import annotations

from functools import cache
from typing import Any

VL_VERSION = "6.4"
#: The legend title of an interactive chart, and what paper gets instead.
LEGEND_HINT, LEGEND_PRINT = "click to pick (shift: more)", "layer · variant"


@cache
def bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed as one script that sets ``window.vegaEmbed``."""
    import vl_convert

    return str(vl_convert.javascript_bundle("window.vegaEmbed = vegaEmbed;",
                                            vl_version=VL_VERSION))


def static_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec without what only a browser uses (bound inputs draw nothing on paper)."""
    def strip(node: Any) -> Any:
        if node == LEGEND_HINT:
            return LEGEND_PRINT
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "bind"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(spec)


def pdf(spec: dict[str, Any]) -> bytes:
    """The chart as a one-page vector PDF drawn by Vega itself (no browser); the page is the
    chart's size with one point per CSS pixel."""
    import vl_convert

    return bytes(vl_convert.vegalite_to_pdf(static_spec(spec), vl_version=VL_VERSION))
