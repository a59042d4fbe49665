"""Report figures: scaling (log-log, one facet per metric), memory with the OOM frontier, and
the roofline. Measuring never plots; these read only the results dataframe.

Each builder returns a :class:`harness.report.model.Plot` (or None when there is nothing to
draw) whose ``draw`` fills any matplotlib Figure or SubFigure, so the HTML and the PDF
renderer draw the same picture. Only rows with status "ok" are drawn as points; OOM cases
appear as markers on the memory plot, never as values. A timing flagged unreliable
(``time_unreliable``) is drawn as a hollow marker in the layer's colour, on the time panels
and the roofline: it stays visible but is marked as what the fits leave out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import FigureBase
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    NullLocator,
)

from harness import schema
from harness.analysis.crossovers import LAYER_SPECIFIC
from harness.analysis.efficiency import efficiency
from harness.analysis.frame import (
    describe,
    group_positions,
    numeric,
    ok_mask,
    timed,
    unreliable_mask,
)
from harness.analysis.layers import row_terms
from harness.report import fmt
from harness.report.model import Plot
from harness.report.style import (
    FIG_WIDTH,
    GUIDE_COLOUR,
    PANEL_HEIGHT,
    layer_labels,
    layer_order,
    run_markers,
    variant_styles,
)
from harness.theory import Term, exponent

#: Parameters a figure is faceted by when they vary (the layer-specific ones never are).
#: (compile: eager and compiled rows of a layer are separate facets, never one median)
SHARED_ORDER = (*schema.SIZE_PRIORITY, *schema.axis_names("setting"),
                *schema.axis_names("flag", optional=False), "seed")
MAX_SLICES = 4
FLOP_METRICS = ("flops_analytic", "flops_torch", "flops_fvcore")


def _inches(container: FigureBase) -> tuple[float, float]:
    """Width and height of a Figure or SubFigure (FigureBase's stub lacks bbox and dpi)."""
    box: Any = container
    return box.bbox.width / box.dpi, box.bbox.height / box.dpi


@dataclass(frozen=True)
class Curve:
    run: str
    layer: str
    variant: str
    extra: str  # layer-specific parameters that vary within this layer, as text
    terms: Sequence[Term]  # the cases' FLOP terms (harness.theory): the theory's slope guides
    x: np.ndarray
    y: np.ndarray
    #: per point: only unreliable timings at this x (drawn hollow); None: all reliable
    hollow: np.ndarray | None = field(default=None)

    @property
    def any_hollow(self) -> bool:
        return self.hollow is not None and bool(self.hollow.any())


#: Legend entry and caption sentence for hollow markers, the same in every figure.
HOLLOW_LABEL = "hollow: unreliable timing"
HOLLOW_NOTE = (" Hollow markers: unreliable timing (other processes competed for the CPU, the "
               "GPU throttled, or the samples spread too widely); these points are left out "
               "of fits and crossovers.")


def hollow_handle() -> Line2D:
    """The legend entry for hollow (unreliable) points."""
    return Line2D([], [], color="#404040", linestyle="none", marker="o",
                  markerfacecolor="none", label=HOLLOW_LABEL)


@dataclass
class Look:
    """What every figure of one report shares: colours, line styles, markers."""

    colours: dict[str, str]
    styles: dict[tuple[str, str], Any]
    markers: dict[str, str]
    legend_w: float = 2.0  # inches at the right of every figure for the legend
    order: dict[str, int] = field(default_factory=dict)  # layer -> report rank
    labels: dict[str, str] = field(default_factory=dict)  # layer -> legend name

    def rank(self, layer: str) -> tuple[int, str]:
        return self.order.get(layer, len(self.order)), layer

    def label(self, layer: str, variant: str) -> str:
        return f"{self.labels.get(layer, layer)} · {variant}"

    @property
    def many_runs(self) -> bool:
        return len(self.markers) > 1


def _formatter(metric: str) -> FuncFormatter:
    if metric.endswith("_bytes"):
        return FuncFormatter(lambda v, _: fmt.nbytes(v))
    if metric.startswith("flops") or metric.endswith("per_s"):
        return FuncFormatter(lambda v, _: fmt.si(v))
    return FuncFormatter(lambda v, _: fmt.num(v))


def _log_axes(ax: Any, xs: Sequence[float], metric: str, xbase: int = 2) -> None:
    ax.set_xscale("log", base=xbase)
    distinct = sorted({float(v) for v in xs})
    if 0 < len(distinct) <= 10:
        ax.xaxis.set_major_locator(FixedLocator(distinct))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt.num(v)))
    if metric.endswith("_bytes"):  # powers of two read as 1 KiB, 4 KiB, 1 MiB
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_locator(LogLocator(base=2, numticks=8))
    else:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
    ax.yaxis.set_major_formatter(_formatter(metric))
    _no_minor(ax)


def panels(container: FigureBase, nrows: int, ncols: int, look: Look, *, top: float = 0.32,
           bottom: float = 0.5, left: float = 0.78, gap_x: float = 0.85,
           gap_y: float = 0.75) -> Any:
    """A grid of axes with fixed margins in inches and room for the legend at the right.

    A fixed layout (not constrained layout) because it costs a fraction of the drawing
    time and gives the same geometry in the HTML figure and on the PDF page. Not seaborn's
    FacetGrid: it makes its own pyplot figure, while a Plot draws into the Figure or PDF-page
    SubFigure it is given, and the facets of one figure differ in y unit and log base.
    """
    w_in, h_in = _inches(container)
    usable_w = max(w_in - left - look.legend_w - 0.1, 1.0)
    usable_h = max(h_in - top - bottom, 0.8)
    axis_w = max((usable_w - (ncols - 1) * gap_x) / ncols, 0.5)
    axis_h = max((usable_h - (nrows - 1) * gap_y) / nrows, 0.5)
    return container.subplots(nrows, ncols, squeeze=False, gridspec_kw={
        "left": left / w_in, "right": (left + usable_w) / w_in,
        "top": 1 - top / h_in, "bottom": bottom / h_in,
        "wspace": gap_x / axis_w, "hspace": gap_y / axis_h})


def _no_minor(ax: Any) -> None:
    """No minor ticks: unlabelled on log axes anyway, and each one costs drawing time."""
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_locator(NullLocator())


def _varying(df: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    out = []
    for column in columns:
        if column in df.columns:
            values = {fmt.plain(v) for v in df[column].astype(object).tolist()}
            if len(values) > 1:
                out.append(column)
    return out


def slice_keys(df: pd.DataFrame, axis: str) -> list[str]:
    """Shared parameters that vary in ``df`` (besides ``axis``): one facet row per value."""
    shared = [p for p in SHARED_ORDER if p not in LAYER_SPECIFIC and p != axis]
    return _varying(df, shared)


def _pick_slices(keys: list[tuple]) -> tuple[list[tuple], int]:
    """At most MAX_SLICES slices, spread over the sorted list (first and last kept)."""
    if len(keys) <= MAX_SLICES:
        return keys, len(keys)
    idx = sorted({round(i * (len(keys) - 1) / (MAX_SLICES - 1)) for i in range(MAX_SLICES)})
    return [keys[i] for i in idx], len(keys)


def _sort_key(value: Any) -> tuple:
    value = fmt.plain(value)
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def _medians(x: np.ndarray, y: np.ndarray, flagged: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    """Median y per x over the reliable rows where an x has any, else over all its rows, and
    per x whether it had only unreliable ones (a hollow point): what the fits see, drawn."""
    everything = pd.Series(y).groupby(x).median()
    reliable = pd.Series(y[~flagged]).groupby(x[~flagged]).median()
    hollow = ~everything.index.isin(reliable.index)
    return everything.where(hollow, reliable.reindex(everything.index)), np.asarray(hollow)


def curves(df: pd.DataFrame, axis: str, metric: str, *, min_points: int = 2
           ) -> dict[tuple, list[Curve]]:
    """ok rows of ``metric`` along ``axis``: {slice key: curves}; median where x repeats.

    For a timing, rows flagged unreliable count only at an x without a reliable row, and
    such points are marked ``hollow``."""
    ok = df[ok_mask(df)]
    if axis not in ok.columns or metric not in ok.columns or ok.empty:
        return {}
    slices = slice_keys(df, axis)
    specific = [p for p in LAYER_SPECIFIC if p in ok.columns and p != axis]
    x_all, y_all = numeric(ok, axis).to_numpy(), numeric(ok, metric).to_numpy()
    terms = row_terms(ok)
    flagged = unreliable_mask(ok).to_numpy() & timed(metric)
    keys = ["run", "layer", "variant", *specific, *slices]
    varying_specific: dict[str, list[str]] = {}
    for layer, sub in ok.groupby(ok["layer"].astype(str)):
        varying_specific[str(layer)] = _varying(sub, specific)
    out: dict[tuple, list[Curve]] = {}
    for key, pos in group_positions(ok, keys).items():
        values = dict(zip(keys, key, strict=True))
        good = np.isfinite(x_all[pos]) & (x_all[pos] > 0) & np.isfinite(y_all[pos]) & \
            (y_all[pos] > 0)
        if not good.any():
            continue
        per_x, hollow = _medians(x_all[pos][good], y_all[pos][good], flagged[pos][good])
        if len(per_x) < min_points:
            continue
        layer = str(values["layer"])
        extra = describe({p: values[p] for p in varying_specific.get(layer, [])}, ())
        curve = Curve(str(values["run"]), layer, str(values["variant"]), extra, terms[pos[0]],
                      per_x.index.to_numpy(dtype=float), per_x.to_numpy(dtype=float),
                      hollow if hollow.any() else None)
        out.setdefault(tuple(values[s] for s in slices), []).append(curve)
    return out


def _width(ncols: int, look: Look) -> float:
    """Figure width: about 3.1 in per panel plus the legend, at most FIG_WIDTH."""
    return min(FIG_WIDTH, 3.1 * ncols + look.legend_w + 0.5)


def _slice_title(df: pd.DataFrame, axis: str, key: tuple) -> str:
    return describe(dict(zip(slice_keys(df, axis), key, strict=True)), ())


def _order(items: list[Curve], look: Look) -> list[Curve]:
    return sorted(items, key=lambda c: (look.rank(c.layer), c.variant, c.extra, c.run))


def _draw_curves(ax: Any, items: list[Curve], look: Look) -> None:
    for c in _order(items, look):
        colour, marker = look.colours[c.layer], look.markers[c.run]
        filled = None if c.hollow is None else np.flatnonzero(~c.hollow).tolist()
        ax.plot(c.x, c.y, color=colour, linestyle=look.styles[(c.layer, c.variant)],
                marker=marker, markevery=filled, label="_nolegend_")
        if c.any_hollow:
            ax.plot(c.x[c.hollow], c.y[c.hollow], color=colour, linestyle="none",
                    marker=marker, markerfacecolor="none", markeredgecolor=colour,
                    label="_nolegend_")
    labelled = {(c.layer, c.variant) for c in items if c.extra}
    for c in _order(items, look):
        if (c.layer, c.variant) in labelled:
            ax.annotate(fmt.mpl(c.extra), (c.x[-1], c.y[-1]), xytext=(3, 0),
                        textcoords="offset points", fontsize=6.5, va="center",
                        color=look.colours[c.layer])


def _draw_guides(ax: Any, items: list[Curve], axis: str) -> None:
    """Theory slopes as dotted grey lines from the smallest measured point of the panel."""
    exps = sorted({e for c in items
                   if not math.isnan(e := exponent(c.terms, axis)[0])})
    if not exps:
        return
    x0 = min(float(c.x[0]) for c in items)
    x1 = max(float(c.x[-1]) for c in items)
    starts = [float(c.y[0]) for c in items if float(c.x[0]) == x0]
    y0 = float(np.exp(np.mean(np.log(starts))))
    ylim = ax.get_ylim()
    xs = np.geomspace(x0, x1, 50)
    symbol = fmt.AXIS_SYMBOL.get(axis, axis)
    for e in exps:
        ys = y0 * (xs / x0) ** e
        ax.plot(xs, ys, color=GUIDE_COLOUR, linestyle=(0, (1, 2)), linewidth=1.0, zorder=0.5,
                label="_nolegend_")
        top = ylim[0] * (ylim[1] / ylim[0]) ** 0.9  # keep the label clear of the title
        inside = np.flatnonzero((ys >= ylim[0]) & (ys <= top))
        if len(inside):
            i = inside[-1]
            ax.annotate(f"∝ {fmt.power(symbol, e)}", (xs[i], ys[i]), xytext=(-2, 3),
                        textcoords="offset points", ha="right", fontsize=7,
                        color=GUIDE_COLOUR)
    ax.set_ylim(ylim)


def _legend(container: FigureBase, items: list[Curve], look: Look, guides: bool,
            extra: Sequence[Line2D] = (), points: bool = False) -> None:
    pairs = sorted({(c.layer, c.variant) for c in items})
    pairs.sort(key=lambda p: (look.rank(p[0]), p[1]))
    if points:  # a scatter: a variant is a marker shape, as drawn
        handles = [Line2D([], [], color=look.colours[layer], linestyle="none",
                          marker=_point_marker(look, layer, variant),
                          label=fmt.mpl(look.label(layer, variant))) for layer, variant in pairs]
    else:
        handles = [Line2D([], [], color=look.colours[layer],
                          linestyle=look.styles[(layer, variant)],
                          marker="o" if not look.many_runs else None,
                          label=fmt.mpl(look.label(layer, variant))) for layer, variant in pairs]
    if look.many_runs and not points:
        runs = [r for r in look.markers if any(c.run == r for c in items)]
        handles += [Line2D([], [], color="#404040", linestyle="none", marker=look.markers[r],
                           label=fmt.mpl(f"run: {r}")) for r in runs]
    if guides:
        handles.append(Line2D([], [], color=GUIDE_COLOUR, linestyle=(0, (1, 2)),
                              label="theory slope"))
    handles += list(extra)
    w_in, h_in = _inches(container)
    container.legend(handles=handles, loc="upper left", frameon=False, title="layer · variant",
                     bbox_to_anchor=(1 - look.legend_w / w_in, 1 - 0.25 / h_in))


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes,
            fontsize=8, color="#606060")
    ax.set_xticks([])
    ax.set_yticks([])


def flop_metric(df: pd.DataFrame) -> str | None:
    """The FLOP column to plot: the analytic model if recorded, else a counter."""
    ok = df[ok_mask(df)]
    for metric in FLOP_METRICS:
        if metric in ok.columns and (numeric(ok, metric) > 0).any():
            return metric
    return None


ROWS_PER_PLOT = 2


def scaling_plots(df: pd.DataFrame, axis: str, look: Look,
                  metrics: Sequence[str] | None = None) -> list[Plot]:
    """Time, FLOPs and memory (or ``metrics``) against ``axis`` (log-log), one facet per
    metric and slice; at most ROWS_PER_PLOT slices per figure, so that each fits a page."""
    if metrics is None:
        metrics = [m for m in ("time_ms_median", flop_metric(df), "peak_mem_bytes") if m]
    metrics = [m for m in metrics if m in df.columns]
    found = {m: curves(df, axis, m) for m in metrics}
    metrics = [m for m in metrics if found[m]]
    if not metrics:
        return []
    keys = sorted({k for m in metrics for k in found[m]}, key=lambda k: tuple(map(_sort_key, k)))
    shown, total = _pick_slices(keys)
    chunks = [shown[i:i + ROWS_PER_PLOT] for i in range(0, len(shown), ROWS_PER_PLOT)]
    return [_scaling_plot(df, axis, look, metrics, found, chunk, len(shown), total)
            for chunk in chunks]


def _scaling_plot(df: pd.DataFrame, axis: str, look: Look, metrics: list[str],
                  found: dict[str, dict[tuple, list[Curve]]], shown: list[tuple],
                  n_shown: int, total: int) -> Plot:
    symbol = fmt.AXIS_SYMBOL.get(axis, axis)
    all_items = [c for m in metrics for k in shown for c in found[m].get(k, [])]
    hollow = any(c.any_hollow for c in all_items)

    def draw(container: FigureBase) -> None:
        axes = panels(container, len(shown), len(metrics), look)
        for r, key in enumerate(shown):
            title = _slice_title(df, axis, key)
            for col, metric in enumerate(metrics):
                ax = axes[r][col]
                items = found[metric].get(key, [])
                head = f"{fmt.METRIC_SHORT.get(metric, metric)} vs {symbol}"
                ax.set_title(fmt.mpl(f"{head} · {title}" if title else head))
                if not items:
                    _empty(ax, "not measured")
                    continue
                _log_axes(ax, [v for c in items for v in c.x], metric)
                _draw_curves(ax, items, look)
                if metric not in ("peak_mem_bytes", "state_bytes"):
                    _draw_guides(ax, items, axis)
                ax.set_xlabel(fmt.AXIS_LABEL.get(axis, axis))
                ax.set_ylabel(fmt.METRIC_LABEL.get(metric, metric))
        _legend(container, all_items, look, guides=True,
                extra=[hollow_handle()] if hollow else [])

    flops = flop_metric(df)
    source = {"flops_analytic": "the analytic model's executed FLOPs",
              "flops_torch": "torch's FlopCounterMode count",
              "flops_fvcore": "fvcore's count"}.get(flops or "", "")
    note = f" FLOPs: {source}, 2 per multiply-add." if source else ""
    more = (f" {n_shown} of {total} slices shown ({', '.join(slice_keys(df, axis))} "
            "spread over its range)." if total > n_shown else "")
    caption = (f"Log-log scaling along {fmt.AXIS_LABEL.get(axis, axis)}: one facet per metric"
               f"{' and per ' + ', '.join(slice_keys(df, axis)) if slice_keys(df, axis) else ''}"
               "; colour = layer, line style = variant"
               f"{', marker = run' if look.many_runs else ''}. Dotted grey lines are the "
               "theory's asymptotic FLOP slopes (Table 1) through the smallest measured point; "
               "a curve parallel to its guide scales as the theory says. Memory has no theory "
               f"guide. Only cases with status ok are drawn.{note}"
               f"{HOLLOW_NOTE if hollow else ''}{more}")
    height = PANEL_HEIGHT * len(shown) + 0.3
    return Plot(draw, (_width(len(metrics), look), height), caption,
                f"scaling of {', '.join(metrics)} along {axis}")


def memory_plot(df: pd.DataFrame, look: Look) -> Plot | None:
    """Peak memory vs n per layer, with a cross where a sweep first ran out of memory."""
    axis = "seq_len"
    if axis not in df.columns:
        return None
    found = curves(df, axis, "peak_mem_bytes", min_points=1)
    model = curves(df, axis, "act_mem_analytic_bytes", min_points=1)
    ooms = _oom_points(df, axis)
    if not found:  # nothing ran: the frontier table says where memory ran out
        return None
    keys = sorted(set(found) | set(ooms), key=lambda k: tuple(map(_sort_key, k)))
    shown, total = _pick_slices(keys)
    all_items = [c for k in shown for c in found.get(k, [])]

    def draw(container: FigureBase) -> None:
        ncols = min(len(shown), 2)
        nrows = math.ceil(len(shown) / ncols)
        axes = panels(container, nrows, ncols, look)
        for i, key in enumerate(shown):
            ax = axes[i // ncols][i % ncols]
            title = _slice_title(df, axis, key)
            ax.set_title(fmt.mpl("peak memory vs n" + (f" · {title}" if title else "")))
            items = found.get(key, [])
            marks = ooms.get(key, [])
            xs = [v for c in items for v in c.x] + [m[2] for m in marks]
            if not items:
                _empty(ax, "no case ran")
            else:
                _log_axes(ax, xs, "peak_mem_bytes")
                for c in _order(model.get(key, []), look):
                    if any(m.layer == c.layer and m.variant == c.variant and m.run == c.run
                           for m in items):
                        ax.plot(c.x, c.y, color=look.colours[c.layer], linestyle=(0, (1, 1.5)),
                                linewidth=1.0, alpha=0.8, label="_nolegend_")
                _draw_curves(ax, items, look)
                ax.set_ylabel(fmt.METRIC_LABEL["peak_mem_bytes"])
            for _run, layer, x in marks:
                if items:
                    ax.plot([x], [0.96], transform=ax.get_xaxis_transform(), marker="X",
                            markersize=8, color=look.colours.get(layer, "#000000"),
                            linestyle="none", clip_on=False)
            if marks and not items:
                ax.text(0.5, 0.3, fmt.mpl("OOM: " + ", ".join(sorted({f"{m[1]} at n={fmt.num(m[2])}"
                                                                      for m in marks}))),
                        ha="center", transform=ax.transAxes, fontsize=7)
            ax.set_xlabel(fmt.AXIS_LABEL[axis])
        for j in range(len(shown), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        extra = [Line2D([], [], color="#404040", linestyle=(0, (1, 1.5)), linewidth=1.0,
                        label="analytic activation estimate")] if model else []
        if ooms:
            extra.append(Line2D([], [], color="#404040", marker="X", linestyle="none",
                                markersize=7, label="first n out of memory"))
        _legend(container, all_items, look, guides=False, extra=extra)

    more = f" {len(shown)} of {total} slices shown." if total > len(shown) else ""
    caption = ("Peak memory of the measured call (activations and workspace above what was "
               "allocated before it; parameters excluded) against sequence length, log-log; "
               "dotted in the same colour: the analytic activation estimate. "
               "A cross at the top edge marks the smallest n whose case ran out of memory "
               f"(status oom), in the layer's colour.{more}")
    ncols = min(len(shown), 2)
    nrows = math.ceil(len(shown) / ncols)
    return Plot(draw, (_width(ncols, look) + 0.6, PANEL_HEIGHT * nrows + 0.4), caption,
                "peak memory against sequence length with the OOM frontier")


def _oom_points(df: pd.DataFrame, axis: str) -> dict[tuple, list[tuple[str, str, float]]]:
    oom = df[df["status"].astype(object).eq("oom").fillna(False).astype(bool)]
    if oom.empty:
        return {}
    slices = slice_keys(df, axis)
    keys = ["run", "layer", "variant", *slices]
    out: dict[tuple, list[tuple[str, str, float]]] = {}
    x = numeric(oom, axis).to_numpy()
    for key, pos in group_positions(oom, keys).items():
        values = dict(zip(keys, key, strict=True))
        xs = x[pos][np.isfinite(x[pos])]
        if len(xs):
            out.setdefault(tuple(values[s] for s in slices), []).append(
                (str(values["run"]), str(values["layer"]), float(xs.min())))
    return out


def roofline_plot(df: pd.DataFrame, look: Look) -> Plot | None:
    """Achieved FLOP/s against arithmetic intensity, one panel per run, with the roof."""
    found = []
    for run in look.markers:
        eff = efficiency(df[df["run"] == run])
        good = eff[(eff["arithmetic_intensity"] > 0) & (eff["flops_per_s"] > 0)]
        if not good.empty:
            found.append((run, good))
    if not found:
        return None
    items = [Curve(run, str(r.layer), str(r.variant), "", (), np.array([1.0]),
                   np.array([1.0])) for run, good in found for r in good.itertuples()]
    hollow = any(bool(good["time_unreliable"].any()) for _, good in found)

    def draw(container: FigureBase) -> None:
        ncols = min(len(found), 2)
        nrows = math.ceil(len(found) / ncols)
        axes = panels(container, nrows, ncols, look, top=0.5, gap_y=0.95)
        for i, (run, good) in enumerate(found):
            ax = axes[i // ncols][i % ncols]
            _roofline_panel(ax, run, good, look)
        for j in range(len(found), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        roof = [Line2D([], [], color="#202020", linewidth=1.2, label="roofline (peaks)")]
        _legend(container, items, look, guides=False, points=True,
                extra=[*roof, hollow_handle()] if hollow else roof)

    caption = ("Roofline (Williams et al. 2009): achieved FLOP/s (analytic FLOPs / median "
               "time) against arithmetic intensity (FLOPs per byte moved), one point per case "
               "with status ok, log-log. The black line is min(peak FLOP/s, intensity × peak "
               "bytes/s) from the environment's recorded peaks (their source is in the panel "
               "title); without recorded peaks only the points are drawn."
               f"{HOLLOW_NOTE if hollow else ''}")
    ncols = min(len(found), 2)
    nrows = math.ceil(len(found) / ncols)
    return Plot(draw, (_width(ncols, look) + 1.6, 3.6 * nrows + 0.3), caption,
                "roofline: achieved FLOP/s against arithmetic intensity")


def _point_marker(look: Look, layer: str, variant: str) -> str:
    """Scatter marker of a variant: its line style's rank among the layer's variants."""
    from harness.report.style import LINESTYLES

    style = look.styles.get((layer, variant), "-")
    return ("o", "s", "^", "D", "v")[LINESTYLES.index(style) % 5]


def _first(series: pd.Series) -> Any:
    values = [v for v in series.tolist() if not fmt.missing(v)]
    return values[0] if values else None


def _roofline_panel(ax: Any, run: str, good: pd.DataFrame, look: Look) -> None:
    x = good["arithmetic_intensity"].to_numpy(dtype=float)
    y = good["flops_per_s"].to_numpy(dtype=float)
    shaky = good["time_unreliable"].to_numpy(dtype=bool)  # FLOP/s of an unreliable timing
    for layer in sorted(good["layer"].astype(str).unique(), key=look.rank):
        for variant in sorted(good.loc[good["layer"].astype(str) == layer, "variant"]
                              .astype(str).unique()):
            pick = ((good["layer"].astype(str) == layer)
                    & (good["variant"].astype(str) == variant)).to_numpy()
            marker, colour = _point_marker(look, layer, variant), look.colours[layer]
            for points, face in ((pick & ~shaky, colour), (pick & shaky, "none")):
                if points.any():
                    ax.plot(x[points], y[points], linestyle="none", marker=marker,
                            color=colour, markerfacecolor=face, alpha=0.85, markersize=5)
    peak, bw = _first(good["peak_flops"]), _first(good["peak_bytes_per_s"])
    lo, hi = float(x.min()) / 2, float(x.max()) * 2
    source = _first(good["peak_source"])
    if peak and bw:
        ridge = float(peak) / float(bw)
        lo, hi = min(lo, ridge / 4), max(hi, ridge * 4)
        xs = np.geomspace(lo, hi, 200)
        ax.plot(xs, np.minimum(float(peak), xs * float(bw)), color="#202020", linewidth=1.2)
        ax.annotate(f"peak {fmt.si(peak, 'FLOP/s')}", (hi, float(peak)), xytext=(-2, 3),
                    textcoords="offset points", ha="right", fontsize=7)
        ax.annotate(f"{fmt.si(bw, 'B/s')}", (lo * 1.5, lo * 1.5 * float(bw)), xytext=(3, 3),
                    textcoords="offset points", fontsize=7, rotation=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
    ax.yaxis.set_major_formatter(_formatter("flops_per_s"))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt.num(v)))
    _no_minor(ax)
    device = _first(good["device"]) if "device" in good.columns else None
    where = f"{run} · {device}" if look.many_runs else str(device or run)
    peak_txt = f"peaks: {source}" if source else "peaks not recorded"
    ax.set_title(fmt.mpl(f"{where}\n{peak_txt}"), fontsize=8)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved FLOP/s")


def make_look(df: pd.DataFrame, runs: Sequence[str]) -> Look:
    from harness.report.style import layer_colours

    order = {name: i for i, name in enumerate(layer_order(df))}
    names = layer_labels(df)
    styles = variant_styles(zip(df["layer"].astype(str), df["variant"].astype(str),
                                strict=True))
    markers = run_markers(runs)
    labels = [f"{names.get(layer, layer)} · {variant}" for layer, variant in styles]
    labels += ["analytic activation estimate", "layer · variant"]
    if len(markers) > 1:
        labels += [f"run: {r}" for r in markers]
    longest = max(len(label) for label in labels)
    legend_w = min(max(0.068 * longest + 0.55, 2.0), 3.6)
    return Look(layer_colours(df), styles, markers, legend_w, order, names)
