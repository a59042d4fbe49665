"""Peak memory of one call: bytes allocated during it above what was allocated before it.

Methods (named in :attr:`MemoryResult.method`):

* ``cuda_allocator`` - CUDA caching-allocator statistics: ``memory_allocated`` before,
  ``reset_peak_memory_stats``, the call, synchronise, ``max_memory_allocated`` after.
  Exact for tensors from torch's allocator (block sizes rounded up to 512 bytes); blind to
  cuBLAS/cuDNN workspaces the libraries allocate themselves.
* ``torch_profiler`` (CPU default) - ``torch.profiler`` with ``profile_memory=True`` records
  one allocation event (signed byte count) per allocation and free of torch's CPU allocator;
  replaying them in time order gives the running total and its peak above the start.
  Exact, to the byte, for everything that goes through c10's CPU allocator - tensors,
  and the oneDNN (mkldnn) weight reorders and workspaces, which ideep allocates there too.
  Blind to: memory not from that allocator (numpy arrays, Python objects, MKL's own sgemm
  packing buffers, glibc use by libraries), and allocations made on threads the profiler
  does not follow (a torch tensor made in another Python thread reads 0). A free, during the
  call, of a tensor allocated before profiling started is not reported, so such a call reads
  high by that tensor's size (a train step that starts with ``zero_grad(set_to_none=True)``
  frees the last step's gradients unseen: keep them, ``set_to_none=False``, to avoid
  that). ``baseline_bytes`` is None: the CPU allocator keeps no running
  total outside profiling. Uses the profiler's event tree (``torch._C._profiler``, a private
  API); if it is missing, ``auto`` falls back to ``vmhwm``.
* ``vmhwm`` (Linux fallback) - reset the peak resident set via ``/proc/self/clear_refs``
  ("5"), run the call, read ``VmHWM`` minus ``VmRSS`` before. Sees every allocation in the
  process, but only pages actually touched (``torch.empty`` without a write reads 0), only at
  page granularity, and not memory the heap reuses (a freed block still resident is handed
  out again without raising RSS): small and mid-sized allocations after a warm-up often read
  ~0. Process-wide, so other threads' allocations count too.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

METHODS = ("auto", "cuda_allocator", "torch_profiler", "vmhwm")
_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class MemoryResult:
    peak_bytes: int  # peak allocated during the call above the level before it
    baseline_bytes: int | None  # allocated before the call (None when the method cannot know)
    method: str

    def as_row(self) -> dict[str, object]:
        return {
            "peak_mem_bytes": self.peak_bytes,
            "mem_baseline_bytes": self.baseline_bytes,
            "mem_method": self.method,
        }


def measure_peak_memory(
    fn: Callable[[], object],
    *,
    device: str | torch.device,
    method: str = "auto",
    warmup: int = 1,
    cuda: Any = None,
) -> MemoryResult:
    """Peak bytes allocated by ``fn()`` above the level before it (see the module docstring).

    ``warmup`` unmeasured calls run first, so one-time allocations (lazy initialisation,
    primitive caches) are not charged to the layer. ``cuda`` replaces ``torch.cuda`` (tests).
    """
    if method not in METHODS:
        raise ValueError(f"unknown memory method {method!r} (known: {', '.join(METHODS)})")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    dev = torch.device(device)
    if dev.type == "cuda":
        if method not in ("auto", "cuda_allocator"):
            raise ValueError(f"method {method!r} does not apply to device {str(dev)!r}")
        return _cuda_peak(fn, dev, warmup, torch.cuda if cuda is None else cuda)
    if dev.type != "cpu":
        raise ValueError(f"no memory method for device {str(dev)!r} (known: cpu, cuda)")
    if method == "cuda_allocator":
        raise ValueError("method 'cuda_allocator' needs a cuda device")
    if method == "auto":
        method = "torch_profiler" if profiler_available() else "vmhwm"
    for _ in range(warmup):
        fn()
    gc.collect()
    if method == "torch_profiler":
        return MemoryResult(_profiler_peak(fn), None, "torch_profiler")
    return _vmhwm_peak(fn)


# --- CUDA -----------------------------------------------------------------------------------


def _cuda_peak(fn: Callable[[], object], dev: torch.device, warmup: int, cuda: Any) -> MemoryResult:
    for _ in range(warmup):
        fn()
    gc.collect()
    cuda.synchronize(dev)
    baseline = int(cuda.memory_allocated(dev))
    cuda.reset_peak_memory_stats(dev)  # peak := current
    fn()
    cuda.synchronize(dev)
    peak = int(cuda.max_memory_allocated(dev))
    return MemoryResult(max(0, peak - baseline), baseline, "cuda_allocator")


# --- CPU: profiler replay ---------------------------------------------------------------------


def profiler_available() -> bool:
    """Whether this torch exposes the profiler event tree the replay reads."""
    try:
        from torch._C._profiler import _EventType
    except ImportError:
        return False
    return hasattr(_EventType, "Allocation")


def peak_of_deltas(deltas: Iterable[int]) -> int:
    """Highest running total of signed allocation sizes, relative to the start (>= 0)."""
    running = peak = 0
    for delta in deltas:
        running += delta
        peak = max(peak, running)
    return peak


def _walk(nodes: Iterable[Any]) -> Iterable[Any]:
    stack = list(nodes)[::-1]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(list(node.children)[::-1])


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block (only around profiler start/stop,
    never around the measured call, so its warnings still show)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):
        yield
        return
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _profiler_peak(fn: Callable[[], object]) -> int:
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # kineto prints a line to fd 2 at every start and stop
        prof.start()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    results = prof.profiler.kineto_results if prof.profiler is not None else None
    if results is None:
        raise RuntimeError("the profiler recorded no events")
    tree = results.experimental_event_tree()
    events = [
        node
        for node in _walk(tree)
        if node.tag == _EventType.Allocation
        and torch.device(node.extra_fields.device).type == "cpu"
    ]
    # Stable sort: events of one thread are already in order; ties keep that order.
    events.sort(key=lambda node: node.start_time_ns)
    return peak_of_deltas(int(node.extra_fields.alloc_size) for node in events)


# --- CPU: VmHWM -----------------------------------------------------------------------------


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is impossible."""
    try:
        with _CLEAR_REFS.open("w") as handle:
            handle.write("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None


def vmhwm_available() -> bool:
    """Whether the ``vmhwm`` method works here (it resets the peak RSS as a side effect)."""
    return _reset_peak_rss()


def _status_bytes(key: str) -> int | None:
    try:
        text = _PROC_STATUS.read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+)\s+kB", text, flags=re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _vmhwm_peak(fn: Callable[[], object]) -> MemoryResult:
    if not _reset_peak_rss():
        raise RuntimeError(
            "CPU peak memory: neither the torch profiler event tree nor /proc/self/clear_refs "
            "is available on this platform"
        )
    before = _status_bytes("VmRSS")
    fn()
    peak = _status_bytes("VmHWM")
    if before is None or peak is None:
        raise RuntimeError("could not read VmRSS/VmHWM from /proc/self/status")
    return MemoryResult(max(0, peak - before), before, "vmhwm")
