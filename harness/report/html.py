"""Render a report as one self-contained HTML file.

Figures are inline PNGs (data: URIs), the style sheet is inline, there is no script and no
reference to anything outside the file, so it opens from disk, offline, without a server.
Every piece of text goes through :func:`html.escape` exactly once, here.
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib
from matplotlib.figure import Figure

from harness.report.model import Bullets, Paragraph, Plot, Report, Section, Subheading, Table
from harness.report.style import rc

DPI = 110

_CSS = """
:root { --fg:#1d1d1f; --muted:#5a5a5a; --line:#d9d9d9; --head:#eef1f5;
  --agrees:#d4e6f6; --disagrees:#fbd9bf; --inconclusive:#f6f0c4; --na:#efefef;
  --failed:#fbe3d2; }
* { box-sizing:border-box; }
body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; color:var(--fg);
  margin:0 auto; max-width:1280px; padding:24px 32px 64px; line-height:1.45; font-size:15px; }
h1 { font-size:1.7em; margin:0 0 4px; }
h2 { font-size:1.3em; margin:36px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
h3 { font-size:1.05em; margin:20px 0 6px; }
.sub { color:var(--muted); margin:0 0 16px; }
nav ol { columns:2; margin:8px 0 0; padding-left:22px; }
nav a { color:#0b5394; text-decoration:none; }
p.small { color:var(--muted); font-size:.9em; }
p.alert { background:var(--failed); border-left:5px solid #d55e00; padding:8px 12px;
  font-weight:600; }
ul { padding-left:22px; margin:6px 0; }
li { margin:3px 0; }
figure { margin:14px 0 22px; }
figure img { max-width:100%; height:auto; display:block; border:1px solid var(--line); }
figcaption { color:var(--muted); font-size:.88em; margin-top:6px; }
.tw { overflow-x:auto; margin:10px 0 6px; }
table { border-collapse:collapse; font-size:12.5px; }
caption { caption-side:bottom; text-align:left; color:var(--muted); font-size:.9em;
  padding-top:4px; }
th, td { border:1px solid var(--line); padding:4px 7px; vertical-align:top; text-align:left; }
th { background:var(--head); position:sticky; top:0; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tbody tr:nth-child(even) td:not([class*="t-"]) { background:#fafafa; }
.t-agrees { background:var(--agrees); }
.t-disagrees { background:var(--disagrees); }
.t-inconclusive { background:var(--inconclusive); }
.t-na { background:var(--na); color:var(--muted); }
.t-failed { background:var(--failed); }
td.t-agrees, td.t-disagrees, td.t-inconclusive, td.t-na { white-space:nowrap; }
.legend span { display:inline-block; padding:1px 8px; margin-right:6px;
  border:1px solid var(--line); }
@media print { body { max-width:none; padding:0; } h2 { break-before:page; }
  figure, tr { break-inside:avoid; } th { position:static; } }
"""

_TONE_CLASS = {"agrees": "t-agrees", "disagrees": "t-disagrees",
               "inconclusive": "t-inconclusive", "n/a": "t-na", "failed": "t-failed"}


def esc(value: object) -> str:
    """Escape text for HTML (quotes included); newlines become line breaks."""
    return html.escape(str(value), quote=True).replace("\n", "<br>")


def png(plot: Plot) -> bytes:
    """The plot as PNG bytes, drawn at its natural size with the report style."""
    with matplotlib.rc_context(rc()):
        fig = Figure(figsize=plot.size)
        plot.draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None},
                    facecolor="white")
    return buf.getvalue()


def _table(table: Table) -> str:
    out = ['<div class="tw"><table>']
    if table.caption:
        out.append(f"<caption>{esc(table.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in table.columns)
               + "</tr></thead><tbody>")
    for row in table.rows:
        cells = []
        for i, cell in enumerate(row):
            classes = [c for c in ("num" if i in table.numeric else "",
                                   _TONE_CLASS.get(cell.tone or "", "")) if c]
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{esc(cell.text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _plot(plot: Plot) -> str:
    data = base64.b64encode(png(plot)).decode("ascii")
    return (f'<figure><img alt="{esc(plot.alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(plot.caption)}</figcaption></figure>")


def _section(number: int, section: Section) -> str:
    out = [f'<section id="{esc(section.id)}"><h2>{number}. {esc(section.title)}</h2>']
    for block in section.blocks:
        if isinstance(block, Paragraph):
            cls = f' class="{block.kind}"' if block.kind != "p" else ""
            out.append(f"<p{cls}>{esc(block.text)}</p>")
        elif isinstance(block, Subheading):
            out.append(f"<h3>{esc(block.text)}</h3>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            out.append(_table(block))
        elif isinstance(block, Plot):
            out.append(_plot(block))
        else:
            raise TypeError(f"cannot render a {type(block).__name__} block")
    out.append("</section>")
    return "\n".join(out)


def render_html(report: Report) -> str:
    """The whole report as one HTML document (a string)."""
    toc = "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>'
                  for s in report.sections)
    legend = ('<p class="legend small">Cell colours: <span class="t-agrees">✓ agrees</span>'
              '<span class="t-disagrees">✗ disagrees</span>'
              '<span class="t-inconclusive">? inconclusive</span>'
              '<span class="t-na">– n/a</span><span class="t-failed">case did not run</span></p>')
    body = "\n".join(_section(i, s) for i, s in enumerate(report.sections, 1))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(report.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{esc(report.title)}</h1><p class=\"sub\">{esc(report.subtitle)}</p>"
        f"<nav><strong>Contents</strong><ol>{toc}</ol></nav>{legend}</header>\n"
        f"{body}\n</body>\n</html>\n"
    )
