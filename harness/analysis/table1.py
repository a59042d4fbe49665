"""Vaswani et al. Table 1 (and Wu et al.'s rows), measured: one row per layer and variant.

Each cell is a verdict with a short reason:

* **Exponents** (FLOPs and time along n, FLOPs and time along d): the measured slope
  *agrees* when ``|slope - model_slope| <= max(EXPONENT_TOL, ci_half_width)`` (0.15) -
  ``model_slope`` being the exact analytic model over the same points, lower-order terms
  included - *and* the model's slope is possible under the theory, i.e. within the same
  tolerance of ``[theory_low, theory_exponent]`` (see harness.theory.exponent). A variant
  that executes more than the math needs (band LightConv: n^2) therefore *disagrees* with
  the theory even though its counter matches its model; the reason says which. A fit
  flagged "too few points", "too few reliable points" or "interval too wide" is
  *inconclusive*. Time exponents leave out timings flagged unreliable (fit_exponents) and
  the reason says how many.
  FLOPs are the counted ones (``flops_torch``) where the counter gave positive values,
  else the analytic model (``flops_source`` says which).
* **Sequential ops**: the measured growth class (stats.growth_class) of
  ``seq_ops_measured`` over n vs the theory ("O(1)" or "O(n)"); measured == analytic at
  every n is reported in the reason. A growth class from fewer than ``MIN_POINTS`` (3)
  distinct n is *inconclusive*, never agrees/disagrees: two points fix a slope, not a
  class (3 -> 3 cannot tell O(1) from O(log n)).
* **Max path length**: *agrees* when measured == analytic at every n where it was measured
  (inf == inf); the measured growth class vs the theory's is a separate cell.
* ``note``: where time does not follow FLOPs, or the variant executes more than the useful
  FLOPs, instead of hiding it.

Rows are per (family, layer, variant, device, dtype, mode). Table 1 groups layers by
family, but the theory differs inside a family (dense vs restricted attention, contiguous
vs dilated convolution), so a layer is the unit here; ``family`` is the first column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from harness import schema
from harness.analysis.exponents import MIN_POINTS, best_fit, fit_exponents
from harness.analysis.frame import (
    describe,
    fmt_num,
    groups,
    numeric,
    ok_mask,
    params_in,
    require,
    unreliable_phrase,
)
from harness.analysis.layers import LayerInfo, layer_infos
from harness.analysis.stats import growth_class
from harness.theory import family_rank
from harness.values import count

EXPONENT_TOL = 0.15
#: One Table-1 row per layer, variant and each of these: the settings, and how a case runs
#: (compile: a compiled layer's exponents are its own row, never fitted with the eager's)
CONTEXT = (*schema.axis_names("setting"), *schema.axis_names("flag", optional=False))
STRUCTURE_PARAMS = schema.axis_names(optional=True)


def exponent_verdict(fit: Mapping[str, Any] | None,
                     tol: float = EXPONENT_TOL) -> tuple[str, str]:
    """(verdict, reason) for one fitted exponent (a row of fit_exponents, or its dict).

    A time fit that left out unreliable timings says how many in its reason; one left with
    too few reliable points (or none) is inconclusive, never "not measured" or a verdict
    on the points that remain.
    """
    if fit is None:
        return "n/a", "not measured"
    slope, model = fit["slope"], fit["model_slope"]
    theory, low = fit["theory_exponent"], fit["theory_low"]
    dropped = unreliable_phrase(count(fit.get("excluded_unreliable")))
    if math.isnan(slope) and not dropped:
        return "n/a", "not measured"
    if fit["flag"] != "ok":
        found = f"slope {slope:.2f}" if not math.isnan(slope) else "no slope"
        where = "; ".join(p for p in (str(fit["fit_range"]), dropped) if p)
        return "inconclusive", f"{fit['flag']} ({where}): {found}"
    dropped = f"; {dropped}" if dropped else ""
    half = fit["ci_half_width"]
    allowed = max(tol, 0.0 if math.isnan(half) else half)
    theory_txt = f"theory {fmt_num(theory)}" if not math.isnan(theory) else "no theory"
    if math.isnan(model):
        return "n/a", (f"slope {slope:.2f}, no analytic model to compare ({theory_txt})"
                       f"{dropped}")
    if abs(slope - model) > allowed:
        return "disagrees", (f"{slope:.2f} vs model {model:.2f}: off by "
                             f"{abs(slope - model):.2f} > {allowed:.2f} ({theory_txt})"
                             f"{dropped}")
    if not math.isnan(theory) and not (low - allowed <= model <= theory + allowed):
        span = fmt_num(theory) if low == theory else f"{fmt_num(low)}..{fmt_num(theory)}"
        return "disagrees", (f"{slope:.2f} matches model {model:.2f}, but theory allows "
                             f"{span}: the implementation does other work than the theory"
                             f"{dropped}")
    gap = "" if math.isnan(theory) or abs(model - theory) <= allowed else \
        " (lower-order terms at these sizes)"
    return "agrees", f"{slope:.2f} vs model {model:.2f}, {theory_txt}{gap}{dropped}"


def _growth_cell(ns: np.ndarray, measured: np.ndarray, analytic: np.ndarray,
                 theory_class: str) -> dict[str, Any]:
    have = ~np.isnan(measured)
    ns, measured, analytic = ns[have], measured[have], analytic[have]
    cls = growth_class(ns, measured)
    if len(ns) == 0:
        return {"class": "unknown", "verdict": "n/a", "reason": "not measured", "equal": None,
                "n_min": math.nan, "n_max": math.nan, "at_min": math.nan, "at_max": math.nan}
    lo, hi = int(np.argmin(ns)), int(np.argmax(ns))
    both = ~np.isnan(analytic)
    equal = bool(np.all(measured[both] == analytic[both])) if both.any() else None
    distinct = np.unique(ns)
    if cls == "unknown":
        verdict, reason = "inconclusive", f"measured at one n only ({fmt_num(ns[lo])})"
    elif len(distinct) < MIN_POINTS:
        listed = ", ".join(fmt_num(v) for v in distinct)
        verdict, reason = "inconclusive", (f"too few points: {cls} from {len(distinct)} "
                                           f"n only ({listed}); a growth class needs "
                                           f"{MIN_POINTS}")
    elif cls == theory_class:
        verdict, reason = "agrees", f"{cls} as theory"
    else:
        verdict, reason = "disagrees", f"measured {cls}, theory {theory_class}"
    return {"class": cls, "verdict": verdict, "reason": reason, "equal": equal,
            "n_min": float(ns[lo]), "n_max": float(ns[hi]),
            "at_min": float(measured[lo]), "at_max": float(measured[hi])}


def _structure(sub: pd.DataFrame, info: LayerInfo) -> dict[str, Any]:
    """Sequential-ops and path-length cells from the best-covered structural sweep."""
    keys = [p for p in STRUCTURE_PARAMS if p in sub.columns]
    best = None
    for fixed, grp in groups(sub, keys):
        n_seen = numeric(grp, "seq_len")[numeric(grp, "path_length_measured").notna()
                                         | numeric(grp, "seq_ops_measured").notna()]
        score = n_seen.nunique()
        if best is None or score > best[0]:
            best = (score, fixed, grp)
    out: dict[str, Any] = {}
    if best is None:
        return out
    _, fixed, grp = best
    ns = numeric(grp, "seq_len").to_numpy()
    seq_theory = info.seq_ops
    seq = _growth_cell(ns, numeric(grp, "seq_ops_measured").to_numpy(),
                       numeric(grp, "seq_ops_analytic").to_numpy(), seq_theory)
    if seq["equal"] is not None:
        seq["reason"] += "; measured == analytic at every n" if seq["equal"] else \
            "; measured != analytic at some n"
    out.update({
        "structure_at": describe(fixed),
        "seq_ops_n_min": seq["n_min"], "seq_ops_at_n_min": seq["at_min"],
        "seq_ops_n_max": seq["n_max"], "seq_ops_at_n_max": seq["at_max"],
        "seq_ops_class": seq["class"], "seq_ops_theory": seq_theory,
        "seq_ops_verdict": seq["verdict"] if info.known else "n/a",
        "seq_ops_reason": seq["reason"],
    })
    path_theory = info.path_length
    path = _growth_cell(ns, numeric(grp, "path_length_measured").to_numpy(),
                        numeric(grp, "path_length_analytic").to_numpy(), info.path_class)
    if path["equal"] is None:
        verdict, reason = ("n/a", "not measured") if math.isnan(path["n_min"]) else \
            ("n/a", "no analytic value")
    elif path["equal"]:
        verdict, reason = "agrees", "measured == analytic at every n"
    else:
        verdict, reason = "disagrees", "measured != analytic at some n"
    out.update({
        "path_n_min": path["n_min"], "path_at_n_min": path["at_min"],
        "path_n_max": path["n_max"], "path_at_n_max": path["at_max"],
        "path_verdict": verdict, "path_reason": reason,
        "path_class": path["class"], "path_theory": path_theory,
        "path_class_verdict": path["verdict"] if info.known else "n/a",
        "path_class_reason": path["reason"],
    })
    return out


def _notes(row: dict[str, Any], sub: pd.DataFrame) -> list[str]:
    notes = []
    for axis in ("n", "d"):
        f_v, t_v = row.get(f"flops_{axis}_verdict"), row.get(f"time_{axis}_verdict")
        t_s, m_s = row.get(f"time_{axis}_exp"), row.get(f"time_{axis}_model")
        if f_v == "agrees" and t_v == "disagrees" and t_s is not None and m_s is not None:
            trend = "slower" if t_s < m_s else "faster"
            hint = ("fixed per-call overhead or an unsaturated device at small sizes?"
                    if trend == "slower" else "memory traffic or cache effects?")
            notes.append(f"time grows as {axis}^{t_s:.2f} while the FLOP model gives "
                         f"{axis}^{m_s:.2f}: time grows {trend} than FLOPs ({hint})")
    ok = sub[ok_mask(sub)]
    executed, useful = numeric(ok, "flops_analytic"), numeric(ok, "flops_useful_analytic")
    ratio = (executed / useful)[(useful > 0) & executed.notna()]
    if len(ratio) and ratio.max() > 1.01:
        notes.append(f"executes up to {ratio.max():.3g}x the useful FLOPs "
                     "(flops_analytic vs flops_useful_analytic)")
    failed = int((~ok_mask(sub)).sum())
    if failed:
        notes.append(f"{failed} case(s) did not run (status not ok) and are not fitted")
    return notes


def _exponent_cells(prefix: str, fit: dict[str, Any] | None, row: dict[str, Any],
                    tol: float) -> None:
    verdict, reason = exponent_verdict(fit, tol)
    get = (lambda c: fit[c]) if fit is not None else (lambda c: math.nan)
    row.update({
        f"{prefix}_exp": get("slope"), f"{prefix}_ci": get("ci_half_width"),
        f"{prefix}_model": get("model_slope"), f"{prefix}_theory": get("theory_exponent"),
        f"{prefix}_at": fit["fixed"] if fit is not None else "",
        f"{prefix}_unreliable": count(fit.get("excluded_unreliable")) if fit is not None else 0,
        f"{prefix}_verdict": verdict, f"{prefix}_reason": reason,
    })


def _flops_source(fits: list[dict[str, Any]], key: dict[str, Any]) -> str:
    counted = best_fit(fits, metric="flops_torch", **key)
    usable = counted is not None and counted["n_excluded"] == 0 and \
        not math.isnan(counted["slope"])
    return "flops_torch" if usable else "flops_analytic"


def table1_measured(df: pd.DataFrame, *, tol: float = EXPONENT_TOL) -> pd.DataFrame:
    """Measured Table 1: exponents, sequential ops and path length vs theory, with verdicts.

    One row per (family, layer, variant, device, dtype, mode) present. Columns, for
    ``flops_n``, ``time_n``, ``flops_d``, ``time_d``: ``_exp`` (slope), ``_ci`` (95%
    half-width), ``_model``, ``_theory``, ``_at`` (the sweep's fixed parameters),
    ``_unreliable`` (timings left out as unreliable; 0 for FLOPs), ``_verdict``,
    ``_reason``; ``flops_source``; ``complexity`` (the theory as written);
    ``seq_ops_*`` and ``path_*`` cells; ``n_cases``, ``n_failed``; ``note``.
    Verdicts: "agrees", "disagrees", "inconclusive", "n/a".
    """
    require(df, ("status", "layer", "variant"), "table1_measured")
    if tol <= 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    context = [c for c in CONTEXT if c in df.columns]
    fits = fit_exponents(df, metrics=("flops_torch", "flops_analytic", "time_ms_median"),
                         axes=schema.MAIN_AXES).to_dict("records")
    params = [p for p in params_in(df) if p not in ("layer", "variant")]
    rows = []
    infos = layer_infos(df)
    for key, sub in groups(df, ["layer", "variant", *context]):
        info = infos[str(key["layer"])]
        row: dict[str, Any] = {"family": info.family, **key, "complexity": info.complexity}
        source = _flops_source(fits, key)
        row["flops_source"] = source
        for axis, tag in (("seq_len", "n"), ("d_model", "d")):
            flops_fit = best_fit(fits, metric=source, axis=axis, **key)
            _exponent_cells(f"flops_{tag}", flops_fit, row, tol)
            time_fit = None
            if flops_fit is not None:  # time from the same sweep, so the two compare
                same = {p: flops_fit[p] for p in params if p not in key}
                time_fit = best_fit(fits, metric="time_ms_median", axis=axis, **key, **same)
            if time_fit is None:
                time_fit = best_fit(fits, metric="time_ms_median", axis=axis, **key)
            _exponent_cells(f"time_{tag}", time_fit, row, tol)
        row.update(_structure(sub[ok_mask(sub)], info))
        row["n_cases"] = len(sub)
        row["n_failed"] = int((~ok_mask(sub)).sum())
        row["note"] = "; ".join(_notes(row, sub))
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["_order"] = out["family"].map(family_rank)
    return out.sort_values(["_order", "layer", "variant"], kind="stable",
                           ignore_index=True).drop(columns="_order")
