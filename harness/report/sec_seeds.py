"""The "Other attention forms" section (issue 14): relative, local 2D and cross attention's
claims with their measured exponents and verdicts, and the relative-attention memory figure.

Reads only the results frame (harness.analysis.seeds); results without such sweeps give
no section.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.analysis.seeds import (
    local2d_vs_attention,
    relative_extra_memory,
    seeds_claims,
)
from harness.analysis.table1 import EXPONENT_TOL
from harness.report import fmt
from harness.report.charts_sections import relative_chart
from harness.report.context import Context
from harness.report.model import Block, Cell, Paragraph, Section, Table

TITLE = "Other attention forms: relative, local 2D, cross"
_CLAIMS = {
    "relative": "Relative attention: memory beyond plain attention grows as n² d_h "
                "(materialized, Shaw) vs n² with no d_h factor (skewed, Music Transformer)",
    "local2d": "Local 2D attention: O(n M d) time and O(n M) memory (blocked) against full "
               "attention's O(n² d), O(n²)",
    "cross": "Cross attention: forward O(n m d); a decode step depends on m, not on n",
}
_METRIC = {"peak_mem_bytes": "memory", "time_ms_median": "time"}


def _metric(claim: str, metric: str) -> str:
    if claim == "relative" and metric == "peak_mem_bytes":
        return "memory beyond attention"
    return _METRIC.get(metric, metric)


def _slope(row: Any) -> str:
    return fmt.slope(row["slope"], row["ci_half_width"])


def _claims_table(ctx: Context, claims: pd.DataFrame) -> Table:
    columns = [*ctx.lead_columns(), "claim", "layer · variant", "mode", "metric", "along",
               "at", "points", "measured exponent", "model", "verdict"]
    rows = []
    for _, r in claims.iterrows():
        rows.append([*ctx.lead(r), Cell(r["claim"]),
                     Cell(f"{r['layer']} · {r['variant']}"), Cell(fmt.text(r["mode"])),
                     Cell(_metric(r["claim"], r["metric"])),
                     Cell(fmt.AXIS_SYMBOL.get(r["axis"], r["axis"])),
                     Cell(ctx.short(r["fixed"], r["layer"]) or "–"),
                     Cell(fmt.num(r["n_points"])), Cell(_slope(r)),
                     Cell(fmt.exponent(r["model_slope"])),
                     Cell(f"{fmt.verdict(r['verdict'])}\n{r['reason']}", r["verdict"])])
    return Table(columns, rows, "Log-log slopes with their 95% interval, judged against the "
                 "analytic model over the same points (activations for memory, FLOPs for "
                 f"time) within max({EXPONENT_TOL}, the interval). Relative attention's "
                 "memory is its peak minus plain attention's peak at the same case.")


def _local_table(ctx: Context, side: pd.DataFrame) -> Table:
    columns = [*ctx.lead_columns(), "image", "n", "d", "variant", "local 2D time",
               "attention time", "speed-up", "local 2D memory", "attention memory",
               "memory ratio", "path length (measured / analytic)"]
    rows = []
    for _, r in side.iterrows():
        path = (f"{fmt.num(r.get('path_length_measured'))} / "
                f"{fmt.num(r.get('path_length_analytic'))}")
        rows.append([*ctx.lead(r), Cell(f"{fmt.num(r['height'])}×{fmt.num(r['width'])}"),
                     Cell(fmt.num(r["seq_len"])), Cell(fmt.num(r["d_model"])),
                     Cell(fmt.text(r["variant"])), Cell(fmt.ms(r["time_ms_median"])),
                     Cell(fmt.ms(r["attention_ms"])), Cell(f"{fmt.num(r['time_ratio'])}×"),
                     Cell(fmt.nbytes(r["peak_mem_bytes"])),
                     Cell(fmt.nbytes(r["attention_peak_bytes"])),
                     Cell(f"{fmt.num(r['memory_ratio'])}×"), Cell(path)])
    return Table(columns, rows, "Local 2D attention against full attention at the same n "
                 "(positions of the image) and d; ratios are attention's over local 2D's. "
                 "Path length '–': not measured (n above the structure probe's limit).")


def seeds(ctx: Context) -> Section | None:
    """The section, or None without relative, local 2D or cross attention sweeps."""
    claims = ctx.sort(ctx.per_run(seeds_claims))
    if claims.empty:
        return None
    blocks: list[Block] = [Paragraph(
        "The seed notes' attention forms beside plain self-attention (issue 14): each "
        "claim's fitted exponents from these results, per layer and variant.")]
    for claim, text in _CLAIMS.items():
        part = claims[claims["claim"] == claim]
        if part.empty:
            continue
        verdicts = part["verdict"].value_counts()
        tally = ", ".join(f"{int(v)} {k}" for k, v in verdicts.items())
        blocks.append(Paragraph(f"{text}: {tally}."))
    blocks.append(_claims_table(ctx, claims))
    side = ctx.per_run(local2d_vs_attention)
    if not side.empty:
        blocks.append(_local_table(ctx, side))
    extra = ctx.per_run(relative_extra_memory)
    chart = relative_chart(extra, ctx.look) if not extra.empty else None
    if chart is not None:
        blocks.append(chart)
    return Section("seeds", TITLE, blocks)
