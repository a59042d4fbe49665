"""The "Table 1, decoding" section: per-token cost and state against the context n."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.analysis.decoding import (
    decode_crossovers,
    decode_ratios,
    decode_rows,
    decode_table,
)
from harness.analysis.table1 import EXPONENT_TOL
from harness.report import fmt
from harness.report.charts_sections import scaling_charts
from harness.report.context import Context
from harness.report.model import Block, Bullets, Cell, Paragraph, Section, Table

_CELLS = (("flops", "FLOPs per token"), ("time", "time per token"), ("state", "state"))
_SHOW = {"flops": fmt.si, "time": fmt.ms, "state": fmt.nbytes}


def _cell(row: Any, tag: str) -> Cell:
    lo, hi = row.get(f"{tag}_at_n_min"), row.get(f"{tag}_at_n_max")
    show = _SHOW[tag]
    span = (f"{show(lo)} → {show(hi)}" if not fmt.missing(lo) and not fmt.missing(hi)
            else "–")
    exp = row.get(f"{tag}_exp")
    slope = "–" if fmt.missing(exp) else f"n^{fmt.slope(exp, row.get(f'{tag}_ci'))}"
    theory = row.get(f"{tag}_theory")
    verdict = str(row.get(f"{tag}_verdict"))
    lines = [span, f"{slope} · theory {fmt.exponent(theory)}", fmt.verdict(verdict)]
    return Cell("\n".join(lines), verdict)


def decoding(ctx: Context) -> Section | None:
    """The section, or None when the results hold no decode case (nothing to show)."""
    dec = decode_rows(ctx.df)
    if dec.empty:
        return None
    blocks: list[Block] = [Paragraph(
        "Generation (mode: decode; docs/metrics.md, 'Decoding'): each case times one step, "
        "one new token per sequence after n positions held in the layer's state (a KV cache "
        "for attention, a window for restricted attention, h (and c) for an RNN, the last "
        "k - 1 inputs for a convolution). Per layer and variant: the step's analytic FLOPs, "
        "its median time and the measured state bytes from the smallest to the largest n, "
        "each with its log-log slope in n against the per-token theory (attention: FLOPs "
        "8 d^2 + 4 n d, exponent between 0 and 1, state 2 n d, exponent 1; every other "
        f"layer: 0), judged as in Table 1 (within max({EXPONENT_TOL}, the 95% interval) of "
        "the analytic model over the same points).")]
    table = ctx.sort(ctx.per_run(decode_table))
    if table.empty:
        blocks.append(Paragraph("No decode case ran (status ok)."))
        return Section("decoding", "Table 1, decoding", blocks)
    columns = [*ctx.lead_columns(), "layer", "variant", "theory (per token)", "at", "n",
               *[c[1] for c in _CELLS]]
    rows = []
    for _, row in table.iterrows():
        rows.append([*ctx.lead(row), Cell(fmt.text(row["layer"])),
                     Cell(fmt.text(row["variant"])), Cell(fmt.text(row["complexity"])),
                     Cell(ctx.short(row["fixed"], row["layer"]) or "–"),
                     Cell(f"{fmt.num(row['n_min'])} – {fmt.num(row['n_max'])}"),
                     *[_cell(row, tag) for tag, _ in _CELLS]])
    blocks.append(Table(columns, rows, "Each cell: value at the smallest → largest n; "
                        "fitted exponent in n; verdict.").drop_blank("at"))
    crossings = ctx.per_run(decode_crossovers)
    blocks.append(_crossings(crossings, decode_ratios(dec)))
    blocks.extend(scaling_charts(dec, "seq_len", ctx.look,
                                metrics=("time_ms_median", "state_bytes")))
    return Section("decoding", "Table 1, decoding", blocks)


def _crossings(found: pd.DataFrame, ratios: pd.DataFrame) -> Block:
    """Where an attention step becomes slower than a DynamicConv / LightConv step, or
    which is faster throughout (attention's time over the other's at the ends of n)."""
    if found.empty:
        if ratios.empty:
            return Paragraph("Attention against DynamicConv / LightConv per-token time: not "
                             "both measured at a common n.")
        items = []
        for (a, b), sub in ratios.groupby(["layer_a", "layer_b"], sort=False):
            sub = sub.sort_values("seq_len")
            lo, hi = sub.iloc[0], sub.iloc[-1]
            slower = "slower" if (sub["ratio"] > 1).all() else "faster"
            items.append(f"{a} vs {b}: no crossover; {a}'s step is {slower} at every "
                         f"measured n ({fmt.num(lo['ratio'])}x at n = {fmt.num(lo['seq_len'])}, "
                         f"{fmt.num(hi['ratio'])}x at n = {fmt.num(hi['seq_len'])})")
        return Bullets(tuple(items))
    items = []
    for _, c in found.iterrows():
        where = f"n = {fmt.num(c['crossover_at'])}" if c["exact"] else \
            f"n ≈ {fmt.num(c['crossover_at'])}"
        items.append(f"{c['layer_a']}/{c['variant_a']} vs {c['layer_b']}/{c['variant_b']}: "
                     f"{fmt.text(c['cheaper_below'])} is faster per token below, "
                     f"{fmt.text(c['cheaper_above'])} above {where} (measured between "
                     f"{fmt.num(c['bracket_low'])} and {fmt.num(c['bracket_high'])}; "
                     f"{fmt.text(c['fixed'])})")
    return Bullets(tuple(items))
