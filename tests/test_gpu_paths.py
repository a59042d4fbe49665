"""The CUDA paths' failure handling and settings, on CPU through fakes (issue 16).

The real behaviour is checked by the ``gpu``-marked tests in ``test_gpu_behaviour.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from harness.measure.timing import Samples, TimingConfig
from harness.spec import LayerCase

_SIZES = LayerCase(seq_len=4, d_model=2)


@dataclass(frozen=True)
class Case:
    case_id: str
    label: str
    device: str = "cuda"
    skip_reason: str | None = None
    case: LayerCase = _SIZES

    def params(self) -> dict[str, Any]:
        return {"layer": "fake", "seq_len": self.case.seq_len, "batch": self.case.batch}


def _settings() -> Any:
    from harness.measure_case import ExecSettings

    return ExecSettings(timing=TimingConfig(), rounds=1, env={"env_hostname": "fake"})


# ---- 1. a CUDA error ends the worker; the next case gets a fresh one ----------------------


class FakeConn:
    def __init__(self, jobs: list[Any]) -> None:
        self.jobs, self.sent = list(jobs), []

    def recv(self) -> Any:
        if not self.jobs:
            raise EOFError
        return self.jobs.pop(0)

    def send(self, value: Any) -> None:
        self.sent.append(value)


def _error_execute(bad: set[str], status: str = "error"):
    from harness.results import Row

    def execute(planned: Any, settings: Any) -> tuple[Any, list[Samples]]:
        row = Row(planned)
        if planned.case_id in bad:
            row.update(status=status, message="AcceleratorError: CUDA error: an illegal "
                       "memory access was encountered")
        else:
            row.update(status="ok", message="")
        return row, []

    return execute


def test_worker_ends_itself_after_a_cuda_error_and_says_why(monkeypatch):
    import harness.sweep as sweep

    monkeypatch.setattr(sweep, "execute", _error_execute({"bad"}))
    monkeypatch.setattr(sweep.signal, "signal", lambda *a: None)
    settings = _settings()
    conn = FakeConn([("case", Case("good", "G"), settings), ("case", Case("bad", "B"), settings),
                     ("case", Case("after", "A"), settings)])
    sweep._worker_main(conn)
    assert conn.sent[0] == "ready"
    (good, good_lost), (bad, bad_lost) = conn.sent[1:]  # "after" never ran in this worker
    assert good[0]["status"] == "ok" and not good_lost
    assert bad[0]["status"] == "error" and bad_lost
    assert sweep.CONTEXT_LOST in bad[0]["message"] and "illegal memory" in bad[0]["message"]
    assert conn.jobs and conn.jobs[0][1].case_id == "after"


@pytest.mark.parametrize(("device", "status"), [("cpu", "error"), ("cuda", "oom")])
def test_worker_carries_on_after_a_cpu_error_or_an_oom(monkeypatch, device, status):
    import harness.sweep as sweep

    monkeypatch.setattr(sweep, "execute", _error_execute({"bad"}, status))
    monkeypatch.setattr(sweep.signal, "signal", lambda *a: None)
    settings = _settings()
    conn = FakeConn([("case", Case("bad", "B", device), settings),
                     ("case", Case("after", "A", device), settings)])
    sweep._worker_main(conn)
    assert [lost for _, lost in conn.sent[1:]] == [False, False]
    assert sweep.CONTEXT_LOST not in conn.sent[1][0][0]["message"]


def test_a_failed_round_on_cuda_ends_the_worker_too(monkeypatch):
    import harness.sweep as sweep

    def retime(planned: Any, settings: Any) -> Samples:
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(sweep, "retime", retime)
    monkeypatch.setattr(sweep.signal, "signal", lambda *a: None)
    settings = _settings()
    conn = FakeConn([("round", Case("a", "A"), settings), ("round", Case("b", "B"), settings)])
    sweep._worker_main(conn)
    ((status, note), lost), = conn.sent[1:]
    assert status == "error" and lost and sweep.CONTEXT_LOST in note


def test_sweep_replaces_a_worker_that_lost_its_context(monkeypatch, tmp_path):
    import harness.sweep as sweep
    from harness.results import RunDirectory

    execute = _error_execute({"b"})
    workers: list[Any] = []

    class FakeWorker:
        def __init__(self) -> None:
            self.lost, self.cases, self.killed = False, [], False
            workers.append(self)

        def run(self, planned: Any, settings: Any, timeout_s: float) -> Any:
            self.cases.append(planned.case_id)
            row, rounds = execute(planned, settings)
            self.lost = row["status"] == "error"
            return row, rounds

        def kill(self) -> None:
            self.killed = True

        close = kill

    monkeypatch.setattr(sweep, "Worker", FakeWorker)
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create()
    plan = [Case("a", "A"), Case("b", "B"), Case("c", "C")]
    sweep.run_cases(plan, run_dir, lambda p: _settings(), timeout_s=5)
    assert [w.cases for w in workers] == [["a", "b"], ["c"]]
    assert workers[0].killed
    df = run_dir.merge().set_index("case_id")
    assert df.loc["b", "status"] == "error" and df.loc["c", "status"] == "ok"


# ---- 3. after an OOM the case's memory is freed before the cache is emptied ---------------


class FakeAllocator:
    """Counts the bytes of live fake blocks; ``empty_cache`` records what was still live."""

    def __init__(self) -> None:
        self.live: dict[int, int] = {}
        self.at_empty_cache: list[int] = []

    def allocated(self) -> int:
        return sum(self.live.values())

    def empty_cache(self) -> None:
        self.at_empty_cache.append(self.allocated())


class Block:
    def __init__(self, allocator: FakeAllocator, nbytes: int) -> None:
        self._allocator = allocator
        allocator.live[id(self)] = nbytes
        self.cycle = [self]  # freed only by the cycle collector, like a module graph can be

    def __del__(self) -> None:
        self._allocator.live.pop(id(self), None)


def _planned(n: int) -> Any:
    from harness import registry
    from harness.suite.plan import PlannedCase

    return PlannedCase(layer="conv", variant=registry.get("conv").default_variant,
                       case=LayerCase(seq_len=n, d_model=8, kernel=3), dtype="float32",
                       device="cuda", mode="forward", seed=0, label=f"conv-n{n}")


def test_an_oom_leaves_the_next_case_a_clean_baseline(monkeypatch):
    import torch

    import harness.measure_case as mc

    allocator = FakeAllocator()
    baselines: list[int] = []

    def prepared(planned: Any) -> Any:
        baselines.append(allocator.allocated())  # what the case starts from
        weights = Block(allocator, 1000)  # the module and input the call closes over

        def call() -> None:
            scratch = Block(allocator, 10_000)  # held by this frame, i.e. the traceback
            if planned.case.seq_len > 8:
                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory ({id(scratch)})")
            del scratch

        call.weights = weights  # type: ignore[attr-defined]
        return call, 1000, torch.device("cuda")

    _stub_measuring(monkeypatch, prepared)
    monkeypatch.setattr(torch.cuda, "empty_cache", allocator.empty_cache)
    settings = mc.ExecSettings(timing=TimingConfig(), memory=False, flops=False,
                               structure=False)
    row, _ = mc.execute(_planned(16), settings)
    assert row["status"] == "oom"
    assert allocator.at_empty_cache == [0]  # everything the case held was gone by then
    row, _ = mc.execute(_planned(8), settings)
    assert row["status"] == "ok"
    assert baselines == [0, 0]


# ---- 5. measure.flush_l2: a suite pins the method ----------------------------------------


@pytest.mark.parametrize(("text", "expected"), [("", "auto"), ("flush_l2: auto", "auto"),
                                                ("flush_l2: true", True),
                                                ("flush_l2: false", False)])
def test_flush_l2_is_a_suite_key_that_reaches_the_timer(text, expected, monkeypatch):
    import yaml

    import harness.measure_case as mc
    from harness.run_command import exec_settings
    from harness.suite import parse_suite

    suite = parse_suite(yaml.safe_load(
        "name: t\nlayers: [conv]\nsweep: {seq_len: [8], d_model: [4], kernel: [3]}\n"
        f"measure: {{{text}}}\n"
    ), check_device=False)
    settings = exec_settings(suite)
    assert settings.flush_l2 == expected
    seen: dict[str, Any] = {}

    def round_on_device(fn: Any, **kwargs: Any) -> Samples:
        seen.update(kwargs)
        return Samples((0.001,), 1, 1)

    import harness.measure.timing as timing

    monkeypatch.setattr(timing, "round_on_device", round_on_device)
    mc._time_round(lambda: None, 10, "cuda:0", settings)
    assert seen["flush_l2"] == expected


def test_flush_l2_refuses_other_values():
    from harness.suite import HarnessInputError, parse_suite

    with pytest.raises(HarnessInputError, match="flush_l2"):
        parse_suite({"name": "t", "layers": ["conv"], "sweep": {"seq_len": [8], "d_model": [4]},
                     "measure": {"flush_l2": "sometimes"}}, check_device=False)


@pytest.mark.parametrize("name", ["gpu-check", "gpu-scale"])
def test_gpu_suites_pin_the_flush(name):
    from conftest import REPO

    from harness.suite import load_suite

    suite = load_suite(REPO / "suites" / f"{name}.yaml", check_device=False)
    assert suite.measure.flush_l2 is True


# ---- 2. float32 precision: forced IEEE or TF32 by choice, recorded per row ---------------


class _Knob:
    def __init__(self, value: str) -> None:
        self.fp32_precision = value


class NewBackends:
    """torch >= 2.9's fp32_precision attributes, with torch's defaults."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.fp32_precision = "none"
        self.cuda = SimpleNamespace(matmul=_Knob("none"))
        self.cudnn = SimpleNamespace(fp32_precision="none", conv=_Knob("tf32"),
                                     rnn=_Knob("tf32"))


class OldBackends:
    def __init__(self) -> None:
        from types import SimpleNamespace

        self.cuda = SimpleNamespace(matmul=SimpleNamespace(allow_tf32=False))
        self.cudnn = SimpleNamespace(allow_tf32=True)


@pytest.mark.parametrize("backends", [NewBackends, OldBackends])
def test_float32_mode_sets_every_knob_and_restores_them(backends):
    from harness.measure.precision import float32_mode, precision_columns

    b = backends()
    default = precision_columns(b)
    assert not default["tf32_matmul"] and default["tf32_conv"]  # torch's mixed default
    with float32_mode(False, b):
        got = precision_columns(b)
        assert not (got["tf32_matmul"] or got["tf32_conv"] or got["tf32_rnn"])
    with float32_mode(True, b):
        got = precision_columns(b)
        assert got["tf32_matmul"] and got["tf32_conv"] and got["tf32_rnn"]
    assert precision_columns(b) == default


@pytest.mark.parametrize("tf32", [False, True])
def test_a_cuda_case_runs_and_records_the_chosen_precision(monkeypatch, tf32):
    import torch

    import harness.measure_case as mc
    from harness.measure.precision import precision_columns

    during: list[dict[str, object]] = []

    def prepared(planned: Any) -> Any:
        return (lambda: during.append(precision_columns())), 10, torch.device("cuda")

    _stub_measuring(monkeypatch, prepared)
    before = precision_columns()
    settings = mc.ExecSettings(timing=TimingConfig(), memory=False, flops=False,
                               structure=False, tf32=tf32)
    row, _ = mc.execute(_planned(8), settings)
    assert row["status"] == "ok"
    assert during[0]["tf32_conv"] is tf32 and during[0]["tf32_matmul"] is tf32
    assert row["tf32_conv"] is tf32 and row["tf32_matmul"] is tf32 and row["tf32_rnn"] is tf32
    assert precision_columns() == before  # the host process is left as it was


def test_cpu_rows_leave_the_precision_columns_empty():
    import harness.measure_case as mc

    settings = mc.ExecSettings(timing=TimingConfig(min_warmup=1, warmup_s=0, budget_s=0,
                                                   min_samples=1, max_samples=1),
                               memory=False, flops=False, structure=False)
    planned = _planned(8)
    from dataclasses import replace

    row, _ = mc.execute(replace(planned, device="cpu"), settings)
    assert row["status"] == "ok" and row.get("tf32_conv") is None


def test_a_failing_empty_cache_after_a_cuda_error_keeps_the_first_error(monkeypatch):
    import torch

    import harness.measure_case as mc

    def prepared(planned: Any) -> Any:
        def call() -> None:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        return call, 10, torch.device("cuda")

    def broken() -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered (again)")

    class NoTelemetry:
        def __init__(self, device: str) -> None:
            pass

        start = close = lambda self: None

    def time_round(call: Any, working_set: int, device: Any, settings: Any) -> Samples:
        call()
        raise AssertionError("unreachable")

    monkeypatch.setattr(mc, "prepared", prepared)
    monkeypatch.setattr(mc, "CaseTelemetry", NoTelemetry)
    monkeypatch.setattr(mc, "_time_round", time_round)
    monkeypatch.setattr(torch.cuda, "empty_cache", broken)
    row, _ = mc.execute(_planned(8), mc.ExecSettings(timing=TimingConfig()))
    assert row["status"] == "error" and row["message"].endswith("was encountered")


def _stub_measuring(monkeypatch: pytest.MonkeyPatch, prepared: Any) -> None:
    """measure_case with ``prepared`` building the call, no telemetry, and a round that
    calls it once and reports three 1 ms samples."""
    import harness.measure_case as mc

    class NoTelemetry:
        def __init__(self, device: str) -> None:
            pass

        start = close = lambda self: None

        def stop(self, calls: int) -> dict[str, Any]:
            return {}

    def time_round(call: Any, working_set: int, device: Any, settings: Any) -> Samples:
        call()
        return Samples((0.001,) * 3, 1, 1)

    monkeypatch.setattr(mc, "prepared", prepared)
    monkeypatch.setattr(mc, "CaseTelemetry", NoTelemetry)
    monkeypatch.setattr(mc, "_time_round", time_round)
