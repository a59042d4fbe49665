"""Runs side by side: who each run is (device, dtype, machine, commit, date), where they
differ, and per layer the ratio of time and memory against n with the winner.

The first run given is the baseline; every other run is divided by it, case by case (same
layer, variant and parameters; dtype and device may differ, that is what is compared).
Timings flagged unreliable are drawn hollow in the chart and left out of the ratio table
(unless a layer has nothing else, which its cells then say).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.report import charts, fmt
from harness.report.context import Context
from harness.report.model import Block, Cell, Paragraph, Section, Table

#: (column, heading) of a run's identity, in the order a reader scans them.
IDENTITY = (("env_device_name", "device name"), ("device", "device"), ("dtype", "dtype"),
            ("env_hostname", "machine"), ("env_cpu_model", "CPU"),
            ("env_torch_threads", "threads"), ("env_torch_version", "torch"),
            ("env_git_commit", "commit"), ("env_time_utc", "measured (UTC)"))


def _values(sub: pd.DataFrame, column: str) -> str:
    if column not in sub.columns:
        return "–"
    values = [fmt.text(v) for v in sub[column].dropna().astype(str).unique()]
    if column == "env_git_commit":
        dirty = "env_git_dirty" in sub.columns and bool(sub["env_git_dirty"].fillna(False)
                                                         .astype(bool).any())
        values = [v[:10] + (" (dirty)" if dirty else "") for v in values]
    if column == "env_time_utc" and values:
        ordered = sorted(values)
        first = ordered[0][:16].replace("T", " ")
        return first if len(ordered) == 1 else f"{first} … {ordered[-1][:16].replace('T', ' ')}"
    return fmt.value_list(values, limit=2) or "–"


def identities(ctx: Context) -> tuple[Table, list[str]]:
    """The identity table and the headings in which the runs differ."""
    cells = {info.name: [_values(sub, c) for c, _ in IDENTITY]
             for info, sub in ctx.run_frames()}
    differ = [h for i, (_, h) in enumerate(IDENTITY)
              if len({v[i] for v in cells.values()}) > 1]
    rows = [[Cell(name), *[Cell(v) for v in values]] for name, values in cells.items()]
    return Table(["run", *[h for _, h in IDENTITY]], rows,
                 "The first run is the baseline every ratio divides by."), differ


def _wins(points: list[dict[str, Any]]) -> str:
    """Where the other run is cheaper (ratio < 1) along n, in words."""
    pts = sorted(points, key=lambda p: p["n"])
    if all(abs(p["value"] - 1) <= TIE for p in pts):
        return f"neither (within {TIE:.0%})"
    below = [p["value"] < 1 for p in pts]
    if all(below):
        return "other run at every n"
    if not any(below):
        return "baseline at every n"
    flips = [pts[i]["n"] for i in range(1, len(pts)) if below[i] != below[i - 1]]
    if len(flips) == 1:
        side = "other run" if below[-1] else "baseline"
        return f"{side} from n = {fmt.num(flips[0])}"
    return f"changes {len(flips)} times"


@dataclass
class Ratios:
    """One layer variant of one run against the baseline: ratio points per metric."""

    run: str
    name: str
    points: dict[str, list[dict[str, Any]]]

    def usable(self, metric: str) -> tuple[list[dict[str, Any]], bool]:
        """The reliable points, or all of them (and True) when none is reliable."""
        pts = self.points.get(metric, [])
        sure = [p for p in pts if not p["hollow"]]
        return (sure, False) if sure else (pts, bool(pts))


METRICS = ("time_ms_median", "peak_mem_bytes")
TIE = 0.01  # ratios this close to 1 are a tie


def ratios(ctx: Context) -> tuple[list[Ratios], str]:
    """Every run but the first, divided by the first, per layer variant; and the slice."""
    runs = [r.name for r in ctx.runs]
    found = charts.pick_slice(ctx.df, keep=("run", *charts.IDENTITY))
    if found is None:
        return [], ""
    rows_df = found.rows
    base = {f"{s.layer}\0{s.variant}\0{charts.extra_of(s)}": s
            for s in charts.series(rows_df[rows_df["run"] == runs[0]], ctx.look, False)}
    out = []
    for run in runs[1:]:
        for s in charts.series(rows_df[rows_df["run"] == run], ctx.look, False):
            out.append(Ratios(run, s.name, {
                m: charts.ratio_points([s], None, m, ctx.look, base=base)
                for m in METRICS if m in rows_df.columns}))
    return out, found.fixed


def answer(ctx: Context) -> str:
    """One sentence per compared run for the first screen: in how many layer variants it is
    faster than the baseline, and the median time ratio."""
    found, _ = ratios(ctx)
    out = []
    for run in [r.name for r in ctx.runs[1:]]:
        mine = [r for r in found if r.run == run]
        medians, shaky = [], 0
        for r in mine:
            pts, unreliable = r.usable("time_ms_median")
            if pts:
                medians.append(float(np.median([p["value"] for p in pts])))
                shaky += unreliable
        if not medians:
            continue
        faster = sum(m < 1 for m in medians)
        note = (f"; {shaky} of them from unreliable timings only" if shaky else "")
        out.append(f"Against {ctx.runs[0].name}, {run} is faster in time for {faster} of "
                   f"{len(medians)} layer variants (median time ratio "
                   f"{float(np.median(medians)):.2f}×{note}).")
    return " ".join(out)


def _ratio_table(ctx: Context) -> Table | None:
    found, fixed = ratios(ctx)
    rows = []
    for r in found:
        cells = [Cell(r.run), Cell(r.name)]
        for metric in METRICS:
            pts, unreliable = r.usable(metric)
            if not pts:
                cells += [Cell("–", "n/a"), Cell("–", "n/a")]
                continue
            note = ", unreliable timings only" if unreliable else ""
            values = [p["value"] for p in pts]
            lo, hi = min(values), max(values)
            span = f"{lo:.3g}×" if f"{lo:.3g}" == f"{hi:.3g}" else f"{lo:.3g}× … {hi:.3g}×"
            tone = "inconclusive" if unreliable else None
            cells += [Cell(f"{span} ({len(pts)} n{note})", tone), Cell(_wins(pts), tone)]
        rows.append(cells)
    if not rows:
        return None
    at = f" at {fixed}" if fixed else ""
    return Table(["run", "layer · variant", "time ratio (run ÷ baseline)", "faster",
                  "memory ratio", "smaller"], rows,
                 f"Ratios over the sequence lengths both runs measured{at}, leaving out "
                 "unreliable timings (where every timing was unreliable, the cell says so and "
                 "is shaded as inconclusive); below 1× the other run is cheaper.")


def compare(ctx: Context) -> Section | None:
    """The comparison; none for a single run (nothing to set it against)."""
    if not ctx.many:
        return None
    table, differ = identities(ctx)
    what = ", ".join(differ) if differ else "nothing recorded (same device, dtype and commit)"
    blocks: list[Block] = [Paragraph(
        f"{len(ctx.runs)} runs; they differ in {what}. Baseline: {ctx.runs[0].name}."),
        table]
    chart = charts.comparison_chart(ctx.df, ctx.look, [r.name for r in ctx.runs])
    if chart is not None:
        blocks.append(chart)
    ratios = _ratio_table(ctx)
    if ratios is not None:
        blocks.append(ratios)
    else:
        blocks.append(Paragraph("The runs share no case (same layer, variant and sizes): "
                                "there is nothing to divide.", "small"))
    return Section("compare", "Runs compared", blocks)
