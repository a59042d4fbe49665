"""The ``harness history --out`` page: one self-contained HTML file, plots inline as PNG.

Every string that comes from a file (labels, run names, paths) is HTML-escaped (jinja2
autoescape); the page loads nothing from the network.
"""

from __future__ import annotations

import base64
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
    """The page (template ``harness/templates/history.html.j2``)."""
    from jinja2 import Environment, PackageLoader

    by_layer: dict[str, list[CaseHistory]] = defaultdict(list)
    rows = []
    for case in hist.cases:
        by_layer[case.layer].append(case)
        step = case.first_step
        rows.append({"label": case.label, "runs": len(case.points),
                     "first": fmt_time(case.points[0][1]), "latest": fmt_time(case.points[-1][1])})
        if step is not None:
            rows[-1].update(step_run=step_run(hist, case, step).name, change=f"{step.change:+.1%}",
                            before=fmt_time(math.exp(step.before)),
                            after=fmt_time(math.exp(step.after)))
    plots = [(layer, _png(hist, cases, layer)) for layer, cases in by_layer.items()]
    env = Environment(loader=PackageLoader("harness", "templates"), autoescape=True,
                      keep_trailing_newline=True)
    return env.get_template("history.html.j2").render(hist=hist, rows=rows, plots=plots)
