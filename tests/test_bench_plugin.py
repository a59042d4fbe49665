"""The pytest plugin: suite cases as pytest-benchmark benchmarks, extra_info, skips, timers.

Sessions run on a two-layer suite at n = 8 with pytest-benchmark's rounds cut to the
minimum: they check what lands in the files, never how fast anything is. Sessions that
measure run in a subprocess (measuring imports hundreds of torch modules, which pytester's
in-process runs would unload again, breaking later tests); collection-only sessions run
in-process (pytester), which is much faster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

# Collection imports these; importing them here keeps pytester's in-process sessions (which
# unload what they import) from importing them afresh each time.
from conftest import REPO

import harness.layers
import harness.measure.env
import harness.measure_case
import harness.run_command
import harness.suite  # noqa: F401
from harness.bench.compare import INCONCLUSIVE, UNCHANGED, compare_runs, contended
from harness.bench.loaders import load
from harness.bench.plugin import (
    SKIP_REASON,
    contention_info,
    plugin_cli_args,
    watched,
)
from harness.bench.timers import device_timer, synchronized
from harness.measure.contention import ContentionRule

pytest_plugins = ["pytester"]


SUITE = """\
name: tiny
device: cpu
dtype: float32
mode: forward
batch: 1
layers: [lstm, attention]
sweep:
  seq_len: [8]
  d_model: [8]
  heads: [2, 3]
measure:
  structure_max_n: 8
"""

SUITE_TEST = (REPO / "tests" / "benchmarks" / "test_suite_benchmarks.py").read_text()

USER_TEST = """
import torch

class Mixer(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.proj = torch.nn.Linear(d, d)

    def forward(self, x):
        return torch.tanh(self.proj(x))

def test_mixer(layer_benchmark):
    info = layer_benchmark(Mixer(8), torch.randn(2, 16, 8))
    assert info["param_count"] == 8 * 8 + 8
"""

# Overrides the plugin's counter: lstm's threads "wait" 1000 s between readings, others never.
CONFTEST = """
import itertools

import pytest

@pytest.fixture
def harness_wait_counter(request):
    step = 1000.0 if "lstm" in request.node.name else 0.0
    readings = itertools.count(0.0, step)
    return lambda: next(readings)
"""

FAST = ["--benchmark-max-time=0.005", "--benchmark-min-rounds=3"]


def _write_project(root: Path) -> Path:
    (root / "tiny.yaml").write_text(SUITE)
    (root / "test_suite_bench.py").write_text(SUITE_TEST)
    (root / "test_user.py").write_text(USER_TEST)
    (root / "conftest.py").write_text(CONFTEST)
    return root


def _subprocess(root: Path, *args: str) -> str:
    """A measuring pytest session in its own process; returns its output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # just the plugins under test: faster
    cmd = [sys.executable, "-m", "pytest", "-p", "pytest_benchmark.plugin",
           "-p", "harness.bench.plugin", "-p", "no:cacheprovider", "-q", "-rs", *args]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory) -> tuple[str, dict, Path]:
    """`pytest --benchmark-only --benchmark-json`, two passes."""
    root = _write_project(tmp_path_factory.mktemp("project"))
    out = _subprocess(root, "test_suite_bench.py", "test_user.py", "--benchmark-only",
                      "--harness-suite=tiny.yaml", "--harness-passes=2",
                      "--benchmark-group-by=param:layer", "--benchmark-json=out.json", *FAST)
    return out, json.loads((root / "out.json").read_text()), root


def _bench(doc: dict, name: str) -> dict:
    return next(b for b in doc["benchmarks"] if b["name"] == name)


def _inprocess(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    """A session that does not measure (collection, skips, usage errors), in-process."""
    _write_project(pytester.path)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    return pytester.runpytest_inprocess("-p", "pytest_benchmark.plugin",
                                        "-p", "harness.bench.plugin",
                                        "-p", "no:cacheprovider", "-rs", *args)


def test_one_test_per_case_with_readable_ids(pytester, monkeypatch):
    result = _inprocess(pytester, monkeypatch, "test_suite_bench.py", "--collect-only", "-q",
                        "--harness-suite=tiny.yaml")
    ids = [line.split("::")[-1] for line in result.outlines if "::test_layer[" in line]
    assert ids == ["test_layer[lstm-n8-d8]", "test_layer[attention-n8-d8-h2]",
                   "test_layer[attention-n8-d8-h3]"]


def test_plain_pytest_skips_the_suite_benchmarks(pytester, monkeypatch):
    pytester.mkdir("suites")
    (pytester.path / "suites" / "quick.yaml").write_text(SUITE)  # the default suite path
    result = _inprocess(pytester, monkeypatch, "test_suite_bench.py")
    assert result.ret == 0
    result.assert_outcomes(skipped=3)
    assert SKIP_REASON in result.stdout.str()


def test_a_missing_suite_is_a_usage_error(pytester, monkeypatch):
    result = _inprocess(pytester, monkeypatch, "test_suite_bench.py", "--benchmark-only",
                        "--harness-suite=nope.yaml")
    assert result.ret != 0
    assert "--harness-suite: no suite file" in result.stdout.str() + result.stderr.str()


def test_passes_run_pass_after_pass_and_skips_keep_their_reason(benchmark_run):
    out, doc, _ = benchmark_run
    names = [b["name"] for b in doc["benchmarks"]]
    assert sorted(names) == sorted([
        "test_layer[lstm-n8-d8-p0]", "test_layer[attention-n8-d8-h2-p0]",
        "test_layer[lstm-n8-d8-p1]", "test_layer[attention-n8-d8-h2-p1]", "test_mixer"])
    # the impossible case (8 is not divisible by 3 heads) is a skip with the plan's reason
    assert not any("h3" in name for name in names)
    assert "SKIPPED" in out and "divisible" in out


def test_extra_info_holds_the_metrics(benchmark_run):
    _, doc, _ = benchmark_run
    info = _bench(doc, "test_layer[lstm-n8-d8-p0]")["extra_info"]
    for key in ("flops_analytic", "flops_fvcore", "flops_torch", "peak_mem_bytes",
                "param_count", "path_length_measured", "path_length_analytic",
                "seq_ops_measured", "seq_ops_analytic", "case_id", "label"):
        assert info.get(key) is not None, key
    assert info["flops_analytic"] == info["flops_torch"] == info["flops_fvcore"] > 0
    assert info["path_length_measured"] == info["path_length_analytic"] == 8  # n for an RNN
    assert info["peak_mem_bytes"] > 0 and info["param_count"] > 0
    assert (info["layer"], info["seq_len"], info["d_model"], info["device"]) == (
        "lstm", 8, 8, "cpu")
    assert (info["harness_pass"], info["harness_passes"]) == (0, 2)
    attention = _bench(doc, "test_layer[attention-n8-d8-h2-p1]")["extra_info"]
    assert attention["path_length_measured"] == 1 and attention["heads"] == 2


def test_params_are_named_after_the_axes(benchmark_run):
    _, doc, _ = benchmark_run
    params = _bench(doc, "test_layer[attention-n8-d8-h2-p0]")["params"]
    assert {k: params[k] for k in ("layer", "seq_len", "d_model", "heads", "harness_pass")} == {
        "layer": "attention", "seq_len": 8, "d_model": 8, "heads": 2, "harness_pass": 0}


def test_group_by_a_parameter_even_beside_unparametrized_benchmarks(benchmark_run):
    out, _, _ = benchmark_run
    assert "benchmark 'layer=lstm': 2 tests" in out
    assert "benchmark 'layer=attention': 2 tests" in out
    assert "benchmark 'layer=None': 1 tests" in out  # test_mixer has no layer parameter


def test_layer_benchmark_attaches_flops_and_memory(benchmark_run):
    _, doc, _ = benchmark_run
    info = _bench(doc, "test_mixer")["extra_info"]
    flops = 2 * (2 * 16) * 8 * 8  # one (32, 8) @ (8, 8) matmul, 2 FLOPs per multiply-add
    assert info["flops_torch"] == flops and info["flops_fvcore"] == flops
    assert info["peak_mem_bytes"] > 0 and info["module"] == "Mixer"
    assert info["input_shape"] == [2, 16, 8]


def test_the_json_feeds_harness_compare(benchmark_run):
    _, _, root = benchmark_run
    run = load(root / "out.json")
    cases = {c.label: c for c in run.all_cases()}
    assert sorted(cases) == ["attention-n8-d8-h2", "lstm-n8-d8", "test_mixer"]
    assert len(cases["lstm-n8-d8"].passes) == 2  # the two passes of one case
    assert all(c.raw for c in cases.values())  # --benchmark-json keeps the raw data


def test_contention_lands_in_extra_info_and_makes_compare_inconclusive(benchmark_run):
    """The project's conftest scripts the wait counter: lstm contended, the rest quiet."""
    _, doc, root = benchmark_run
    for name in ("test_layer[lstm-n8-d8-p0]", "test_layer[lstm-n8-d8-p1]"):
        info = _bench(doc, name)["extra_info"]
        assert info["time_unreliable"] is True and info["time_wait_s"] == 1000.0
        assert info["time_note"].startswith("contended: threads waited for a CPU 1000 s")
    for name in ("test_layer[attention-n8-d8-h2-p0]", "test_mixer"):
        info = _bench(doc, name)["extra_info"]
        assert (info["time_unreliable"], info["time_note"], info["time_wait_s"]) == (
            False, None, 0.0)
    run = load(root / "out.json")
    verdicts = {v.label: v.verdict for v in compare_runs(run, run).cases}
    assert verdicts == {"lstm-n8-d8": INCONCLUSIVE, "attention-n8-d8-h2": UNCHANGED,
                        "test_mixer": UNCHANGED}


class FakeBenchmark:
    """pytest-benchmark's fixture as ``watched`` sees it: call it, then read its stats."""

    def __init__(self, events: list[str], total: float | None, iterations: int = 1) -> None:
        self.events, self.total, self.iterations = events, total, iterations
        self.extra_info: dict[str, Any] = {}
        self.stats: Any = None

    def __call__(self, call: Any) -> None:
        self.events.append("benchmark")
        call()
        if self.total is not None:  # per-iteration times, as pytest-benchmark keeps them
            stats = type("Stats", (), {"total": self.total / self.iterations})()
            self.stats = type("Metadata", (), {"stats": stats,
                                               "iterations": self.iterations})()


def _scripted(readings: list[float], events: list[str]) -> Any:
    values = iter(readings)

    def wait() -> float:
        events.append("wait")
        return next(values)

    return wait


@pytest.mark.parametrize("readings, iterations, expected", [
    ([10.0, 10.3], 1, True),  # 0.3 s of waiting over 1 s timed: 30 % > 5 %
    ([10.0, 10.3], 4, True),  # the same, timed as 4 iterations per round
    ([10.0, 10.04], 1, False),  # 4 % <= 5 %
    ([10.0, 9.0], 1, False),  # a thread exited with its share: no negative waits
])
def test_watched_reads_the_counter_around_the_benchmark(readings, iterations, expected):
    events: list[str] = []
    bench = FakeBenchmark(events, total=1.0, iterations=iterations)
    info = watched(bench, lambda: events.append("call"), _scripted(readings, events))
    assert events == ["wait", "benchmark", "call", "wait"]
    assert bench.extra_info == info
    assert info["time_unreliable"] is expected
    assert info["time_wait_s"] == pytest.approx(max(readings[1] - readings[0], 0.0))
    if expected:
        assert info["time_note"].startswith("contended: ") and "30%" in info["time_note"]
        assert contended(info["time_unreliable"], info["time_note"])  # compare agrees
    else:
        assert info["time_note"] is None


def test_unobservable_contention_is_not_reported():
    events: list[str] = []
    no_counter = watched(FakeBenchmark(events, total=1.0), lambda: None, None)
    assert no_counter == {"time_unreliable": False, "time_note": None, "time_wait_s": None}
    disabled = watched(FakeBenchmark(events, total=None), lambda: None,
                       _scripted([0.0, 5.0], events))  # --benchmark-disable: nothing timed
    assert disabled["time_unreliable"] is False and disabled["time_wait_s"] == 5.0


def test_contention_info_uses_the_rule():
    assert contention_info(0.2, 1.0)["time_unreliable"] is True
    assert contention_info(0.2, 1.0, ContentionRule(sample_wait=0.25))["time_unreliable"] is False


# --- timers ----------------------------------------------------------------------------------


def test_synchronized_timer_waits_for_the_device_before_reading():
    events: list[str] = []

    def clock() -> float:
        events.append("clock")
        return 1.0

    timer = synchronized(clock, lambda: events.append("sync"))
    assert timer() == 1.0
    assert events == ["sync", "clock"]


def test_cpu_keeps_the_configured_timer():
    def clock() -> float:
        return 0.0

    assert device_timer(clock, "cpu") is clock


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_timer_synchronizes():
    def clock() -> float:
        return 0.0

    timer = device_timer(clock, "cuda")
    assert timer is not clock and timer.__name__.startswith("synchronized")
    assert device_timer(clock, "cuda") is timer  # cached: precision measured once
    timer()


def test_plugin_cli_args_name_the_plugin_unless_an_entry_point_loads_it():
    assert plugin_cli_args() in ([], ["-p", "harness.bench.plugin"])


def test_the_plugins_rows_say_its_heap_is_glibcs_default() -> None:
    """pytest's own process measures the benchmarks and keeps glibc's heap settings; only the
    harness's worker processes hold theirs steady (harness.measure.heap)."""
    from harness.bench import plugin
    from harness.measure.heap import DEFAULT

    assert plugin._env("cpu")["env_malloc"] == DEFAULT
