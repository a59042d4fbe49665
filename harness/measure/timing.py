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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from harness.measure.contention import ContentionRule, WaitCounter, select_rounds

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
        for name, low in (("min_warmup", 0), ("min_samples", 1), ("max_calls_per_sample", 1),
                          ("max_samples", self.min_samples)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"TimingConfig.{name} must be an int, got {value!r}")
            if value < low:
                raise ValueError(f"TimingConfig.{name} must be >= {low}, got {value}")
        for name in ("warmup_s", "budget_s", "min_block_s", "spread_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"TimingConfig.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"TimingConfig.{name} must be finite and >= 0, got {value}")
        if not isinstance(self.disable_gc, bool):
            raise TypeError(f"TimingConfig.disable_gc must be a bool, got {self.disable_gc!r}")


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
    rounds: int = 1
    rounds_clean: int | None = None  # None: contention not observable
    disturbed_frac: float | None = None  # samples whose threads waited for a CPU
    note: str | None = None  # why the result is unreliable (contention, spread), else None
    sampled_s: float | None = None  # sum of all rounds' sampled block times
    wall_s: float | None = None  # what timing the case took on the wall clock, in all
    #: torch.compile: compilations during the rounds' warm-ups and samples (None: not watched)
    recompiles: int | None = None

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
            note=f"spread: IQR/median {spread:.2f}" if spread > spread_threshold else None,
        )

    @classmethod
    def from_rounds(
        cls,
        rounds: Sequence[Samples],
        *,
        rule: ContentionRule | None = None,
        spread_threshold: float = 0.1,
    ) -> TimingResult:
        """Statistics of a case timed in several rounds: the least disturbed samples.

        Contention (:func:`harness.measure.contention.select_rounds`), spread and a
        torch.compile recompilation during a round each make the result unreliable, and
        each adds its reason to ``note``.
        """
        if not rounds:
            raise ValueError("a TimingResult needs at least one round")
        rule = ContentionRule() if rule is None else rule
        chosen = select_rounds([(r.samples, r.waits) for r in rounds], rule)
        base = cls.from_samples(
            chosen.kept,
            calls_per_sample=max(r.calls_per_sample for r in rounds),
            spread_threshold=spread_threshold,
            warmup_calls=sum(r.warmup_calls for r in rounds),
            timer=rounds[0].timer,
            l2_flushed=rounds[0].l2_flushed,
        )
        watched = [r.recompiles for r in rounds if r.recompiles is not None]
        recompiles = sum(watched) if watched else None
        recompiled = (f"recompiled {recompiles}x while timing (samples may hold compile time)"
                      if recompiles else None)
        notes = [n for n in (chosen.note, base.note, recompiled) if n]
        walls = [r.wall_s for r in rounds]
        return replace(
            base,
            unreliable=base.unreliable or chosen.contended or bool(recompiles),
            rounds=len(rounds),
            rounds_clean=None if chosen.disturbed_frac is None else chosen.clean_rounds,
            disturbed_frac=chosen.disturbed_frac,
            note="; ".join(notes) or None,
            sampled_s=math.fsum(s * r.calls_per_sample for r in rounds for s in r.samples),
            wall_s=None if None in walls else math.fsum(w for w in walls if w is not None),
            recompiles=recompiles,
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
            "time_note": self.note,
            "time_rounds": self.rounds,
            "time_rounds_clean": self.rounds_clean,
            "time_disturbed_frac": self.disturbed_frac,
            "time_sampled_s": self.sampled_s,
            "time_wall_s": self.wall_s,
            "compile_recompiles": self.recompiles,
        }


@dataclass(frozen=True)
class Samples:
    """What :func:`collect_samples` gathered: per-call times of the kept blocks.

    ``waits`` (beside ``samples``, per call) is how long this process's threads waited for a
    CPU during each block (:mod:`harness.measure.contention`); None when not observable.
    ``wall_s`` is what the whole collection took on the wall clock (warm-up, sizing and
    the engine's own overhead included): the cost of the measurement, not a result.
    ``recompiles`` is set by the caller that watched torch.compile during the round.
    """

    samples: tuple[float, ...]  # per-call seconds
    calls_per_sample: int
    warmup_calls: int
    waits: tuple[float, ...] | None = None  # per-call seconds waited for a CPU
    wall_s: float | None = None
    timer: str = "perf_counter"  # the clock that produced the samples
    l2_flushed: bool = False
    #: torch.compile: compilations seen during the round (None: not a compiled case)
    recompiles: int | None = None


def _grow(calls: int, block_s: float, target_s: float, cap: int) -> int:
    """Calls per block that should last ``target_s``, given ``calls`` took ``block_s``."""
    if block_s <= 0:
        return min(calls * 10, cap)
    return min(max(calls + 1, math.ceil(calls * target_s / block_s)), cap)


def collect_samples(
    block: BlockTimer,
    config: TimingConfig,
    *,
    fixed_calls: int | None = None,
    wait: WaitCounter | None = None,
    wall: Callable[[], float] = time.perf_counter,
    timer: str = "perf_counter",
    l2_flushed: bool = False,
) -> Samples:
    """One round of a case: warm up, size the block, then sample adaptively (see
    :class:`TimingConfig`); ``timer`` and ``l2_flushed`` label how it was timed.

    ``fixed_calls`` pins the calls per block (the CUDA timer uses 1 when it flushes L2
    before each sample, so every timed call starts cold). Blocks shorter than
    ``min_block_s`` found while sizing are discarded, like warm-up. ``wait``, a run-queue
    wait counter, is read around every kept block (outside it: the reads cost a few
    microseconds); ``wall`` times the whole collection.
    """
    if fixed_calls is not None and (isinstance(fixed_calls, bool) or fixed_calls < 1):
        raise ValueError(f"fixed_calls must be a positive int, got {fixed_calls!r}")
    started = wall()
    with _gc_paused(config.disable_gc):
        sampled = _collect(block, config, fixed_calls, wait)
    return replace(sampled, wall_s=wall() - started, timer=timer, l2_flushed=l2_flushed)


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


def _collect(
    block: BlockTimer, config: TimingConfig, fixed_calls: int | None, wait: WaitCounter | None
) -> Samples:
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
    waits: list[float] = []
    spent = 0.0
    while len(samples) < config.max_samples and (
        len(samples) < config.min_samples or spent < config.budget_s
    ):
        w0 = wait() if wait is not None else 0.0
        t = block(calls)
        w1 = wait() if wait is not None else 0.0
        sizing = fixed_calls is None and not samples
        if sizing and t < config.min_block_s and calls < cap:
            warm_calls += calls  # too short to trust: discard, grow, retry
            calls = _grow(calls, t, config.min_block_s, cap)
            continue
        samples.append(t / calls)
        waits.append(max(0.0, w1 - w0) / calls)  # an exited thread takes its share along
        spent += t
    return Samples(tuple(samples), calls, warm_calls, tuple(waits) if wait else None)


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
    wait: WaitCounter | None = None,
) -> TimingResult:
    """Time ``fn()`` in one round with an injected clock and synchroniser.

    ``timer`` names the clock in the result (the ``time_timer`` column); ``wait`` is the
    run-queue wait counter that tells disturbed samples apart (none: not observed).
    """
    config = TimingConfig() if config is None else config
    sampled = collect_samples(
        perf_counter_timer(fn, clock=clock, sync=sync), config, timer=timer, wait=wait
    )
    return TimingResult.from_rounds([sampled], spread_threshold=config.spread_threshold)


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
# members (Event, synchronize, get_device_properties, device), so the logic is tested on CPU.


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


def cuda_round(
    fn: Callable[[], object],
    *,
    config: TimingConfig,
    device: object = "cuda",
    working_set_bytes: int | None = None,
    flush_l2: bool | str = "auto",
    cuda: Any = None,
    buffer_factory: Callable[..., Any] | None = None,
    wait: WaitCounter | None = None,
) -> Samples:
    """One round of ``fn()`` on a CUDA device with events, L2 flushed before each sample when
    needed.

    When flushing, every sample is one call (a block of several calls would run all but the
    first warm); events resolve about a microsecond, so ``min_block_s`` is not needed. The
    host's run-queue wait still matters: a launch thread kept off the CPU starves the GPU.
    """
    import torch

    cuda = torch.cuda if cuda is None else cuda
    factory = torch.empty if buffer_factory is None else buffer_factory
    l2 = l2_cache_bytes(device, cuda)
    flush = should_flush_l2(working_set_bytes, l2, flush_l2)
    flusher = L2Flusher(l2, device, factory) if flush else None
    # Events record on the current device's stream: make the timed device current, or on
    # cuda:N (N != 0) they would time device 0's idle stream while the work runs on N.
    with cuda.device(device):
        cuda.synchronize(device)
        return collect_samples(
            cuda_event_timer(fn, cuda=cuda, flush=flusher), config, timer="cuda_event",
            l2_flushed=flush, fixed_calls=1 if flush else None, wait=wait,
        )


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
    """Time ``fn()`` on a CUDA device in one round (see :func:`cuda_round`)."""
    config = TimingConfig() if config is None else config
    sampled = cuda_round(
        fn, config=config, device=device, working_set_bytes=working_set_bytes,
        flush_l2=flush_l2, cuda=cuda, buffer_factory=buffer_factory,
    )
    return TimingResult.from_rounds([sampled], spread_threshold=config.spread_threshold)


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


def round_on_device(
    fn: Callable[[], object],
    *,
    device: object,
    config: TimingConfig,
    working_set: int | None = None,
    flush_l2: bool | str = "auto",
    cpu_timer: str = "perf_counter",
    wait: WaitCounter | None = None,
) -> Samples:
    """The sweep's entry point, one round: ``cpu_timer`` on CPU, CUDA events (+ L2 flush)
    on CUDA.

    ``cpu_timer`` (a key of :data:`CPU_CLOCKS`) applies to CPU devices only: on CUDA the
    events time the device, whatever the host's clock.
    """
    import torch

    clock = cpu_clock(cpu_timer)  # an unknown name is an error on every device
    dev = torch.device(str(device))
    if dev.type == "cuda":
        return cuda_round(
            fn, config=config, device=dev, working_set_bytes=working_set, flush_l2=flush_l2,
            wait=wait,
        )
    if dev.type != "cpu":
        raise ValueError(f"no timer for device {str(dev)!r} (known: cpu, cuda)")
    return collect_samples(perf_counter_timer(fn, clock=clock), config, timer=cpu_timer,
                           wait=wait)


def time_on_device(
    fn: Callable[[], object],
    *,
    device: object,
    config: TimingConfig | None = None,
    working_set: int | None = None,
    flush_l2: bool | str = "auto",
    cpu_timer: str = "perf_counter",
    wait: WaitCounter | None = None,
) -> TimingResult:
    """:func:`round_on_device` once, as statistics."""
    config = TimingConfig() if config is None else config
    sampled = round_on_device(
        fn, device=device, config=config, working_set=working_set, flush_l2=flush_l2,
        cpu_timer=cpu_timer, wait=wait,
    )
    return TimingResult.from_rounds([sampled], spread_threshold=config.spread_threshold)
