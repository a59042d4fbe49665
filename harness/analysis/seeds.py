"""The three claims of the seeds' other attention forms (issue 14), judged from results.

* **Relative attention**: the memory *beyond plain attention at the same case* (peak of
  ``attention_relative`` minus the peak of ``attention`` at equal n, d, h, batch, dtype,
  device, mode, causal) grows as n^2 d_h for ``materialized`` and as n^2 with no d_h
  factor for ``skewed``. Fitted along n (and along d at fixed h, that is along d_h, where
  the results vary it) against the same difference of the analytic activation estimates.
* **Local 2D attention**: time and peak memory along n (the image's positions; height and
  width grow with it) against full attention's at the same d, each judged against its own
  analytic model over the same points (FLOPs for time, activations for memory).
* **Cross attention**: forward time along m at fixed n and along n at fixed m; a decode
  step's time along n (flat: the model's exponent is 0) and along m.

Verdicts as Table 1's (harness.analysis.table1.exponent_verdict): within max(tolerance,
the 95% interval) of the model's exponent over the same points. Torch-free.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.exponents import fit_exponents
from harness.analysis.frame import numeric, ok_mask
from harness.analysis.table1 import EXPONENT_TOL, exponent_verdict

RELATIVE, LOCAL2D, CROSS, BASELINE = ("attention_relative", "attention_local2d",
                                      "attention_cross", "attention")
#: What a relative-attention case and its plain-attention baseline must share.
MATCH = ("seq_len", "d_model", "heads", "batch", "dtype", "device", "mode", "causal")
#: Image sizes: they grow with n, so a fit along n leaves them out of the sweep's key.
IMAGE = ("height", "width")

CLAIM_COLUMNS = ["claim", "layer", "variant", "mode", "metric", "axis", "fixed", "n_points",
                 "slope", "ci_half_width", "model_slope", "verdict", "reason"]


def _ok(df: pd.DataFrame, layer: str) -> pd.DataFrame:
    return df[ok_mask(df) & (df["layer"].astype(str) == layer)]


def relative_extra_memory(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``attention_relative`` with ``peak_mem_bytes`` and ``act_mem_analytic_bytes``
    replaced by their excess over the matching ``attention`` row (``baseline_peak_bytes``
    keeps attention's own peak); relative rows without a baseline are dropped."""
    rel, base = _ok(df, RELATIVE), _ok(df, BASELINE)
    keys = [k for k in MATCH if k in df.columns]
    if rel.empty or base.empty:
        return rel.iloc[0:0]
    base = base.drop_duplicates(keys)[[*keys, "peak_mem_bytes", "act_mem_analytic_bytes"]]
    base = base.rename(columns={"peak_mem_bytes": "baseline_peak_bytes",
                                "act_mem_analytic_bytes": "baseline_act_bytes"})
    merged = rel.merge(base.astype({k: rel[k].dtype for k in keys}), on=keys, how="inner")
    merged["peak_mem_bytes"] = numeric(merged, "peak_mem_bytes") - numeric(
        merged, "baseline_peak_bytes")
    merged["act_mem_analytic_bytes"] = numeric(merged, "act_mem_analytic_bytes") - numeric(
        merged, "baseline_act_bytes")
    return merged


def _judged(fits: pd.DataFrame, claim: str, tol: float) -> list[dict[str, Any]]:
    rows = []
    for _, fit in fits.iterrows():
        verdict, reason = exponent_verdict(fit, tol)
        rows.append({"claim": claim, **{c: fit.get(c) for c in CLAIM_COLUMNS
                                        if c not in ("claim", "verdict", "reason")},
                     "verdict": verdict, "reason": reason})
    return rows


def _fits(df: pd.DataFrame, metrics: tuple[str, ...], axes: tuple[str, ...]) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame()
    return fit_exponents(df, metrics, axes, tail=False)


def seeds_claims(df: pd.DataFrame, *, tol: float = EXPONENT_TOL) -> pd.DataFrame:
    """One row per fitted exponent behind the three claims (see the module docstring):
    ``claim`` (relative, local2d, cross), ``layer``, ``variant``, ``mode``, ``metric``
    ("peak_mem_bytes" of relative rows is the memory beyond attention), ``axis``,
    ``fixed``, ``n_points``, ``slope``, ``ci_half_width``, ``model_slope``, ``verdict``,
    ``reason``."""
    rows: list[dict[str, Any]] = []
    extra = relative_extra_memory(df)
    rows += _judged(_fits(extra, ("peak_mem_bytes",), ("seq_len", "d_model")), "relative", tol)

    layers = df["layer"].astype(str)
    local = df[ok_mask(df) & (layers == LOCAL2D)]
    if not local.empty:
        widths = set(numeric(local, "d_model").dropna().tolist())
        plain = df[ok_mask(df) & (layers == BASELINE)
                   & numeric(df, "d_model").isin(widths).to_numpy()]
        both = pd.concat([local, plain], ignore_index=True)
        both = both.assign(**{c: pd.NA for c in IMAGE if c in both.columns})
        fits = _fits(both, ("time_ms_median", "peak_mem_bytes"), ("seq_len",))
        rows += _judged(fits, "local2d", tol)

    cross = df[ok_mask(df) & (layers == CROSS)]
    rows += _judged(_fits(cross, ("time_ms_median",), ("seq_len", "src_len")), "cross", tol)
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def local2d_vs_attention(df: pd.DataFrame) -> pd.DataFrame:
    """Side by side at equal n, d, batch, dtype, device, mode: full attention's and each
    local 2D variant's median time and peak memory, and attention's over the variant's."""
    keys = [k for k in ("seq_len", "d_model", "heads", "batch", "dtype", "device", "mode")
            if k in df.columns]
    local, plain = _ok(df, LOCAL2D), _ok(df, BASELINE)
    if local.empty or plain.empty:
        return pd.DataFrame()
    base = plain.drop_duplicates(keys)[[*keys, "time_ms_median", "peak_mem_bytes"]].rename(
        columns={"time_ms_median": "attention_ms", "peak_mem_bytes": "attention_peak_bytes"})
    cols = [*keys, "variant", "height", "width", "time_ms_median", "peak_mem_bytes",
            "path_length_measured", "path_length_analytic"]
    merged = local[[c for c in cols if c in local.columns]].merge(
        base.astype({k: local[k].dtype for k in keys}), on=keys, how="inner")
    with np.errstate(divide="ignore", invalid="ignore"):
        merged["time_ratio"] = numeric(merged, "attention_ms") / numeric(
            merged, "time_ms_median")
        merged["memory_ratio"] = numeric(merged, "attention_peak_bytes") / numeric(
            merged, "peak_mem_bytes")
    return merged.sort_values([*keys, "variant"], ignore_index=True)
