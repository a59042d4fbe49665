"""Fitted scaling exponents: the log-log slope of a metric along one swept axis.

Rules (quoted by reports, so fixed here):

* Only rows with status "ok" are fitted; failed rows of the same sweep are counted
  (``n_failed``). A value that is missing, zero or negative cannot be logged and is left out
  (``n_excluded``: e.g. a counter that counts 0 for nn.LSTM).
* A *sweep* is a group of rows that agree on every parameter column except the axis, with
  at least two distinct axis values among its rows (of any status).
* Asymptotic tail (``tail=True``): with more than ``min_tail`` (4) distinct axis values,
  only the largest half of them is fitted, but never fewer than ``min_tail``; otherwise all.
  ``fit_range`` says which: "all 4 points" or "tail: top 4 of 6 points" (distinct values).
* Timings flagged unreliable (``time_unreliable``: contention, throttling, spread) are left
  out of fits of time metrics (``harness.analysis.frame.timed``) and counted
  (``excluded_unreliable``); other metrics keep those rows (FLOPs and memory are not disturbed
  by a busy machine). They are left out before the tail is chosen, like unloggable values.
* ``flag``: "too few reliable points" when leaving out unreliable timings leaves fewer than
  3 distinct axis values (it would have had enough), "too few points" with fewer than 3
  distinct axis values fitted otherwise, "interval too wide" when the 95% interval's
  half-width exceeds ``max_ci_half_width`` (0.25), else "ok".
* ``model_slope``: the same fit of the exact analytic model over the same rows
  (``act_mem_analytic_bytes`` for memory metrics, ``flops_analytic`` otherwise), so a
  measured slope can be judged against the model with its lower-order terms.
* ``theory_exponent`` / ``theory_low``: the asymptotic and the lowest FLOP exponent of the
  case's FLOP terms along the axis (harness.theory.exponent; the terms come with the rows,
  harness.analysis.layers), for FLOP and time metrics; NaN for others.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from harness import schema
from harness.analysis.frame import (
    describe,
    group_positions,
    missing,
    numeric,
    ok_mask,
    params_in,
    require,
    restore_dtypes,
    timed,
    unreliable_mask,
)
from harness.analysis.layers import family_of, layer_infos, row_terms
from harness.analysis.stats import fit_loglog, loglog_slope
from harness.theory import exponent

DEFAULT_METRICS = ("flops_analytic", "flops_torch", "time_ms_median", "peak_mem_bytes")
DEFAULT_AXES = tuple(a.name for a in schema.AXES if a.fitted)
MIN_POINTS = 3
MIN_TAIL = 4
MAX_CI_HALF_WIDTH = 0.25
_SIZE_ORDER = schema.SIZE_PRIORITY

#: metric -> the analytic column its ``model_slope`` is computed from (default flops_analytic)
MODEL_METRIC = {"peak_mem_bytes": "act_mem_analytic_bytes",
                "act_mem_analytic_bytes": "act_mem_analytic_bytes",
                "state_bytes": "state_bytes_analytic"}


def model_metric_of(metric: str) -> str:
    """The analytic column a metric is compared with."""
    return MODEL_METRIC.get(metric, "flops_analytic")


def has_theory(metric: str) -> bool:
    """FLOP counts and times are what the FLOP theory predicts (time ~ FLOPs)."""
    return (metric.startswith("flops_") and metric != "flops_per_s") or metric.startswith("time_ms")


def _tail(values: np.ndarray, tail: bool, min_tail: int) -> tuple[np.ndarray, str]:
    """Distinct axis values to fit, and the ``fit_range`` text."""
    distinct = np.unique(values)
    m = len(distinct)
    if tail and m > min_tail:
        keep = max(min_tail, math.ceil(m / 2))
        return distinct[-keep:], f"tail: top {keep} of {m} points"
    return distinct, f"all {m} points" if m != 1 else "1 point"


def _fit_group(x: np.ndarray, y: np.ndarray, model: np.ndarray, unreliable: np.ndarray,
               n_failed: int, *, tail: bool, min_tail: int, max_half: float) -> dict[str, Any]:
    """Fit one sweep; ``x``, ``y``, ``model`` are its ok rows (x finite and positive) and
    ``unreliable`` marks the rows to leave out (all False unless the metric is a timing)."""
    usable = np.isfinite(y) & (y > 0)
    reliable = usable & ~unreliable
    xs, ys, ms = x[reliable], y[reliable], model[reliable]
    kept, fit_range = _tail(xs, tail, min_tail)
    used = np.isin(xs, kept)
    xs, ys, ms = xs[used], ys[used], ms[used]
    n_unreliable = int(unreliable.sum())
    out: dict[str, Any] = {
        "slope": math.nan, "ci_low": math.nan, "ci_high": math.nan, "ci_half_width": math.nan,
        "r2": math.nan, "n_points": len(xs),
        "n_excluded": int((~usable & ~unreliable).sum()),
        "excluded_unreliable": n_unreliable, "n_failed": n_failed,
        "points_used": tuple(float(v) for v in kept),
        "fit_range": fit_range if len(kept) else "no points",
        "model_slope": loglog_slope(xs, ms) if np.all(np.isfinite(ms)) else math.nan,
    }
    if len(kept) >= 2:
        fit = fit_loglog(xs, ys)
        out.update(slope=fit.slope, ci_low=fit.ci_low, ci_high=fit.ci_high,
                   ci_half_width=fit.ci_half_width, r2=fit.r2)
    if len(kept) < MIN_POINTS:
        enough_before = len(np.unique(x[usable])) >= MIN_POINTS
        out["flag"] = "too few reliable points" if n_unreliable and enough_before else \
            "too few points"
    elif out["ci_half_width"] > max_half:
        out["flag"] = "interval too wide"
    else:
        out["flag"] = "ok"
    return out


def fit_exponents(
    df: pd.DataFrame,
    metrics: Iterable[str] = DEFAULT_METRICS,
    axes: Iterable[str] = DEFAULT_AXES,
    *,
    tail: bool = True,
    min_tail: int = MIN_TAIL,
    max_ci_half_width: float = MAX_CI_HALF_WIDTH,
) -> pd.DataFrame:
    """One row per layer x variant x metric x axis x fixed parameters: the fitted exponent.

    Columns: ``family, layer, variant, metric, axis``, every other parameter column (the
    axis's own column is missing: it is swept), ``fixed`` (the same as text), ``slope,
    ci_low, ci_high, ci_half_width, r2, n_points, n_excluded, excluded_unreliable, n_failed,
    points_used, fit_range, model_metric, model_slope, theory_exponent, theory_low, flag``
    (``excluded_unreliable``: rows of a time metric left out as unreliable). Metrics and
    axes absent from ``df`` are skipped; a metric not measured at all in a sweep (every ok
    row missing it) gives no row. See the module docstring for the rules.
    """
    require(df, ("status", "layer", "variant"), "fit_exponents")
    if min_tail < MIN_POINTS:
        raise ValueError(f"min_tail must be >= {MIN_POINTS}, got {min_tail}")
    metrics = [m for m in metrics if m in df.columns]
    params = params_in(df)
    ok = ok_mask(df).to_numpy()
    unreliable = unreliable_mask(df).to_numpy()
    values = {c: numeric(df, c).to_numpy()
              for c in {*metrics, *map(model_metric_of, metrics)}}
    rows: list[dict[str, Any]] = []
    infos = layer_infos(df)
    terms = row_terms(df)
    for axis in axes:
        if axis not in df.columns:
            continue
        x_all = numeric(df, axis).to_numpy()
        others = [p for p in params if p != axis]
        for key, pos in group_positions(df, others).items():
            fixed = dict(zip(others, key, strict=True))
            if len(np.unique(x_all[pos][np.isfinite(x_all[pos])])) < 2:
                continue  # not swept along this axis here
            good = pos[ok[pos] & np.isfinite(x_all[pos]) & (x_all[pos] > 0)]
            n_ok = int(ok[pos].sum())
            sweep_terms = next((terms[i] for i in pos if terms[i]), ())
            for metric in metrics:
                if n_ok and not np.isfinite(values[metric][pos[ok[pos]]]).any():
                    continue  # not measured in this sweep
                theory, low = (exponent(sweep_terms, axis)
                               if has_theory(metric) else (math.nan, math.nan))
                model_col = model_metric_of(metric)
                row: dict[str, Any] = {
                    "family": family_of(infos, fixed["layer"]),
                    "layer": fixed["layer"], "variant": fixed["variant"],
                    "metric": metric, "axis": axis,
                    **{p: fixed.get(p) for p in params if p not in ("layer", "variant")},
                    "fixed": describe(fixed),
                    "model_metric": model_col,
                }
                row[axis] = None
                left_out = unreliable[good] if timed(metric) else np.zeros(len(good), bool)
                row.update(_fit_group(x_all[good], values[metric][good],
                                      values[model_col][good], left_out, len(pos) - n_ok,
                                      tail=tail, min_tail=min_tail,
                                      max_half=max_ci_half_width))
                row.update(theory_exponent=theory, theory_low=low)
                rows.append(row)
    columns = ["family", "layer", "variant", "metric", "axis",
               *[p for p in params if p not in ("layer", "variant")], "fixed", "slope",
               "ci_low", "ci_high", "ci_half_width", "r2", "n_points", "n_excluded",
               "excluded_unreliable", "n_failed", "points_used", "fit_range", "model_metric",
               "model_slope", "theory_exponent", "theory_low", "flag"]
    out = pd.DataFrame(rows, columns=columns)
    out = restore_dtypes(out, df, params)
    return out.sort_values(["layer", "variant", "metric", "axis"], kind="stable",
                           ignore_index=True)


def best_fit(fits: list[dict[str, Any]], **where: Any) -> dict[str, Any] | None:
    """The most informative fit among ``fits`` (records of fit_exponents) matching ``where``.

    ``where`` is column=value (None matches a missing value). Preference: flag "ok" first,
    then a slope at all, then the most points fitted, then the largest fixed sizes (closest
    to the asymptote: d_model, seq_len, heads, kernel, window, batch); among equals, the
    first. Used by Table 1 and the headlines.
    """
    def same(a: Any, b: Any) -> bool:
        return missing(a) if missing(b) else (not missing(a) and a == b)

    chosen = [f for f in fits if all(same(f.get(c), v) for c, v in where.items())]
    if not chosen:
        return None

    def size(value: Any) -> float:
        return -1.0 if missing(value) else float(value)

    def rank(f: dict[str, Any]) -> tuple:
        return (f["flag"] == "ok", not missing(f["slope"]), f["n_points"],
                *(size(f.get(c)) for c in _SIZE_ORDER))

    return max(chosen, key=rank)  # max keeps the first of equals
