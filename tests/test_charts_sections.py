"""The lower sections' charts (harness.report.charts_sections) as Vega-Lite specs: the values
they draw are the rows' medians, hollow exactly where a timing was flagged, OOM cases are
marked where they happened, guides have the theory's slopes, and Vega itself draws them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import CONTENDED, drawn_px
from test_report import _LAYERS, _row, data_of, panels_of, points_of, synthetic_rows

from harness.analysis.efficiency import efficiency
from harness.report.charts_sections import memory_chart, roofline_chart, scaling_charts
from harness.report.style import make_look

#: Table 1's FLOP terms of the synthetic layers, by axis: lstm n d², attention n² d + n d²,
#: lightconv n d k (the layers' declared theory, not the synthetic numbers).
PAPER = {"seq_len": {1, 2}, "d_model": {1, 2}}


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).assign(run="r")


def _panel(spec: dict, title: str) -> dict:
    (found,) = [p for p in panels_of(spec) if p["title"]["text"] == title]
    return found


def _legend_domain(spec: dict) -> list[str]:
    enc = next(lay["encoding"]["color"] for p in panels_of(spec) for lay in p["layer"]
               if "legend" in lay["encoding"].get("color", {})
               and lay["encoding"]["color"]["legend"])
    return list(enc["scale"]["domain"])


def test_scaling_points_are_the_reliable_medians_hollow_only_where_flagged():
    rows = synthetic_rows(ds=(64,), failures=False)
    for row in rows:
        row["time_unreliable"] = False
    base = {r["label"]: r for r in rows}
    lstm128 = base["lstm-n128-d64"]
    t = lstm128["time_ms_median"]
    rows += [{**lstm128, "case_index": 100, "time_ms_median": 3 * t},  # repeats: median 3t
             {**lstm128, "case_index": 101, "time_ms_median": 5 * t}]
    lstm256 = base["lstm-n256-d64"]  # a flagged repeat where a reliable row exists: ignored
    rows.append({**lstm256, "case_index": 102, "time_ms_median": 100.0,
                 "time_unreliable": True, "time_note": CONTENDED})
    base["attention-n512-d64"].update(time_unreliable=True, time_note=CONTENDED)  # alone
    df = _frame(rows)
    look = make_look(df, ["r"])
    (chart,) = scaling_charts(df, "seq_len", look)
    spec = chart.spec
    time = points_of(spec, _panel(spec, "time vs n"))
    got = {(p["layer"], p["n"]): p["value"] for p in time}
    want = {(r["layer"], float(r["seq_len"])): r["time_ms_median"] for r in base.values()}
    want[("lstm", 128.0)] = 3 * t
    assert got == want
    assert [(p["layer"], p["n"]) for p in time if p["hollow"]] == [("attention", 512.0)]
    flops = points_of(spec, _panel(spec, "FLOPs vs n"))
    assert {(p["layer"], p["n"]): p["value"] for p in flops} == {
        k: base[f"{k[0]}-n{int(k[1])}-d64"]["flops_analytic"] for k in want}
    assert not any(p["hollow"] for p in flops)  # only timings can be unreliable
    assert _legend_domain(spec) == [look.label(layer, _LAYERS[layer][0])
                                    for layer in ("lstm", "attention", "lightconv")]
    assert "Hollow points" in chart.caption


@pytest.mark.parametrize("axis", ["seq_len", "d_model"])
def test_guides_have_the_theory_slopes_and_memory_none(axis):
    df = _frame(synthetic_rows(failures=False))
    charts = scaling_charts(df, axis, make_look(df, ["r"]))
    assert charts
    for chart in charts:
        for panel in panels_of(chart.spec):
            guide = [lay for lay in panel["layer"] if lay["encoding"].get("detail", {})
                     .get("field") == "guide"]
            if panel["title"]["text"].startswith("memory"):
                assert not guide
                continue
            (line,) = guide
            slopes = set()
            for name in {v["guide"] for v in data_of(chart.spec, line)}:
                pts = [v for v in data_of(chart.spec, line) if v["guide"] == name]
                slope = (math.log(pts[-1]["value"] / pts[0]["value"])
                         / math.log(pts[-1]["n"] / pts[0]["n"]))
                slopes.add(round(slope, 9))
                assert name.endswith({1: "n", 2: "n²"}[round(slope)] if axis == "seq_len"
                                     else {1: "d", 2: "d²"}[round(slope)])
            assert slopes == PAPER[axis]


def test_memory_chart_marks_the_first_oom_of_each_sweep_and_vega_draws_it():
    rows = synthetic_rows(failures=True)  # attention at n = 4096, d = 256 ran out of memory
    rows.append(_row("attention", 8192, 256, 99, device_name="x", slow=1, status="oom",
                     message="out of memory"))
    rows.append(_row("lstm", 2048, 64, 98, device_name="x", slow=1, status="oom",
                     message="out of memory"))
    df = _frame(rows)
    look = make_look(df, ["r"])
    chart = memory_chart(df, look)
    assert chart is not None and "ran out of memory" in chart.caption
    spec = chart.spec
    marks = {}
    for panel in panels_of(spec):
        for lay in panel["layer"]:
            if lay["mark"].get("shape") == "cross":
                marks[panel["title"]["text"]] = data_of(spec, lay)
    assert sorted(marks) == ["peak memory vs n · d_model=256", "peak memory vs n · d_model=64"]
    (att,) = marks["peak memory vs n · d_model=256"]
    assert att["n"] == 4096.0 and att["colour"] == look.colours["attention"]  # the first OOM
    (lstm,) = marks["peak memory vs n · d_model=64"]
    assert lstm["n"] == 2048.0 and lstm["colour"] == look.colours["lstm"]
    panel = _panel(spec, "peak memory vs n · d_model=64")
    peaks = {(p["layer"], p["n"]): p["value"] for p in points_of(spec, panel)}
    assert peaks == {(r["layer"], float(r["seq_len"])): r["peak_mem_bytes"] for r in rows
                     if r["status"] == "ok" and r["d_model"] == 64}
    estimate = next(lay for lay in panel["layer"] if lay["mark"].get("strokeDash") == [1, 2])
    assert {(v["n"], v["value"]) for v in data_of(spec, estimate)} == {
        (float(r["seq_len"]), r["act_mem_analytic_bytes"]) for r in rows
        if r["status"] == "ok" and r["d_model"] == 64}
    width, height = drawn_px(spec)
    assert width > 600 and height > 200


def test_a_slice_that_only_ran_out_of_memory_still_draws():
    rows = synthetic_rows(ds=(64,), failures=False)
    rows.append(_row("attention", 512, 1024, 99, device_name="x", slow=1, status="oom",
                     message="out of memory"))
    df = _frame(rows)
    chart = memory_chart(df, make_look(df, ["r"]))
    assert chart is not None
    titles = [p["title"]["text"] for p in panels_of(chart.spec)]
    assert titles == ["peak memory vs n · d_model=64", "peak memory vs n · d_model=1024"]
    assert drawn_px(chart.spec)[0] > 600


def test_roofline_points_are_each_cases_flops_per_s_under_the_recorded_roof():
    df = _frame(synthetic_rows(failures=True))
    chart = roofline_chart(df, make_look(df, ["r"]))
    assert chart is not None
    (panel,) = panels_of(chart.spec)
    eff = efficiency(df.drop(columns=["run"]))
    points = points_of(chart.spec, panel)
    assert sorted((p["n"], p["value"]) for p in points) == sorted(
        zip(eff["arithmetic_intensity"], eff["flops_per_s"], strict=True))
    assert panel["title"]["text"][1] == "peaks: probe (test)"
    line = next(lay for lay in panel["layer"] if lay["mark"]["type"] == "line")
    roof = data_of(chart.spec, line)
    xs = np.array([v["n"] for v in roof])
    assert np.allclose([v["value"] for v in roof], np.minimum(1e11, xs * 3.8e10))
    assert xs.min() <= min(p["n"] for p in points) and xs.max() >= max(p["n"] for p in points)
    assert drawn_px(chart.spec)[0] > 300
