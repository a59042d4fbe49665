"""Wall time of a callable: warm-up, blocked samples, an adaptive sample count, robust stats.

The engine (:func:`collect_samples`) only sees a *block timer*: ``block(calls) -> seconds`` that
runs the callable ``calls`` times and says how long that took. Where the seconds come from is
injected, so the sampling logic is tested with a fake clock and the same engine drives both
timers:

* :func:`time_callable` - ``clock`` (default ``time.perf_counter``) read around ``sync``-ed calls:
  ``sync(); t0 = clock(); fn() x calls; sync(); t1 = clock()``. On CUDA pass
  ``sync=torch.cuda.synchronize`` to time whole launches from the host.
* :func:`time_cuda` - ``torch.cuda.Event`` pairs recorded around each sample (device time),
  with the L2 cache flushed before each sample when the working set would fit in it.

Statistics are over per-call times (block time / calls per block). Quantiles use linear
interpolation between order statistics (numpy's default, Hyndman & Fan type 7): for sorted
``x`` of length ``m``, ``q(p) = x[h0] + (h - h0) * (x[h0 + 1] - x[h0])`` with ``h = (m - 1) p``.
``std`` is the sample standard deviation (ddof = 1; 0 for a single sample).
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: ``block(calls) -> seconds``: run the measured callable ``calls`` times, return the time taken.
BlockTimer = Callable[[int], float]

#: L2 size assumed when the device does not report one (bytes).
DEFAULT_L2_BYTES = 50 * 2**20


@dataclass(frozen=True)
class TimingConfig:
    """How long and how often to sample one case.

    Warm-up runs at least ``min_warmup`` calls *and* ``warmup_s`` seconds of measured time.
    Sampling then continues until ``budget_s`` seconds of *sampled* time (the sum of block
    times, warm-up and calibration excluded) are spent and at least ``min_samples`` exist,
    never past ``max_samples``. One sample is a block of calls lasting at least
    ``min_block_s`` (the number of calls per block grows until it does, capped at
    ``max_calls_per_sample``), so a fast call is not lost in timer overhead.
    ``IQR / median > spread_threshold`` marks the result unreliable. ``disable_gc`` keeps
    Python's cycle collector from pausing inside a sample (as ``timeit`` and
    torch.utils.benchmark do); it is re-enabled, and catches up, after the case.
    """

    min_warmup: int = 3
    warmup_s: float = 0.1
    budget_s: float = 1.0
    min_samples: int = 5
    max_samples: int = 10_000
    min_block_s: float = 0.002
    max_calls_per_sample: int = 1_000_000
    spread_threshold: float = 0.1
    disable_gc: bool = True

    def __post_init__(self) -> None:
        for name in ("min_warmup", "min_samples", "max_samples", "max_calls_per_sample"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"TimingConfig.{name} must be an int, got {value!r}")
        for name in ("warmup_s", "budget_s", "min_block_s", "spread_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"TimingConfig.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"TimingConfig.{name} must be finite and >= 0, got {value}")
        if not isinstance(self.disable_gc, bool):
            raise TypeError(f"TimingConfig.disable_gc must be a bool, got {self.disable_gc!r}")
        if self.min_warmup < 0:
            raise ValueError(f"TimingConfig.min_warmup must be >= 0, got {self.min_warmup}")
        if self.min_samples < 1:
            raise ValueError(f"TimingConfig.min_samples must be >= 1, got {self.min_samples}")
        if self.max_samples < self.min_samples:
            raise ValueError(
                f"TimingConfig.max_samples ({self.max_samples}) must be >= "
                f"min_samples ({self.min_samples})"
            )
        if self.max_calls_per_sample < 1:
            raise ValueError(
                f"TimingConfig.max_calls_per_sample must be >= 1, got {self.max_calls_per_sample}"
            )


def quantile(sorted_values: list[float], p: float) -> float:
    """Linear-interpolation quantile (type 7) of already sorted values."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"quantile p must be in [0, 1], got {p}")
    h = (len(sorted_values) - 1) * p
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


@dataclass(frozen=True)
class TimingResult:
    """Per-call sample times (seconds) and their statistics; build with :meth:`from_samples`."""

    samples: tuple[float, ...]  # per-call seconds, one per block, in sampling order
    calls_per_sample: int
    median: float
    q1: float
    q3: float
    iqr: float  # q3 - q1 (linear-interpolation quantiles)
    min: float
    max: float
    mean: float
    std: float  # sample std (ddof = 1)
    cv: float  # std / mean
    count: int
    unreliable: bool  # iqr / median > spread_threshold
    spread_threshold: float
    warmup_calls: int = 0
    timer: str = "perf_counter"
    l2_flushed: bool = False

    @classmethod
    def from_samples(
        cls,
        samples: Iterable[float],
        *,
        calls_per_sample: int = 1,
        spread_threshold: float = 0.1,
        warmup_calls: int = 0,
        timer: str = "perf_counter",
        l2_flushed: bool = False,
    ) -> TimingResult:
        values = tuple(float(s) for s in samples)
        if not values:
            raise ValueError("a TimingResult needs at least one sample")
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise ValueError("sample times must be finite and >= 0")
        ordered = sorted(values)
        median = quantile(ordered, 0.5)
        q1, q3 = quantile(ordered, 0.25), quantile(ordered, 0.75)
        iqr = q3 - q1
        mean = math.fsum(values) / len(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        cv = std / mean if mean > 0 else (0.0 if std == 0.0 else math.nan)
        spread = iqr / median if median > 0 else (math.inf if iqr > 0 else 0.0)
        return cls(
            samples=values,
            calls_per_sample=calls_per_sample,
            median=median,
            q1=q1,
            q3=q3,
            iqr=iqr,
            min=ordered[0],
            max=ordered[-1],
            mean=mean,
            std=std,
            cv=cv,
            count=len(values),
            unreliable=spread > spread_threshold,
            spread_threshold=spread_threshold,
            warmup_calls=warmup_calls,
            timer=timer,
            l2_flushed=l2_flushed,
        )

    def as_row(self) -> dict[str, object]:
        """Result columns (units in the names: ms for times, CV is a ratio)."""
        return {
            "time_ms_median": self.median * 1e3,
            "time_ms_iqr": self.iqr * 1e3,
            "time_ms_min": self.min * 1e3,
            "time_ms_mean": self.mean * 1e3,
            "time_cv": self.cv,
            "time_samples": self.count,
            "time_unreliable": self.unreliable,
            "time_calls_per_sample": self.calls_per_sample,
            "time_timer": self.timer,
            "time_l2_flushed": self.l2_flushed,
        }


@dataclass(frozen=True)
class Samples:
    """What :func:`collect_samples` gathered: per-call times of the kept blocks."""

    samples: tuple[float, ...]  # per-call seconds
    calls_per_sample: int
    warmup_calls: int


def _grow(calls: int, block_s: float, target_s: float, cap: int) -> int:
    """Calls per block that should last ``target_s``, given ``calls`` took ``block_s``."""
    if block_s <= 0:
        return min(calls * 10, cap)
    return min(max(calls + 1, math.ceil(calls * target_s / block_s)), cap)


def collect_samples(
    block: BlockTimer, config: TimingConfig, *, fixed_calls: int | None = None
) -> Samples:
    """Warm up, size the block, then sample adaptively (see :class:`TimingConfig`).

    ``fixed_calls`` pins the calls per block (the CUDA timer uses 1 when it flushes L2
    before each sample, so every timed call starts cold). Blocks shorter than
    ``min_block_s`` found while sizing are discarded, like warm-up.
    """
    if fixed_calls is not None and (isinstance(fixed_calls, bool) or fixed_calls < 1):
        raise ValueError(f"fixed_calls must be a positive int, got {fixed_calls!r}")
    with _gc_paused(config.disable_gc):
        return _collect(block, config, fixed_calls)


@contextlib.contextmanager
def _gc_paused(pause: bool) -> Iterator[None]:
    was_enabled = gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    finally:
        if pause and was_enabled:
            gc.enable()


def _collect(block: BlockTimer, config: TimingConfig, fixed_calls: int | None) -> Samples:
    cap = config.max_calls_per_sample

    # Warm-up: single calls first; a block that is too short doubles, so a microsecond call
    # does not spend warmup_s on per-block overhead.
    calls = 1 if fixed_calls is None else fixed_calls
    warm_calls, warm_s, per_call = 0, 0.0, math.inf
    while warm_calls < config.min_warmup or warm_s < config.warmup_s:
        t = block(calls)
        warm_calls += calls
        warm_s += t
        per_call = min(per_call, t / calls)  # the least disturbed block estimates best
        if t <= 0 and (fixed_calls is not None or calls >= cap):
            break  # a clock that never advances: no amount of warm-up will show time passing
        if fixed_calls is None and (t <= 0 or t < config.min_block_s):
            calls = min(calls * 2, cap)

    # Block size from the fastest warm-up block's per-call time (a preempted block would
    # otherwise pin a too-small block for the whole case).
    if fixed_calls is not None:
        calls = fixed_calls
    elif 0 < per_call < math.inf:
        calls = min(max(1, math.ceil(config.min_block_s / per_call)), cap)

    samples: list[float] = []
    spent = 0.0
    while len(samples) < config.max_samples and (
        len(samples) < config.min_samples or spent < config.budget_s
    ):
        t = block(calls)
        sizing = fixed_calls is None and not samples
        if sizing and t < config.min_block_s and calls < cap:
            warm_calls += calls  # too short to trust: discard, grow, retry
            calls = _grow(calls, t, config.min_block_s, cap)
            continue
        samples.append(t / calls)
        spent += t
    return Samples(tuple(samples), calls, warm_calls)


def perf_counter_timer(
    fn: Callable[[], object],
    *,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], object] = lambda: None,
) -> BlockTimer:
    """Block timer reading ``clock`` around ``calls`` calls, synchronised on both sides."""

    def block(calls: int) -> float:
        sync()
        start = clock()
        for _ in range(calls):
            fn()
        sync()
        return clock() - start

    return block


def time_callable(
    fn: Callable[[], object],
    *,
    config: TimingConfig | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], object] = lambda: None,
    timer: str = "perf_counter",
) -> TimingResult:
    """Time ``fn()`` with an injected clock and synchroniser (see the module docstring).

    ``timer`` names the clock in the result (the ``time_timer`` column).
    """
    config = TimingConfig() if config is None else config
    sampled = collect_samples(perf_counter_timer(fn, clock=clock, sync=sync), config)
    return TimingResult.from_samples(
        sampled.samples,
        calls_per_sample=sampled.calls_per_sample,
        spread_threshold=config.spread_threshold,
        warmup_calls=sampled.warmup_calls,
        timer=timer,
    )


#: Clocks a CPU case can be timed with (``measure.timer``). ``process_time`` is the CPU time
#: of the whole process (every thread): time spent waiting for a CPU that other processes
#: hold is not counted, which makes it the steadier clock on a shared machine - for
#: single-threaded work (``OMP_NUM_THREADS=1``); with N busy threads it reads ~N x the wall time.
CPU_CLOCKS: dict[str, Callable[[], float]] = {
    "perf_counter": time.perf_counter,
    "process_time": time.process_time,
}


def cpu_clock(name: str) -> Callable[[], float]:
    """The CPU clock called ``name`` (a key of :data:`CPU_CLOCKS`)."""
    try:
        return CPU_CLOCKS[name]
    except KeyError:
        raise ValueError(
            f"unknown CPU timer {name!r} (known: {', '.join(CPU_CLOCKS)})"
        ) from None


# ----------------------------------------------------------------------------------------
# CUDA: event timing and L2 flushing. ``cuda`` is ``torch.cuda`` or a stand-in with the same
# members (Event, synchronize, get_device_properties), so the logic is tested on CPU.


def l2_cache_bytes(device: object, cuda: Any) -> int:
    """The device's L2 size in bytes, or :data:`DEFAULT_L2_BYTES` when it reports none."""
    props = cuda.get_device_properties(device)
    size = getattr(props, "L2_cache_size", None)
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    return DEFAULT_L2_BYTES


def should_flush_l2(working_set_bytes: int | None, l2_bytes: int, mode: bool | str) -> bool:
    """Flush when asked to, or (``"auto"``) when the working set would fit in L2.

    An unknown working set (None) is flushed: a flush costs time outside the timed region,
    a stale warm cache silently flatters the result.
    """
    if mode is True or mode is False:
        return mode
    if mode != "auto":
        raise ValueError(f"flush_l2 must be True, False or 'auto', got {mode!r}")
    return working_set_bytes is None or working_set_bytes <= l2_bytes


class L2Flusher:
    """Writes a scratch buffer of twice the L2 size, evicting whatever the last call cached."""

    def __init__(self, l2_bytes: int, device: object, factory: Callable[..., Any]) -> None:
        import torch

        self.nbytes = 2 * l2_bytes
        self._buffer = factory(self.nbytes, dtype=torch.uint8, device=device)

    def __call__(self) -> None:
        self._buffer.zero_()


def cuda_event_timer(
    fn: Callable[[], object], *, cuda: Any, flush: Callable[[], object] | None = None
) -> BlockTimer:
    """Block timer from a pair of timing events recorded around the calls (device time).

    The flush is enqueued before the start event, so it runs on the stream but outside the
    timed interval. ``elapsed_time`` is in milliseconds; the block returns seconds.
    """

    def block(calls: int) -> float:
        if flush is not None:
            flush()
        start = cuda.Event(enable_timing=True)
        end = cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return block


def time_cuda(
    fn: Callable[[], object],
    *,
    config: TimingConfig | None = None,
    device: object = "cuda",
    working_set_bytes: int | None = None,
    flush_l2: bool | str = "auto",
    cuda: Any = None,
    buffer_factory: Callable[..., Any] | None = None,
) -> TimingResult:
    """Time ``fn()`` on a CUDA device with events; flush L2 before each sample when needed.

    When flushing, every sample is one call (a block of several calls would run all but the
    first warm); events resolve about a microsecond, so ``min_block_s`` is not needed.
    """
    import torch

    config = TimingConfig() if config is None else config
    cuda = torch.cuda if cuda is None else cuda
    factory = torch.empty if buffer_factory is None else buffer_factory
    l2 = l2_cache_bytes(device, cuda)
    flush = should_flush_l2(working_set_bytes, l2, flush_l2)
    flusher = L2Flusher(l2, device, factory) if flush else None
    cuda.synchronize(device)
    sampled = collect_samples(
        cuda_event_timer(fn, cuda=cuda, flush=flusher), config, fixed_calls=1 if flush else None
    )
    return TimingResult.from_samples(
        sampled.samples,
        calls_per_sample=sampled.calls_per_sample,
        spread_threshold=config.spread_threshold,
        warmup_calls=sampled.warmup_calls,
        timer="cuda_event",
        l2_flushed=flush,
    )


def working_set_bytes(*objects: object) -> int:
    """Bytes of every tensor in ``objects`` (nested tuples/lists/dicts, modules' parameters
    and buffers), each storage counted once: what a call reads from memory at least."""
    import torch

    seen: set[tuple[str, int]] = set()
    total = 0

    def visit(obj: object) -> None:
        nonlocal total
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            key = (str(obj.device), storage.data_ptr())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
        elif isinstance(obj, torch.nn.Module):
            for tensor in (*obj.parameters(), *obj.buffers()):
                visit(tensor)
        elif isinstance(obj, Mapping):
            for value in obj.values():
                visit(value)
        elif isinstance(obj, (tuple, list)):
            for value in obj:
                visit(value)

    for obj in objects:
        visit(obj)
    return total


def time_on_device(
    fn: Callable[[], object],
    *,
    device: object,
    config: TimingConfig | None = None,
    working_set: int | None = None,
    flush_l2: bool | str = "auto",
    cpu_timer: str = "perf_counter",
) -> TimingResult:
    """The runner's entry point: ``cpu_timer`` on CPU, CUDA events (+ L2 flush) on CUDA.

    ``cpu_timer`` (a key of :data:`CPU_CLOCKS`) applies to CPU devices only: on CUDA the
    events time the device, whatever the host's clock.
    """
    import torch

    clock = cpu_clock(cpu_timer)  # an unknown name is an error on every device
    dev = torch.device(device)
    if dev.type == "cuda":
        return time_cuda(
            fn, config=config, device=dev, working_set_bytes=working_set, flush_l2=flush_l2
        )
    if dev.type != "cpu":
        raise ValueError(f"no timer for device {str(dev)!r} (known: cpu, cuda)")
    return time_callable(fn, config=config, clock=clock, timer=cpu_timer)
