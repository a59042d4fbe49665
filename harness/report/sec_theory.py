"""Sections that judge the theory: Table 1 measured, scaling plots, exponents, crossovers."""

from __future__ import annotations

import functools
from typing import Any

import pandas as pd

from harness import schema
from harness.analysis.crossovers import crossovers as find_crossovers
from harness.analysis.exponents import (
    MAX_CI_HALF_WIDTH,
    MIN_POINTS,
    MIN_TAIL,
    fit_exponents,
    has_theory,
)
from harness.analysis.frame import numeric, ok_mask, timed, unreliable_mask, unreliable_phrase
from harness.analysis.table1 import EXPONENT_TOL, exponent_verdict, table1_measured
from harness.report import fmt
from harness.report.charts_sections import flop_metric, scaling_charts
from harness.report.context import Context
from harness.report.model import Block, Bullets, Cell, Paragraph, Section, Subheading, Table
from harness.values import count

AXES = schema.axis_names("size")
MAX_CROSSOVERS = 150
_WORST = {"disagrees": 3, "inconclusive": 2, "agrees": 1, "n/a": 0}


def swept_axes(df: pd.DataFrame) -> list[str]:
    """Axes with 2+ distinct values among ok rows of at least one layer and variant."""
    ok = df[ok_mask(df)]
    out = []
    for axis in AXES:
        if axis not in ok.columns or ok.empty:
            continue
        x = numeric(ok, axis)
        counts = x.groupby([ok["run"].astype(str), ok["layer"].astype(str),
                            ok["variant"].astype(str)]).nunique()
        if (counts >= 2).any():
            out.append(axis)
    return out


def _exp_cell(ctx: Context, row: Any, prefix: str, symbol: str) -> Cell:
    verdict = row.get(f"{prefix}_verdict")
    if verdict in (None, "n/a") and fmt.missing(row.get(f"{prefix}_exp")):
        return Cell(f"–\n{row.get(f'{prefix}_reason') or 'not measured'}", "n/a")
    if fmt.missing(row.get(f"{prefix}_exp")):  # inconclusive: no reliable point left
        return Cell(f"–\n{row.get(f'{prefix}_reason')}\n{fmt.verdict(verdict)}", str(verdict))
    lines = [f"{symbol}^{fmt.slope(row[f'{prefix}_exp'], row[f'{prefix}_ci'])}",
             f"model {fmt.slope(row[f'{prefix}_model'])} · theory "
             f"{fmt.exponent(row[f'{prefix}_theory'])}"]
    at = ctx.short(row.get(f"{prefix}_at"), row["layer"])
    if at:
        lines.append(f"at {at}")
    dropped = unreliable_phrase(count(row.get(f"{prefix}_unreliable")))
    if dropped:
        lines.append(dropped)
    lines.append(fmt.verdict(verdict))
    return Cell("\n".join(lines), str(verdict))


def _growth(row: Any, key: str, n_key: str) -> str:
    lo, hi = row.get(f"{key}_at_n_min"), row.get(f"{key}_at_n_max")
    n_lo, n_hi = row.get(f"{n_key}_n_min"), row.get(f"{n_key}_n_max")
    if n_lo == n_hi:
        return f"{fmt.num(lo)} at n={fmt.num(n_lo)}"
    return f"{fmt.num(lo)} → {fmt.num(hi)} (n={fmt.num(n_lo)} → {fmt.num(n_hi)})"


def _cls(value: Any) -> str:
    """A measured growth class; "unknown" (one n only) said in words."""
    return "growth unknown" if str(value) == "unknown" else str(value)


def _seq_cell(row: Any) -> Cell:
    verdict = row.get("seq_ops_verdict")
    if fmt.missing(row.get("seq_ops_at_n_min")):
        return Cell("–\nnot measured", "n/a")
    return Cell(f"{_growth(row, 'seq_ops', 'seq_ops')}\n{_cls(row.get('seq_ops_class'))}, theory "
                f"{row.get('seq_ops_theory')}\n{fmt.verdict(verdict)}", str(verdict))


def _path_cell(row: Any) -> Cell:
    if fmt.missing(row.get("path_at_n_min")):
        return Cell("–\nnot measured", "n/a")
    equal, cls = str(row.get("path_verdict")), str(row.get("path_class_verdict"))
    verdict = max((equal, cls), key=lambda v: _WORST.get(v, 0))
    versus = {"agrees": "= analytic", "disagrees": "≠ analytic"}.get(equal, "no analytic")
    return Cell(f"{_growth(row, 'path', 'path')}\n{versus}; {_cls(row.get('path_class'))}, theory "
                f"{row.get('path_theory')}\n{fmt.verdict(verdict)}", verdict)


_CELLS = (("flops_n", "FLOPs vs n", "n"), ("time_n", "time vs n", "n"),
          ("flops_d", "FLOPs vs d", "d"), ("time_d", "time vs d", "d"))


def table1(ctx: Context) -> Section:
    t1 = ctx.sort(ctx.per_run(table1_measured))
    blocks: list[Block] = [Paragraph(
        "Vaswani et al. 2017, Table 1 (and Wu et al. 2019's rows), measured: one row per "
        "layer and variant. An exponent is the log-log slope of the metric along n (or d) "
        "with its 95% interval; it agrees when it is within max("
        f"{EXPONENT_TOL}, the interval) of the exact analytic model over the same points "
        "(lower-order terms included) and the model is possible under the theory's "
        "exponent; too few points or too wide an interval is inconclusive. FLOPs are the "
        "torch counter's where it counted every case, else the analytic model (column 'FLOPs "
        "from'). Sequential operations and max path length are judged by their growth class "
        "over n (O(1), O(log n), O(n)) and path length also by measured = analytic at "
        "every n. Time exponents leave out cases whose timing was flagged unreliable "
        "(contention, GPU throttling or spread; drawn hollow in the plots) and say how many; "
        "too few reliable points left is inconclusive.")]
    if t1.empty:
        blocks.append(Paragraph("No cases: nothing to compare with Table 1."))
        return Section("table1", "Table 1, measured vs theory", blocks)
    cells = [c for c in _CELLS
             if not (t1[f"{c[0]}_verdict"].eq("n/a") & t1[f"{c[0]}_exp"].isna()).all()]
    dropped = [c[1] for c in _CELLS if c not in cells]
    columns = [*ctx.lead_columns(), "family", "layer", "variant", "theory (FLOPs)",
               "FLOPs from", *[c[1] for c in cells], "sequential ops", "max path length"]
    rows: list[Any] = []
    reasons: list[Any] = []
    unsure: dict[str, Any] = {}
    for _, row in t1.iterrows():
        name = f"{row['layer']} · {row['variant']}" + (f" ({row['run']})" if ctx.many else "")
        out = [*ctx.lead(row), Cell(fmt.text(row["family"])), Cell(fmt.text(row["layer"])),
               Cell(fmt.text(row["variant"])), Cell(fmt.text(row["complexity"])),
               Cell(str(row["flops_source"]).removeprefix("flops_"))]
        judged = [(title, row[f"{prefix}_verdict"], row[f"{prefix}_reason"])
                  for prefix, title, _ in cells]
        judged += [("sequential ops", row.get("seq_ops_verdict"), row.get("seq_ops_reason")),
                   ("max path length", row.get("path_verdict"), row.get("path_reason")),
                   ("max path length growth", row.get("path_class_verdict"),
                    row.get("path_class_reason"))]
        for prefix, _, symbol in cells:
            out.append(_exp_cell(ctx, row, prefix, symbol))
        out += [_seq_cell(row), _path_cell(row)]
        for title, verdict, reason in judged:
            if verdict == "disagrees":
                reasons.append(f"{name}, {title}: disagrees: {reason}")
            elif verdict == "inconclusive":
                why = str(reason).split(" (")[0].split(":")[0].split(";")[0]
                unsure.setdefault(why, []).append(f"{name} ({title})")
        if fmt.text(row.get("note")):
            reasons.append(f"{name}: {row['note']}")
        rows.append(out)
    blocks.append(Table(columns, rows, "Each cell: measured value, what it is compared with, "
                        "the verdict. 'at' names the sweep a fit used."))
    if dropped:
        blocks.append(Paragraph(f"Not shown ({', '.join(dropped)}): that axis was not swept "
                                "with 2+ values for any layer.", "small"))
    for why, where in unsure.items():
        reasons.append(f"Inconclusive, {why}: {len(where)} cell(s): " + ", ".join(where) + ".")
    if reasons:
        blocks.append(Subheading("Where the measurements disagree, and notes"))
        blocks.append(Bullets(tuple(reasons)))
    return Section("table1", "Table 1, measured vs theory", blocks)


def scaling(ctx: Context) -> Section:
    blocks: list[Block] = []
    for axis in swept_axes(ctx.df):
        blocks.extend(scaling_charts(ctx.df, axis, ctx.look))
    if not blocks:
        blocks.append(Paragraph("No layer ran (status ok) at two or more values of any axis: "
                                "there is no scaling to plot."))
    return Section("scaling", "Scaling plots", blocks)


_METRIC_ORDER = ("flops_analytic", "flops_torch", "time_ms_median", "peak_mem_bytes")


def exponents(ctx: Context) -> Section:
    fits = ctx.per_run(fit_exponents)
    blocks: list[Block] = [Paragraph(
        "Log-log least-squares slope of each metric along each swept axis, every other "
        "parameter fixed, with its 95% confidence interval and R². With more than "
        f"{MIN_TAIL} distinct axis values only the largest half (at least {MIN_TAIL}) is "
        "fitted, closer to the asymptote ('points' says which). A fit is flagged with fewer "
        f"than {MIN_POINTS} points or a half-width above {MAX_CI_HALF_WIDTH}. 'model' is the "
        "slope of the exact analytic model (activation estimate for memory) over the same "
        "points; 'theory' the asymptotic FLOP exponent of Table 1 (lowest..highest term where "
        "they differ). Values of 0 or missing (a counter that counted nothing) are left out "
        "of a fit and counted, and so are times flagged unreliable (contention, GPU "
        "throttling or spread): a time fit they leave with fewer than "
        f"{MIN_POINTS} points is flagged 'too few reliable points'.")]
    if fits.empty or fits["slope"].isna().all():
        blocks.append(Paragraph("No sweep had two or more usable points: nothing was fitted."))
        return Section("exponents", "Fitted exponents", blocks)
    unfitted = int(fits["slope"].isna().sum())
    all_unreliable = int((fits["slope"].isna() & (fits["flag"] == "too few reliable points"))
                         .sum())
    fits = fits[fits["slope"].notna()]
    fits = fits.assign(_m=fits["metric"].map(
        {m: i for i, m in enumerate(_METRIC_ORDER)}).fillna(len(_METRIC_ORDER)),
        _a=fits["axis"].map({a: i for i, a in enumerate(AXES)}))
    fits = ctx.sort(fits, "_m", "_a", "fixed")
    columns = [*ctx.lead_columns(), "layer", "variant", "metric", "axis", "at", "slope (±95%)",
               "R²", "points", "model", "theory", "flag", "verdict"]
    rows = []
    for _, f in fits.iterrows():
        theory = f["theory_exponent"]
        if not fmt.missing(theory) and f["theory_low"] != theory:
            theory_txt = f"{fmt.exponent(f['theory_low'])}..{fmt.exponent(theory)}"
        else:
            theory_txt = fmt.exponent(theory)
        verdict = exponent_verdict(f)[0] if has_theory(str(f["metric"])) else "n/a"
        left_out = [f"{int(f['n_excluded'])} left out" if f["n_excluded"] else "",
                    unreliable_phrase(count(f.get("excluded_unreliable")))]
        excluded = "; ".join(p for p in left_out if p)
        excluded = f" ({excluded})" if excluded else ""
        flag = str(f["flag"])
        rows.append([*ctx.lead(f), Cell(fmt.text(f["layer"])), Cell(fmt.text(f["variant"])),
                     Cell(fmt.METRIC_SHORT.get(str(f["metric"]), str(f["metric"]))),
                     Cell(fmt.AXIS_SYMBOL.get(str(f["axis"]), str(f["axis"]))),
                     Cell(ctx.short(f["fixed"]) or "–"),
                     Cell(fmt.slope(f["slope"], f["ci_half_width"])),
                     Cell(f"{f['r2']:.3f}" if not fmt.missing(f["r2"]) else "–"),
                     Cell(f"{f['fit_range']}{excluded}"), Cell(fmt.slope(f["model_slope"])),
                     Cell(theory_txt), Cell(flag, None if flag == "ok" else "inconclusive"),
                     Cell(fmt.verdict(verdict), verdict)])
    lead = len(ctx.lead_columns())
    blocks.append(Table(columns, rows, "", frozenset({lead + 5, lead + 6, lead + 8,
                                                      lead + 9})).drop_blank("at"))
    if unfitted:
        why = (f" ({all_unreliable} of them because their timings were unreliable)"
               if all_unreliable else "")
        blocks.append(Paragraph(f"{unfitted} sweep(s) with fewer than two usable points are "
                                f"not listed{why}.", "small"))
    return Section("exponents", "Fitted exponents", blocks)


def _pair_rank(row: Any) -> tuple:
    fams = {row["family_a"], row["family_b"]}
    return (fams != {"self-attention", "recurrent"}, "self-attention" not in fams,
            row["family_a"] == row["family_b"])


def crossovers(ctx: Context) -> Section:
    blocks: list[Block] = [Paragraph(
        "Where one layer's cost curve passes another's along an axis (every other shared "
        "parameter fixed): between the two measured points around a sign change both curves "
        "are taken as straight lines in log-log space and the crossing is where they meet; "
        "nothing is extrapolated. Table 1 (Vaswani et al., sec. 4) puts the FLOP crossover "
        "of self-attention and recurrence near n = d (attention is cheaper while n < d); "
        "attention-vs-recurrence pairs are listed first.")]
    axes = [a for a in swept_axes(ctx.df) if a in schema.MAIN_AXES]
    metrics = [m for m in (flop_metric(ctx.df), "time_ms_median", "peak_mem_bytes") if m]
    ok = ctx.df[ok_mask(ctx.df)]
    flagged = int(unreliable_mask(ok).sum())
    if flagged and any(timed(m) for m in metrics if m in ctx.df.columns):
        blocks.append(Paragraph(
            f"Time crossovers leave out the {flagged} case(s) whose timing was flagged "
            "unreliable; 'unreliable excluded' counts them per pair of curves (a curve left "
            "with fewer than two points is not compared).", "small"))
    found = []
    for axis in axes:
        for metric in metrics:
            if metric not in ctx.df.columns:
                continue
            found.append(ctx.per_run(functools.partial(find_crossovers, metric=metric, axis=axis)))
    found = [f for f in found if not f.empty]
    if not found:
        blocks.append(Paragraph("No two curves cross within the measured range."))
        return Section("crossovers", "Crossovers", blocks)
    table = pd.concat(found, ignore_index=True)
    run_rank = {r.name: i for i, r in enumerate(ctx.runs)}
    table = table.assign(
        _run=table["run"].map(run_rank), _rank=[_pair_rank(r) for _, r in table.iterrows()],
        _m=table["metric"].map({m: i for i, m in enumerate(metrics)}),
        _a=table["axis"].map({a: i for i, a in enumerate(AXES)}))
    table = table.sort_values(["_run", "_a", "_m", "_rank", "layer_a", "variant_a", "layer_b",
                               "variant_b", "fixed", "crossover_at"], kind="stable")
    total = len(table)
    table = table.head(MAX_CROSSOVERS)
    columns = [*ctx.lead_columns(), "metric", "axis", "cheaper below", "cheaper above",
               "crosses at", "measured between", "at", "layer parameters",
               "unreliable excluded"]
    rows = []
    for _, c in table.iterrows():
        symbol = fmt.AXIS_SYMBOL.get(str(c["axis"]), str(c["axis"]))
        where = (f"{symbol} = {fmt.num(c['crossover_at'])}" if c["exact"] else
                 f"{symbol} ≈ {fmt.num(c['crossover_at'])}")
        params = "; ".join(f"{lay}: {p}" for lay, p in
                           ((c["layer_a"], c["params_a"]), (c["layer_b"], c["params_b"])) if p)
        rows.append([*ctx.lead(c), Cell(fmt.METRIC_SHORT.get(str(c["metric"]), c["metric"])),
                     Cell(symbol), Cell(fmt.text(c["cheaper_below"])),
                     Cell(fmt.text(c["cheaper_above"])), Cell(where),
                     Cell(f"{fmt.num(c['bracket_low'])} – {fmt.num(c['bracket_high'])}"),
                     Cell(ctx.short(c["fixed"]) or "–"), Cell(params or "–"),
                     Cell(str(count(c.get("excluded_unreliable")) or "–"))])
    lead = len(ctx.lead_columns())
    blocks.append(Table(columns, rows, "Layers are named layer/variant.",
                        frozenset({lead + 4, lead + 5, lead + 8}))
                  .drop_blank("at", "layer parameters", "unreliable excluded"))
    if total > len(table):
        blocks.append(Paragraph(f"{total - len(table)} more crossovers not listed "
                                "(harness.analysis.crossovers has them all).", "small"))
    return Section("crossovers", "Crossovers", blocks)
