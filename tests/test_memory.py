"""Peak-memory facts: known allocations read back exactly (CPU profiler), CUDA logic with a fake."""

from __future__ import annotations

import pytest
import torch

from harness.measure.memory import (
    MemoryResult,
    measure_peak_memory,
    peak_of_deltas,
    profiler_available,
    vmhwm_available,
)

MIB = 2**20
F32 = 4

needs_profiler = pytest.mark.skipif(not profiler_available(), reason="no profiler event tree")


def _alloc_and_free(nbytes: int) -> None:
    t = torch.empty(nbytes // F32, dtype=torch.float32)
    t.fill_(1.0)
    del t


@needs_profiler
def test_one_64mib_tensor_reads_64mib() -> None:
    r = measure_peak_memory(lambda: _alloc_and_free(64 * MIB), device="cpu")
    assert r.method == "torch_profiler"
    assert abs(r.peak_bytes - 64 * MIB) <= 0.1 * 64 * MIB
    assert r.peak_bytes == 64 * MIB  # exact, in fact: the allocator reports bytes


@needs_profiler
def test_sequential_allocations_read_the_peak_not_the_sum() -> None:
    def two() -> None:
        _alloc_and_free(32 * MIB)
        _alloc_and_free(32 * MIB)

    assert measure_peak_memory(two, device="cpu").peak_bytes == 32 * MIB


@needs_profiler
def test_overlapping_allocations_add_up() -> None:
    def both() -> None:
        a = torch.ones(8 * MIB // F32)
        b = torch.ones(16 * MIB // F32)
        del a, b

    assert measure_peak_memory(both, device="cpu").peak_bytes == 24 * MIB


@needs_profiler
def test_a_call_that_allocates_nothing_reads_zero() -> None:
    assert measure_peak_memory(lambda: None, device="cpu").peak_bytes == 0
    x = torch.zeros(MIB // F32)
    y = torch.ones(MIB // F32)
    assert measure_peak_memory(lambda: x.add_(y), device="cpu").peak_bytes == 0
    # A Python scalar operand becomes a tiny wrapped tensor: bytes, not the 1 MiB x.
    assert measure_peak_memory(lambda: x.add_(1.0), device="cpu").peak_bytes < 64


@needs_profiler
def test_memory_alive_before_the_call_is_not_counted() -> None:
    before = torch.ones(32 * MIB // F32)  # noqa: F841  (alive across the call)
    r = measure_peak_memory(lambda: _alloc_and_free(8 * MIB), device="cpu")
    assert r.peak_bytes == 8 * MIB
    assert r.baseline_bytes is None  # the CPU allocator keeps no total outside profiling


@needs_profiler
def test_a_returned_tensor_counts_it_was_allocated_during_the_call() -> None:
    r = measure_peak_memory(lambda: torch.ones(4 * MIB // F32), device="cpu")
    assert r.peak_bytes == 4 * MIB


@needs_profiler
def test_linear_forward_reads_its_output() -> None:
    lin = torch.nn.Linear(512, 512)
    x = torch.randn(8, 256, 512)
    with torch.no_grad():
        r = measure_peak_memory(lambda: lin(x), device="cpu")
    assert r.peak_bytes >= 8 * 256 * 512 * F32  # at least the (8, 256, 512) output


def test_peak_of_deltas() -> None:
    assert peak_of_deltas([]) == 0
    assert peak_of_deltas([5, -5, 3, 4, -7]) == 7
    assert peak_of_deltas([-10, 4]) == 0  # freeing older memory first never reads negative


@pytest.mark.skipif(not vmhwm_available(), reason="needs Linux /proc/self/clear_refs")
def test_vmhwm_fallback_sees_a_touched_64mib_tensor() -> None:
    r = measure_peak_memory(lambda: _alloc_and_free(64 * MIB), device="cpu", method="vmhwm")
    assert r.method == "vmhwm" and r.baseline_bytes and r.baseline_bytes > 0
    assert abs(r.peak_bytes - 64 * MIB) <= 0.1 * 64 * MIB


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown memory method"):
        measure_peak_memory(lambda: None, device="cpu", method="guess")
    with pytest.raises(ValueError, match="cuda device"):
        measure_peak_memory(lambda: None, device="cpu", method="cuda_allocator")
    with pytest.raises(ValueError, match="does not apply"):
        measure_peak_memory(lambda: None, device="cuda", method="vmhwm", cuda=FakeCuda())
    with pytest.raises(ValueError, match="warmup"):
        measure_peak_memory(lambda: None, device="cpu", warmup=-1)
    with pytest.raises(ValueError, match="no memory method"):
        measure_peak_memory(lambda: None, device="meta")


def test_as_row_columns() -> None:
    row = MemoryResult(10, 3, "cuda_allocator").as_row()
    assert row == {
        "peak_mem_bytes": 10,
        "mem_baseline_bytes": 3,
        "mem_method": "cuda_allocator",
    }


# --- CUDA logic with a fake torch.cuda ----------------------------------------------------------


class FakeCuda:
    """Allocator statistics as torch.cuda keeps them; the call log proves the order."""

    def __init__(self, allocated: int = 0) -> None:
        self.allocated = allocated
        self.peak = allocated + 999  # a stale peak from earlier work: must be reset
        self.log: list[str] = []

    def alloc(self, n: int) -> None:
        self.allocated += n
        self.peak = max(self.peak, self.allocated)

    def synchronize(self, device: object = None) -> None:
        self.log.append("sync")

    def memory_allocated(self, device: object = None) -> int:
        self.log.append("allocated")
        return self.allocated

    def reset_peak_memory_stats(self, device: object = None) -> None:
        self.log.append("reset")
        self.peak = self.allocated

    def max_memory_allocated(self, device: object = None) -> int:
        self.log.append("max")
        return self.peak


def test_cuda_peak_is_above_the_baseline_and_ignores_a_stale_peak() -> None:
    cuda = FakeCuda(allocated=1000)

    def layer() -> None:
        cuda.log.append("fn")
        cuda.alloc(300)  # output, kept
        cuda.alloc(200)  # workspace
        cuda.alloc(-200)

    r = measure_peak_memory(layer, device="cuda:0", cuda=cuda, warmup=0)
    assert r == MemoryResult(peak_bytes=500, baseline_bytes=1000, method="cuda_allocator")
    assert cuda.log == ["sync", "allocated", "reset", "fn", "sync", "max"]


def test_cuda_warmup_runs_before_the_reset() -> None:
    cuda = FakeCuda()
    r = measure_peak_memory(lambda: cuda.log.append("fn"), device="cuda", cuda=cuda, warmup=2)
    assert cuda.log == ["fn", "fn", "sync", "allocated", "reset", "fn", "sync", "max"]
    assert r.peak_bytes == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_on_a_real_device() -> None:
    keep = torch.ones(16 * MIB // F32, device="cuda")  # noqa: F841  (not counted)

    def fn() -> None:
        a = torch.ones(64 * MIB // F32, device="cuda")
        del a
        b = torch.ones(32 * MIB // F32, device="cuda")
        del b

    r = measure_peak_memory(fn, device="cuda")
    assert r.method == "cuda_allocator"
    assert r.peak_bytes == 64 * MIB
    assert r.baseline_bytes is not None and r.baseline_bytes >= 16 * MIB
