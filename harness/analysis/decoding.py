"""Table 1 for decoding (``mode: decode``): per-token cost and state against the context n.

A decode row times one generation step after ``seq_len`` (n) positions held in the layer's
state (docs/metrics.md, "Decoding"); its theory terms are per token (an attention step:
n d + d^2; an RNN's: d^2; a convolution's: k d^2, ...), written into the row when it was
measured. :func:`decode_table` fits, per layer, variant and fixed parameters, the log-log
slope in n of the step's FLOPs, its time and the state's bytes, each with a verdict as in
Table 1 (harness.analysis.table1.exponent_verdict); the state's theory is the growth of the
per-token FLOPs in n (attention 1: its KV cache; every other layer 0).
:func:`decode_crossovers` finds the n where an attention step becomes slower than a
DynamicConv (or LightConv) step on the same device. Torch-free.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.crossovers import crossovers
from harness.analysis.exponents import fit_exponents
from harness.analysis.frame import describe, group_positions, numeric, ok_mask, params_in
from harness.analysis.layers import layer_infos, row_terms
from harness.analysis.table1 import EXPONENT_TOL, exponent_verdict
from harness.theory import exponent

#: metric -> (column prefix in decode_table, what it is)
METRICS = {"flops_analytic": "flops", "time_ms_median": "time", "state_bytes": "state"}
#: attention-like layers and the convolutions they are compared with in decoding
ATTENTION = ("attention", "attention_sdpa")
LIGHT = ("dynamicconv", "lightconv")


def decode_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``mode: decode`` (none when the frame has no mode column)."""
    if "mode" not in df.columns:
        return df.iloc[:0]
    return df[df["mode"].astype(str) == "decode"]


def _state_fit(fit: dict[str, Any], theory: float) -> dict[str, Any]:
    """A state fit judged against the state's theory exponent (0 or 1)."""
    return {**fit, "theory_exponent": theory, "theory_low": theory}


def decode_table(df: pd.DataFrame, *, tol: float = EXPONENT_TOL) -> pd.DataFrame:
    """One row per layer x variant x fixed parameters of the decode rows, n swept.

    Columns: ``family, layer, variant``, the fixed parameter columns, ``fixed`` (as text),
    ``n_min, n_max``, and for each of ``flops`` (the step's analytic FLOPs), ``time``
    (median ms per step) and ``state`` (measured state bytes): ``_at_n_min``,
    ``_at_n_max``, ``_exp`` (fitted slope in n), ``_ci``, ``_model``, ``_theory``,
    ``_verdict``, ``_reason``; ``complexity`` (the per-token theory as written).
    """
    dec = decode_rows(df)
    if dec.empty or "seq_len" not in dec.columns:
        return pd.DataFrame()
    others = [p for p in params_in(dec) if p != "seq_len"]
    infos = layer_infos(dec)
    terms = row_terms(dec)
    ok = ok_mask(dec).to_numpy()
    rows = []
    for key, pos in group_positions(dec, others).items():
        good = pos[ok[pos]]
        if not len(good):
            continue
        sub = dec.iloc[good]
        fixed = dict(zip(others, key, strict=True))
        n = numeric(sub, "seq_len").to_numpy(dtype=float)
        row: dict[str, Any] = {"family": infos[str(fixed["layer"])].family, **fixed,
                               "fixed": describe(fixed),
                               "complexity": str(sub["theory_complexity"].iloc[0])
                               if "theory_complexity" in sub.columns else "",
                               "n_min": float(np.nanmin(n)), "n_max": float(np.nanmax(n))}
        sweep_terms = next((terms[i] for i in good if terms[i]), ())
        state_theory, _ = exponent(sweep_terms, "seq_len") if sweep_terms else (math.nan, 0)
        metrics = [m for m in METRICS if m in sub.columns]
        fits = fit_exponents(dec.iloc[pos], metrics=metrics, axes=("seq_len",))
        for metric in metrics:
            tag = METRICS[metric]
            values = numeric(sub, metric).to_numpy(dtype=float)
            row[f"{tag}_at_n_min"] = float(np.nanmedian(values[n == n.min()])) \
                if np.isfinite(values[n == n.min()]).any() else math.nan
            row[f"{tag}_at_n_max"] = float(np.nanmedian(values[n == n.max()])) \
                if np.isfinite(values[n == n.max()]).any() else math.nan
            found = fits[fits["metric"] == metric].to_dict("records") if not fits.empty else []
            fit = found[0] if found else None
            if fit is not None and tag == "state":
                fit = _state_fit(fit, state_theory)
            verdict, reason = exponent_verdict(fit, tol)
            row.update({f"{tag}_exp": fit["slope"] if fit else math.nan,
                        f"{tag}_ci": fit["ci_half_width"] if fit else math.nan,
                        f"{tag}_model": fit["model_slope"] if fit else math.nan,
                        f"{tag}_theory": fit["theory_exponent"] if fit else math.nan,
                        f"{tag}_verdict": verdict, f"{tag}_reason": reason})
        rows.append(row)
    return pd.DataFrame(rows)


def decode_crossovers(df: pd.DataFrame, metric: str = "time_ms_median") -> pd.DataFrame:
    """Where an attention step's ``metric`` crosses a DynamicConv / LightConv step's along
    n (harness.analysis.crossovers; the same device, dtype, d and batch)."""
    dec = decode_rows(df)
    if dec.empty or metric not in dec.columns:
        return pd.DataFrame()
    present = set(dec["layer"].astype(str))
    pairs = [(a, b) for a in ATTENTION for b in LIGHT if a in present and b in present]
    if not pairs:
        return pd.DataFrame()
    return crossovers(dec, metric, "seq_len", pairs)


#: parameters two layers' decode curves must share to be compared
SHARED = ("d_model", "batch", "dtype", "device")


def decode_ratios(df: pd.DataFrame, metric: str = "time_ms_median") -> pd.DataFrame:
    """Attention's step ``metric`` over a DynamicConv / LightConv step's at every n both
    measured (ok rows; the median over a layer's variants at one n), per shared
    parameters; a layer as a Wu et al. block is its own curve, named "dynamicconv (block)".
    Columns: ``layer_a, layer_b``, the shared columns, ``seq_len, ratio``."""
    dec = decode_rows(df)
    if dec.empty or metric not in dec.columns:
        return pd.DataFrame()
    ok = dec[ok_mask(dec)]
    shared = [c for c in SHARED if c in ok.columns]
    value = numeric(ok, metric)
    block = ok["block"].astype(object).eq(True) if "block" in ok.columns else False
    names = ok["layer"].astype(str).where(~block, ok["layer"].astype(str) + " (block)")
    med = value.groupby([names, *[ok[c].astype(str) for c in shared],
                         numeric(ok, "seq_len")]).median()
    rows = []
    for a in ATTENTION:
        for b in (name for light in LIGHT for name in (light, f"{light} (block)")):
            if a not in med.index.get_level_values(0) or b not in med.index.get_level_values(0):
                continue
            both = pd.concat([med.loc[a], med.loc[b]], axis=1, keys=["a", "b"]).dropna()
            for key, r in both.iterrows():
                *fixed, n = key if isinstance(key, tuple) else (key,)
                rows.append({"layer_a": a, "layer_b": b, **dict(zip(shared, fixed, strict=True)),
                             "seq_len": n, "ratio": r["a"] / r["b"]})
    return pd.DataFrame(rows)
