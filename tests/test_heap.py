"""harness.measure.heap: the glibc settings a measuring process applies, with a fake libc."""

from __future__ import annotations

from harness.measure import heap


class _Libc:
    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


def test_steady_heap_sets_trim_and_mmap_thresholds() -> None:
    libc = _Libc()
    assert heap.steady_heap(libc) == heap.STEADY
    assert libc.calls == [(heap.M_TRIM_THRESHOLD, 2**30), (heap.M_MMAP_THRESHOLD, 32 * 2**20)]
    assert heap.heap_policy(libc) == heap.STEADY


def test_without_mallopt_or_when_refused_the_heap_is_default() -> None:
    assert heap.steady_heap(object()) == heap.DEFAULT  # not glibc
    assert heap.heap_policy(object()) == heap.DEFAULT
    refused = _Libc(result=0)
    assert heap.steady_heap(refused) == heap.DEFAULT
    assert refused.calls == [(heap.M_TRIM_THRESHOLD, 2**30)]  # stops at the first refusal


def test_a_worker_process_holds_its_heap_steady_before_serving(monkeypatch) -> None:
    from harness import sweep

    calls: list[str] = []
    monkeypatch.setattr(sweep, "steady_heap", lambda: calls.append("heap") or heap.STEADY)
    sweep._worker_process("conn", lambda conn: calls.append(f"serve {conn}"))
    assert calls == ["heap", "serve conn"]
