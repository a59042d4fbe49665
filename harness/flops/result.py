"""The one result type both FLOP counters return."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class FlopCount:
    """FLOPs counted by one tool for one forward (or forward + backward) pass.

    Units: FLOPs with one multiply-add = 2 FLOPs (harness/costs.py), whatever the tool's own
    convention. Only matmul / convolution / attention / recurrence multiply-adds are counted;
    ``uncounted`` names every op that ran, may do multiply-adds and has no formula, so an
    undercount is never silent (elementwise, view, copy, softmax and reduction ops are
    FLOP-free by the convention and are not listed; see :mod:`harness.flops.classify`).
    """

    total: int
    by_op: Mapping[str, int]  # op name (as the tool names it) -> FLOPs
    uncounted: tuple[str, ...] = ()
    device: str = ""  # where the pass ran: "meta", "cpu", "cuda:0", ... ("" if unknown)
    note: str = ""  # why the preferred device was not used, if it was not

    def __post_init__(self) -> None:
        if isinstance(self.total, bool) or not isinstance(self.total, int) or self.total < 0:
            raise ValueError(f"FlopCount.total must be a non-negative int, got {self.total!r}")
        by_op = {str(k): int(v) for k, v in dict(self.by_op).items()}
        if sum(by_op.values()) != self.total:
            raise ValueError(
                f"FlopCount.total={self.total} differs from the sum of by_op "
                f"({sum(by_op.values())})"
            )
        object.__setattr__(self, "by_op", by_op)
        object.__setattr__(self, "uncounted", tuple(sorted(set(self.uncounted))))
