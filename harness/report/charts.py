"""Interactive charts (Vega-Lite specs with their data inlined) for the report's first screen
and the comparison of runs: cost vs n per layer, cost ratios vs n, run-against-run ratios.

Every spec is plain JSON built from the results dataframe only (status ok rows). Shared
look: a layer keeps its report colour, a variant its dash (the layer's variants in name
order), a run its point shape; clicking a legend entry shows that series alone (shift-click
adds more); hovering a point shows the case's metrics. A timing flagged unreliable is a
hollow point; so is a ratio that involves one. :func:`figure` puts each distinct data set
into the spec's ``datasets`` once, however many layers draw it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness import schema
from harness.analysis.crossovers import LAYER_SPECIFIC
from harness.analysis.frame import describe, numeric, ok_mask, timed, unreliable_mask
from harness.analysis.layers import layer_infos, row_terms
from harness.report import fmt, vega
from harness.report.model import Chart
from harness.report.style import Look
from harness.theory import exponent

PANEL_W, PANEL_H = 400, 230
GUIDE = "#8a8a8a"
DIM = 0.12  # opacity of series not picked in the legend
SHAPES = ("circle", "square", "triangle-up", "diamond", "triangle-down", "cross")
_DASHES = ([1, 0], [6, 3], [2, 2], [8, 3, 2, 3], [1, 3])
#: Parameters a run's identity (not its sweep) consists of: never matched between runs.
IDENTITY = ("dtype", "device")
_FORMAT = {"time": ".3~r", "bytes": ".3~s", "ratio": ".4~r", "flops": ".3~s"}


@dataclass
class Slice:
    """The rows one chart shows: forward/train cases at one d, one value of every other
    shared parameter (the most common), and what was fixed, in words."""

    rows: pd.DataFrame
    d: float | None
    fixed: str
    dropped: int = 0  # ok rows of other slices, not shown
    others: list[float] = field(default_factory=list)  # the d values not shown


def _mode(series: pd.Series) -> Any:
    values = [fmt.plain(v) for v in series.astype(object).tolist()]
    values = [v for v in values if v is not None]
    if not values:
        return None
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return max(counts, key=lambda v: counts[v])  # first of equals


def pick_slice(df: pd.DataFrame, *, keep: Sequence[str] = ()) -> Slice | None:
    """The slice of ok, non-decode rows a headline chart shows: the d with the most distinct
    n (the largest of equals), every other shared parameter at its most common value
    (``keep``: columns allowed to vary, e.g. dtype when runs differ in it)."""
    ok = df[ok_mask(df)]
    if "mode" in ok.columns:
        ok = ok[ok["mode"].astype(object).ne("decode").fillna(True).astype(bool)]
    if ok.empty or "seq_len" not in ok.columns:
        return None
    d = None
    others: list[float] = []
    if "d_model" in ok.columns and numeric(ok, "d_model").notna().any():
        dm = numeric(ok, "d_model")
        counts = numeric(ok, "seq_len").groupby(dm).nunique()
        d = float(max(counts.index, key=lambda v: (counts[v], v)))
        others = sorted(float(v) for v in counts.index if v != d)
        ok = ok[dm == d]
    shared = [p for p in (*schema.SIZE_PRIORITY, *schema.axis_names("setting"), "seed")
              if p in ok.columns and p not in ("seq_len", "d_model", *LAYER_SPECIFIC, *keep)]
    fixed: dict[str, Any] = {} if d is None else {"d_model": d}
    for p in shared:
        value = _mode(ok[p])
        if value is None:
            continue
        same = [fmt.plain(v) == value for v in ok[p].astype(object).tolist()]
        if not all(same):
            fixed[p] = value
        ok = ok[same]
    total = int(ok_mask(df).sum())
    return Slice(ok, d, describe(fixed, ()), total - len(ok), others)


def _series_keys(df: pd.DataFrame, axis: str = "seq_len") -> list[str]:
    """Layer-specific parameters that vary within a layer: each value is its own series."""
    out = []
    for p in LAYER_SPECIFIC:
        if p in df.columns and p != axis:
            per_layer = df.groupby(df["layer"].astype(str))[p].nunique(dropna=True)
            if (per_layer > 1).any():
                out.append(p)
    return out


def _name(look: Look, layer: str, variant: str, extra: str, run: str, many: bool) -> str:
    name = look.label(layer, variant) + (f" ({extra})" if extra else "")
    return f"{name} · {run}" if many else name


@dataclass
class Series:
    name: str  # unique in the chart (the run included when runs are compared)
    label: str  # the legend entry: layer · variant (extra), shared by the runs
    run: str
    layer: str
    variant: str
    rows: pd.DataFrame
    extra: str = ""  # the layer-specific parameters that make it a series of its own


def series(rows: pd.DataFrame, look: Look, many: bool,
           by: Sequence[str] = ("run", "layer", "variant"), axis: str = "seq_len"
           ) -> list[Series]:
    """The rows grouped into series in report order (run, layer rank, variant, extra);
    ``axis``: the x of the chart (never a series key)."""
    extra_keys = _series_keys(rows, axis)
    keys = [*by, *extra_keys]
    out = []
    for key, sub in rows.groupby([rows[k].astype(str) for k in keys], sort=False):
        values = dict(zip(keys, key, strict=True))
        layer, variant = values["layer"], values["variant"]
        extra = describe({p: sub[p].iloc[0] for p in extra_keys}, ())
        run = values.get("run", "")
        out.append(Series(_name(look, layer, variant, extra, run, many),
                          _name(look, layer, variant, extra, run, False), run, layer,
                          variant, sub, extra))
    order = {r: i for i, r in enumerate(look.runs)}
    out.sort(key=lambda s: (look.rank(s.layer), s.variant, s.name, order.get(s.run, 0)))
    return out


def tooltip_row(row: Any) -> dict[str, Any]:
    """What hovering a point shows: the case and its main metrics, as text."""
    time = row.get("time_ms_median")
    iqr = row.get("time_ms_iqr")
    time_txt = "–" if fmt.missing(time) else fmt.num(time) + " ms" + (
        "" if fmt.missing(iqr) else f" (IQR {fmt.num(iqr)})")
    if fmt.plain(row.get("time_unreliable")) is True:
        time_txt += " · unreliable: " + (fmt.text(row.get("time_note")) or "no reason")
    return {"case": fmt.text(row.get("label")) or fmt.text(row.get("case_id")),
            "time": time_txt, "FLOPs": fmt.si(row.get("flops_analytic")),
            "peak memory": fmt.nbytes(row.get("peak_mem_bytes")),
            "samples": fmt.text(row.get("time_samples"), "–")}


_TIPS = ["series", "n", "value_text", "case", "time", "FLOPs", "peak memory", "samples"]


def cost_points(ss: list[Series], metric: str, look: Look, axis: str = "seq_len"
                ) -> list[dict[str, Any]]:
    """One point per series and x (``axis``, field "n"): the median over reliable rows (all
    rows, hollow, when none is reliable; only timings can be unreliable)."""
    out = []
    for s in ss:
        n = numeric(s.rows, axis)
        y = numeric(s.rows, metric)
        bad = unreliable_mask(s.rows) if timed(metric) else pd.Series(False, index=s.rows.index)
        for x in sorted(n.dropna().unique()):
            at = (n == x) & np.isfinite(y) & (y > 0)
            if not at.any():
                continue
            good = at & ~bad
            use = good if good.any() else at
            first = s.rows[use].iloc[0]
            value = float(y[use].median())
            out.append({"series": s.name, "label": s.label, "layer": s.layer,
                        "variant": s.variant, "run": s.run,
                        "dash": look.dash(s.layer, s.variant), "n": float(x), "value": value,
                        "hollow": not bool(good.any()),
                        "value_text": _value_text(metric, value), **tooltip_row(first)})
    return out


def _value_text(metric: str, value: float) -> str:
    if metric.endswith("_bytes"):
        return fmt.nbytes(value)
    if metric.startswith("time"):
        return fmt.num(value) + " ms"
    if metric.startswith("flops"):
        return fmt.si(value)
    return fmt.num(value)


def guides(ss: list[Series], points: list[dict[str, Any]], axis: str = "seq_len"
           ) -> list[dict[str, Any]]:
    """The paper's slopes along ``axis`` (the distinct leading FLOP exponents of the layers
    shown) as lines from the geometric mean of the values at the smallest x."""
    if not points:
        return []
    exps = set()
    for s in ss:
        terms = row_terms(s.rows)
        for t in terms[:1]:
            e = exponent(t, axis)[0]
            if not math.isnan(e) and e >= 0:  # 0: a flat guide (a decode step's cost)
                exps.add(e)
    xs = sorted({p["n"] for p in points})
    x0, x1 = xs[0], xs[-1]
    starts = [p["value"] for p in points if p["n"] == x0]
    y0 = float(np.exp(np.mean(np.log(starts))))
    symbol = fmt.AXIS_SYMBOL.get(axis, axis)
    out = []
    for e in sorted(exps):
        label = f"∝ {symbol}" if e == 1 else f"∝ {fmt.power(symbol, e)}"
        for x in np.geomspace(x0, x1, 16):
            out.append({"guide": label, "n": float(x), "value": y0 * (float(x) / x0) ** e})
    return out


# --------------------------------------------------------------------------- spec pieces


def x_encoding(ticks: Sequence[float] = (), title: str = "sequence length n", base: int = 2
       ) -> dict[str, Any]:
    """The x axis (field "n"), log; ``ticks``: label exactly the measured x when few."""
    axis: dict[str, Any] = {"format": "~g", "grid": True}
    if 0 < len(ticks) <= 12:
        axis["values"] = list(ticks)
    return {"field": "n", "type": "quantitative", "title": title,
            "scale": {"type": "log", "base": base, "nice": False}, "axis": axis}


def y_encoding(title: str, kind: str) -> dict[str, Any]:
    return {"field": "value", "type": "quantitative", "title": title,
            "scale": {"type": "log", "nice": False},
            "axis": {"format": _FORMAT[kind], "grid": True, "tickCount": 6}}


def colour_encoding(ss: list[Series], look: Look, legend: bool) -> dict[str, Any]:
    names = list(dict.fromkeys(s.label for s in ss))
    colours = [look.colours.get(next(s.layer for s in ss if s.label == n), "#444444")
               for n in names]
    return {"field": "label", "type": "nominal", "sort": names,
            "scale": {"domain": names, "range": colours},
            "legend": {"title": vega.LEGEND_HINT, "orient": "right",
                       "symbolType": "stroke", "labelLimit": 260} if legend else None}


def _dash_enc() -> dict[str, Any]:
    return {"field": "dash", "type": "ordinal", "legend": None,
            "scale": {"domain": list(range(len(_DASHES))), "range": [list(d) for d in _DASHES]}}


def pick_opacity(picked: float = 1.0) -> dict[str, Any]:
    return {"condition": {"param": "pick", "value": picked, "empty": True}, "value": DIM}


def _shape(runs: Sequence[str], title: str) -> dict[str, Any]:
    return {"field": "run", "type": "nominal", "title": title,
            "scale": {"domain": list(runs), "range": list(SHAPES[:len(runs)])}}


def panel(ss: list[Series], points: list[dict[str, Any]], *, title: str, y_title: str,
          kind: str, look: Look, runs: Sequence[str], guide_points: list[dict[str, Any]],
          legend: bool, rules: Sequence[dict[str, Any]] = (),
          hrule: float | None = None, axis: str = "seq_len",
          under: Sequence[dict[str, Any]] = (), over: Sequence[dict[str, Any]] = (),
          size: tuple[int, int] = (PANEL_W, PANEL_H), shape_title: str = "run"
          ) -> dict[str, Any]:
    """One log-log panel: guides, series lines, filled and hollow points with tooltips;
    ``rules``: vertical marks ({"n": x, "label": text}); ``hrule``: a horizontal line;
    ``axis``: what x is (field "n"); ``under``/``over``: more layers below/above the
    series. ``ss``: every series of the figure (one colour domain for all its panels);
    several ``runs``: a point shape each (field "run", legend ``shape_title``)."""
    many = len(runs) > 1
    colour = colour_encoding(ss, look, legend)
    ticks = sorted({p["n"] for p in points})
    x = x_encoding(ticks, fmt.AXIS_LABEL.get(axis, axis))
    symbol = fmt.AXIS_SYMBOL.get(axis, axis)
    tips = [{"field": f, "type": "nominal" if f != "n" else "quantitative",
             "title": {"value_text": "value", "series": "series", "n": symbol}.get(f, f)}
            for f in _TIPS]
    if many:
        tips.insert(1, {"field": "run", "type": "nominal", "title": shape_title})
    layers: list[dict[str, Any]] = [*under]
    if guide_points:
        layers.append({"data": {"values": guide_points}, "mark": {
            "type": "line", "strokeDash": [2, 3], "color": GUIDE, "strokeWidth": 1},
            "encoding": {"x": x, "y": y_encoding(y_title, kind), "detail": {"field": "guide"}}})
        layers.append({"data": {"values": guide_points},
                       "transform": [{"window": [{"op": "rank", "as": "r"}],
                                      "groupby": ["guide"],
                                      "sort": [{"field": "n", "order": "descending"}]},
                                     {"filter": "datum.r == 1"}],
                       "mark": {"type": "text", "align": "right", "dx": -3, "dy": -6,
                                "color": GUIDE, "fontSize": 10},
                       "encoding": {"x": x, "y": y_encoding(y_title, kind),
                                    "text": {"field": "guide"}}})
    if hrule is not None:
        layers.append({"data": {"values": [{"value": hrule}]},
                       "mark": {"type": "rule", "color": "#333333", "strokeWidth": 1},
                       "encoding": {"y": {"field": "value", "type": "quantitative"}}})
    for rule in rules:
        layers.append({"data": {"values": [rule]},
                       "mark": {"type": "rule", "color": "#666666", "strokeDash": [4, 3]},
                       "encoding": {"x": {"field": "n", "type": "quantitative"}}})
        layers.append({"data": {"values": [rule]},
                       "mark": {"type": "text", "align": "left", "baseline": "top", "dx": 3,
                                "y": 2, "color": "#444444", "fontSize": 10},
                       "encoding": {"x": {"field": "n", "type": "quantitative"},
                                    "text": {"field": "label"}}})
    line: dict[str, Any] = {
        "data": {"values": points},
        "mark": {"type": "line", "strokeWidth": 1.8},
        "encoding": {"x": x, "y": y_encoding(y_title, kind), "color": colour,
                     "strokeDash": _dash_enc(), "detail": {"field": "series"},
                     "opacity": pick_opacity()}}
    if legend:
        line["params"] = [{"name": "pick", "select": {"type": "point", "fields": ["label"]},
                           "bind": "legend"}]
    layers.append(line)
    for hollow in (False, True):
        enc: dict[str, Any] = {"x": x, "y": y_encoding(y_title, kind), "color": colour,
                               "opacity": pick_opacity(), "tooltip": tips}
        if many:
            enc["shape"] = _shape(runs, shape_title)
        layers.append({"data": {"values": points},
                       "transform": [{"filter": f"datum.hollow == {str(hollow).lower()}"}],
                       "mark": {"type": "point", "filled": not hollow, "size": 42,
                                "strokeWidth": 1.4, **({"fill": "white"} if hollow else {})},
                       "encoding": enc})
    layers += over
    return {"title": {"text": title, "anchor": "start", "fontSize": 13},
            "width": size[0], "height": size[1], "layer": layers}


def figure(panels: list[dict[str, Any]], per_row: int | None = None) -> dict[str, Any]:
    """Panels side by side (``per_row`` to a row, rows stacked), one legend, the report's
    font; each distinct inline data set moved to the spec's ``datasets``, once."""
    resolve = {"scale": {"y": "independent", "x": "independent"}}
    body: dict[str, Any] = {"hconcat": panels, "spacing": 28, "resolve": resolve}
    if per_row is not None and len(panels) > per_row:
        body = {"vconcat": [{"hconcat": panels[i:i + per_row], "spacing": 28,
                             "resolve": resolve}
                            for i in range(0, len(panels), per_row)],
                "spacing": 22, "resolve": resolve}
    datasets: dict[str, list[Any]] = {}
    body = _hoist(body, datasets, {})
    return {**body, "datasets": datasets,
            "config": {"font": "DejaVu Sans", "view": {"stroke": "#cccccc"},
                       "axis": {"labelFontSize": 11, "titleFontSize": 11.5},
                       "legend": {"labelFontSize": 11, "titleFontSize": 11},
                       "background": "white"},
            "padding": 6}


def _hoist(node: Any, datasets: dict[str, list[Any]], names: dict[str, str]) -> Any:
    """``node`` with every {"data": {"values": [...]}} replaced by {"data": {"name": ...}}
    and the values stored in ``datasets`` under that name (equal values share one)."""
    if isinstance(node, list):
        return [_hoist(v, datasets, names) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "data" and isinstance(value, dict) and set(value) == {"values"}:
            text = json.dumps(value["values"], sort_keys=True, default=str)
            if text not in names:
                names[text] = f"d{len(names)}"
                datasets[names[text]] = value["values"]
            out[key] = {"name": names[text]}
        else:
            out[key] = _hoist(value, datasets, names)
    return out



# --------------------------------------------------------------------------- the charts


def headline(df: pd.DataFrame, look: Look, runs: Sequence[str]) -> Chart | None:
    """Time and peak memory against n for every layer, log-log, with the paper's slopes."""
    found = pick_slice(df, keep=IDENTITY if len(runs) > 1 else ())
    if found is None or found.rows.empty:
        return None
    ss = series(found.rows, look, len(runs) > 1)
    panels: list[dict[str, Any]] = []
    hollow = False
    for metric, title, y_title, kind in (
            ("time_ms_median", "Time vs n", "median time (ms)", "time"),
            ("peak_mem_bytes", "Peak memory vs n", "peak memory (bytes)", "bytes")):
        if metric not in found.rows.columns:
            continue
        pts = cost_points(ss, metric, look)
        if not pts:
            continue
        hollow |= any(p["hollow"] for p in pts)
        panels.append(panel(ss, pts, title=title, y_title=y_title, kind=kind, look=look,
                            runs=runs, guide_points=guides(ss, pts), legend=not panels))
    if not panels:
        return None
    at = f" at {found.fixed}" if found.fixed else ""
    more = (f" Other d ({', '.join(fmt.num(v) for v in found.others)}) are in the scaling "
            "plots." if found.others else "")
    caption = (f"Every layer's median time and peak memory against sequence length{at}, "
               "log-log. Grey dotted: the slopes of the paper's FLOP terms (∝ n, ∝ n²), "
               "from the smallest n. Hover a point for the case; click a legend entry to "
               "show that layer alone (shift-click adds)."
               + (" Hollow: timing flagged unreliable (left out of fits)." if hollow else "")
               + more)
    return Chart(figure(panels), caption, "time and peak memory against sequence length")


def reference_layer(rows: pd.DataFrame) -> tuple[str, str] | None:
    """The (layer, variant) every cost is divided by: dense attention if present, else the
    first self-attention layer in report order."""
    infos = layer_infos(rows)
    layers = list(dict.fromkeys(rows["layer"].astype(str)))
    pick = "attention" if "attention" in layers else next(
        (lay for lay in sorted(layers, key=lambda n: infos[n].sort_key)
         if infos[lay].family == "self-attention"), None)
    if pick is None:
        return None
    variant = sorted(rows.loc[rows["layer"].astype(str) == pick, "variant"].astype(str))[0]
    return pick, variant


def ratio_points(ss: list[Series], ref: Series | None, metric: str, look: Look,
                  base: dict[str, Series] | None = None) -> list[dict[str, Any]]:
    """Per series and n: cost / the reference's cost at the same n; ``hollow`` where either
    timing was unreliable (drawn hollow, left out of every ratio a sentence or table
    quotes)."""
    out = []
    for s in ss:
        other = base.get(f"{s.layer}\0{s.variant}\0{extra_of(s)}") if base is not None else ref
        if other is None or other is s:
            continue
        mine = {p["n"]: p for p in cost_points([s], metric, look)}
        theirs = {p["n"]: p for p in cost_points([other], metric, look)}
        for n in sorted(set(mine) & set(theirs)):
            a, b = mine[n], theirs[n]
            ratio = a["value"] / b["value"]
            out.append({**a, "value": ratio, "value_text": f"{ratio:.3g}×",
                        "hollow": bool(a["hollow"] or b["hollow"]),
                        "time": f"{a['value_text']} vs {b['value_text']}"})
    return out


def extra_of(s: Series) -> str:
    return s.extra


def crossover_chart(df: pd.DataFrame, look: Look, runs: Sequence[str]) -> Chart | None:
    """FLOPs and time of each layer divided by self-attention's, against n, with n = d and
    n = 2d marked: above 1 the layer is costlier than attention (the paper's crossover)."""
    if len(runs) > 1:
        df = df[df["run"] == runs[0]]
    found = pick_slice(df)
    if found is None or found.rows.empty:
        return None
    ref_key = reference_layer(found.rows)
    if ref_key is None:
        return None
    ss = series(found.rows, look, False)
    refs = [s for s in ss if (s.layer, s.variant) == ref_key]
    if not refs:
        return None
    ref = refs[0]
    ns = numeric(found.rows, "seq_len")
    lo, hi = float(ns.min()), float(ns.max())
    rules = [] if found.d is None else [
        {"n": m * found.d, "label": label} for m, label in ((1, "n = d"), (2, "n = 2d"))
        if lo <= m * found.d <= hi]
    panels: list[dict[str, Any]] = []
    flop = "flops_analytic" if "flops_analytic" in found.rows.columns else None
    ref_name = look.label(*ref_key)
    for metric, title in ((flop, "FLOPs"), ("time_ms_median", "Time")):
        if metric is None or metric not in found.rows.columns:
            continue
        pts = ratio_points(ss, ref, metric, look)
        if not pts:
            continue
        panels.append(panel([s for s in ss if s is not ref], pts,
                            title=f"{title} ÷ {ref_name}", y_title=f"{title.lower()} ratio",
                            kind="ratio", look=look, runs=[runs[0]], guide_points=[],
                            legend=not panels, rules=rules, hrule=1.0))
    if not panels:
        return None
    at = f" at {found.fixed}" if found.fixed else ""
    which = f" (run {runs[0]})" if len(runs) > 1 else ""
    caption = (f"Crossovers: each layer's cost divided by {ref_name}'s at the same n{at}"
               f"{which}, log-log. Above the line at 1 the layer costs more than "
               "attention; where a curve crosses 1 is the crossover. Vaswani et al. put the "
               "FLOP crossover of attention and recurrence near n = d (dashed), LSTM-like "
               "layers near n = 2d. Hollow: a ratio with an unreliable timing.")
    return Chart(figure(panels), caption, "cost ratio to self-attention against n")


def comparison_chart(df: pd.DataFrame, look: Look, runs: Sequence[str]) -> Chart | None:
    """Every run's time and peak memory divided by the first run's, per layer, against n
    (the same layer, variant and parameters; dtype and device may differ)."""
    if len(runs) < 2:
        return None
    found = pick_slice(df, keep=("run", *IDENTITY))
    if found is None or found.rows.empty:
        return None
    rows = found.rows
    base_rows = rows[rows["run"] == runs[0]]
    base = {f"{s.layer}\0{s.variant}\0{extra_of(s)}": s
            for s in series(base_rows, look, False)}
    panels: list[dict[str, Any]] = []
    for metric, title in (("time_ms_median", "Time"), ("peak_mem_bytes", "Peak memory")):
        if metric not in rows.columns:
            continue
        pts: list[dict[str, Any]] = []
        ss_all: list[Series] = []
        for run in runs[1:]:
            ss = series(rows[rows["run"] == run], look, False)
            for s in ss:
                s.name = s.name + (f" · {run}" if len(runs) > 2 else "")
            pts += ratio_points(ss, None, metric, look, base=base)
            ss_all += ss
        if pts:
            panels.append(panel(ss_all, pts, title=f"{title}: run ÷ {runs[0]}",
                                y_title=f"{title.lower()} ratio", kind="ratio", look=look,
                                runs=[runs[0]], guide_points=[], legend=not panels,
                                hrule=1.0))
    if not panels:
        return None
    at = f" at {found.fixed}" if found.fixed else ""
    caption = (f"Each run's cost divided by the first run's ({runs[0]}) for the same layer, "
               f"variant and n{at}: below 1 the other run is faster (smaller), above 1 the "
               "first run wins. Hollow: a ratio with an unreliable timing (the table "
               "below leaves those out).")
    return Chart(figure(panels), caption, "run-against-run cost ratio against n")
