"""The ``harness history --out`` page: one self-contained HTML file, plots inline as PNG.

Every string that comes from a file (labels, run names, paths) is HTML-escaped; the page
loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import defaultdict

from harness.bench.history import CaseHistory, History, step_run
from harness.bench.render import fmt_time


def _png(hist: History, cases: list[CaseHistory], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=90)
    for case in cases:
        xs = [p[0] for p in case.points]
        ys = [p[1] * 1e3 for p in case.points]
        lo = [(p[1] - p[2]) * 1e3 if p[2] is not None else 0.0 for p in case.points]
        hi = [(p[3] - p[1]) * 1e3 if p[3] is not None else 0.0 for p in case.points]
        line = ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", ms=3, lw=1, capsize=2,
                           label=case.label)
        if case.first_step is not None:
            run = step_run(hist, case, case.first_step)
            ax.axvline(run.index - 0.5, color=line[0].get_color(), ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("run (in recorded order)")
    ax.set_ylabel("median time per call (ms)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def history_html(hist: History) -> str:
    esc = html.escape
    by_layer: dict[str, list[CaseHistory]] = defaultdict(list)
    for case in hist.cases:
        by_layer[case.layer].append(case)
    rows = []
    for case in hist.cases:
        step = case.first_step
        where = (f"{esc(step_run(hist, case, step).name)} ({step.change:+.1%}: "
                 f"{fmt_time(math.exp(step.before))} &rarr; {fmt_time(math.exp(step.after))})"
                 if step else "&ndash;")
        rows.append(f"<tr><td><code>{esc(case.label)}</code></td><td>{len(case.points)}</td>"
                    f"<td>{fmt_time(case.points[0][1])}</td>"
                    f"<td>{fmt_time(case.points[-1][1])}</td><td>{where}</td></tr>")
    runs = "".join(f"<li>{r.index}: <code>{esc(r.name)}</code> "
                   f"({esc(r.recorded_at.isoformat())})</li>" for r in hist.runs)
    plots = "".join(
        f"<h3>{esc(layer)}</h3><img alt=\"{esc(layer)} history\" "
        f"src=\"data:image/png;base64,{_png(hist, cases, layer)}\">"
        for layer, cases in by_layer.items()
    )
    skipped = "".join(f"<li>{esc(s)}</li>" for s in hist.skipped)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Benchmark history: {esc(str(hist.folder))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 60em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 2px 8px; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Benchmark history</h1>
<p>{len(hist.runs)} runs under <code>{esc(str(hist.folder))}</code>, in recorded order.
A <em>step</em> is where an L1 piecewise-constant fit of log median time starts a new level
(asv-style); the first step of at least {hist.threshold:.0%} is listed and drawn as a dashed
line. Error bars: interquartile range of the run's samples.</p>
<table><tr><th>case</th><th>runs</th><th>first</th><th>latest</th><th>first step</th></tr>
{''.join(rows)}</table>
<h2>Trends</h2>{plots}
<h2>Runs</h2><ol start="0">{runs}</ol>
{f'<h2>Skipped files</h2><ul>{skipped}</ul>' if skipped else ''}
</body></html>
"""
