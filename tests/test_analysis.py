"""Tests for harness.analysis: synthetic results with known answers (no torch needed)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from harness.analysis import (
    crossovers,
    efficiency,
    exponent_verdict,
    fit_exponents,
    fit_loglog,
    flop_reconciliation,
    growth_class,
    headlines,
    layer_infos,
    memory_curve,
    memory_frontier,
    t_quantile,
    table1_measured,
    tidy,
)
from harness.results import PARAM_COLUMNS, to_long
from harness.theory import THEORY_COLUMNS, Theory, exponent, growth_class_of, parse_terms

# --------------------------------------------------------------------------- synthetic data


def case(layer: str, variant: str, n: int, d: int, **extra: object) -> dict[str, object]:
    """One results row with every parameter column; metrics come in ``extra``."""
    row: dict[str, object] = dict(
        layer=layer, variant=variant, seq_len=n, d_model=d, heads=None, kernel=None,
        window=None, causal=False, block=False, batch=1, dtype="float32", device="cpu",
        mode="forward", compile=False, seed=0, status="ok",
    )
    row.update(extra)
    return row


def frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for name in ("seq_len", "d_model", "heads", "kernel", "window", "batch", "seed"):
        df[name] = pd.array([None if pd.isna(v) else int(v) for v in df[name]], dtype="Int64")
    return df


def attention_flops(n: int, d: int) -> float:
    return 8 * n * d * d + 4 * n * n * d


def lstm_flops(n: int, d: int) -> float:
    return 16 * n * d * d


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _dilated_path(n: int, k: int) -> int:
    layers, covered = 1, k
    while covered < n:
        layers, covered = layers + 1, covered * k
    return layers


#: layer -> (variant, extra params, flops(n, d), seq_ops(n), path(n)) from the cost models.
LAYERS = {
    "rnn": ("fused", {}, lambda n, d: 4 * n * d * d, lambda n: n, lambda n: n),
    "lstm": ("fused", {}, lstm_flops, lambda n: n, lambda n: n),
    "gru": ("fused", {}, lambda n, d: 12 * n * d * d, lambda n: n, lambda n: n),
    "conv": ("conv1d", {"kernel": 7}, lambda n, d: 2 * n * d * d * 7, lambda n: 1,
             lambda n: _ceil_div(n - 1, 3)),
    "conv_dilated": ("conv1d", {"kernel": 3, "causal": True}, lambda n, d: 2 * n * d * d * 3,
                     lambda n: 1, lambda n: _dilated_path(n, 3)),
    "conv_separable": ("conv1d", {"kernel": 7}, lambda n, d: 2 * n * (d * 7 + d * d),
                       lambda n: 1, lambda n: _ceil_div(n - 1, 3)),
    "attention": ("matmul", {"heads": 8}, attention_flops, lambda n: 1, lambda n: 1),
    "attention_sdpa": ("sdpa", {"heads": 8}, attention_flops, lambda n: 1, lambda n: 1),
    "attention_local": ("unfold", {"heads": 8, "window": 16},
                        lambda n, d: 8 * n * d * d + 4 * n * 16 * d, lambda n: 1,
                        lambda n: _ceil_div(n - 1, 7)),
    "lightconv": ("conv1d", {"heads": 8, "kernel": 7}, lambda n, d: 2 * n * d * 7,
                  lambda n: 1, lambda n: _ceil_div(n - 1, 3)),
    "dynamicconv": ("unfold", {"heads": 8, "kernel": 7},
                    lambda n, d: 2 * n * d * 8 * 7 + 2 * n * d * 7, lambda n: 1,
                    lambda n: _ceil_div(n - 1, 3)),
}

N_SWEEP = (64, 128, 256, 512, 1024, 2048)
D_SWEEP = (64, 128, 256, 512, 1024)
STRUCTURE_MAX_N = 256


def theory_rows(noise: float = 0.01, seed: int = 0) -> list[dict[str, object]]:
    """Every layer, swept over n (d=256) and d (n=256), built from its cost formula.

    Time is FLOPs / 10 GFLOP/s with seeded multiplicative noise; structure is "measured"
    only at n <= 256 (as the runner does); the LSTM's counter gives 0 (as torch's does).
    """
    rng = np.random.default_rng(seed)
    rows = []
    points = [(n, 256) for n in N_SWEEP] + [(256, d) for d in D_SWEEP if d != 256]
    for layer, (variant, params, flops, seq, path) in LAYERS.items():
        for n, d in points:
            f = float(flops(n, d))
            small = n <= STRUCTURE_MAX_N
            rows.append(case(
                layer, variant, n, d, **params,
                flops_analytic=f, flops_useful_analytic=f,
                flops_torch=0.0 if layer == "lstm" else f, flops_fvcore=f,
                time_ms_median=f / 1e10 * 1e3 * math.exp(rng.normal(0, noise)),
                peak_mem_bytes=float(4 * n * d * 3), act_mem_analytic_bytes=float(4 * n * d * 3),
                seq_ops_analytic=seq(n), path_length_analytic=path(n),
                seq_ops_measured=float(seq(n)) if small else None,
                path_length_measured=float(path(n)) if small else None,
            ))
    return rows


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(("p", "df", "expected"), [
    (0.975, 1, 12.7062047), (0.975, 2, 4.3026527), (0.975, 3, 3.1824463),
    (0.975, 5, 2.5705818), (0.975, 10, 2.2281389), (0.975, 30, 2.0422725),
    (0.975, 120, 1.9799304), (0.95, 4, 2.1318468), (0.995, 7, 3.4994833),
    (0.025, 5, -2.5705818), (0.5, 9, 0.0),
])
def test_t_quantile_matches_published_tables(p: float, df: int, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=2e-7)


def test_t_quantile_approaches_the_normal() -> None:
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)


@pytest.mark.parametrize(("p", "df"), [(0.0, 3), (1.0, 3), (0.5, 0), (0.9, -1)])
def test_t_quantile_rejects_bad_arguments(p: float, df: float) -> None:
    with pytest.raises(ValueError):
        t_quantile(p, df)


def test_exact_power_law_fits_exactly() -> None:
    n = np.array([64, 128, 256, 512, 1024])
    fit = fit_loglog(n, 3 * n**1.5)
    assert fit.slope == pytest.approx(1.5, abs=1e-12)
    assert math.exp(fit.intercept) == pytest.approx(3.0, rel=1e-10)
    assert fit.r2 == 1.0
    assert fit.ci_half_width == 0.0


def test_interval_has_its_nominal_coverage() -> None:
    """Seeded Monte Carlo: the t-based 95% interval holds the true slope ~95% of the time
    (with the normal 1.96 instead of t(3) = 3.18 it is 85% here)."""
    rng = np.random.default_rng(1)
    n = np.array([100.0, 200, 400, 800, 1600])
    hits = 0
    reps = 1000
    for _ in range(reps):
        fit = fit_loglog(n, 3 * n**1.5 * np.exp(rng.normal(0, 0.1, n.size)))
        hits += fit.ci_low <= 1.5 <= fit.ci_high
    assert 0.93 <= hits / reps <= 0.97


def test_fit_loglog_rejects_what_cannot_be_logged() -> None:
    with pytest.raises(ValueError, match="positive"):
        fit_loglog(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="distinct"):
        fit_loglog(np.array([2.0, 2.0]), np.array([1.0, 2.0]))


@pytest.mark.parametrize(("values", "expected"), [
    ([1, 1, 1, 1], "O(1)"),
    ([64, 128, 256, 512], "O(n)"),
    ([21, 43, 85, 171], "O(n)"),  # ceil((n-1)/3): O(n/k)
    ([4, 5, 6, 6], "O(log n)"),  # dilated, k = 3
    ([math.inf] * 4, "unbounded"),
    ([1, 1, math.inf, math.inf], "mixed finite/inf"),
    ([9, 7, 5, 3], "decreasing"),
    ([1, 4, 16, 64], "superlinear"),
])
def test_growth_class(values: list[float], expected: str) -> None:
    assert growth_class(np.array([64, 128, 256, 512]), np.array(values, float)) == expected


def test_growth_class_needs_two_sequence_lengths() -> None:
    assert growth_class(np.array([64.0, 64.0]), np.array([3.0, 3.0])) == "unknown"
    assert growth_class(np.array([64.0, 128.0]), np.array([64.0, 128.0])) == "O(n)"


# --------------------------------------------------------------------------- theory


def test_exponents_are_the_extreme_powers_of_the_terms() -> None:
    terms = parse_terms("n^2 d + n d^2")
    assert terms == ({"n": 2, "d": 1}, {"n": 1, "d": 2})
    assert exponent(terms, "seq_len") == (2.0, 1.0)
    assert exponent(terms, "heads") == (0.0, 0.0)  # FLOPs independent of h
    assert exponent(terms, "batch") == (1.0, 1.0)
    assert exponent(parse_terms("n d^2 + n d^2 h^-1"), "heads") == (0.0, -1.0)
    assert all(math.isnan(v) for v in exponent((), "seq_len"))
    assert all(math.isnan(v) for v in exponent(terms, "causal"))
    assert [growth_class_of(t) for t in ("O(1)", "O(n/k)", "O(log_k n)", "O(n)")] == \
        ["O(1)", "O(n)", "O(log n)", "O(n)"]
    for bad in ("n^2 x", "n n", "n^", "n + + d"):
        with pytest.raises(ValueError, match="term"):
            parse_terms(bad)
    with pytest.raises(ValueError, match="growth class"):
        Theory("O(n)", "O(1)", "O(n^2)")


def test_the_layers_theory_exponents_follow_their_terms() -> None:
    pytest.importorskip("torch")
    from harness import registry

    def theory(name: str, axis: str, **flags: object) -> tuple[float, float]:
        return registry.get(name).theory.exponent(axis, **flags)

    assert theory("lstm", "seq_len") == (1.0, 1.0)
    assert theory("lstm", "d_model") == (2.0, 2.0)
    assert theory("attention", "seq_len") == (2.0, 1.0)  # n^2 d + n d^2
    assert theory("attention", "d_model") == (2.0, 1.0)
    assert theory("attention", "heads") == (0.0, 0.0)  # FLOPs independent of h
    assert theory("conv_separable", "kernel") == (1.0, 0.0)
    assert theory("dynamicconv", "heads") == (1.0, 0.0)
    assert theory("lightconv", "d_model") == (1.0, 1.0)
    assert theory("lightconv", "d_model", block=True) == (2.0, 1.0)
    assert registry.get("conv_dilated").theory.path_class == "O(log n)"


def _with_theory(rows: list[dict[str, object]], **theory: object) -> pd.DataFrame:
    columns = dict(family="state-space", theory_complexity="O(n d)", theory_terms="n d",
                   theory_seq_ops="O(1)", theory_path_length="O(1)", theory_path_class="O(1)",
                   layer_label="Mamba-ish", layer_colour="#123456", layer_rank=11)
    columns.update(theory)
    assert set(columns) == set(THEORY_COLUMNS)
    return frame([{**r, **columns} for r in rows])


def test_theory_comes_from_the_rows_for_a_layer_the_registry_does_not_know() -> None:
    rows = [case("mamba", "scan", n, 64, flops_analytic=float(8 * n * 64),
                 flops_torch=float(8 * n * 64), time_ms_median=n / 100,
                 seq_ops_measured=1.0, seq_ops_analytic=1.0,
                 path_length_measured=1.0, path_length_analytic=1.0) for n in N_SWEEP]
    df = _with_theory(rows)
    (info,) = layer_infos(df).values()
    assert (info.family, info.complexity, info.path_class, info.colour, info.label) == \
        ("state-space", "O(n d)", "O(1)", "#123456", "Mamba-ish")
    fits = fit_exponents(df, metrics=["flops_torch"])
    assert (fits.loc[0, "theory_exponent"], fits.loc[0, "family"]) == (1.0, "state-space")
    (row,) = table1_measured(df).to_dict("records")
    assert (row["family"], row["complexity"], row["flops_n_verdict"]) == \
        ("state-space", "O(n d)", "agrees")
    assert (row["seq_ops_verdict"], row["path_class_verdict"]) == ("agrees", "agrees")
    assert set(tidy(df)["family"]) == {"state-space"}
    # the same rows without theory columns: an unknown layer, no theory
    bare = frame(rows)
    (row,) = table1_measured(bare).to_dict("records")
    assert (row["family"], row["complexity"], row["seq_ops_verdict"]) == \
        ("unknown", "unknown", "n/a")
    assert math.isnan(fit_exponents(bare, metrics=["flops_torch"]).loc[0, "theory_exponent"])


def test_rows_without_theory_columns_read_the_registry() -> None:
    """Results written before the theory columns existed (the committed baseline)."""
    pytest.importorskip("torch")
    df = frame([case("lightconv", "conv1d", n, 64, heads=4, kernel=3, block=True,
                     flops_analytic=float(n)) for n in (64, 128, 256)])
    info = layer_infos(df)["lightconv"]
    assert (info.family, info.complexity, info.colour) == ("lightconv", "O(k n d)", "#029e73")
    fits = fit_exponents(df, metrics=["flops_analytic"], axes=["seq_len"])
    assert fits.loc[0, "theory_exponent"] == 1.0


# --------------------------------------------------------------------------- exponents


def power_law_frame(ns: tuple[int, ...], exponent: float = 1.5, noise: float = 0.0,
                    seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [case("lstm", "fused", n, 64, time_ms_median=3 * n**exponent
                 * math.exp(rng.normal(0, noise)) if noise else 3 * n**exponent,
                 flops_analytic=float(lstm_flops(n, 64))) for n in ns]
    return frame(rows)


def test_exact_power_law_gives_its_exponent_from_the_tail() -> None:
    fits = fit_exponents(power_law_frame(N_SWEEP), metrics=["time_ms_median"])
    (row,) = fits.itertuples()
    assert row.axis == "seq_len" and row.layer == "lstm"
    assert row.slope == pytest.approx(1.5, abs=1e-12)
    assert row.r2 == 1.0
    assert row.fit_range == "tail: top 4 of 6 points"
    assert row.points_used == (256.0, 512.0, 1024.0, 2048.0)
    assert row.n_points == 4 and row.flag == "ok"
    assert row.model_slope == pytest.approx(1.0)  # lstm FLOPs: 16 n d^2
    assert row.theory_exponent == 1.0
    assert row.d_model == 64 and pd.isna(row.seq_len)  # the fixed params, the axis missing
    everything = fit_exponents(power_law_frame(N_SWEEP), metrics=["time_ms_median"],
                               tail=False)
    assert everything.loc[0, "fit_range"] == "all 6 points"
    assert everything.loc[0, "n_points"] == 6


def test_noisy_power_law_interval_contains_the_true_exponent() -> None:
    ns = tuple(2**i for i in range(5, 13))
    fits = fit_exponents(power_law_frame(ns, noise=0.05, seed=3), metrics=["time_ms_median"],
                         tail=False)
    row = fits.iloc[0]
    assert row["ci_low"] <= 1.5 <= row["ci_high"]
    assert row["slope"] != 1.5 and 0 < row["ci_half_width"] < 0.25
    assert row["flag"] == "ok"


def test_too_few_points_and_too_wide_intervals_are_flagged() -> None:
    two = fit_exponents(power_law_frame((64, 128)), metrics=["time_ms_median"]).iloc[0]
    assert two["flag"] == "too few points"
    assert two["slope"] == pytest.approx(1.5)  # exact between two points, no interval
    assert math.isnan(two["ci_half_width"])
    wild = fit_exponents(power_law_frame((64, 128, 256), noise=0.5, seed=0),
                         metrics=["time_ms_median"]).iloc[0]
    assert wild["ci_half_width"] > 0.25
    assert wild["flag"] == "interval too wide"


def test_failed_rows_are_counted_but_never_fitted() -> None:
    rows = [case("lstm", "fused", n, 64, time_ms_median=3 * n**1.5) for n in (64, 128, 256)]
    rows += [case("lstm", "fused", n, 64, status=s, time_ms_median=1e12)
             for n, s in ((512, "oom"), (1024, "timeout"), (2048, "error"))]
    row = fit_exponents(frame(rows), metrics=["time_ms_median"]).iloc[0]
    assert row["slope"] == pytest.approx(1.5, abs=1e-12)
    assert row["n_failed"] == 3 and row["n_points"] == 3
    assert row["points_used"] == (64.0, 128.0, 256.0)


def test_unloggable_values_are_excluded_and_counted() -> None:
    rows = [case("lstm", "fused", n, 64, flops_torch=0.0, flops_analytic=float(16 * n * 64**2))
            for n in (64, 128, 256, 512)]
    fits = fit_exponents(frame(rows), metrics=["flops_torch", "flops_analytic"])
    counted = fits[fits["metric"] == "flops_torch"].iloc[0]
    assert counted["n_excluded"] == 4 and counted["flag"] == "too few points"
    assert math.isnan(counted["slope"])
    assert fits[fits["metric"] == "flops_analytic"].iloc[0]["slope"] == pytest.approx(1.0)


def test_model_slope_sits_between_the_exponents_of_mixed_terms() -> None:
    """Attention at n ~ d: 8 n d^2 + 4 n^2 d has a local n-slope strictly between 1 and 2."""
    d = 256
    rows = [case("attention", "matmul", n, d, heads=8, flops_torch=attention_flops(n, d),
                 flops_analytic=attention_flops(n, d)) for n in (128, 256, 512)]
    row = fit_exponents(frame(rows), metrics=["flops_torch"]).iloc[0]
    x = np.log([128, 256, 512])
    y = np.log([attention_flops(n, d) for n in (128, 256, 512)])
    assert row["model_slope"] == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-12)
    assert 1.0 < row["model_slope"] < 2.0
    assert (row["theory_exponent"], row["theory_low"]) == (2.0, 1.0)


def test_each_sweep_is_fitted_separately_and_unswept_axes_are_skipped() -> None:
    rows = [case("lstm", "fused", n, d, time_ms_median=float(n * d * d))
            for d in (32, 64) for n in (64, 128, 256)]
    fits = fit_exponents(frame(rows), metrics=["time_ms_median"], axes=["seq_len", "heads"])
    assert sorted(fits["d_model"].tolist()) == [32, 64]
    assert set(fits["axis"]) == {"seq_len"}
    assert np.allclose(fits["slope"], 1.0)
    by_d = fit_exponents(frame(rows), metrics=["time_ms_median"], axes=["d_model"])
    assert set(by_d["flag"]) == {"too few points"}  # two d values per sweep
    assert np.allclose(by_d["slope"], 2.0)


def test_fit_exponents_validates_its_input() -> None:
    with pytest.raises(ValueError, match="status"):
        fit_exponents(pd.DataFrame({"layer": ["lstm"], "variant": ["fused"]}))
    with pytest.raises(TypeError):
        fit_exponents([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_tail"):
        fit_exponents(power_law_frame(N_SWEEP), min_tail=2)


# --------------------------------------------------------------------------- unreliable timings


def disturbed(df: pd.DataFrame, ns: tuple[int, ...], factor: float = 10.0,
              layer: str | None = None, column: str = "time_ms_median") -> pd.DataFrame:
    """``df`` with the timing at ``ns`` (of ``layer``, or every layer) slowed by ``factor``
    and flagged unreliable, as a busy machine would leave it."""
    out = df.copy()
    if "time_unreliable" not in out.columns:
        out["time_unreliable"] = False
    hit = out["seq_len"].isin(ns).to_numpy(dtype=bool)
    if layer is not None:
        hit &= (out["layer"] == layer).to_numpy()
    out.loc[hit, column] = out.loc[hit, column] * factor
    out.loc[hit, "time_unreliable"] = True
    return out


def test_unreliable_timings_are_left_out_of_time_fits_and_counted() -> None:
    df = disturbed(power_law_frame(N_SWEEP), (1024, 2048))
    fits = fit_exponents(df, metrics=["time_ms_median", "flops_analytic"], tail=False)
    time = fits[fits["metric"] == "time_ms_median"].iloc[0]
    assert time["slope"] == pytest.approx(1.5, abs=1e-12)  # the slowed points would bend it
    assert time["excluded_unreliable"] == 2 and time["n_points"] == 4
    assert time["points_used"] == (64.0, 128.0, 256.0, 512.0) and time["flag"] == "ok"
    assert time["n_excluded"] == 0
    flops = fits[fits["metric"] == "flops_analytic"].iloc[0]  # FLOPs are not disturbed
    assert flops["excluded_unreliable"] == 0 and flops["n_points"] == 6
    kept = fit_exponents(df.assign(time_unreliable=False), metrics=["time_ms_median"],
                         tail=False).iloc[0]
    assert kept["excluded_unreliable"] == 0 and kept["slope"] > 1.6


def test_too_few_reliable_points_make_a_time_fit_inconclusive() -> None:
    df = disturbed(power_law_frame((64, 128, 256)), (256,))
    fit = fit_exponents(df, metrics=["time_ms_median"]).iloc[0]
    assert fit["flag"] == "too few reliable points" and fit["n_points"] == 2
    verdict, reason = exponent_verdict(fit)
    assert verdict == "inconclusive"
    assert reason.startswith("too few reliable points (") and \
        "1 unreliable point excluded" in reason
    every = fit_exponents(disturbed(power_law_frame((64, 128, 256)), (64, 128, 256)),
                          metrics=["time_ms_median"]).iloc[0]
    assert math.isnan(every["slope"]) and every["excluded_unreliable"] == 3
    assert every["flag"] == "too few reliable points"
    verdict, reason = exponent_verdict(every)  # inconclusive, not "not measured"
    assert verdict == "inconclusive" and "3 unreliable points excluded" in reason
    assert "no slope" in reason
    short = fit_exponents(disturbed(power_law_frame((64, 128)), (128,)),
                          metrics=["time_ms_median"]).iloc[0]
    assert short["flag"] == "too few points"  # too short with or without the flag


def test_results_without_a_reliability_flag_or_note_fit_every_point() -> None:
    df = power_law_frame(N_SWEEP)
    assert "time_unreliable" not in df.columns and "time_note" not in df.columns
    fit = fit_exponents(df, metrics=["time_ms_median"], tail=False).iloc[0]
    assert fit["excluded_unreliable"] == 0 and fit["n_points"] == 6
    df["time_unreliable"] = pd.array([True, None, False, None, None, None], dtype="boolean")
    fit = fit_exponents(df, metrics=["time_ms_median"], tail=False).iloc[0]
    assert fit["excluded_unreliable"] == 1 and fit["n_points"] == 5  # NA is not a flag
    assert exponent_verdict({**fit.to_dict(), "excluded_unreliable": None})[0] != "n/a"


def time_curves(ns: tuple[int, ...], fa, fb) -> pd.DataFrame:
    """Two layers whose times (and FLOPs, equal to them) follow ``fa`` and ``fb``."""
    rows = [case("lstm", "fused", n, 64, time_ms_median=float(fa(n)),
                 flops_analytic=float(fa(n)), time_unreliable=False) for n in ns]
    rows += [case("attention", "matmul", n, 64, heads=4, time_ms_median=float(fb(n)),
                  flops_analytic=float(fb(n)), time_unreliable=False) for n in ns]
    return frame(rows)


def test_time_crossovers_leave_out_unreliable_points_and_count_them() -> None:
    ns = (100, 300, 2000, 5000)
    parallel = time_curves(ns, lambda n: n, lambda n: 2 * n)
    spurious = disturbed(parallel, (5000,), factor=4.0, layer="lstm")  # lstm passes attention
    assert crossovers(spurious, "time_ms_median").empty
    counted = disturbed(parallel, (5000,), factor=4.0, layer="lstm", column="flops_analytic")
    assert len(crossovers(counted, "flops_analytic")) == 1  # FLOPs keep the flagged row
    assert crossovers(counted, "flops_analytic").iloc[0]["excluded_unreliable"] == 0
    real = disturbed(time_curves(ns, lambda n: 10 * n, lambda n: 0.01 * n * n), (100,),
                     factor=1.0)
    (row,) = crossovers(real, "time_ms_median").itertuples()
    assert row.crossover_at == pytest.approx(1000.0, rel=1e-12)
    assert row.excluded_unreliable == 2  # n=100 of both curves
    assert crossovers(real.drop(columns="time_unreliable"),
                      "time_ms_median").iloc[0]["excluded_unreliable"] == 0


def test_table1_judges_time_without_unreliable_points_and_says_how_many() -> None:
    df = frame(theory_rows())
    df["time_unreliable"] = False
    slowed = disturbed(df, (2048,), factor=5.0, layer="lstm")
    row = table1_measured(slowed).set_index("layer").loc["lstm"]
    assert row["time_n_verdict"] == "agrees"
    assert row["time_n_unreliable"] == 1 and row["flops_n_unreliable"] == 0
    assert row["time_n_reason"].endswith("; 1 unreliable point excluded")
    trusted = table1_measured(slowed.assign(time_unreliable=False)).set_index("layer")
    assert trusted.loc["lstm", "time_n_verdict"] != "agrees"  # what the flag prevents
    assert any("1 unreliable point excluded" in s and s.startswith("lstm's time")
               for s in headlines(slowed))


def test_efficiency_carries_the_flag_and_the_headline_skips_unreliable_throughput() -> None:
    rows = [case("lstm", "fused", n, 64, flops_analytic=1e9, flops_per_s=f,
                 time_unreliable=u) for n, f, u in ((64, 1e9, False), (128, 9e9, True))]
    eff = efficiency(frame(rows))
    assert eff["time_unreliable"].tolist() == [False, True]
    (best,) = [s for s in headlines(frame(rows)) if s.startswith("Highest")]
    assert "1 GFLOP/s" in best and "n = 64" in best
    assert "1 case(s) with unreliable timing not considered" in best


# --------------------------------------------------------------------------- crossovers


def two_curves(ns: tuple[int, ...], fa, fb) -> pd.DataFrame:
    rows = [case("lstm", "fused", n, 64, flops_analytic=float(fa(n))) for n in ns]
    rows += [case("attention", "matmul", n, 64, heads=4, flops_analytic=float(fb(n)))
             for n in ns]
    return frame(rows)


@pytest.mark.parametrize("ns", [(100, 300, 2000, 5000), (10, 100, 1000, 10000)])
def test_power_laws_cross_where_they_are_equal(ns: tuple[int, ...]) -> None:
    """10 n and 0.01 n^2 meet at n = 1000, on the grid or between two of its points."""
    out = crossovers(two_curves(ns, lambda n: 10 * n, lambda n: 0.01 * n * n),
                     "flops_analytic")
    assert len(out) == 1
    row = out.iloc[0]
    assert row["crossover_at"] == pytest.approx(1000.0, rel=1e-12)
    assert row["exact"] == (1000 in ns)
    assert (row["layer_a"], row["layer_b"]) == ("attention", "lstm")
    assert row["cheaper_below"] == "attention/matmul"
    assert row["cheaper_above"] == "lstm/fused"
    assert row["params_a"] == "heads=4" and row["d_model"] == 64


@pytest.mark.parametrize("d", [64, 512])
def test_attention_and_lstm_flops_cross_at_n_equal_2d(d: int) -> None:
    """8 n d^2 + 4 n^2 d = 16 n d^2 at n = 2d (Vaswani et al.: attention wins for n < d)."""
    ns = tuple(d * 2**i // 8 for i in range(7))  # d/8 .. 8d, includes 2d
    out = crossovers(two_curves(ns, lambda n: lstm_flops(n, d),
                                lambda n: attention_flops(n, d)),
                     "flops_analytic", pairs=[("lstm", "attention")])
    (row,) = out.itertuples()
    assert row.crossover_at == 2 * d and row.exact
    assert (row.layer_a, row.layer_b) == ("lstm", "attention")
    assert row.cheaper_below == "attention/matmul"  # n < 2d: attention is cheaper


def test_crossover_between_grid_points_is_log_log_interpolated() -> None:
    d = 64
    out = crossovers(two_curves((64, 256), lambda n: lstm_flops(n, d),
                                lambda n: attention_flops(n, d)), "flops_analytic")
    # log ratio goes from log(0.75) at 64 to log(1.5) at 256, linear in log n
    t = math.log(1 / 0.75) / math.log(1.5 / 0.75)
    expected = math.exp(math.log(64) + t * math.log(4))
    assert out.iloc[0]["crossover_at"] == pytest.approx(expected, rel=1e-12)
    assert not out.iloc[0]["exact"]
    assert (out.iloc[0]["bracket_low"], out.iloc[0]["bracket_high"]) == (64.0, 256.0)


def test_no_crossover_for_touching_or_parallel_curves_or_other_widths() -> None:
    ns = (100, 1000, 10000)
    parallel = two_curves(ns, lambda n: n, lambda n: 2 * n)
    assert crossovers(parallel, "flops_analytic").empty
    touching = two_curves(ns, lambda n: n, lambda n: n if n == 1000 else 2 * n)
    assert crossovers(touching, "flops_analytic").empty
    end = two_curves((10, 100, 1000), lambda n: 10 * n, lambda n: 0.01 * n * n)
    assert crossovers(end, "flops_analytic").empty  # equal only at the last point
    wide = two_curves(ns, lambda n: 10 * n, lambda n: 0.01 * n * n)
    wide.loc[wide["layer"] == "attention", "d_model"] = 128  # different width: no pair
    assert crossovers(wide, "flops_analytic").empty


def test_crossovers_ignore_failed_rows() -> None:
    df = two_curves((100, 300, 2000, 5000), lambda n: 10 * n, lambda n: 0.01 * n * n)
    df.loc[(df["layer"] == "attention") & (df["seq_len"] == 5000), "status"] = "oom"
    df.loc[(df["layer"] == "attention") & (df["seq_len"] == 5000), "flops_analytic"] = 1.0
    assert crossovers(df, "flops_analytic").iloc[0]["crossover_at"] == pytest.approx(1000)


# --------------------------------------------------------------------------- Table 1


VERDICTS = ("flops_n_verdict", "time_n_verdict", "flops_d_verdict", "time_d_verdict",
            "seq_ops_verdict", "path_verdict", "path_class_verdict")


def test_table1_agrees_on_data_built_from_the_theory() -> None:
    t1 = table1_measured(frame(theory_rows()))
    assert len(t1) == len(LAYERS)
    assert list(t1["family"].unique()) == ["recurrent", "convolution", "self-attention",
                                           "lightconv", "dynamicconv"]
    for column in VERDICTS:
        bad = t1[t1[column] != "agrees"]
        assert bad.empty, (column, bad[["layer", column]].to_dict("records"))
    t1 = t1.set_index("layer")
    assert t1.loc["lstm", "flops_source"] == "flops_analytic"  # the counter gave 0
    assert t1.loc["attention", "flops_source"] == "flops_torch"
    assert t1.loc["lstm", "flops_n_exp"] == pytest.approx(1.0)
    assert t1.loc["lstm", "flops_d_exp"] == pytest.approx(2.0)
    assert 1.0 < t1.loc["attention", "flops_n_exp"] < 2.0
    assert "lower-order terms" in t1.loc["attention", "flops_n_reason"]
    assert t1.loc["rnn", "seq_ops_class"] == "O(n)"
    assert (t1.loc["rnn", "seq_ops_n_min"], t1.loc["rnn", "seq_ops_n_max"]) == (64, 256)
    assert (t1.loc["rnn", "seq_ops_at_n_min"], t1.loc["rnn", "seq_ops_at_n_max"]) == (64, 256)
    assert t1.loc["conv", "seq_ops_class"] == "O(1)"
    assert t1.loc["conv_dilated", "path_class"] == "O(log n)"
    assert t1.loc["conv", "path_class"] == "O(n)"
    assert t1.loc["attention", "path_class"] == "O(1)"
    assert (t1["note"] == "").all()


def test_table1_reads_a_results_file_written_by_the_harness(tmp_path: Path) -> None:
    """Through Parquet and back (nullable ints, booleans, strings): the same verdicts."""
    from harness.results import RunDirectory, read_results

    run = RunDirectory(tmp_path / "run")
    run.create()
    for i, row in enumerate(theory_rows()):
        run.write_case({**row, "case_index": i, "case_id": f"c{i:04d}", "label": "x",
                        "message": ""})
    run.merge()
    df = read_results(tmp_path / "run")
    assert str(df["seq_len"].dtype) == "Int64"
    t1 = table1_measured(df)
    assert len(t1) == len(LAYERS)
    for column in VERDICTS:
        assert (t1[column] == "agrees").all(), column
    fits = fit_exponents(df)
    assert str(fits["d_model"].dtype) == "Int64"
    assert not crossovers(df, "flops_analytic").empty


def wrong_rows() -> pd.DataFrame:
    """The theory data with deliberate faults, one per layer."""
    rows = theory_rows()
    for row in rows:
        n, d = row["seq_len"], row["d_model"]
        if row["layer"] == "lstm":  # a model that is quadratic in n
            row["flops_analytic"] = row["flops_useful_analytic"] = float(16 * n * n * d * d)
        elif row["layer"] == "attention":  # the counter misses the n^2 term
            row["flops_torch"] = float(8 * n * d * d)
        elif row["layer"] == "lightconv":  # a band variant: n^2 executed, n k d useful
            row["flops_analytic"] = row["flops_torch"] = float(2 * n * n * d)
        elif row["layer"] == "gru":  # time dominated by a fixed overhead
            row["time_ms_median"] = 5.0 + 1e-9 * n
        elif row["layer"] == "rnn" and row["seq_ops_measured"] is not None:
            row["seq_ops_measured"] = 1.0  # parallel: contradicts O(n)
        elif row["layer"] == "conv" and row["path_length_measured"] is not None:
            row["path_length_measured"] += 1
    return frame(rows)


def test_table1_disagrees_where_the_data_contradicts_the_theory() -> None:
    t1 = table1_measured(wrong_rows()).set_index("layer")
    lstm = t1.loc["lstm"]
    assert lstm["flops_n_verdict"] == "disagrees"
    assert "theory allows 1" in lstm["flops_n_reason"]
    attention = t1.loc["attention"]
    assert attention["flops_n_verdict"] == "disagrees"
    assert "vs model" in attention["flops_n_reason"] and "off by" in attention["flops_n_reason"]
    light = t1.loc["lightconv"]
    assert light["flops_n_verdict"] == "disagrees"
    assert "executes up to" in light["note"]
    gru = t1.loc["gru"]
    assert gru["flops_n_verdict"] == "agrees" and gru["time_n_verdict"] == "disagrees"
    assert "time grows slower than FLOPs" in gru["note"]
    rnn = t1.loc["rnn"]
    assert rnn["seq_ops_verdict"] == "disagrees" and rnn["seq_ops_class"] == "O(1)"
    assert "measured != analytic" in rnn["seq_ops_reason"]
    assert t1.loc["conv", "path_verdict"] == "disagrees"
    assert t1.loc["conv", "path_class_verdict"] == "agrees"  # still O(n)
    for layer in ("conv_dilated", "attention_sdpa", "dynamicconv"):  # untouched ones
        assert all(t1.loc[layer, v] == "agrees" for v in VERDICTS)


def test_table1_marks_noisy_or_short_sweeps_inconclusive_and_counts_failures() -> None:
    rows = [case("lstm", "fused", n, 64, flops_analytic=float(lstm_flops(n, 64)),
                 time_ms_median=float(n)) for n in (64, 128)]
    rows.append(case("lstm", "fused", 256, 64, status="oom"))
    t1 = table1_measured(frame(rows)).iloc[0]
    assert t1["flops_n_verdict"] == "inconclusive"
    assert "too few points" in t1["flops_n_reason"]
    assert t1["n_failed"] == 1 and t1["n_cases"] == 3
    assert "1 case(s) did not run" in t1["note"]
    assert t1["seq_ops_verdict"] == "n/a"  # structure was never measured


def test_table1_path_length_inf_equals_inf() -> None:
    """Non-causal dilated stacks never connect some pairs ("gridding"): inf == inf agrees with
    the analytic model, and the class "unbounded" is reported against the theory's."""
    rows = [case("conv_dilated", "conv1d", n, 16, kernel=3, flops_analytic=float(6 * n * 256),
                 path_length_analytic=math.inf, path_length_measured=math.inf,
                 seq_ops_analytic=1, seq_ops_measured=1.0) for n in (16, 32, 64)]
    t1 = table1_measured(frame(rows)).iloc[0]
    assert t1["path_verdict"] == "agrees"
    assert t1["path_class"] == "unbounded"
    assert t1["path_class_verdict"] == "disagrees"
    assert t1["path_class_reason"] == "measured unbounded, theory O(log n)"


# --------------------------------------------------------------------------- FLOPs


def test_flop_reconciliation_flags_counters_off_by_more_than_one_percent() -> None:
    rows = [
        case("attention", "matmul", 64, 64, heads=4, flops_analytic=1000.0,
             flops_useful_analytic=1000.0, flops_fvcore=1004.0, flops_torch=1000.0),
        case("lstm", "fused", 64, 64, flops_analytic=1000.0, flops_useful_analytic=1000.0,
             flops_fvcore=500.0, flops_torch=0.0, flops_uncounted="aten::lstm"),
        case("lightconv", "band", 64, 64, heads=4, kernel=7, flops_analytic=3000.0,
             flops_useful_analytic=1000.0, flops_fvcore=3000.0, flops_torch=3050.0),
        case("gru", "fused", 64, 64, status="oom", flops_analytic=800.0),
    ]
    rec = flop_reconciliation(frame(rows)).set_index("layer")
    assert rec.loc["attention", "flag"] == "ok"
    assert rec.loc["attention", "ratio_fvcore"] == pytest.approx(1.004)
    assert bool(rec.loc["attention", "fvcore_agrees"])
    lstm = rec.loc["lstm", "flag"]
    assert "fvcore off by -50.0% (1 FLOP per multiply-add?)" in lstm
    assert "torch counted 0" in lstm and "uncounted ops: aten::lstm" in lstm
    assert rec.loc["lightconv", "executed_over_useful"] == pytest.approx(3.0)
    assert rec.loc["lightconv", "wasted_flops"] == 2000.0
    assert rec.loc["lightconv", "flag"] == "torch off by +1.7%"
    assert rec.loc["gru", "status"] == "oom"
    assert pd.isna(rec.loc["gru", "fvcore_agrees"]) and rec.loc["gru", "flag"] == "ok"


# --------------------------------------------------------------------------- efficiency


def test_efficiency_and_the_roofline() -> None:
    rows = [
        case("attention", "matmul", 64, 64, heads=4, time_ms_median=2.0, flops_per_s=5e10,
             arithmetic_intensity=100.0, env_peak_flops=1e11, env_peak_bytes_per_s=1e10,
             env_peak_source="measured"),
        case("lstm", "fused", 64, 64, time_ms_median=2.0, flops_analytic=4e7,
             arithmetic_intensity=2.0, env_peak_flops=1e11, env_peak_bytes_per_s=1e10,
             env_peak_source="measured"),
        case("gru", "fused", 64, 64, time_ms_median=1.0, flops_per_s=1e9),  # no peaks
        case("rnn", "fused", 64, 64, status="timeout"),
    ]
    eff = efficiency(frame(rows)).set_index("layer")
    assert "rnn" not in eff.index
    att = eff.loc["attention"]
    assert att["fraction_of_peak"] == pytest.approx(0.5)
    assert att["roofline_flops_per_s"] == pytest.approx(1e11)  # min(1e11, 100 * 1e10)
    assert att["bound"] == "compute" and att["ridge_intensity"] == pytest.approx(10.0)
    lstm = eff.loc["lstm"]
    assert lstm["flops_per_s"] == pytest.approx(2e10)  # 4e7 FLOPs / 2 ms
    assert lstm["roofline_flops_per_s"] == pytest.approx(2e10)  # 2 FLOP/B * 1e10 B/s
    assert lstm["fraction_of_roofline"] == pytest.approx(1.0)
    assert lstm["bound"] == "memory"
    gru = eff.loc["gru"]
    assert pd.isna(gru["fraction_of_peak"]) and pd.isna(gru["bound"])
    assert not eff["above_peak"].any()


def test_a_fraction_of_peak_above_one_is_flagged() -> None:
    rows = [  # float32 conv on TF32 held against the IEEE peak: 1.5x "peak"
        case("conv", "cudnn", 64, 64, kernel=3, time_ms_median=1.0, flops_per_s=1.5e11,
             env_peak_flops=1e11, env_peak_bytes_per_s=1e10, env_peak_source="datasheet"),
        case("lstm", "fused", 64, 64, time_ms_median=1.0, flops_per_s=5e10,
             env_peak_flops=1e11, env_peak_bytes_per_s=1e10, env_peak_source="datasheet"),
    ]
    eff = efficiency(frame(rows)).set_index("layer")
    assert eff.loc["conv", "above_peak"] and not eff.loc["lstm", "above_peak"]
    sentence = next(s for s in headlines(frame(rows)) if "Highest achieved" in s)
    assert "150% of peak" in sentence and "above the peak" in sentence


def test_memory_frontier_finds_the_last_fit_and_the_first_oom() -> None:
    rows = [case("attention", "matmul", n, 64, heads=4, peak_mem_bytes=float(n * n),
                 act_mem_analytic_bytes=float(n * n / 2))
            for n in (256, 512, 1024)]
    rows += [case("attention", "matmul", n, 64, heads=4, status="oom") for n in (2048, 4096)]
    rows += [case("lstm", "fused", n, 64, peak_mem_bytes=float(n)) for n in (256, 512)]
    rows += [case("lstm", "fused", 128, 64, status="oom")]  # below a success: inconsistent
    front = memory_frontier(frame(rows)).set_index("layer")
    att = front.loc["attention"]
    assert (att["largest_ok"], att["smallest_oom"]) == (1024, 2048)
    assert att["n_oom"] == 2 and att["peak_mem_at_largest_ok"] == 1024**2
    assert bool(att["consistent"])
    assert not bool(front.loc["lstm", "consistent"])
    curve = memory_curve(frame(rows))
    assert curve[curve["layer"] == "attention"]["measured_over_analytic"].tolist() == [2.0] * 3
    assert len(curve) == 5  # ok rows only


# --------------------------------------------------------------------------- tidy & headlines


def test_tidy_reuses_to_long_and_adds_the_family() -> None:
    df = frame(theory_rows())
    df.loc[0, "status"] = "oom"
    long = tidy(df, ["time_ms_median", "flops_analytic"])
    reference = to_long(df, ["time_ms_median", "flops_analytic"])
    assert len(long) == len(reference)
    pd.testing.assert_series_equal(long["value"], reference["value"])
    assert set(long["family"]) == {"recurrent", "convolution", "self-attention", "lightconv",
                                   "dynamicconv"}
    assert len(tidy(df, ["time_ms_median"], ok_only=True)) == (df["status"] == "ok").sum()
    assert set(PARAM_COLUMNS) & set(df.columns) <= set(long.columns)
    assert {"seq_len", "d_model", "heads", "kernel", "window"} <= set(long.columns)


def test_headlines_state_only_what_the_numbers_show() -> None:
    d = 512
    ns = (128, 256, 512, 1024, 2048, 4096)
    rows = [case("lstm", "fused", n, d, flops_analytic=float(lstm_flops(n, d)),
                 time_ms_median=lstm_flops(n, d) / 1e7) for n in ns]
    rows += [case("attention", "matmul", n, d, heads=8, flops_analytic=attention_flops(n, d),
                  time_ms_median=attention_flops(n, d) / 1e7) for n in ns]
    rows += [case("attention", "matmul", 8192, d, heads=8, status="oom"),
             case("attention", "matmul", 16384, d, heads=8, status="oom"),
             case("lstm", "fused", 8192, d, status="error", message="boom")]
    text = headlines(frame(rows))
    assert text[0] == "15 cases: 12 ok, 2 oom, 1 error."
    assert any(s.startswith("attention becomes costlier than lstm in FLOPs at n = 1024 ")
               and "d_model=512" in s for s in text)
    assert any(s.startswith("lstm's FLOPs (flops_analytic) grow as n^1.00 ± 0.00") for s in text)
    assert any("attention ran out of memory from n = 8192; largest n that ran: 4096" in s
               for s in text)
    assert not any("path length" in s or "sequential ops" in s for s in text)  # not measured
    assert not any("peak" in s for s in text)  # no peak recorded: no fraction claimed


def test_headlines_call_short_sweeps_inconclusive() -> None:
    rows = [case("lstm", "fused", n, 64, flops_analytic=float(lstm_flops(n, 64)),
                 time_ms_median=float(n)) for n in (64, 128)]
    text = headlines(frame(rows))
    assert any("exponent in n is inconclusive" in s for s in text)
    assert not any(" grow as " in s or " grows as " in s for s in text)
    assert headlines(frame(rows).iloc[:0]) == ["No cases in the results."]


def test_headlines_merge_identical_variants_and_refuse_a_single_crossover_for_zigzags() -> None:
    d = 64
    ns = (32, 64, 128, 256, 512)
    zig = {32: 1.0, 64: 4.0, 128: 1.0, 256: 4.0, 512: 1.0}  # attention time crosses lstm's
    rows = [case("lstm", v, n, d, flops_analytic=float(lstm_flops(n, d)), time_ms_median=2.0)
            for v in ("fused", "unrolled") for n in ns]
    rows += [case("attention", "matmul", n, d, heads=4, flops_analytic=attention_flops(n, d),
                  time_ms_median=zig[n]) for n in ns]
    text = headlines(frame(rows))
    flops = [s for s in text if s.startswith("lstm") and "FLOPs" in s]
    assert len(flops) == 1 and flops[0].startswith("lstm's FLOPs")  # both variants, merged
    assert "attention becomes costlier than lstm in FLOPs at n = 128 (d_model=64, batch=1, " \
           "heads=4)." in text  # n = 2d; dtype/device/mode are the same for every case
    zigzag = [s for s in text if "cross 4 times in time" in s]
    assert len(zigzag) == 2  # one per lstm variant, each a different curve pair
    assert all(s.endswith("no single crossover.") for s in zigzag)
    assert not any("costlier" in s and " in time " in s for s in text)


def test_numbers_in_sentences_are_rounded_but_never_garbled() -> None:
    from harness.analysis.frame import fmt_num

    assert [fmt_num(v) for v in (1019.6, 92.77, 64.0, 65536, 0.0123456, math.inf, None)] == \
        ["1020", "92.8", "64", "65536", "0.0123", "inf", "n/a"]


# --------------------------------------------------------------------------- no torch


def test_analysis_imports_and_runs_without_torch() -> None:
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        sys.modules["fvcore"] = None
        import pandas as pd
        import harness.analysis as A
        rows = [dict(layer="lstm", variant="fused", seq_len=n, d_model=64, status="ok",
                     time_ms_median=3 * n ** 1.5, flops_analytic=16.0 * n * 64 * 64)
                for n in (64, 128, 256, 512)]
        theory = dict(family="recurrent", theory_complexity="O(n d^2)", theory_terms="n d^2",
                      theory_seq_ops="O(n)", theory_path_length="O(n)",
                      theory_path_class="O(n)")
        rows += [dict(row, layer="gru", **theory) for row in rows]
        fits = A.fit_exponents(pd.DataFrame(rows), metrics=["time_ms_median"])
        assert abs(fits.loc[0, "slope"] - 1.5) < 1e-12, fits
        table = A.table1_measured(pd.DataFrame(rows)).set_index("layer")
        assert table.loc["gru", "complexity"] == "O(n d^2)"  # from its rows
        assert table.loc["lstm", "complexity"] == "unknown"  # old rows, registry unusable
        A.headlines(pd.DataFrame(rows))
        loaded = [m for m in sys.modules if m.startswith(("torch", "harness.layers."))]
        assert loaded == ["torch"], loaded  # only the blocking sentinel
        print("no-torch ok")
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "no-torch ok" in done.stdout


# --------------------------------------------------------------------------- theory vs cost


def _useful_slope(entry, axis: str, variant: str) -> float:
    from harness.spec import LayerCase

    base = dict(seq_len=16, d_model=16, heads=2, kernel=3, window=4, src_len=16, batch=1)
    if axis == "heads":
        base["d_model"] = 2**14
    if axis in ("window", "kernel"):  # a window wider than the sequence stops growing
        base["seq_len"] = 2**16
    flops = []
    for value in (2**12, 2**13):
        case = LayerCase(**{**base, axis: value})
        if "height" in entry.params:  # an image: one row of n pixels
            case = replace(case, height=1, width=case.seq_len)
        flops.append(entry.cost_of(case, variant).flops_useful)
    return math.log2(flops[1] / flops[0])


def test_theory_exponents_are_the_asymptotes_of_the_cost_models() -> None:
    pytest.importorskip("torch")
    from harness import registry

    checked = 0
    for entry in registry.entries():
        for axis in ("seq_len", "d_model", "heads", "kernel", "window"):
            if axis not in ("seq_len", "d_model", *entry.params):
                continue
            for variant in entry.variants:
                slope = _useful_slope(entry, axis, variant)
                expected, _ = entry.theory.exponent(axis)
                assert slope == pytest.approx(expected, abs=0.05), (entry.name, variant, axis)
                checked += 1
    assert checked > 40


def test_growth_class_reads_a_log_step_function_as_log():
    """ceil(log_7 n) over n = 64..512 is 3, 3, 3, 4: a step a line in n fits well."""
    from harness.analysis.stats import growth_class

    n = np.array([64, 128, 256, 512])
    assert growth_class(n, np.array([3, 3, 3, 4])) == "O(log n)"
    assert growth_class(n, np.ceil((n - 1) / 3)) == "O(n)"
    assert growth_class(n, n.astype(float)) == "O(n)"


def test_two_sequence_lengths_give_no_agrees_or_disagrees_anywhere() -> None:
    """The quick suite's shape (n in {64, 256}, one d): every growth class and exponent along
    n comes from two points, so Table 1 and the headlines may only say inconclusive."""
    rows = [r for r in theory_rows() if r["d_model"] == 256 and r["seq_len"] in (64, 256)]
    for r in rows:  # conv_dilated's path 3 -> 3 is O(1) at these sizes, theory O(log n)
        if r["layer"] == "conv_dilated":
            r["path_length_measured"] = r["path_length_analytic"] = 3.0
    t1 = table1_measured(frame(rows)).set_index("layer")
    for column in ("flops_n_verdict", "time_n_verdict", "seq_ops_verdict",
                   "path_class_verdict"):
        assert set(t1[column]) == {"inconclusive"}, t1[column]
    assert t1.loc["conv_dilated", "path_class"] == "O(1)"
    assert "needs 3" in t1.loc["conv_dilated", "path_class_reason"]
    assert (t1["path_verdict"] == "agrees").all()  # measured == analytic is no growth claim
    said = " ".join(headlines(frame(rows)))
    assert "disagrees" not in said and "grows as" not in said
    # one more n and the same rows are judged again
    three = [r for r in theory_rows() if r["d_model"] == 256 and r["seq_len"] in (64, 128, 256)]
    t1 = table1_measured(frame(three)).set_index("layer")
    assert t1.loc["conv", "seq_ops_verdict"] == "agrees"
    assert t1.loc["rnn", "flops_n_verdict"] == "agrees"
