"""Interactive charts of the report's lower sections: cost along each swept axis (one panel
per metric and slice, the theory's slopes as guides), peak memory with the OOM frontier,
the roofline, and relative attention's memory beyond plain attention.

Built from the results dataframe only, with the look and helpers of
:mod:`harness.report.charts` (layer colour, variant dash, run shape, legend pick, tooltips
with the case's metrics, log scales with the log/linear switch). Only rows with status ok
are points; OOM cases are crosses on the memory chart, never values. A timing flagged
unreliable is a hollow point: visible, but marked as what the fits leave out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness import schema
from harness.analysis.crossovers import LAYER_SPECIFIC
from harness.analysis.efficiency import efficiency
from harness.analysis.frame import describe, group_positions, numeric, ok_mask
from harness.analysis.seeds import BASELINE, RELATIVE
from harness.report import fmt
from harness.report.charts import (
    PANEL_H,
    PANEL_W,
    SHAPES,
    Series,
    colour_encoding,
    cost_points,
    figure,
    guides,
    panel,
    pick_opacity,
    series,
    tooltip_row,
    x_encoding,
    y_encoding,
)
from harness.report.model import Chart
from harness.report.style import Look

#: Parameters a chart is sliced by when they vary (the layer-specific ones never are).
#: (compile: eager and compiled rows of a layer are separate panels, never one median)
SHARED_ORDER = (*schema.SIZE_PRIORITY, *schema.axis_names("setting"),
                *schema.axis_names("flag", optional=False), "seed")
MAX_SLICES = 4
ROWS_PER_CHART = 2  # slices per scaling chart, so that each fits a PDF page
FLOP_METRICS = ("flops_analytic", "flops_torch", "flops_fvcore")
_KIND = {"time_ms_median": "time", "peak_mem_bytes": "bytes", "state_bytes": "bytes",
         "act_mem_analytic_bytes": "bytes"}
_NARROW = (270, 190)  # a panel of a three-panel row
#: The caption sentence for hollow points, the same in every chart.
HOLLOW_NOTE = (" Hollow points: unreliable timing (other processes competed for the CPU, the "
               "GPU throttled, or the samples spread too widely); these points are left out "
               "of fits and crossovers.")
_HOVER = " Hover a point for its case; click a legend entry to show that series alone."


def flop_metric(df: pd.DataFrame) -> str | None:
    """The FLOP column to plot: the analytic model if recorded, else a counter."""
    ok = df[ok_mask(df)]
    for metric in FLOP_METRICS:
        if metric in ok.columns and (numeric(ok, metric) > 0).any():
            return metric
    return None


def slice_keys(df: pd.DataFrame, axis: str) -> list[str]:
    """Shared parameters that vary in ``df`` (besides ``axis``): one panel row per value."""
    return [p for p in SHARED_ORDER if p not in LAYER_SPECIFIC and p != axis
            and p in df.columns
            and len({fmt.plain(v) for v in df[p].astype(object).tolist()}) > 1]


def _sort_key(value: Any) -> tuple:
    value = fmt.plain(value)
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def slices(df: pd.DataFrame, axis: str) -> tuple[list[tuple[str, pd.DataFrame]], int]:
    """The rows (any status) of each slice, titled "d_model=64, ...", in value order: at
    most MAX_SLICES, spread over the sorted list (first and last kept); and how many there
    were."""
    keys = slice_keys(df, axis)
    found = sorted(group_positions(df, keys).items(),
                   key=lambda kv: tuple(map(_sort_key, kv[0])))
    if len(found) > MAX_SLICES:
        idx = sorted({round(i * (len(found) - 1) / (MAX_SLICES - 1))
                      for i in range(MAX_SLICES)})
        shown = [found[i] for i in idx]
    else:
        shown = found
    return [(describe(dict(zip(keys, key, strict=True)), ()), df.iloc[pos])
            for key, pos in shown], len(found)


def metric_points(ss: list[Series], metric: str, look: Look, axis: str,
                  min_points: int = 1) -> list[dict[str, Any]]:
    """:func:`cost_points` of the series with at least ``min_points`` x values."""
    points = cost_points(ss, metric, look, axis)
    counts: dict[str, int] = {}
    for p in points:
        counts[p["series"]] = counts.get(p["series"], 0) + 1
    return [p for p in points if counts[p["series"]] >= min_points]


def _extra_labels(ss: list[Series], points: list[dict[str, Any]], look: Look
                  ) -> list[dict[str, Any]]:
    """A text layer naming the layer-specific parameters (k=3) at each such series' end."""
    last: dict[str, dict[str, Any]] = {}
    for p in points:
        if p["series"] not in last or p["n"] > last[p["series"]]["n"]:
            last[p["series"]] = p
    rows = [{"n": last[s.name]["n"], "value": last[s.name]["value"], "text": s.extra,
             "colour": look.colours.get(s.layer, "#444444")}
            for s in ss if s.extra and s.name in last]
    if not rows:
        return []
    return [{"data": {"values": rows},
             "mark": {"type": "text", "align": "left", "dx": 4, "fontSize": 9},
             "encoding": {"x": {"field": "n", "type": "quantitative"},
                          "y": {"field": "value", "type": "quantitative"},
                          "color": {"field": "colour", "type": "nominal", "scale": None},
                          "text": {"field": "text"}}}]


def _kind(metric: str) -> str:
    return _KIND.get(metric, "flops" if metric.startswith("flops") else "ratio")


# --------------------------------------------------------------------------- scaling


def scaling_charts(df: pd.DataFrame, axis: str, look: Look,
                   metrics: Sequence[str] | None = None) -> list[Chart]:
    """Time, FLOPs and memory (or ``metrics``) against ``axis``, log-log: one panel per
    metric and slice, at most ROWS_PER_CHART slices per chart."""
    if metrics is None:
        metrics = [m for m in ("time_ms_median", flop_metric(df), "peak_mem_bytes") if m]
    metrics = [m for m in metrics if m in df.columns]
    many = look.many_runs
    shown, total = slices(df, axis)
    found = []  # (slice title, series, {metric: points})
    for title, rows in shown:
        ss = series(rows[ok_mask(rows)], look, many, axis=axis)
        points = {m: metric_points(ss, m, look, axis, min_points=2) for m in metrics}
        if any(points.values()):
            found.append((title, ss, points))
    metrics = [m for m in metrics if any(points[m] for _, _, points in found)]
    if not metrics:
        return []
    return [_scaling_chart(df, axis, look, metrics, found[i:i + ROWS_PER_CHART], len(found),
                           total) for i in range(0, len(found), ROWS_PER_CHART)]


def _scaling_chart(df: pd.DataFrame, axis: str, look: Look, metrics: list[str],
                   found: list[tuple[str, list[Series], dict[str, list[dict[str, Any]]]]],
                   n_shown: int, total: int) -> Chart:
    symbol = fmt.AXIS_SYMBOL.get(axis, axis)
    shown = {p["series"] for _, _, points in found for m in metrics for p in points[m]}
    ss_all = [s for _, ss, _ in found for s in ss if s.name in shown]
    size = _NARROW if len(metrics) > 2 else (PANEL_W, PANEL_H)
    panels: list[dict[str, Any]] = []
    hollow = False
    for title, ss, points in found:
        for metric in metrics:
            pts = points[metric]
            hollow |= any(p["hollow"] for p in pts)
            head = f"{fmt.METRIC_SHORT.get(metric, metric)} vs {symbol}"
            mine = [s for s in ss if s.name in {p["series"] for p in pts}]
            guide = [] if _kind(metric) == "bytes" else guides(mine, pts, axis)
            panels.append(panel(ss_all, pts, title=f"{head} · {title}" if title else head,
                                y_title=fmt.METRIC_LABEL.get(metric, metric),
                                kind=_kind(metric), look=look, runs=look.runs,
                                guide_points=guide, legend=not panels, axis=axis,
                                over=_extra_labels(mine, pts, look), size=size))
    flops = flop_metric(df)
    source = {"flops_analytic": "the analytic model's executed FLOPs",
              "flops_torch": "torch's FlopCounterMode count",
              "flops_fvcore": "fvcore's count"}.get(flops or "", "")
    note = f" FLOPs: {source}, 2 per multiply-add." if source else ""
    keys = slice_keys(df, axis)
    more = (f" {n_shown} of {total} slices shown ({', '.join(keys)} spread over its range)."
            if total > n_shown else "")
    caption = (f"Log-log scaling along {fmt.AXIS_LABEL.get(axis, axis)}: one panel per metric"
               f"{' and per ' + ', '.join(keys) if keys else ''}"
               "; colour = layer, dash = variant"
               f"{', point shape = run' if look.many_runs else ''}. Dotted grey lines are the "
               "theory's asymptotic FLOP slopes (Table 1) from the smallest measured x; "
               "a curve parallel to its guide scales as the theory says. Memory has no theory "
               f"guide. Only cases with status ok are drawn.{note}{_HOVER}"
               f"{HOLLOW_NOTE if hollow else ''}{more}")
    return Chart(figure(panels, per_row=len(metrics)), caption,
                 f"scaling of {', '.join(metrics)} along {axis}")


# --------------------------------------------------------------------------- memory


def oom_marks(rows: pd.DataFrame, look: Look, axis: str = "seq_len") -> list[dict[str, Any]]:
    """Per run, layer and variant: the smallest x whose case ran out of memory (status oom)."""
    oom = rows[rows["status"].astype(object).eq("oom").fillna(False).astype(bool)]
    out = []
    x = numeric(oom, axis).to_numpy()
    for (run, layer, variant), pos in group_positions(oom, ["run", "layer", "variant"]).items():
        xs = x[pos][np.isfinite(x[pos])]
        if len(xs):
            first = oom.iloc[pos[int(np.argmin(xs))]]
            name = look.label(str(layer), str(variant))
            out.append({"n": float(xs.min()), "colour": look.colours.get(str(layer), "#000000"),
                        "series": f"{name} · {run}" if look.many_runs else name,
                        "case": fmt.text(first.get("label")) or fmt.text(first.get("case_id")),
                        "what": f"out of memory from {fmt.AXIS_SYMBOL.get(axis, axis)} = "
                                f"{fmt.num(xs.min())}"})
    return out


def _oom_layer(marks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"data": {"values": marks},
            "mark": {"type": "point", "shape": "cross", "angle": 45, "filled": True,
                     "size": 110, "clip": False},
            "encoding": {"x": {"field": "n", "type": "quantitative"}, "y": {"value": 5},
                         "color": {"field": "colour", "type": "nominal", "scale": None},
                         "tooltip": [{"field": "series", "type": "nominal"},
                                     {"field": "what", "type": "nominal", "title": "OOM"},
                                     {"field": "case", "type": "nominal"}]}}


def _estimate_layer(points: list[dict[str, Any]], colour: dict[str, Any]) -> dict[str, Any]:
    """The analytic activation estimate, dotted in the series' colours (``colour``: the
    panel's own encoding, so that the legend stays the panel's)."""
    return {"data": {"values": [{k: p[k] for k in ("series", "label", "n", "value")}
                                for p in points]},
            "mark": {"type": "line", "strokeDash": [1, 2], "strokeWidth": 1.2},
            "encoding": {"x": {"field": "n", "type": "quantitative"},
                         "y": {"field": "value", "type": "quantitative"},
                         "color": colour, "detail": {"field": "series"},
                         "opacity": pick_opacity(0.8)}}


def memory_chart(df: pd.DataFrame, look: Look) -> Chart | None:
    """Peak memory vs n per layer, the analytic activation estimate dotted, and a cross at
    the top edge where a sweep first ran out of memory."""
    axis = "seq_len"
    if axis not in df.columns or not ok_mask(df).any():
        return None  # nothing ran: the frontier table says where memory ran out
    many = look.many_runs
    shown, total = slices(df, axis)
    found = []
    for title, rows in shown:
        ss = series(rows[ok_mask(rows)], look, many)
        found.append((title, ss, metric_points(ss, "peak_mem_bytes", look, axis),
                      metric_points(ss, "act_mem_analytic_bytes", look, axis),
                      oom_marks(rows, look, axis)))
    found = [f for f in found if f[2] or f[4]]
    if not any(f[2] for f in found):
        return None
    ss_all = [s for f in found for s in f[1] if any(p["series"] == s.name for p in f[2])]
    panels: list[dict[str, Any]] = []
    ooms = model = False
    for title, _, points, estimate, marks in found:
        drawn = {p["series"] for p in points}
        estimate = [p for p in estimate if p["series"] in drawn]
        ooms |= bool(marks)
        model |= bool(estimate)
        panels.append(panel(ss_all, points, title="peak memory vs n" + (
            f" · {title}" if title else ""), y_title=fmt.METRIC_LABEL["peak_mem_bytes"],
            kind="bytes", look=look, runs=look.runs, guide_points=[], legend=not panels,
            under=[_estimate_layer(estimate, colour_encoding(ss_all, look, not panels))]
            if estimate else [],
            over=[_oom_layer(marks)] if marks else []))
    more = f" {len(found)} of {total} slices shown." if total > len(found) else ""
    caption = ("Peak memory of the measured call (activations and workspace above what was "
               "allocated before it; parameters excluded) against sequence length, log-log"
               + ("; dotted in the same colour: the analytic activation estimate" if model
                  else "") + "."
               + (" A cross at the top edge marks the smallest n whose case ran out of "
                  "memory (status oom), in the layer's colour." if ooms else "")
               + _HOVER + more)
    return Chart(figure(panels, per_row=2), caption,
                 "peak memory against sequence length with the OOM frontier")


# --------------------------------------------------------------------------- roofline


def _first(values: pd.Series) -> Any:
    found = [v for v in values.tolist() if not fmt.missing(v)]
    return found[0] if found else None


def roofline_points(df: pd.DataFrame, eff: pd.DataFrame, look: Look
                    ) -> list[dict[str, Any]]:
    """One point per ok case with intensity and FLOP/s: x = intensity, value = FLOP/s.
    ``eff``: :func:`efficiency` of ``df`` (indexed by position among its ok rows)."""
    ok = df[ok_mask(df)]
    out = []
    for i, e in eff.iterrows():
        layer, variant = str(e["layer"]), str(e["variant"])
        row = ok.iloc[int(i)]
        if str(row["layer"]) != layer:
            raise ValueError("efficiency rows are not df's ok rows in order")
        out.append({"series": look.label(layer, variant), "label": look.label(layer, variant),
                    "dash": look.dash(layer, variant), "n": float(e["arithmetic_intensity"]),
                    "value": float(e["flops_per_s"]), "hollow": bool(e["time_unreliable"]),
                    "value_text": fmt.si(e["flops_per_s"], "FLOP/s"), **tooltip_row(row)})
    return out


def _roof(eff: pd.DataFrame) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float, float]:
    """The roofline min(peak, x × bandwidth) and its two labels, over the x range drawn."""
    x = eff["arithmetic_intensity"].to_numpy(dtype=float)
    lo, hi = float(x.min()) / 2, float(x.max()) * 2
    peak, bw = _first(eff["peak_flops"]), _first(eff["peak_bytes_per_s"])
    if not peak or not bw:
        return [], [], lo, hi
    ridge = float(peak) / float(bw)
    lo, hi = min(lo, ridge / 4), max(hi, ridge * 4)
    line = [{"n": float(v), "value": float(min(float(peak), v * float(bw)))}
            for v in np.geomspace(lo, hi, 40)]
    labels = [{"n": hi, "value": float(peak), "text": f"peak {fmt.si(peak, 'FLOP/s')}",
               "align": "right"},
              {"n": lo * 1.5, "value": lo * 1.5 * float(bw), "text": fmt.si(bw, "B/s"),
               "align": "left"}]
    return line, labels, lo, hi


def _roofline_panel(run: str, df: pd.DataFrame, eff: pd.DataFrame, look: Look,
                    ss: list[Series], legend: bool) -> dict[str, Any]:
    points = roofline_points(df, eff, look)
    line, labels, lo, hi = _roof(eff)
    x = {**x_encoding(title="arithmetic intensity (FLOP/byte)", base=10),
         "scale": {"type": "log", "domain": [lo, hi], "nice": False}}
    y = y_encoding("achieved FLOP/s", "flops")
    colour = {**colour_encoding(ss, look, legend)}
    if legend:
        colour["legend"] = {**colour["legend"], "symbolType": "circle"}
    tips = [{"field": f, "type": "nominal", "title": t} for f, t in (
        ("series", "series"), ("value_text", "FLOP/s"), ("case", "case"), ("time", "time"),
        ("FLOPs", "FLOPs"), ("peak memory", "peak memory"), ("samples", "samples"))]
    tips.insert(2, {"field": "n", "type": "quantitative", "title": "FLOP/byte",
                    "format": ".3~g"})
    layers: list[dict[str, Any]] = []
    if line:
        layers.append({"data": {"values": line}, "mark": {"type": "line", "color": "#202020",
                                                          "strokeWidth": 1.4},
                       "encoding": {"x": x, "y": y}})
        for label in labels:
            layers.append({"data": {"values": [label]},
                           "mark": {"type": "text", "align": label["align"], "dy": -7,
                                    "fontSize": 10, "color": "#202020"},
                           "encoding": {"x": x, "y": y, "text": {"field": "text"}}})
    for hollow in (False, True):
        layer: dict[str, Any] = {
            "data": {"values": points},
            "transform": [{"filter": f"datum.hollow == {str(hollow).lower()}"}],
            "mark": {"type": "point", "filled": not hollow, "size": 46, "strokeWidth": 1.4,
                     **({"fill": "white"} if hollow else {})},
            "encoding": {"x": x, "y": y, "color": colour, "opacity": pick_opacity(0.85),
                         "shape": {"field": "dash", "type": "ordinal", "legend": None,
                                   "scale": {"domain": list(range(len(SHAPES))),
                                             "range": list(SHAPES)}},
                         "tooltip": tips}}
        if legend and not hollow:
            layer["params"] = [{"name": "pick", "select": {"type": "point",
                                                           "fields": ["label"]},
                                "bind": "legend"}]
        layers.append(layer)
    device = _first(eff["device"]) if "device" in eff.columns else None
    source = _first(eff["peak_source"])
    where = f"{run} · {device}" if look.many_runs else str(device or run)
    return {"title": {"text": [where, f"peaks: {source}" if source else "peaks not recorded"],
                      "anchor": "start", "fontSize": 12},
            "width": PANEL_W, "height": PANEL_H + 40, "layer": layers}


def roofline_chart(df: pd.DataFrame, look: Look) -> Chart | None:
    """Achieved FLOP/s against arithmetic intensity, one panel per run, with the roof."""
    found = []
    for run in look.runs:
        rows = df[df["run"] == run]
        eff = efficiency(rows)
        good = eff[(eff["arithmetic_intensity"] > 0) & (eff["flops_per_s"] > 0)]
        if not good.empty:
            found.append((run, rows, good))
    if not found:
        return None
    pairs = sorted({(str(lay), str(v)) for _, _, good in found
                    for lay, v in zip(good["layer"], good["variant"], strict=True)},
                   key=lambda p: (look.rank(p[0]), p[1]))
    ss = [Series(look.label(*p), look.label(*p), "", p[0], p[1], pd.DataFrame())
          for p in pairs]
    panels = [_roofline_panel(run, rows, good, look, ss, legend=not i)
              for i, (run, rows, good) in enumerate(found)]
    hollow = any(bool(good["time_unreliable"].any()) for _, _, good in found)
    caption = ("Roofline (Williams et al. 2009): achieved FLOP/s (analytic FLOPs / median "
               "time) against arithmetic intensity (FLOPs per byte moved), one point per case "
               "with status ok (shape = variant), log-log. The black line is min(peak "
               "FLOP/s, intensity × peak bytes/s) from the environment's recorded peaks "
               "(their source is in the panel title); without recorded peaks only the points "
               f"are drawn.{_HOVER}{HOLLOW_NOTE if hollow else ''}")
    return Chart(figure(panels, per_row=2), caption,
                 "roofline: achieved FLOP/s against arithmetic intensity")


# --------------------------------------------------------------------------- relative


def relative_chart(extra: pd.DataFrame, look: Look) -> Chart | None:
    """Memory beyond attention vs n of both relative variants, per setting of d, h and
    batch swept over n (a point shape each), with attention's own peak (dotted) as the
    reference the difference is read against. ``extra``: relative_extra_memory's rows."""
    keys = [k for k in ("run", "d_model", "heads", "batch", "dtype", "mode")
            if k in extra.columns]
    swept = [(key, sub) for key, sub in extra.groupby(keys, sort=True, dropna=False)
             if sub["seq_len"].nunique() >= 2]
    if not swept:
        return None
    many_runs = "run" in extra.columns and extra["run"].nunique() > 1
    ss: list[Series] = []
    points: list[dict[str, Any]] = []
    tags = []
    for key, sub in swept:
        fixed = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        tag = " ".join(f"{fmt.AXIS_SYMBOL.get(k, k)}{fmt.text(fixed[k])}"
                       for k in ("d_model", "heads", "batch") if k in fixed)
        tag += f" ({fixed['run']})" if many_runs else ""
        tags.append(tag)
        base = sub.drop_duplicates("seq_len")
        parts = [(RELATIVE, v, sub[sub["variant"] == v], "peak_mem_bytes", d)
                 for v, d in (("materialized", 0), ("skewed", 1))]
        parts.append((BASELINE, "own peak", base, "baseline_peak_bytes", 2))
        for layer, variant, rows, metric, dash in parts:
            if rows.empty:
                continue
            name = f"{'attention' if layer == BASELINE else variant} · {tag}"
            s = Series(name, name, tag, layer, variant, rows)
            mine = cost_points([s], metric, look)
            if not mine:
                continue
            ss.append(s)
            points += [{**p, "dash": dash, "run": tag,
                        "peak memory": f"{fmt.nbytes(p['value'])} beyond attention's "
                                       f"{fmt.nbytes(row)}"
                        if layer == RELATIVE else p["peak memory"]}
                       for p, row in zip(mine, _baseline_at(rows, mine), strict=True)]
    if not points:
        return None
    spec = figure([panel(ss, points, title="relative attention: memory beyond plain "
                         "attention vs n", y_title="peak memory (bytes)", kind="bytes",
                         look=look, runs=tags, guide_points=[], legend=True,
                         shape_title="setting (d, h, b)")])
    return Chart(spec, "Peak memory of the relative-attention variants above plain "
                 "attention's at the same case, against n, log-log (solid: materialized, "
                 "dashed: skewed; one point shape per setting of d, h and batch b swept over "
                 "n); dotted: plain attention's own peak at that case." + _HOVER,
                 "relative attention memory beyond attention against sequence length")


def _baseline_at(rows: pd.DataFrame, points: list[dict[str, Any]]) -> list[Any]:
    """Attention's own peak at each point's n (for the tooltip)."""
    n = numeric(rows, "seq_len")
    return [_first(rows.loc[n == p["n"], "baseline_peak_bytes"]) for p in points]
