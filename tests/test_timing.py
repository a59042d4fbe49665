"""Timing engine facts, proved with a fake clock (no real-time assertions anywhere)."""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Iterable, Iterator

import pytest
import torch

from harness.measure.timing import (
    DEFAULT_L2_BYTES,
    L2Flusher,
    TimingConfig,
    TimingResult,
    collect_samples,
    cuda_event_timer,
    l2_cache_bytes,
    quantile,
    should_flush_l2,
    time_callable,
    time_cuda,
    working_set_bytes,
)

MS = 2.0**-10  # a binary-exact "millisecond", so sums of scripted durations are exact


class Scripted:
    """A fake clock; each call of ``fn`` advances it by the next scripted duration."""

    def __init__(self, durations: Iterable[float], then: float = MS) -> None:
        self.durations = list(durations)
        self.then = then  # duration of every call after the script runs out
        self.now = 0.0
        self.calls = 0
        self.log: list[str] = []

    def clock(self) -> float:
        self.log.append("clock")
        return self.now

    def fn(self) -> None:
        self.log.append("fn")
        step = self.durations[self.calls] if self.calls < len(self.durations) else self.then
        self.now += step
        self.calls += 1

    def sync(self) -> None:
        self.log.append("sync")


def config(**overrides: object) -> TimingConfig:
    base = dict(
        min_warmup=0, warmup_s=0.0, budget_s=0.0, min_samples=1, max_samples=1000,
        min_block_s=0.0, spread_threshold=0.1,
    )  # fmt: skip
    base.update(overrides)
    return TimingConfig(**base)  # type: ignore[arg-type]


def test_stats_of_known_samples_are_exact() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    r = TimingResult.from_samples(values)
    # sorted: 1 2 3 4 5 10; type-7 quantiles: h = 5p
    assert r.median == pytest.approx(3.5)
    assert r.q1 == pytest.approx(2.25)  # h = 1.25: 2 + 0.25 * (3 - 2)
    assert r.q3 == pytest.approx(4.75)  # h = 3.75: 4 + 0.75 * (5 - 4)
    assert r.iqr == pytest.approx(2.5)
    assert r.min == 1.0 and r.max == 10.0
    assert r.mean == pytest.approx(25 / 6)
    assert r.std == pytest.approx(statistics.stdev(values))
    assert r.cv == pytest.approx(statistics.stdev(values) / (25 / 6))
    assert r.count == 6
    assert r.samples == tuple(values)  # sampling order kept
    # numpy's default quantile is the same definition
    np = pytest.importorskip("numpy")
    assert r.q1 == pytest.approx(float(np.quantile(values, 0.25)))
    assert r.q3 == pytest.approx(float(np.quantile(values, 0.75)))


def test_quantile_edges() -> None:
    assert quantile([7.0], 0.25) == 7.0
    assert quantile([1.0, 3.0], 0.5) == 2.0
    with pytest.raises(ValueError):
        quantile([], 0.5)
    with pytest.raises(ValueError):
        quantile([1.0], 1.5)


def test_single_sample_has_zero_spread() -> None:
    r = TimingResult.from_samples([0.004])
    assert (r.std, r.cv, r.iqr, r.unreliable) == (0.0, 0.0, 0.0, False)


def test_time_callable_stats_through_the_fake_clock() -> None:
    fake = Scripted([1 * MS, 2 * MS, 3 * MS, 4 * MS, 5 * MS])
    r = time_callable(fake.fn, config=config(min_samples=5, max_samples=5), clock=fake.clock)
    assert r.samples == (1 * MS, 2 * MS, 3 * MS, 4 * MS, 5 * MS)
    assert r.calls_per_sample == 1
    assert r.median == 3 * MS and r.iqr == 2 * MS and r.min == 1 * MS
    assert r.mean == pytest.approx(3 * MS)
    assert r.cv == pytest.approx(math.sqrt(2.5) / 3)
    row = r.as_row()
    assert row["time_ms_median"] == pytest.approx(3 * MS * 1e3)
    assert row["time_ms_iqr"] == pytest.approx(2 * MS * 1e3)
    assert row["time_ms_min"] == pytest.approx(1 * MS * 1e3)
    assert row["time_ms_mean"] == pytest.approx(3 * MS * 1e3)
    assert row["time_cv"] == pytest.approx(math.sqrt(2.5) / 3)
    assert row["time_samples"] == 5
    assert row["time_unreliable"] is True  # IQR / median = 2/3


def test_warmup_calls_are_excluded() -> None:
    # Three slow first calls (compilation, caches) then steady 1 "ms" calls.
    fake = Scripted([100 * MS, 50 * MS, 20 * MS], then=MS)
    r = time_callable(
        fake.fn, config=config(min_warmup=3, min_samples=4, max_samples=4), clock=fake.clock
    )
    assert r.warmup_calls == 3
    assert r.samples == (MS,) * 4
    assert fake.calls == 3 + 4


def test_warmup_lasts_at_least_warmup_s() -> None:
    fake = Scripted([], then=MS)
    r = time_callable(
        fake.fn,
        config=config(min_warmup=1, warmup_s=10 * MS, min_samples=2, max_samples=2),
        clock=fake.clock,
    )
    assert r.warmup_calls == 10  # ten 1-ms calls reach 10 ms; one call alone would not
    assert fake.calls == 12


def test_budget_stops_at_the_right_sample_count() -> None:
    fake = Scripted([], then=4 * MS)
    r = time_callable(
        fake.fn, config=config(budget_s=40 * MS, min_samples=2, max_samples=100), clock=fake.clock
    )
    assert r.count == 10  # 10 x 4 ms = 40 ms spent; the 10th sample reaches the budget
    assert fake.calls == 10


def test_min_samples_respected_when_budget_is_spent_early() -> None:
    fake = Scripted([], then=64 * MS)  # each sample alone exceeds the budget
    r = time_callable(
        fake.fn, config=config(budget_s=10 * MS, min_samples=5, max_samples=100), clock=fake.clock
    )
    assert r.count == 5


def test_max_samples_caps_the_count() -> None:
    fake = Scripted([], then=MS)
    r = time_callable(
        fake.fn, config=config(budget_s=1e6, min_samples=2, max_samples=7), clock=fake.clock
    )
    assert r.count == 7
    assert fake.calls == 7


def test_block_grows_when_a_call_is_faster_than_min_block() -> None:
    fake = Scripted([], then=MS)
    r = time_callable(
        fake.fn,
        config=config(min_warmup=1, min_block_s=8 * MS, min_samples=3, max_samples=3),
        clock=fake.clock,
    )
    assert r.calls_per_sample == 8
    assert r.samples == (MS,) * 3  # per-call time = block time / calls
    assert fake.calls == 1 + 3 * 8


def test_block_grows_again_when_the_first_sized_block_is_too_short() -> None:
    # Warm-up sees a 4 ms call, so 2 calls should fill 8 ms; they take 1 ms each instead:
    # that block is discarded (counted as warm-up) and the block grows to 8 calls.
    fake = Scripted([4 * MS], then=MS)
    r = time_callable(
        fake.fn,
        config=config(min_warmup=1, min_block_s=8 * MS, min_samples=2, max_samples=2),
        clock=fake.clock,
    )
    assert r.calls_per_sample == 8
    assert r.warmup_calls == 1 + 2
    assert r.samples == (MS, MS)


def test_block_size_is_capped() -> None:
    fake = Scripted([], then=MS)
    r = time_callable(
        fake.fn,
        config=config(min_block_s=1e6, max_calls_per_sample=16, min_samples=2, max_samples=2),
        clock=fake.clock,
    )
    assert r.calls_per_sample == 16


@pytest.mark.parametrize(("spread", "unreliable"), [(0.2, True), (0.05, False)])
def test_unreliable_flag_follows_iqr_over_median(spread: float, unreliable: bool) -> None:
    half = spread / 2  # samples m(1 - s), m(1 - s/2), m, m(1 + s/2), m(1 + s): IQR = s * m
    samples = [(1 + f * half) * 10 * MS for f in (-2, -1, 0, 1, 2)]
    fake = Scripted(samples)
    r = time_callable(
        fake.fn, config=config(min_samples=5, max_samples=5, spread_threshold=0.1), clock=fake.clock
    )
    assert r.iqr / r.median == pytest.approx(spread)
    assert r.unreliable is unreliable
    assert r.as_row()["time_unreliable"] is unreliable


def test_sync_brackets_every_sample() -> None:
    fake = Scripted([], then=MS)
    time_callable(
        fake.fn,
        config=config(min_warmup=1, min_block_s=2 * MS, min_samples=3, max_samples=3),
        clock=fake.clock,
        sync=fake.sync,
    )
    block = ["sync", "clock", "fn", "fn", "sync", "clock"]
    warmup = ["sync", "clock", "fn", "sync", "clock"]
    assert fake.log == warmup + block * 3


@pytest.mark.parametrize("disable_gc", [True, False])
def test_gc_is_paused_while_sampling_and_restored(disable_gc: bool) -> None:
    import gc

    seen: list[bool] = []
    fake = Scripted([], then=MS)

    def fn() -> None:
        seen.append(gc.isenabled())
        fake.fn()

    assert gc.isenabled()
    time_callable(fn, config=config(min_samples=2, max_samples=2, disable_gc=disable_gc),
                  clock=fake.clock)  # fmt: skip
    assert seen == [not disable_gc] * 2
    assert gc.isenabled()


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="max_samples"):
        TimingConfig(min_samples=10, max_samples=5)
    with pytest.raises(ValueError, match="min_samples"):
        TimingConfig(min_samples=0)
    with pytest.raises(ValueError, match="budget_s"):
        TimingConfig(budget_s=-1.0)
    with pytest.raises(TypeError, match="min_warmup"):
        TimingConfig(min_warmup=1.5)  # type: ignore[arg-type]


def test_a_clock_that_never_advances_terminates() -> None:
    r = time_callable(
        lambda: None,
        config=config(warmup_s=1.0, budget_s=1.0, max_calls_per_sample=64, max_samples=5),
        clock=lambda: 0.0,
    )
    assert r.count == 5 and r.median == 0.0 and not r.unreliable


# --- CUDA logic with fakes --------------------------------------------------------------------


class FakeGPU:
    """A device timeline: kernels advance it, events read it, everything is logged."""

    def __init__(self, kernel_s: float, l2: int | None = 40 * 2**20) -> None:
        self.t_ms = 0.0
        self.kernel_ms = kernel_s * 1e3
        self.log: list[str] = []
        self.l2 = l2
        self.current = "cuda:0"  # the current device, as torch.cuda.device sets it
        gpu = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                assert enable_timing
                self.t: float | None = None

            def record(self) -> None:
                gpu.log.append("record")
                gpu.recorded_on.append(gpu.current)
                self.t = gpu.t_ms

            def synchronize(self) -> None:
                gpu.log.append("event_sync")

            def elapsed_time(self, end: Event) -> float:
                assert self.t is not None and end.t is not None
                return end.t - self.t

        self.Event = Event
        self.recorded_on: list[str] = []

    @contextlib.contextmanager
    def device(self, device: object) -> Iterator[None]:
        before, self.current = self.current, str(device)
        try:
            yield
        finally:
            self.current = before

    def synchronize(self, device: object = None) -> None:
        self.log.append("sync")

    def get_device_properties(self, device: object) -> object:
        class Props:
            pass

        props = Props()
        if self.l2 is not None:
            props.L2_cache_size = self.l2  # type: ignore[attr-defined]
        return props

    def kernel(self) -> None:
        self.log.append("fn")
        self.t_ms += self.kernel_ms

    def buffer(self, nbytes: int, *, dtype: torch.dtype, device: object) -> object:
        gpu = self
        self.log.append(f"alloc:{nbytes}")

        class Scratch:
            def zero_(self) -> None:
                gpu.log.append("flush")
                gpu.t_ms += 1000.0  # a slow flush: must not show up in the samples

        return Scratch()


def test_events_are_recorded_with_the_timed_device_current() -> None:
    gpu = FakeGPU(kernel_s=MS)
    result = time_cuda(gpu.kernel, config=config(min_samples=3, max_samples=3),
                       device="cuda:1", cuda=gpu, buffer_factory=gpu.buffer)
    assert result.count == 3
    assert gpu.recorded_on and set(gpu.recorded_on) == {"cuda:1"}
    assert gpu.current == "cuda:0"  # restored afterwards


def test_event_timer_turns_event_pairs_into_seconds_and_excludes_the_flush() -> None:
    gpu = FakeGPU(kernel_s=MS)
    flushes: list[int] = []

    def flush() -> None:
        flushes.append(1)
        gpu.t_ms += 1000.0

    block = cuda_event_timer(gpu.kernel, cuda=gpu, flush=flush)
    assert block(3) == pytest.approx(3 * MS)
    assert flushes == [1]
    assert gpu.log == ["record", "fn", "fn", "fn", "record", "event_sync"]


def test_time_cuda_flushes_l2_before_every_sample_when_inputs_fit() -> None:
    gpu = FakeGPU(kernel_s=MS, l2=40 * 2**20)
    r = time_cuda(
        gpu.kernel,
        config=config(min_warmup=2, min_block_s=1.0, min_samples=3, max_samples=3),
        device="cuda:0",
        working_set_bytes=2**20,  # 1 MiB fits in a 40 MiB L2
        cuda=gpu,
        buffer_factory=gpu.buffer,
    )
    assert r.l2_flushed and r.timer == "cuda_event"
    assert r.calls_per_sample == 1  # cold cache for every timed call, despite min_block_s
    assert r.samples == pytest.approx((MS,) * 3)
    assert gpu.log[0] == f"alloc:{2 * 40 * 2**20}"  # scratch = 2 x L2
    per_sample = ["flush", "record", "fn", "record", "event_sync"]
    assert gpu.log[1:] == ["sync"] + per_sample * (2 + 3)


def test_time_cuda_skips_the_flush_when_inputs_exceed_l2() -> None:
    gpu = FakeGPU(kernel_s=MS, l2=40 * 2**20)
    r = time_cuda(
        gpu.kernel,
        config=config(min_warmup=1, min_block_s=4 * MS, min_samples=2, max_samples=2),
        working_set_bytes=100 * 2**20,
        cuda=gpu,
        buffer_factory=gpu.buffer,
    )
    assert not r.l2_flushed
    assert "flush" not in gpu.log and not any(e.startswith("alloc") for e in gpu.log)
    assert r.calls_per_sample == 4  # without flushing the block grows as on CPU
    assert r.samples == pytest.approx((MS, MS))


def test_l2_size_and_flush_rule() -> None:
    assert l2_cache_bytes(0, FakeGPU(MS, l2=60 * 2**20)) == 60 * 2**20
    assert l2_cache_bytes(0, FakeGPU(MS, l2=None)) == DEFAULT_L2_BYTES == 50 * 2**20
    assert l2_cache_bytes(0, FakeGPU(MS, l2=0)) == DEFAULT_L2_BYTES
    assert should_flush_l2(10, 100, "auto") and should_flush_l2(100, 100, "auto")
    assert not should_flush_l2(101, 100, "auto")
    assert should_flush_l2(None, 100, "auto")  # unknown working set: flush
    assert should_flush_l2(10**9, 100, True) and not should_flush_l2(1, 100, False)
    with pytest.raises(ValueError, match="flush_l2"):
        should_flush_l2(1, 100, "sometimes")


def test_l2_flusher_writes_a_buffer_of_twice_l2() -> None:
    gpu = FakeGPU(MS)
    flusher = L2Flusher(8, "cuda:0", gpu.buffer)
    assert flusher.nbytes == 16
    flusher()
    assert gpu.log == ["alloc:16", "flush"]
    real = L2Flusher(1024, "cpu", torch.empty)  # the real factory, on CPU
    real()
    assert real.nbytes == 2048


def test_working_set_counts_each_storage_once() -> None:
    x = torch.zeros(4, 8)  # 128 bytes
    view = x[1:]  # same storage
    lin = torch.nn.Linear(8, 2)  # 16 + 2 floats = 72 bytes
    assert working_set_bytes(x, [view], {"m": lin}) == 128 + 72


def test_collect_samples_with_fixed_calls() -> None:
    durations: list[int] = []

    def block(calls: int) -> float:
        durations.append(calls)
        return calls * MS

    sampled = collect_samples(
        block, config(min_warmup=2, min_block_s=1.0, min_samples=3, max_samples=3), fixed_calls=1
    )
    assert durations == [1] * 5 and sampled.calls_per_sample == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_time_cuda_on_a_real_device() -> None:
    a = torch.randn(1024, 1024, device="cuda")
    cfg = TimingConfig(warmup_s=0.05, budget_s=0.2, min_samples=5)
    flushed = time_cuda(lambda: a @ a, config=cfg, working_set_bytes=working_set_bytes(a))
    assert flushed.l2_flushed and flushed.count >= 5 and flushed.min > 0
    warm = time_cuda(lambda: a @ a, config=cfg, flush_l2=False)
    assert not warm.l2_flushed and warm.count >= 5 and warm.min > 0
    host = time_callable(lambda: a @ a, config=cfg, sync=torch.cuda.synchronize)
    assert host.count >= 5 and host.min > 0


# ----------------------------------------------------------------------------------------
# the CPU clock choice (measure.timer)


def test_cpu_timer_names_its_clock_and_unknown_names_are_refused() -> None:
    from harness.measure.timing import cpu_clock, time_on_device

    fast = config(min_samples=3, max_samples=3)
    result = time_on_device(lambda: None, device="cpu", config=fast, cpu_timer="process_time")
    assert result.timer == "process_time" and result.count == 3
    assert time_on_device(lambda: None, device="cpu", config=fast).timer == "perf_counter"
    with pytest.raises(ValueError, match="unknown CPU timer 'cpu_time'"):
        cpu_clock("cpu_time")
    with pytest.raises(ValueError, match="unknown CPU timer"):
        time_on_device(lambda: None, device="cpu", config=fast, cpu_timer="wall")


def test_process_time_does_not_count_time_spent_off_the_cpu() -> None:
    """A sleeping call takes >= its sleep in wall time and almost no CPU time: the property
    that makes process_time blind to waiting for a CPU that another process holds."""
    import time

    from harness.measure.timing import time_on_device

    nap = 0.02
    cfg = config(min_samples=3, max_samples=3)
    wall = time_on_device(lambda: time.sleep(nap), device="cpu", config=cfg)
    cpu = time_on_device(lambda: time.sleep(nap), device="cpu", config=cfg,
                         cpu_timer="process_time")
    assert wall.min >= nap  # sleep never returns early
    assert cpu.median < nap / 4  # a few microseconds of CPU per call, whatever the load
