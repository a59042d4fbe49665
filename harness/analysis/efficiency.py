"""Achieved throughput against the device's peak and the roofline, and the memory frontier.

Roofline (Williams et al. 2009): a kernel of arithmetic intensity I (FLOPs per byte moved)
cannot exceed min(peak FLOP/s, I * peak bytes/s). The peaks come from the environment
columns ``env_peak_flops`` / ``env_peak_bytes_per_s`` (measured or from a table:
``env_peak_source``); where they are absent the fractions are missing, not guessed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.frame import (
    describe,
    groups,
    numeric,
    ok_mask,
    params_in,
    require,
    restore_dtypes,
    unreliable_mask,
)
from harness.analysis.layers import families, family_of, layer_infos


def efficiency(df: pd.DataFrame) -> pd.DataFrame:
    """Per ok case: achieved FLOP/s, fraction of peak, intensity and the roofline bound.

    Columns: ``family``, the parameter columns, ``time_ms_median``, ``flops_per_s``
    (recorded, or flops_analytic / median time where not recorded), ``tokens_per_s``,
    ``arithmetic_intensity``, ``peak_flops``, ``peak_bytes_per_s``, ``peak_source``,
    ``fraction_of_peak`` (flops_per_s / peak_flops), ``roofline_flops_per_s``
    (min(peak_flops, intensity * peak_bytes_per_s)), ``fraction_of_roofline``,
    ``ridge_intensity`` (peak_flops / peak_bytes_per_s) and ``bound`` ("compute" when the
    intensity is at or above the ridge, "memory" below it, None without both peaks), and
    ``time_unreliable`` (the case's timing was flagged, so its FLOP/s is too), and
    ``above_peak`` (fraction_of_peak > 1: impossible, so the peak does not describe how the
    case ran - e.g. float32 on TF32 tensor cores held against the IEEE peak; see
    ``peak_source`` and the ``tf32_*`` columns).
    """
    require(df, ("status", "layer"), "efficiency")
    ok = df[ok_mask(df)]
    out = pd.DataFrame({"family": families(ok)})
    for column in params_in(df):
        out[column] = ok[column]
    time_ms = numeric(ok, "time_ms_median")
    achieved = numeric(ok, "flops_per_s")
    fallback = numeric(ok, "flops_analytic") / (time_ms.where(time_ms > 0) / 1e3)
    out["time_ms_median"] = time_ms
    out["flops_per_s"] = achieved.fillna(fallback)
    out["tokens_per_s"] = numeric(ok, "tokens_per_s")
    intensity = numeric(ok, "arithmetic_intensity")
    peak = numeric(ok, "env_peak_flops")
    peak_bw = numeric(ok, "env_peak_bytes_per_s")
    out["arithmetic_intensity"] = intensity
    out["peak_flops"] = peak
    out["peak_bytes_per_s"] = peak_bw
    out["peak_source"] = (ok["env_peak_source"] if "env_peak_source" in ok.columns
                          else pd.Series(None, index=ok.index, dtype=object))
    out["fraction_of_peak"] = out["flops_per_s"] / peak.where(peak > 0)
    roof = np.minimum(peak, intensity * peak_bw)  # NaN unless all three are known
    out["roofline_flops_per_s"] = roof
    out["fraction_of_roofline"] = out["flops_per_s"] / roof.where(roof > 0)
    ridge = peak / peak_bw.where(peak_bw > 0)
    out["ridge_intensity"] = ridge
    known = intensity.notna() & ridge.notna()
    side = pd.Series(np.where(intensity >= ridge, "compute", "memory"), index=out.index)
    out["bound"] = side.where(known, None)
    out["time_unreliable"] = unreliable_mask(ok)
    out["above_peak"] = (out["fraction_of_peak"] > 1).fillna(False).astype(bool)
    return out.reset_index(drop=True)


def memory_frontier(df: pd.DataFrame, axis: str = "seq_len") -> pd.DataFrame:
    """Per sweep along ``axis`` (every other parameter fixed): where memory runs out.

    Columns: ``family``, the other parameter columns, ``fixed`` (them as text),
    ``largest_ok`` (largest axis value with status ok), ``smallest_oom`` (smallest with
    status oom; NaN if none), ``smallest_timeout``, ``n_ok``, ``n_oom``, ``n_failed`` (any
    status but ok),
    ``peak_mem_at_largest_ok`` (bytes), ``consistent`` (False when an OOM happened below a
    size that ran: a flaky or fragmented allocator, worth a look). Only sweeps with at
    least one ok or oom row appear.
    """
    require(df, ("status", "layer", axis), "memory_frontier")
    others = [p for p in params_in(df) if p != axis]
    rows: list[dict[str, Any]] = []
    infos = layer_infos(df)
    for fixed, sub in groups(df, others):
        status = sub["status"].astype(object)
        x = numeric(sub, axis)
        ok_x, oom_x = x[status.eq("ok")].dropna(), x[status.eq("oom")].dropna()
        if ok_x.empty and oom_x.empty:
            continue
        largest_ok = ok_x.max() if len(ok_x) else math.nan
        smallest_oom = oom_x.min() if len(oom_x) else math.nan
        at_largest = numeric(sub, "peak_mem_bytes")[status.eq("ok") & x.eq(largest_ok)]
        timeouts = x[status.eq("timeout")].dropna()
        rows.append({
            "family": family_of(infos, fixed["layer"]), **fixed, "fixed": describe(fixed),
            "largest_ok": largest_ok, "smallest_oom": smallest_oom,
            "smallest_timeout": timeouts.min() if len(timeouts) else math.nan,
            "n_ok": len(ok_x), "n_oom": len(oom_x),
            "n_failed": int((~status.eq("ok")).sum()),
            "peak_mem_at_largest_ok": at_largest.max() if at_largest.notna().any() else math.nan,
            "consistent": not (len(ok_x) and len(oom_x) and smallest_oom < largest_ok),
        })
    columns = ["family", *others, "fixed", "largest_ok", "smallest_oom", "smallest_timeout", "n_ok",
               "n_oom", "n_failed", "peak_mem_at_largest_ok", "consistent"]
    return restore_dtypes(pd.DataFrame(rows, columns=columns), df, others)


def memory_curve(df: pd.DataFrame, axis: str = "seq_len") -> pd.DataFrame:
    """Peak memory vs ``axis`` for ok cases, measured beside the analytic estimate.

    Columns: ``family``, the parameter columns, ``peak_mem_bytes``,
    ``act_mem_analytic_bytes``, ``measured_over_analytic``; sorted by layer, variant and
    the axis. (Its log-log slope is in fit_exponents, metric "peak_mem_bytes".)
    """
    require(df, ("status", "layer", "variant", axis), "memory_curve")
    ok = df[ok_mask(df)]
    out = pd.DataFrame({"family": families(ok)})
    for column in params_in(df):
        out[column] = ok[column]
    measured, analytic = numeric(ok, "peak_mem_bytes"), numeric(ok, "act_mem_analytic_bytes")
    out["peak_mem_bytes"] = measured
    out["act_mem_analytic_bytes"] = analytic
    out["measured_over_analytic"] = measured / analytic.where(analytic > 0)
    return out.sort_values(["layer", "variant", axis], kind="stable", ignore_index=True)
