"""Crossover points: where one layer's cost curve passes another's along an axis.

A *curve* is the ok rows of one layer and variant with every parameter but the axis fixed.
Two curves are compared when they agree on every *shared* parameter (d_model, batch, dtype,
device, mode, seed, and the other size axes); the *layer-specific* ones (heads, kernel,
window, causal, block) belong to each curve and are reported as ``params_a`` /
``params_b`` (an LSTM has no heads, so it is compared with attention at every h).

Between two neighbouring axis values where the sign of log(a) - log(b) changes, both curves
are taken as straight lines in log-log space (exact for power laws), and the crossover is
where the lines meet. A curve is interpolated the same way onto the other curve's axis
values, within the range both cover; nothing is extrapolated. A point where the curves are
equal and the sign changes across it is reported at that point (``exact`` True).

Crossovers in a timing (``harness.analysis.frame.timed``) leave out the rows whose timing
was flagged unreliable (``time_unreliable``) before the curves are built, as fits do; each
crossover says how many rows its two curves lost (``excluded_unreliable``). A curve left
with fewer than two points is not compared at all.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness import schema
from harness.analysis.frame import (
    describe,
    group_positions,
    numeric,
    ok_mask,
    params_in,
    require,
    timed,
    unreliable_mask,
)
from harness.analysis.layers import family_of, layer_infos

LAYER_SPECIFIC = schema.axis_names(optional=True)


def _curve(sub: pd.DataFrame, axis: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, log y) of positive finite points, x sorted; the median where an x repeats."""
    x, y = numeric(sub, axis), numeric(sub, metric)
    good = np.isfinite(x) & (x > 0) & np.isfinite(y) & (y > 0)
    per_x = pd.Series(y[good].to_numpy()).groupby(x[good].to_numpy()).median()
    return per_x.index.to_numpy(dtype=float), np.log(per_x.to_numpy(dtype=float))


def crossing_points(x: np.ndarray, da: np.ndarray) -> list[tuple[float, float, float, int, bool]]:
    """Sign changes of ``da`` (log a - log b) over sorted, positive ``x``.

    Returns (x at the crossing, x below, x above, sign below, exact) per crossing; sign
    below is -1 when a is cheaper below it. Between two points the crossing is interpolated
    linearly in log x; a run of zeros between opposite signs is a crossing at its first
    point (exact). A zero at either end, or a touch without a sign change, is no crossing.
    """
    sign = np.sign(da)
    nonzero = np.flatnonzero(sign != 0)
    out = []
    for i, j in itertools.pairwise(nonzero):
        if sign[i] == sign[j]:
            continue
        if j == i + 1:
            lx0, lx1 = math.log(x[i]), math.log(x[j])
            at = math.exp(lx0 + (lx1 - lx0) * da[i] / (da[i] - da[j]))
            out.append((at, float(x[i]), float(x[j]), int(sign[i]), False))
        else:
            out.append((float(x[i + 1]), float(x[i]), float(x[j]), int(sign[i]), True))
    return out


def _compatible(a: dict[str, Any], b: dict[str, Any], shared: Sequence[str]) -> bool:
    return all(a.get(p) == b.get(p) for p in shared)


def crossovers(
    df: pd.DataFrame,
    metric: str,
    axis: str = "seq_len",
    pairs: Iterable[tuple[str, str]] | None = None,
    *,
    layer_specific: Sequence[str] = LAYER_SPECIFIC,
) -> pd.DataFrame:
    """Every crossover of ``metric`` along ``axis`` between curves of different layers/variants.

    ``pairs``: (layer_a, layer_b) names to compare, in that orientation; None compares every
    two curves whose (layer, variant) differ. Returns one row per crossover: ``layer_a,
    variant_a, layer_b, variant_b, metric, axis, crossover_at, exact, bracket_low,
    bracket_high`` (the measured axis values around it), ``cheaper_below, cheaper_above``
    ("layer/variant"), ``params_a, params_b`` (layer-specific parameters), the shared
    parameter columns, ``fixed`` (them, as text) and ``excluded_unreliable`` (rows of the
    two curves left out as unreliable timings; always 0 for other metrics). Only ok rows
    count.
    """
    require(df, ("status", "layer", "variant", axis, metric), "crossovers")
    params = params_in(df)
    specific = [p for p in layer_specific if p in params and p != axis]
    shared = [p for p in params if p not in ("layer", "variant", axis, *specific)]
    ok = df[ok_mask(df)]
    drop = unreliable_mask(ok).to_numpy() & timed(metric)
    keys = ["layer", "variant", *specific, *shared]
    curves = []
    for values, pos in group_positions(ok, keys).items():
        key = dict(zip(keys, values, strict=True))
        left_out = drop[pos]
        lx, ly = _curve(ok.iloc[pos[~left_out]], axis, metric)
        if len(lx) >= 2:
            curves.append((key, lx, ly, int(left_out.sum())))
    wanted = None if pairs is None else [(str(a), str(b)) for a, b in pairs]
    infos = layer_infos(df)
    rows: list[dict[str, Any]] = []
    for (ka, xa, ya, ua), (kb, xb, yb, ub) in itertools.permutations(curves, 2):
        la, lb = (str(ka["layer"]), str(ka["variant"])), (str(kb["layer"]), str(kb["variant"]))
        if (wanted is None or la[0] == lb[0]) and la >= lb:
            continue  # each unordered pair once, in name order
        if wanted is not None and (la[0], lb[0]) not in wanted:
            continue
        if not _compatible(ka, kb, shared):
            continue
        lo, hi = max(xa[0], xb[0]), min(xa[-1], xb[-1])
        x = np.unique(np.concatenate([xa, xb]))
        x = x[(x >= lo) & (x <= hi)]
        if len(x) < 2:
            continue
        lx = np.log(x)
        da = np.interp(lx, np.log(xa), ya) - np.interp(lx, np.log(xb), yb)
        for at, below, above, sign_below, exact in crossing_points(x, da):
            name_a, name_b = f"{la[0]}/{la[1]}", f"{lb[0]}/{lb[1]}"
            rows.append({
                "layer_a": la[0], "variant_a": la[1], "layer_b": lb[0], "variant_b": lb[1],
                "family_a": family_of(infos, la[0]), "family_b": family_of(infos, lb[0]),
                "metric": metric, "axis": axis, "crossover_at": at, "exact": exact,
                "bracket_low": below, "bracket_high": above,
                "cheaper_below": name_a if sign_below < 0 else name_b,
                "cheaper_above": name_b if sign_below < 0 else name_a,
                "params_a": describe({p: ka.get(p) for p in specific}),
                "params_b": describe({p: kb.get(p) for p in specific}),
                **{p: ka.get(p) for p in shared},
                "fixed": describe({p: ka.get(p) for p in shared}),
                "excluded_unreliable": ua + ub,
            })
    columns = ["layer_a", "variant_a", "layer_b", "variant_b", "family_a", "family_b",
               "metric", "axis", "crossover_at", "exact", "bracket_low", "bracket_high",
               "cheaper_below", "cheaper_above", "params_a", "params_b", *shared, "fixed",
               "excluded_unreliable"]
    return pd.DataFrame(rows, columns=columns)
