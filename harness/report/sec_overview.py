"""The first screen: what was run and what it shows in a few sentences, the headline chart,
Table 1 as marks, the crossovers as a chart, and at most ten findings, most important first.

Everything here is a summary of a section further down (Table 1, crossovers, scaling); the
details stay there. Numbers come from harness.analysis, never from this module.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.analysis.crossovers import crossovers as find_crossovers
from harness.analysis.frame import numeric, ok_mask, unreliable_mask
from harness.analysis.headlines import findings
from harness.analysis.table1 import table1_measured
from harness.report import charts, fmt, sec_compare
from harness.report.context import Context
from harness.report.model import Block, Bullets, Cell, Paragraph, Section, Subheading, Table

MAX_FINDINGS = 10
MARK = {"agrees": "✓", "disagrees": "✗", "inconclusive": "?", "n/a": "–"}
#: compact Table 1 columns: (title, verdict column, value shown, reason column)
_COLUMNS = (("FLOPs ∝ n^", "flops_n_verdict", "flops_n_exp", "flops_n_reason"),
            ("time ∝ n^", "time_n_verdict", "time_n_exp", "time_n_reason"),
            ("FLOPs ∝ d^", "flops_d_verdict", "flops_d_exp", "flops_d_reason"),
            ("time ∝ d^", "time_d_verdict", "time_d_exp", "time_d_reason"),
            ("seq. ops", "seq_ops_verdict", "seq_ops_class", "seq_ops_reason"),
            ("path = analytic", "path_verdict", None, "path_reason"),
            ("path growth", "path_class_verdict", "path_class", "path_class_reason"))


def _verdict(value: Any) -> str:
    return str(value) if str(value) in MARK else "n/a"


def _mark_cell(row: Any, verdict_col: str, value_col: str | None, reason_col: str) -> Cell:
    verdict = _verdict(row.get(verdict_col))
    value = row.get(value_col) if value_col else None
    if isinstance(value, (int, float)) and not fmt.missing(value):
        shown = f"{float(value):.2f}"
    elif value_col and not fmt.missing(value) and str(value) != "unknown":
        shown = str(value)
    else:
        shown = ""
    text = f"{MARK[verdict]} {shown}".strip()
    return Cell(text, verdict, f"{verdict}: {fmt.text(row.get(reason_col)) or 'not measured'}")


def compact_table1(ctx: Context, t1: pd.DataFrame) -> Table | None:
    """One row per layer and variant, a coloured mark per Table-1 check, the reason on hover."""
    if t1.empty:
        return None
    shown = [c for c in _COLUMNS if c[1] in t1.columns
             and not t1[c[1]].map(_verdict).eq("n/a").all()]
    rows = []
    for _, row in t1.iterrows():
        rows.append([*ctx.lead(row), Cell(f"{row['layer']} · {row['variant']}"),
                     Cell(fmt.text(row.get("complexity"))),
                     *[_mark_cell(row, *c[1:]) for c in shown]])
    columns = [*ctx.lead_columns(), "layer · variant", "theory FLOPs", *[c[0] for c in shown]]
    return Table(columns, rows, "✓ agrees, ✗ disagrees, ? inconclusive (fewer than 3 points, "
                 "too few reliable timings or too wide an interval), – not measured. Numbers: "
                 "fitted exponent or measured growth class; hover a cell for the reason, "
                 "section 'Table 1, measured vs theory' has every detail.",
                 compact=True)


def _range(df: pd.DataFrame, column: str) -> str:
    values = sorted(numeric(df, column).dropna().unique())
    if not values:
        return ""
    if len(values) > 3:
        return f"{fmt.num(values[0])}…{fmt.num(values[-1])} ({len(values)} values)"
    return ", ".join(fmt.num(v) for v in values)


def _what_ran(ctx: Context) -> str:
    df = ctx.df
    ok = int(ok_mask(df).sum())
    layers = df["layer"].astype(str).nunique()
    pairs = df[["layer", "variant"]].astype(str).drop_duplicates().shape[0]
    where = []
    for column in ("env_device_name", "device", "dtype", "mode"):
        if column in df.columns:
            values = [fmt.text(v) for v in dict.fromkeys(df[column].dropna().astype(str))]
            if values:
                where.append("/".join(values[:3]))
    sizes = [f"{sym} = {r}" for sym, col in (("n", "seq_len"), ("d", "d_model"))
             if (r := _range(df, col))]
    runs = f" from {len(ctx.runs)} runs" if ctx.many else ""
    return (f"{len(df)} cases{runs} ({ok} ran) of {layers} layers ({pairs} layer variants), "
            f"{', '.join(sizes)}, on {' · '.join(where)}.")


def _tally(t1: pd.DataFrame) -> str:
    cells = [(_verdict(v), str(r)) for c in _COLUMNS if c[1] in t1.columns
             for v, r in zip(t1[c[1]], t1[c[3]], strict=True)]
    judged = [v for v, _ in cells if v != "n/a"]
    if not judged:
        return "No check of Table 1 could be made (nothing measured)."
    counts = {v: judged.count(v) for v in ("agrees", "disagrees", "inconclusive")}
    why: dict[str, int] = {}
    for verdict, reason in cells:
        if verdict == "inconclusive":
            key = reason.split(" (")[0].split(":")[0]
            why[key] = why.get(key, 0) + 1
    causes = ", ".join(f"{k} {w}" for w, k in sorted(why.items(), key=lambda i: -i[1]))
    return (f"Against the papers' Table 1, {counts['agrees']} of {len(judged)} checks agree, "
            f"{counts['disagrees']} disagree and {counts['inconclusive']} are inconclusive"
            + (f" ({causes})." if causes else "."))


def _spread(t1: pd.DataFrame) -> str:
    """Which layer's time grows fastest and slowest with n (judged fits only)."""
    if "time_n_verdict" not in t1.columns:
        return ""
    judged = t1[t1["time_n_verdict"].isin(["agrees", "disagrees"]) & t1["time_n_exp"].notna()]
    if len(judged) < 2:
        return ""
    fast = judged.loc[judged["time_n_exp"].idxmax()]
    slow = judged.loc[judged["time_n_exp"].idxmin()]
    return (f"Time grows fastest with n for {fast['layer']} · {fast['variant']} "
            f"(n^{fast['time_n_exp']:.2f}) and slowest for {slow['layer']} · {slow['variant']} "
            f"(n^{slow['time_n_exp']:.2f}).")


def _attention_crossings(ctx: Context) -> str:
    """Where dense attention's time passes the recurrent layers' (first run, headline d)."""
    df = ctx.df[ctx.df["run"] == ctx.runs[0].name] if ctx.many else ctx.df
    found = charts.pick_slice(df)
    if found is None or "time_ms_median" not in found.rows.columns:
        return ""
    ref = charts.reference_layer(found.rows)
    if ref is None:
        return ""
    cross = find_crossovers(found.rows.drop(columns=["run"]), "time_ms_median", "seq_len")
    if cross.empty:
        return ""
    mine = cross[((cross["layer_a"] == ref[0]) & (cross["family_b"] == "recurrent"))
                 | ((cross["layer_b"] == ref[0]) & (cross["family_a"] == "recurrent"))]
    if mine.empty:
        return ""
    parts = []
    for _, c in mine.iterrows():
        other = (c["layer_b"], c["variant_b"]) if c["layer_a"] == ref[0] else \
            (c["layer_a"], c["variant_a"])
        parts.append((c["crossover_at"], f"{other[0]} · {other[1]} at n ≈ "
                                         f"{fmt.num(c['crossover_at'])}"))
    parts.sort()
    d = f" (d = {fmt.num(found.d)}; the paper: near n = d)" if found.d else ""
    return (f"In time, {ref[0]} becomes slower than " + "; ".join(p for _, p in parts[:4])
            + (f" and {len(parts) - 4} more" if len(parts) > 4 else "") + d + ".")


def _disturbed(ctx: Context) -> str:
    ok = ctx.df[ok_mask(ctx.df)]
    k = int(unreliable_mask(ok).sum())
    if not k:
        return ""
    return (f"{k} of {len(ok)} timings were disturbed (another process, throttling or "
            "spread): drawn hollow and left out of fits; section 'What was run' lists them.")


def summary(ctx: Context) -> Section:
    """The first screen."""
    t1 = ctx.sort(ctx.per_run(table1_measured))
    sentences = [_what_ran(ctx), sec_compare.answer(ctx) if ctx.many else "",
                 _tally(t1) if not t1.empty else "", _spread(t1), _attention_crossings(ctx)]
    blocks: list[Block] = [Paragraph(" ".join(s for s in sentences if s), "answer")]
    disturbed = _disturbed(ctx)
    if disturbed:
        blocks.append(Paragraph(disturbed, "small"))
    if ctx.df.empty or not ok_mask(ctx.df).any():
        blocks.append(Paragraph(
            "No case succeeded: nothing was fitted or drawn; the per-case table lists every "
            "case with its status and message.", "alert"))
    runs = [r.name for r in ctx.runs]
    chart = charts.headline(ctx.df, ctx.look, runs)
    if chart is not None:
        blocks.append(chart)
    table = compact_table1(ctx, t1)
    if table is not None:
        blocks += [Subheading("Table 1 at a glance"), table]
    cross = charts.crossover_chart(ctx.df, ctx.look, runs)
    if cross is not None:
        blocks += [Subheading("Crossovers"), cross]
    limit = max(3, MAX_FINDINGS // len(ctx.runs)) if ctx.runs else MAX_FINDINGS
    for info, sub in ctx.run_frames():
        found, total = findings(sub.drop(columns=["run"]), limit=limit)
        if not found:
            continue
        blocks.append(Subheading(f"Findings for {info.name}" if ctx.many else "Findings"))
        blocks.append(Bullets(tuple(found)))
        if total > len(found):
            blocks.append(Paragraph(f"{total - len(found)} more in the sections below.",
                                    "small"))
    return Section("summary", "Summary", blocks)

