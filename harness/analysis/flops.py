"""FLOP reconciliation: the analytic model against both counters, case by case.

The results record FLOPs in one convention (2 per multiply-add; the sweep has already
converted fvcore's 1 per multiply-add). A counter ratio outside ``1 +- rtol`` (1%) is
flagged; a ratio of 0.5 gets a hint that a 1-per-multiply-add count slipped through, and a
ratio of 0 that the counter skipped the op (the rows' ``flops_uncounted`` lists such ops).
Executed vs useful (``flops_analytic / flops_useful_analytic``) is reported beside it but is
not a counter error: it is work a variant does that the math does not need.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness.analysis.frame import numeric, params_in, require
from harness.analysis.layers import families

RTOL = 0.01
COUNTERS = ("flops_fvcore", "flops_torch")


def _counter_issue(name: str, ratio: float, rtol: float) -> str | None:
    short = name.removeprefix("flops_")
    if math.isnan(ratio):
        return None
    if abs(ratio - 1.0) <= rtol:
        return None
    if ratio == 0:
        return f"{short} counted 0 (op not counted)"
    hint = " (1 FLOP per multiply-add?)" if abs(ratio - 0.5) <= rtol * 0.5 else ""
    return f"{short} off by {100 * (ratio - 1):+.1f}%{hint}"


def flop_reconciliation(df: pd.DataFrame, *, rtol: float = RTOL) -> pd.DataFrame:
    """One row per case that has an analytic FLOP count: the three sources side by side.

    Columns: ``family``, the parameter columns, ``status``, ``flops_analytic``,
    ``flops_useful_analytic``, ``flops_fvcore``, ``flops_torch``, ``ratio_fvcore`` and
    ``ratio_torch`` (counter / analytic; NaN where a counter gave nothing),
    ``fvcore_agrees`` / ``torch_agrees`` (True, False, or None where not counted),
    ``executed_over_useful``, ``wasted_flops`` (executed - useful), ``flops_uncounted``,
    ``flag`` ("ok", or the issues joined by "; ").
    """
    require(df, ("status", "layer", "variant", "flops_analytic"), "flop_reconciliation")
    if not 0 <= rtol < 1:
        raise ValueError(f"rtol must be in [0, 1), got {rtol}")
    analytic = numeric(df, "flops_analytic")
    have = analytic.notna()
    sub = df[have]
    analytic = analytic[have]
    out = pd.DataFrame({"family": families(sub)})
    for column in (*params_in(df), "status"):
        out[column] = sub[column]
    out["flops_analytic"] = analytic
    useful = numeric(sub, "flops_useful_analytic")
    out["flops_useful_analytic"] = useful
    issues: list[list[str]] = [[] for _ in range(len(sub))]
    for counter in COUNTERS:
        counted = numeric(sub, counter)
        short = counter.removeprefix("flops_")
        ratio = (counted / analytic.where(analytic > 0)).where(counted.notna())
        out[counter] = counted
        out[f"ratio_{short}"] = ratio
        agrees: list[Any] = []
        for i, r in enumerate(ratio.to_numpy()):
            issue = _counter_issue(counter, float(r), rtol)
            if issue:
                issues[i].append(issue)
            agrees.append(None if math.isnan(r) else issue is None)
        out[f"{short}_agrees"] = pd.array(agrees, dtype="boolean")
    out["executed_over_useful"] = analytic / useful.where(useful > 0)
    out["wasted_flops"] = analytic - useful
    uncounted = (sub["flops_uncounted"] if "flops_uncounted" in sub.columns
                 else pd.Series(None, index=sub.index))
    out["flops_uncounted"] = uncounted.astype(object).where(uncounted.notna(), None)
    for i, ops in enumerate(out["flops_uncounted"].to_numpy()):
        if isinstance(ops, str) and ops.strip():
            issues[i].append(f"uncounted ops: {ops}")
    out["flag"] = ["; ".join(found) if found else "ok" for found in issues]
    return out.reset_index(drop=True)
