"""Sections on costs: FLOP reconciliation, memory and the OOM frontier, the roofline."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness import schema
from harness.analysis.efficiency import efficiency, memory_frontier
from harness.analysis.flops import RTOL, flop_reconciliation
from harness.analysis.frame import numeric
from harness.report import fmt
from harness.report.charts_sections import memory_chart, roofline_chart
from harness.report.context import Context
from harness.report.model import Block, Cell, Paragraph, Section, Table


def _range(values: pd.Series, show: Any = fmt.num) -> str:
    v = values.dropna()
    if v.empty:
        return "–"
    lo, hi = v.min(), v.max()
    return show(lo) if lo == hi else f"{show(lo)} – {show(hi)}"


def _ratio(values: pd.Series) -> str:
    v = values.dropna()
    if v.empty:
        return "not counted"
    return _range(v, lambda x: f"{x:.3f}")


def _distinct(values: pd.Series) -> list[str]:
    out: list[str] = []
    for v in values.tolist():
        if isinstance(v, str) and v.strip() and v != "ok":
            for part in v.split("; "):
                if part not in out:
                    out.append(part)
    return out


def flops(ctx: Context) -> Section:
    blocks: list[Block] = [Paragraph(
        "FLOPs from three sources, per layer and variant over its cases: the analytic model, "
        "fvcore (converted from its 1 per multiply-add to 2) and torch's FlopCounterMode, "
        f"as counter / analytic ratios (agreement within ±{RTOL:.0%}). 'executed / useful' is "
        "the work a variant executes over what the math needs (e.g. a band-matrix "
        "convolution): not a counter error. Ops a counter could not count are listed; a "
        "counter that gave nothing is 'not counted'.")]
    if "flops_analytic" not in ctx.df.columns or numeric(ctx.df, "flops_analytic").isna().all():
        blocks.append(Paragraph("No analytic FLOP count is recorded in these results: nothing "
                                "to reconcile."))
        return Section("flops", "FLOP reconciliation", blocks)
    rec = ctx.per_run(flop_reconciliation)
    rec = rec[rec["status"].astype(object).eq("ok").fillna(False).astype(bool)]
    if rec.empty:
        blocks.append(Paragraph("No case with status ok has an analytic FLOP count."))
        return Section("flops", "FLOP reconciliation", blocks)
    columns = [*ctx.lead_columns(), "layer", "variant", "cases", "analytic FLOPs",
               "fvcore / analytic", "torch / analytic", "executed / useful", "uncounted ops",
               "verdict"]
    rows = []
    groups = rec.groupby(["run", "layer", "variant"], sort=False, dropna=False)
    keys = ctx.sort(pd.DataFrame(list(groups.groups), columns=["run", "layer", "variant"]))
    for _, key in keys.iterrows():
        sub = groups.get_group((key["run"], key["layer"], key["variant"]))
        issues = _distinct(sub["flag"])
        counted = sub["fvcore_agrees"].notna().any() or sub["torch_agrees"].notna().any()
        verdict = "disagrees" if issues else ("agrees" if counted else "n/a")
        uncounted = _distinct(sub["flops_uncounted"].astype(object))
        text = fmt.verdict(verdict) + ("\n" + "\n".join(i for i in issues
                                                        if not i.startswith("uncounted"))
                                       if issues else "")
        rows.append([*ctx.lead(key), Cell(fmt.text(key["layer"])), Cell(fmt.text(key["variant"])),
                     Cell(str(len(sub))), Cell(_range(sub["flops_analytic"], fmt.si)),
                     Cell(_ratio(sub["ratio_fvcore"])), Cell(_ratio(sub["ratio_torch"])),
                     Cell(_range(sub["executed_over_useful"], lambda x: f"{x:.3g}×")),
                     Cell(", ".join(uncounted) or "–"), Cell(text.strip(), verdict)])
    lead = len(ctx.lead_columns())
    blocks.append(Table(columns, rows, "Ranges are min – max over the layer's cases.",
                        frozenset(range(lead + 2, lead + 7))))
    return Section("flops", "FLOP reconciliation", blocks)


def memory(ctx: Context) -> Section:
    blocks: list[Block] = []
    chart = memory_chart(ctx.df, ctx.look)
    if chart is not None:
        blocks.append(chart)
    frontier = ctx.per_run(memory_frontier) if "seq_len" in ctx.df.columns else pd.DataFrame()
    if frontier.empty:
        blocks.append(Paragraph("No case ran or ran out of memory along n: there is no "
                                "memory curve or OOM frontier to show."))
        return Section("memory", "Memory and OOM frontier", blocks)
    frontier = ctx.sort(frontier, "fixed")
    columns = [*ctx.lead_columns(), "layer", "variant", "at", "cases ok", "largest n ok",
               "peak memory there", "first n OOM", "first n timeout", "other failures",
               "consistent"]
    rows = []
    for _, f in frontier.iterrows():
        other = int(f["n_failed"]) - int(f["n_oom"])
        consistent = bool(f["consistent"])
        rows.append([*ctx.lead(f), Cell(fmt.text(f["layer"])), Cell(fmt.text(f["variant"])),
                     Cell(ctx.short(f["fixed"]) or "–"), Cell(fmt.text(f["n_ok"])),
                     Cell(fmt.num(f["largest_ok"])), Cell(fmt.nbytes(f["peak_mem_at_largest_ok"])),
                     Cell(fmt.num(f["smallest_oom"]), "disagrees" if f["n_oom"] else None),
                     Cell(fmt.num(f["smallest_timeout"])), Cell(str(other)),
                     Cell("yes" if consistent else "no: OOM below a size that ran",
                          None if consistent else "inconclusive")])
    lead = len(ctx.lead_columns())
    n_oom = int(frontier["n_oom"].sum())
    blocks.append(Paragraph(
        f"The OOM frontier per sweep along n: the largest n that ran and the smallest that "
        f"ran out of memory ({n_oom} OOM case(s) in all). 'consistent' is no where an OOM "
        "happened below a size that ran (a fragmented or shared device; worth a rerun)."))
    blocks.append(Table(columns, rows, "", frozenset(range(lead + 3, lead + 9)))
                  .drop_blank("at", "first n OOM", "first n timeout"))
    return Section("memory", "Memory and OOM frontier", blocks)


def roofline(ctx: Context) -> Section:
    blocks: list[Block] = []
    eff = ctx.per_run(efficiency)
    chart = roofline_chart(ctx.df, ctx.look)
    if chart is None or eff.empty:
        blocks.append(Paragraph("No case with status ok recorded both achieved FLOP/s and "
                                "arithmetic intensity: there is no roofline to draw."))
        return Section("roofline", "Roofline", blocks)
    for info, _ in ctx.run_frames():
        sub = eff[eff["run"] == info.name]
        peak = sub["peak_flops"].dropna()
        bw = sub["peak_bytes_per_s"].dropna()
        source = sub["peak_source"].dropna()
        where = f"{info.name}: " if ctx.many else ""
        if peak.empty:
            blocks.append(Paragraph(f"{where}no device peak recorded (env_peak_flops): "
                                    "fractions of peak are not computed."))
        else:
            blocks.append(Paragraph(
                f"{where}peak {fmt.si(peak.iloc[0], 'FLOP/s')}"
                + (f" and {fmt.si(bw.iloc[0], 'B/s')}" if not bw.empty else "")
                + (f", source: {source.iloc[0]}" if not source.empty else "") + "."))
    blocks.append(chart)
    eff = eff[eff["flops_per_s"].notna()]
    columns = [*ctx.lead_columns(), "layer", "variant", "best FLOP/s", "at", "% of peak",
               "intensity (FLOP/B)", "bound", "% of roofline"]
    rows = []
    best = eff.loc[eff.groupby(["run", "layer", "variant"], sort=False)["flops_per_s"].idxmax()]
    for _, b in ctx.sort(best).iterrows():
        at = ", ".join(f"{fmt.AXIS_SYMBOL[a]}={fmt.num(b[a])}" for a in schema.MAIN_AXES
                       if a in b and not fmt.missing(b[a]))
        frac, roof = b["fraction_of_peak"], b["fraction_of_roofline"]
        rows.append([*ctx.lead(b), Cell(fmt.text(b["layer"])), Cell(fmt.text(b["variant"])),
                     Cell(fmt.si(b["flops_per_s"], "FLOP/s")), Cell(at or "–"),
                     Cell(fmt.pct(frac) + (" (above peak!)" if frac > 1 else "")),
                     Cell(fmt.num(b["arithmetic_intensity"])), Cell(fmt.text(b["bound"], "–")),
                     Cell(fmt.pct(roof))])
    lead = len(ctx.lead_columns())
    blocks.append(Table(columns, rows, "Each layer's best case by achieved FLOP/s.",
                        frozenset({lead + 2, lead + 4, lead + 5, lead + 7})))
    return Section("roofline", "Roofline", blocks)



