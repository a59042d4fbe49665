"""The ``compile`` axis: planning, the compile time apart from the samples, recompiles
flagged, a failing compile as an error row. Few real compiles (inductor takes seconds)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import yaml

from harness import schema
from harness.cli import main
from harness.errors import HarnessInputError
from harness.measure import compiled
from harness.measure.compiled import CompileFailed, CompileWatch, first_call
from harness.measure.timing import (
    Samples,
    TimingConfig,
    TimingResult,
    collect_samples,
    perf_counter_timer,
)
from harness.results import read_results
from harness.suite import load_suite
from harness.suite.plan import expand

BASE: dict[str, Any] = {
    "name": "c", "device": "cpu", "batch": 1,
    "layers": ["conv", {"name": "attention_sdpa", "mode": "decode", "causal": True}],
    "sweep": {"seq_len": [8], "d_model": [4], "heads": [2], "kernel": [3]},
    "measure": {"time_budget_s": 0.01, "min_samples": 2, "warmup_s": 0.0, "min_warmup": 1,
                "rounds": 1, "retries": 0, "threads": 1, "structure_max_n": 8},
}


def suite_file(tmp_path: Path, **changes: Any) -> Path:
    data = {**BASE, **changes}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def plan(tmp_path: Path, **changes: Any) -> list[Any]:
    return expand(load_suite(suite_file(tmp_path, **changes)))


class FakeHandler:
    """Stands in for torch._dynamo.callback_handler: ``fire()`` is a compile starting."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def register_start_callback(self, callback: Any) -> Any:
        self.callbacks.append(callback)
        return callback

    def remove_start_callback(self, callback: Any) -> None:
        self.callbacks.remove(callback)

    def fire(self, compile_id: str) -> None:
        for callback in list(self.callbacks):
            callback(SimpleNamespace(compile_id=compile_id))


# --- planning -------------------------------------------------------------------------


def test_compile_is_a_declared_axis_and_a_layer_case_field() -> None:
    axis = schema.axis("compile")
    assert axis.kind == "flag" and not axis.optional and axis.identity
    assert "compile" in schema.PLAN_ORDER and "compile" in schema.LAYER_AXES
    for name in ("compile_s", "compile_graphs", "compile_recompiles"):
        assert schema.column(name).group == "time"


def test_without_the_key_nothing_is_compiled(tmp_path: Path) -> None:
    cases = plan(tmp_path)
    assert [c.case.compile for c in cases] == [False, False]
    assert not any("compile" in c.label for c in cases)


def test_sweep_compile_crosses_every_layer_and_names_the_case(tmp_path: Path) -> None:
    cases = plan(tmp_path, sweep={**BASE["sweep"], "compile": [False, True]})
    assert [(c.layer, c.case.compile) for c in cases] == [
        ("conv", False), ("conv", True), ("attention_sdpa", False), ("attention_sdpa", True)]
    assert cases[1].label == "conv-n8-d4-k3-forward-compile"
    assert cases[0].case_id != cases[1].case_id and cases[1].params()["compile"] is True
    assert cases[1].runnable
    # decode is refused compiled, with the reason, and planned as a skipped row
    assert cases[3].skip_reason == compiled.DECODE_REASON and cases[2].runnable


def test_the_suite_as_run_keeps_the_compile_sweep(tmp_path: Path) -> None:
    from harness.suite import parse_suite

    suite = load_suite(suite_file(tmp_path, sweep={**BASE["sweep"], "compile": [False, True]}))
    again = parse_suite(yaml.safe_load(suite.to_yaml()), check_device=False)
    assert again.sweep.compile == (False, True) and expand(again) == expand(suite)


def test_a_layer_sweep_replaces_the_suites_compile(tmp_path: Path) -> None:
    layers = ["conv", {"name": "gru", "sweep": {"compile": True}}]
    cases = plan(tmp_path, layers=layers, sweep={**BASE["sweep"], "compile": [False]})
    assert [(c.layer, c.case.compile) for c in cases] == [("conv", False), ("gru", True)]


def test_results_written_before_the_axis_read_as_eager() -> None:
    from conftest import REPO

    df = read_results(REPO / "results" / "baselines" / "table1-cpu")
    assert len(df) and df["compile"].dtype == "boolean" and not df["compile"].any()


def test_a_bad_compile_value_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(HarnessInputError) as err:
        load_suite(suite_file(tmp_path, sweep={**BASE["sweep"], "compile": ["yes please"]}))
    assert "sweep.compile" in str(err.value) and "\n" not in str(err.value)


def test_no_compiler_is_a_skip_with_the_reason(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(compiled, "compile_problem", lambda device: "compile: no C++ compiler")
    cases = plan(tmp_path, layers=["conv"], sweep={**BASE["sweep"], "compile": [False, True]})
    assert [c.skip_reason for c in cases] == [None, "compile: no C++ compiler"]


def test_validate_without_a_cpp_compiler_gives_the_reason(tmp_path: Path) -> None:
    """A real torch with its compiler pointed nowhere: the compiled case is skipped, why."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    path = suite_file(tmp_path, layers=["conv"], sweep={**BASE["sweep"], "compile": True})
    env = {**os.environ, "PYTHONPATH": str(REPO), "CXX": str(tmp_path / "no-such-g++")}
    proc = subprocess.run([sys.executable, "-m", "harness", "validate", str(path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "conv-n8-d4-k3-compile: compile: inductor found no C++ compiler" in proc.stdout
    assert "install g++ or set CXX" in proc.stdout


# --- the compile call, apart from the samples ------------------------------------------


class ScriptedCall:
    """A call whose first run 'compiles' (fires a compile and takes ``compile_s`` on the
    fake clock) and whose later runs take ``call_s`` each; ``recompile_at`` fires again."""

    def __init__(self, handler: FakeHandler, compile_s: float, call_s: float,
                 recompile_at: int | None = None) -> None:
        self.now, self.calls = 0.0, 0
        self.handler, self.compile_s, self.call_s = handler, compile_s, call_s
        self.recompile_at = recompile_at

    def clock(self) -> float:
        return self.now

    def __call__(self) -> None:
        if self.calls == 0 or self.calls == self.recompile_at:
            self.handler.fire(f"0/{self.calls}")
            self.now += self.compile_s
        else:
            self.now += self.call_s
        self.calls += 1


def test_compile_time_is_its_own_number_and_never_a_sample() -> None:
    handler = FakeHandler()
    call = ScriptedCall(handler, compile_s=5.0, call_s=0.01)
    made = iter([7, 8])  # graphs compiled so far in the process, before and after
    first = first_call(call, clock=call.clock, handler=handler, graphs=lambda: next(made))
    assert (first.seconds, first.graphs, first.frames) == (5.0, 1, 1)
    assert handler.callbacks == []
    config = TimingConfig(min_warmup=1, warmup_s=0.0, budget_s=0.05, min_samples=3,
                          min_block_s=0.0)
    with CompileWatch(handler) as watch:
        samples = collect_samples(perf_counter_timer(call, clock=call.clock), config)
    assert watch.count == 0
    assert samples.samples and all(s == pytest.approx(0.01) for s in samples.samples)


def test_a_recompile_while_timing_marks_the_time_unreliable() -> None:
    handler = FakeHandler()
    call = ScriptedCall(handler, compile_s=2.0, call_s=0.01, recompile_at=4)
    first_call(call, clock=call.clock, handler=handler)
    config = TimingConfig(min_warmup=1, warmup_s=0.0, budget_s=0.05, min_samples=5,
                          min_block_s=0.0)
    with CompileWatch(handler) as watch:
        samples = collect_samples(perf_counter_timer(call, clock=call.clock), config)
    assert watch.count == 1 and watch.ids == ["0/4"]
    result = TimingResult.from_rounds([Samples(samples.samples, 1, 1, recompiles=watch.count)])
    row = result.as_row()
    assert row["compile_recompiles"] == 1 and row["time_unreliable"] is True
    assert "recompiled 1x" in str(row["time_note"])
    clean = TimingResult.from_rounds([Samples((0.01, 0.01, 0.01), 1, 1, recompiles=0)])
    assert clean.recompiles == 0 and not clean.unreliable
    eager = TimingResult.from_rounds([Samples((0.01, 0.01, 0.01), 1, 1)])
    assert eager.recompiles is None


def test_a_recompile_during_a_benchmark_flags_it() -> None:
    from harness.bench.plugin import CASE_PARAMS, recompile_info

    assert "compile" in CASE_PARAMS  # parametrized like every axis (--benchmark-group-by)

    assert recompile_info(0, {"time_note": None}) == {"compile_recompiles": 0}
    flagged = recompile_info(2, {"time_note": "contended: x"})
    assert flagged["time_unreliable"] is True
    assert flagged["time_note"] == ("contended: x; recompiled 2x while timing (rounds may "
                                    "hold compile time)")


def test_a_failing_first_call_says_torch_compile_failed() -> None:
    def broken() -> None:
        raise RuntimeError("backend='inductor' raised:\nCppCompileError: no cc1plus")

    with pytest.raises(CompileFailed) as err:
        first_call(broken, handler=FakeHandler())
    assert str(err.value) == ("torch.compile failed: RuntimeError: backend='inductor' raised: "
                              "CppCompileError: no cc1plus")


def test_the_watch_sees_a_real_recompile() -> None:
    """torch.compile of a tiny function, called with a new shape: dynamo compiles again."""
    import torch

    torch.compiler.reset()
    fn = torch.compile(lambda x: x * 2 + 1)
    first = first_call(lambda: fn(torch.ones(3)))
    assert first.graphs == 1 and first.frames == 1
    with CompileWatch() as same:
        fn(torch.ones(3))
    with CompileWatch() as changed:
        fn(torch.ones(5))
    assert same.count == 0 and changed.count is not None and changed.count >= 1


# --- end to end ------------------------------------------------------------------------


def test_a_compile_failure_is_an_error_row_and_the_sweep_goes_on(tmp_path: Path,
                                                                  monkeypatch) -> None:
    def fails_to_compile(module: Any) -> Any:
        def run(*args: Any) -> Any:
            raise RuntimeError("backend='inductor' raised:\nLoweringException: unsupported")
        return run

    monkeypatch.setattr(compiled, "compile_module", fails_to_compile)
    path = suite_file(tmp_path, layers=["conv", "gru"],
                      sweep={**BASE["sweep"], "compile": [True, False]})
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--no-isolate", "--no-report"]) == 0
    rows = read_results(out).set_index("label")
    for layer in ("conv-n8-d4-k3", "gru-n8-d4"):
        bad = rows.loc[f"{layer}-compile"]
        assert bad["status"] == "error"
        assert "torch.compile failed" in bad["message"] and "LoweringException" in bad["message"]
        assert rows.loc[layer, "status"] == "ok"


def test_a_compiled_case_runs_with_eager_flops_and_structure(tmp_path: Path) -> None:
    """One real compile, in train mode: forward and backward through the compiled conv."""
    from harness.measure_case import ExecSettings, execute

    cases = plan(tmp_path, layers=["conv"], mode="train",
                 sweep={**BASE["sweep"], "compile": [False, True]})
    settings = ExecSettings(timing=TimingConfig(min_warmup=1, warmup_s=0.0, budget_s=0.01,
                                                min_samples=2), threads=1,
                            structure_max_n=8)
    (eager, _), (comp, rounds) = (execute(c, settings) for c in cases)
    assert comp["status"] == "ok", comp["message"]
    assert comp["compile_s"] > 0 and comp["compile_graphs"] >= 1
    assert comp["compile_recompiles"] == 0 and rounds[0].recompiles == 0
    assert eager.get("compile_s") is None and eager.get("compile_recompiles") is None
    for column in ("flops_torch", "flops_fvcore", "path_length_measured", "seq_ops_measured"):
        assert comp[column] == eager[column], column


# --- analysis and report ---------------------------------------------------------------


def test_compiled_cases_pair_with_their_eager_twins(tmp_path: Path) -> None:
    from test_report import _html, _row, write_run

    from harness.analysis.compiled import compile_pairs

    rows = [_row("lstm", n, 64, i, device_name="cpu", slow=1.0, compile=c,
                 compile_s=3.0 if c else None, compile_graphs=1 if c else None,
                 compile_recompiles=(1 if n == 128 else 0) if c else None,
                 time_unreliable=bool(c and n == 128))
            for i, (n, c) in enumerate([(64, False), (64, True), (128, False), (128, True)])]
    rows[1]["time_ms_median"] = rows[0]["time_ms_median"] / 2
    rows.append(_row("attention", 64, 64, 4, device_name="cpu", slow=1.0, compile=False))
    rows.append(_row("attention", 64, 64, 5, device_name="cpu", slow=1.0, compile=True,
                     status="error", message="CompileFailed: torch.compile failed: boom"))
    df = pd.DataFrame(rows)
    pairs = compile_pairs(df).set_index(["layer", "case"])
    assert pairs.loc[("lstm", "n=64 d=64 b=1"), "ratio"] == pytest.approx(0.5)
    slow = pairs.loc[("lstm", "n=128 d=64 b=1")]
    assert slow["recompiles"] == 1 and slow["unreliable"]
    failed = pairs.loc[("attention", "n=64 d=64 h=4 b=1")]
    assert failed["status"] == "error" and pd.isna(failed["ratio"])
    assert compile_pairs(df[df["compile"].eq(False)]).empty  # no compiled case, no pairs

    html = _html([write_run(tmp_path / "run", rows)], tmp_path / "out")
    section = html[html.index("Compiled vs eager</h2>"):]
    assert "0.50x" in section and "(unreliable)" in section
    assert "torch.compile failed: boom" in section


def test_a_layer_dynamo_leaves_to_eager_compiles_no_graph(tmp_path: Path) -> None:
    """nn.LSTM: dynamo traces the frame but captures no graph (torch._dynamo.config.allow_rnn
    is off), so the 'compiled' call is the eager kernel; the row says so with 0 graphs."""
    from harness.measure_case import ExecSettings, execute

    (case,) = plan(tmp_path, layers=["lstm"], sweep={**BASE["sweep"], "compile": True})
    settings = ExecSettings(timing=TimingConfig(min_warmup=1, warmup_s=0.0, budget_s=0.01,
                                                min_samples=2), threads=1, structure=False)
    row, _ = execute(case, settings)
    assert row["status"] == "ok" and row["compile_graphs"] == 0


def test_eager_and_compiled_rows_are_never_one_curve_or_one_table1_row() -> None:
    from test_report import _row

    from harness.analysis import table1_measured
    from harness.report.charts import series
    from harness.report.charts_sections import metric_points, slices
    from harness.report.style import make_look

    rows = [_row("lstm", n, 64, i, device_name="cpu", slow=1.0 if c else 5.0, compile=c)
            for i, (n, c) in enumerate((n, c) for c in (False, True) for n in (64, 128, 256))]
    df = pd.DataFrame(rows).assign(run="r")
    shown = slices(df, "seq_len")[0]
    assert [sorted(set(sub["compile"])) for _, sub in shown] == [[False], [True]]  # a panel each
    look = make_look(df, ["r"])
    eager, comp = ([p["value"] for p in metric_points(series(sub, look, False), "time_ms_median",
                                                      look, "seq_len")] for _, sub in shown)
    assert eager == [r["time_ms_median"] for r in rows[:3]]
    assert comp == [r["time_ms_median"] for r in rows[3:]]
    table = table1_measured(df.drop(columns=["run"]))
    assert sorted(table["compile"]) == [False, True] and set(table["n_cases"]) == {3}
