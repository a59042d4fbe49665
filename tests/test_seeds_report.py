"""The seeds section (issue 14): claims judged from synthetic results with known exponents."""

from __future__ import annotations

import pandas as pd
from conftest import drawn_px

from harness.analysis.seeds import local2d_vs_attention, relative_extra_memory, seeds_claims
from harness.report.build import build_report
from harness.report.context import Context
from harness.report.inputs import RunInfo
from harness.report.model import Chart, Section
from harness.report.sec_seeds import seeds

NS = (256, 512, 1024, 2048)


def _row(layer: str, variant: str, n: int, peak: float, act: float, **more: object) -> dict:
    row: dict[str, object] = dict(
        status="ok", layer=layer, variant=variant, seq_len=n, d_model=256, heads=4,
        batch=1, dtype="float32", device="cpu", mode="forward", causal=False, seed=0,
        peak_mem_bytes=peak, act_mem_analytic_bytes=act, time_ms_median=1e-6 * n * n,
        flops_analytic=n * n, time_unreliable=False)
    row.update(more)
    return row


def _relative(skewed_power: int = 2) -> list[dict]:
    rows = []
    for n in NS:
        base = 4.0 * n * n
        rows.append(_row("attention", "matmul", n, base, base))
        rows.append(_row("attention_relative", "materialized", n, base + 64.0 * n * n,
                         base + 64.0 * n * n))
        rows.append(_row("attention_relative", "skewed", n, base + 12.0 * n**skewed_power,
                         base + 12.0 * n * n))
    return rows


def _claim(claims: pd.DataFrame, **where: object) -> pd.Series:
    mask = pd.Series(True, index=claims.index)
    for k, v in where.items():
        mask &= claims[k] == v
    (row,) = [r for _, r in claims[mask].iterrows()]
    return row


def test_relative_memory_beyond_attention_is_judged_on_the_difference() -> None:
    df = pd.DataFrame(_relative())
    extra = relative_extra_memory(df)
    assert sorted(extra["peak_mem_bytes"]) == sorted(
        [64.0 * n * n for n in NS] + [12.0 * n * n for n in NS])
    claims = seeds_claims(df)
    for variant in ("materialized", "skewed"):
        row = _claim(claims, claim="relative", variant=variant, axis="seq_len")
        assert row["verdict"] == "agrees" and abs(row["slope"] - 2) < 1e-9
    bad = seeds_claims(pd.DataFrame(_relative(skewed_power=3)))
    assert _claim(bad, claim="relative", variant="skewed")["verdict"] == "disagrees"


def test_cross_decode_flat_in_n_agrees_and_growth_disagrees() -> None:
    rows = []
    for n in NS:
        for variant, time_ms in (("naive", 0.5), ("sdpa", 0.5 * n / 256)):
            rows.append(_row("attention_cross", variant, n, 1e3, 1e3, mode="decode",
                             src_len=256, flops_analytic=10_000, time_ms_median=time_ms))
    claims = seeds_claims(pd.DataFrame(rows))
    assert _claim(claims, claim="cross", variant="naive")["verdict"] == "agrees"
    assert _claim(claims, claim="cross", variant="sdpa")["verdict"] == "disagrees"


def test_local2d_is_fitted_along_n_although_the_image_grows_with_it() -> None:
    rows = []
    for side in (8, 16, 32, 64):
        n = side * side
        rows.append(_row("attention", "matmul", n, 4.0 * n * n, 4.0 * n * n, d_model=128))
        rows.append(_row("attention_local2d", "blocked", n, 600.0 * n, 600.0 * n, d_model=128,
                         height=side, width=side, flops_analytic=600 * n,
                         time_ms_median=1e-4 * n))
    df = pd.DataFrame(rows)
    claims = seeds_claims(df)
    mem = _claim(claims, claim="local2d", variant="blocked", metric="peak_mem_bytes")
    assert mem["verdict"] == "agrees" and abs(mem["slope"] - 1) < 1e-9
    side = local2d_vs_attention(df)
    last = side[side["seq_len"] == 4096].iloc[0]
    assert last["memory_ratio"] == 4.0 * 4096 / 600.0


def _section(df: pd.DataFrame) -> Section | None:
    return seeds(Context(df.assign(run="r"), [RunInfo("r", "dataframe", None, None)]))


def test_the_section_renders_and_is_absent_without_these_layers() -> None:
    section = _section(pd.DataFrame(_relative()))
    assert section is not None
    (chart,) = [b for b in section.blocks if isinstance(b, Chart)]
    (panel,) = chart.spec["hconcat"]  # one panel: both variants and attention's own peak
    line = next(lay for lay in panel["layer"] if lay["mark"]["type"] == "line")
    points = chart.spec["datasets"][line["data"]["name"]]
    by_series: dict[str, dict[float, float]] = {}
    for p in points:
        by_series.setdefault(p["series"], {})[p["n"]] = p["value"]
    tag = "d256 h4 b1"
    assert by_series == {  # memory beyond attention's; attention's own peak dotted
        f"materialized · {tag}": {float(n): 64.0 * n * n for n in NS},
        f"skewed · {tag}": {float(n): 12.0 * n * n for n in NS},
        f"attention · {tag}": {float(n): 4.0 * n * n for n in NS}}
    assert {p["dash"] for p in points if p["series"].startswith("attention")} == {2}
    assert drawn_px(chart.spec)[0] > 300  # Vega draws it
    assert any("2 agrees" in getattr(b, "text", "") for b in section.blocks)
    assert _section(pd.DataFrame([_row("attention", "matmul", n, 1.0, 1.0) for n in NS])) is None


def test_the_report_has_the_section_only_when_these_layers_ran() -> None:
    def report(rows: list[dict]) -> list[str]:
        df = pd.DataFrame(rows).assign(run="r", case_index=range(len(rows)),
                                       case_id=[f"c{i}" for i in range(len(rows))])
        return [s.id for s in build_report(df, [RunInfo("r", "dataframe", None, None)]).sections]

    assert "seeds" in report(_relative())
    assert "seeds" not in report([_row("attention", "matmul", n, 1.0, 1.0) for n in NS])
