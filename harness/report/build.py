"""The report's content, built once from the results and rendered to every format."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from harness import __version__
from harness.report import (
    sec_compare,
    sec_compile,
    sec_costs,
    sec_decode,
    sec_overview,
    sec_seeds,
    sec_summary,
    sec_theory,
)
from harness.report.context import Context
from harness.report.inputs import RunInfo
from harness.report.model import Report, Section

Builder = Callable[[Context], Section | None]


#: Section builders in report order. A builder returns None when the results give its
#: section nothing to show (one run: nothing to compare; no decode, compiled or
#: relative/local 2D/cross attention cases): the section is then absent from the HTML
#: navigation and the PDF contents instead of a heading over "nothing here".
SECTIONS: tuple[Builder, ...] = (
    sec_overview.summary,
    sec_compare.compare,
    sec_summary.runs,
    sec_theory.table1,
    sec_theory.scaling,
    sec_theory.exponents,
    sec_theory.crossovers,
    sec_decode.decoding,
    sec_compile.compiled,
    sec_seeds.seeds,
    sec_costs.flops,
    sec_costs.memory,
    sec_costs.roofline,
    sec_summary.environment,
    sec_summary.cases,
)


def _title(runs: list[RunInfo]) -> str:
    suites = list(dict.fromkeys(r.suite or r.name for r in runs))
    return "Complexity report: " + ", ".join(suites)


def _subtitle(df: pd.DataFrame, runs: list[RunInfo]) -> str:
    parts = [f"{len(df)} cases from {len(runs)} run{'s' if len(runs) != 1 else ''}"]
    if "env_time_utc" in df.columns:
        times = sorted(str(v) for v in df["env_time_utc"].dropna().unique())
        if times:
            span = times[0][:16].replace("T", " ")
            if times[-1][:16] != times[0][:16]:
                span += " to " + times[-1][:16].replace("T", " ")
            parts.append(f"measured {span} UTC")
    parts.append(f"report by harness {__version__}")
    return " · ".join(parts)


def build_report(df: pd.DataFrame, runs: list[RunInfo]) -> Report:
    """The report's sections from the combined results (``run`` column included), those
    with nothing to show left out."""
    ctx = Context(df, runs)
    sections = [make(ctx) for make in SECTIONS]
    return Report(_title(runs), _subtitle(df, runs), [s for s in sections if s is not None])
