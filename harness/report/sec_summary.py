"""Sections that describe the data: summary (what, where, findings), environment, cases."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness import schema
from harness.analysis.frame import describe, numeric, ok_mask, time_notes, unreliable_mask
from harness.report import fmt
from harness.report.context import Context
from harness.report.model import Block, Bullets, Cell, Paragraph, Section, Subheading, Table
from harness.report.style import layer_order
from harness.results import STATUSES

_ENV_UNITS = {"env_peak_flops": "FLOP/s", "env_peak_bytes_per_s": "B/s"}
MAX_DISTURBED = 10  # cases listed by name in the banner; the per-case table has them all
#: a time_note's keyword -> (what happened, as a predicate; as an item of a list of causes)
_CAUSES = {
    "contend": ("{were} measured while other processes competed for the CPU",
                "measured while other processes competed for the CPU"),
    "throttl": ("{were} measured while the GPU was throttled",
                "measured while the GPU was throttled"),
    "spread": ("had samples spread too widely", "with samples spread too widely"),
    "": ("had timings flagged unreliable with no reason recorded", "with no reason recorded"),
}
_SWEEP = (*schema.axis_names("size"), *schema.axis_names("setting"), *schema.axis_names("flag"),
          "seed")


def status_counts(df: pd.DataFrame) -> str:
    counts = df["status"].astype(object).fillna("missing").value_counts()
    order = [*STATUSES, "missing", *sorted(set(counts.index) - {*STATUSES, "missing"})]
    return ", ".join(f"{int(counts[s])} {s}" for s in order if s in counts)


def _unique(df: pd.DataFrame, column: str) -> str:
    if column not in df.columns:
        return "–"
    return fmt.value_list(df[column].astype(object).tolist(), limit=3) or "–"


def _layers(df: pd.DataFrame) -> str:
    parts = []
    for layer in layer_order(df):
        variants = sorted(df.loc[df["layer"].astype(str) == layer, "variant"]
                          .astype(str).unique())
        parts.append(f"{layer} ({', '.join(variants)})")
    return ", ".join(parts)


def _swept(df: pd.DataFrame) -> list[str]:
    """Layers, each swept axis with its values, then the fixed parameters on one line."""
    items = [f"layers (variants): {_layers(df)}"]
    fixed = []
    for column in _SWEEP:
        if column not in df.columns:
            continue
        values = [v for v in df[column].astype(object).tolist() if not fmt.missing(v)]
        distinct = {fmt.text(v) for v in values}
        if len(distinct) > 1:
            items.append(f"{column}: {fmt.value_list(values, limit=12)}")
        elif distinct:
            fixed.append(f"{column}={distinct.pop()}")
    if fixed:
        items.append("fixed: " + ", ".join(fixed))
    return items


def _failure_alert(df: pd.DataFrame, where: str) -> Paragraph | None:
    if len(df) and not ok_mask(df).any():
        return Paragraph(
            f"No case succeeded{where}: all {len(df)} cases ended without status ok "
            f"({status_counts(df)}). Nothing was fitted or plotted; the per-case table at the "
            "end lists every case with its status and message.", "alert")
    return None


def _cause(note: str | None) -> str:
    """The key of _CAUSES a ``time_note`` names first ("" when it names none)."""
    text = (note or "").lower()
    found = [(text.find(key), key) for key in _CAUSES if key and key in text]
    return min(found)[1] if found else ""


def _no_note(row: Any) -> str:
    """For a row without time_note (files from before it): the recorded spread, if any, so
    the reader still sees a number (read from the file, never measured here)."""
    median, iqr = row.get("time_ms_median"), row.get("time_ms_iqr")
    if fmt.missing(median) or fmt.missing(iqr) or not float(median) > 0:
        return "no reason recorded"
    return f"no reason recorded (IQR/median {float(iqr) / float(median):.2f})"


def _case_name(row: Any, many: bool) -> str:
    """The case's label (layer, variant and sizes where a file has no label), with its run
    when the report compares runs."""
    label = fmt.text(row.get("label"))
    if not label:
        label = describe({k: row.get(k) for k in ("layer", "variant", *schema.MAIN_AXES)}, ())
    return f"{label} ({row['run']})" if many else label


def disturbed_banner(ctx: Context) -> list[Block]:
    """The first thing a reader sees when timings were disturbed: how many cases, why, and
    which (at most MAX_DISTURBED by name). Nothing when every timing is reliable."""
    ok = ctx.df[ok_mask(ctx.df)]
    flagged = unreliable_mask(ok)
    if not flagged.any():
        return []
    timed = int((numeric(ok, "time_ms_median").notna() | flagged).sum())
    notes = time_notes(ok)[flagged]
    causes = [_cause(n) for n in notes]
    counts = {c: causes.count(c) for c in dict.fromkeys(causes)}
    k = int(flagged.sum())
    if len(counts) == 1:
        how = _CAUSES[causes[0]][0].format(were="was" if k == 1 else "were")
    else:
        how = "had unreliable timings (" + ", ".join(
            f"{n} {_CAUSES[c][1]}" for c, n in counts.items()) + ")"
    text = (f"Timings disturbed: {k} of {timed} case{'s' if timed != 1 else ''} {how}; "
            f"{'it is' if k == 1 else 'they are'} drawn hollow and excluded from fits and "
            "crossovers of time:")
    items = [f"{_case_name(row, ctx.many)}: {note or _no_note(row)}"
             for (_, row), note in zip(ok[flagged].iterrows(), notes, strict=True)]
    if len(items) > MAX_DISTURBED:
        rest = len(items) - MAX_DISTURBED
        items = [*items[:MAX_DISTURBED], f"and {rest} more (marked 'unreliable' in the "
                                         "per-case table)"]
    return [Paragraph(text, "alert"), Bullets(tuple(items))]


def runs(ctx: Context) -> Section:
    """What was run and where: failures, disturbed timings case by case, the runs, the
    sweep. (The first screen, harness.report.sec_overview, summarises it in a sentence.)"""
    blocks: list[Block] = [*disturbed_banner(ctx), Paragraph(
        "This report checks, on the hardware that produced these results, what Vaswani et al. "
        "2017 (Table 1) and Wu et al. 2019 claim on paper: how FLOPs, wall time and memory "
        "of each sequence layer grow with sequence length n and width d, how many sequential "
        "operations it needs and how long its longest dependency path is. Every number comes "
        "from the results file(s); cases that did not run (status other than ok) are listed "
        "but never fitted. Verdicts: ✓ agrees, ✗ disagrees, ? inconclusive (fewer than 3 "
        "points, too few with reliable timing, or too wide an interval), – n/a (not "
        "measured).")]
    if ctx.df.empty:
        blocks.append(Paragraph("The results hold no cases: nothing was measured.", "alert"))
    alert = _failure_alert(ctx.df, "")
    if alert:
        blocks.append(alert)
    elif ctx.many:
        for info, sub in ctx.run_frames():
            run_alert = _failure_alert(sub, f" in run {info.name}")
            if run_alert:
                blocks.append(run_alert)
    rows = []
    for info, sub in ctx.run_frames():
        rows.append([Cell(info.name), Cell(info.suite or "–"), Cell(str(len(sub))),
                     Cell(status_counts(sub) or "–",
                          None if ctx.ok_count(sub) or sub.empty else "failed"),
                     Cell(_unique(sub, "env_device_name")), Cell(_unique(sub, "device")),
                     Cell(_unique(sub, "dtype")), Cell(_unique(sub, "mode")),
                     Cell(_unique(sub, "env_torch_version")),
                     Cell(_unique(sub, "env_torch_threads"))])
    blocks.append(Table(["run", "suite", "cases", "status", "device name", "device", "dtype",
                         "mode", "torch", "threads"], rows,
                        "One row per results file; the environment section has the rest.",
                        frozenset({2})))
    for info, sub in ctx.run_frames():
        if ctx.many:
            blocks.append(Subheading(f"Swept in {info.name}"))
        if info.description:
            blocks.append(Paragraph(f"{info.suite or info.name}: {info.description}", "small"))
        blocks.append(Bullets(tuple(_swept(sub))))
    return Section("runs", "What was run", blocks)


def environment(ctx: Context) -> Section:
    env_cols = sorted(c for c in ctx.df.columns if str(c).startswith("env_"))
    blocks: list[Block] = []
    if not env_cols:
        blocks.append(Paragraph("These results carry no environment columns (env_*)."))
        return Section("environment", "Environment", blocks)
    recorded: list[Any] = []
    absent: list[str] = []
    for column in env_cols:
        values = [v for v in ctx.df[column].tolist() if not fmt.missing(v)]
        (recorded if values else absent).append(column)
    rows = []
    for column in recorded:
        cells = [Cell(column.removeprefix("env_"))]
        for _, sub in ctx.run_frames():
            values = [v for v in sub[column].tolist() if not fmt.missing(v)]
            if column == "env_time_utc" and values:
                texts = sorted(str(v) for v in values)
                cells.append(Cell(texts[0] if texts[0] == texts[-1] else
                                  f"{texts[0]} … {texts[-1]}"))
            elif column in _ENV_UNITS and values:
                cells.append(Cell(", ".join(dict.fromkeys(
                    fmt.si(v, _ENV_UNITS[column]) for v in values))))
            else:
                cells.append(Cell(fmt.value_list(values, limit=4) or "–"))
        rows.append(cells)
    blocks.append(Paragraph(
        "The environment recorded with each case (env_* columns); where a field differs "
        "between cases of one run every value is listed. Peaks (peak_flops, "
        "peak_bytes_per_s) are what the roofline and the fraction-of-peak use; peak_source "
        "says whether they were measured by a probe or taken from a table."))
    blocks.append(Table(["field", *[r.name for r in ctx.runs]], rows))
    if absent:
        blocks.append(Paragraph(
            "Not recorded in these results: "
            + ", ".join(c.removeprefix("env_") for c in absent) + ".", "small"))
    return Section("environment", "Environment", blocks)


def _pair(row: Any, measured: str, analytic: str) -> str:
    m, a = row.get(measured), row.get(analytic)
    if fmt.missing(m) and fmt.missing(a):
        return "–"
    return f"{fmt.num(m)} / {fmt.num(a)}"


def _time(row: Any) -> str:
    value = row.get("time_ms_median")
    if fmt.missing(value):
        return "–"
    out = fmt.num(value)
    iqr = row.get("time_ms_iqr")
    if not fmt.missing(iqr):
        out += f" (IQR {fmt.num(iqr)})"
    if fmt.plain(row.get("time_unreliable")) is True:
        note = fmt.text(row.get("time_note"))
        out += f"\nunreliable: {note}" if note else "\nunreliable"
    return out


def cases(ctx: Context) -> Section:
    """Every row, failed ones included with status and message."""
    df = ctx.df
    blocks: list[Block] = []
    if df.empty:
        blocks.append(Paragraph("No cases."))
        return Section("cases", "Per-case results", blocks)
    extra = [c for c in (*schema.axis_names("setting"), "batch", *schema.axis_names("flag"),
                         "seed") if c in df.columns and c not in ctx.constant]
    order = df.assign(_run=df["run"].map({r.name: i for i, r in enumerate(ctx.runs)}),
                      _idx=pd.to_numeric(df["case_index"], errors="coerce"))
    order = order.sort_values(["_run", "_idx"], kind="stable")
    columns = [*ctx.lead_columns(), "#", "case", "variant", *extra, "status", "message",
               "time ms (IQR)", "FLOPs analytic", "FLOPs torch", "FLOPs fvcore", "peak memory",
               "path length meas. / analytic", "seq. ops meas. / analytic"]
    first_num = len(ctx.lead_columns()) + 5 + len(extra)
    rows = []
    for _, row in order.iterrows():
        failed = row["status"] != "ok"
        tone = "failed" if failed else None
        cells = [*ctx.lead(row), Cell(fmt.text(row.get("case_index"))),
                 Cell(fmt.text(row.get("label"))), Cell(fmt.text(row.get("variant"))),
                 *[Cell(fmt.text(row.get(c), "–")) for c in extra],
                 Cell(fmt.text(row.get("status")), tone),
                 Cell(fmt.text(row.get("message")), tone),
                 Cell(_time(row)), Cell(fmt.si(row.get("flops_analytic"))),
                 Cell(fmt.si(row.get("flops_torch"))), Cell(fmt.si(row.get("flops_fvcore"))),
                 Cell(fmt.nbytes(row.get("peak_mem_bytes"))),
                 Cell(_pair(row, "path_length_measured", "path_length_analytic")),
                 Cell(_pair(row, "seq_ops_measured", "seq_ops_analytic"))]
        rows.append(cells)
    blocks.append(Paragraph(
        f"All {len(df)} cases ({status_counts(df)}), in the order they were planned. Cases "
        "with a status other than ok are highlighted with their message; their metrics are "
        "not used anywhere above. Time is the median of the samples (IQR in brackets; "
        "'unreliable' with the reason when contention, throttling or spread was detected: "
        "such times are left out of fits and crossovers); FLOPs at 2 per multiply-add; peak "
        "memory is above the pre-call baseline."))
    numeric = frozenset({len(ctx.lead_columns())} | set(range(first_num, len(columns))))
    blocks.append(Table(columns, rows, "", numeric))
    return Section("cases", "Per-case results", blocks)
