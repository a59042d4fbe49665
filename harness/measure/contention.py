"""Did a timed sample get the CPUs it asked for? The scheduler's run-queue wait says.

Linux accounts, per thread, the time it was runnable but waiting for a CPU (second field
of ``/proc/self/task/<tid>/schedstat``, nanoseconds). Summed over the process's threads it
is a counter that only grows, read like a clock before and after each sample; divided by
the sample's time it is the average number of this process's threads kept waiting. On a
quiet 2-core machine it stays near 0; with one busy process competing for one core it is
0.4-1 in nearly every sample of a multi-threaded case, and still ~0 for a case whose one
working thread found a free core (its time was not inflated either). docs/metrics.md has
the measurements. A CPU-time / wall-time ratio does not separate these cases: spinning
OpenMP waits count as running.

The timing engine takes the counter as an injected callable (tests script it); this module
also holds the pure rules that turn per-sample waits into a verdict.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: ``wait() -> seconds``: cumulative time this process's threads waited for a CPU.
WaitCounter = Callable[[], float]

_TASKS = Path("/proc/self/task")


class SchedstatWait:
    """Sum of run-queue wait over this process's threads, from ``/proc/self/task/*/schedstat``.

    File descriptors stay open between reads (``pread`` from offset 0 re-reads a proc file),
    so one reading costs tens of microseconds, outside the timed calls. A thread that exits
    takes its share with it: the sum can drop, and callers clamp a negative delta to 0.
    """

    def __init__(self, tasks: Path = _TASKS) -> None:
        self._tasks = tasks
        self._fds: dict[str, int] = {}

    def __call__(self) -> float:
        total = 0
        try:
            names = os.listdir(self._tasks)
        except OSError:
            return 0.0
        for name in names:
            fd = self._fds.get(name)
            try:
                if fd is None:
                    fd = os.open(self._tasks / name / "schedstat", os.O_RDONLY)
                    self._fds[name] = fd
                fields = os.pread(fd, 128, 0).split()
                total += int(fields[1])
            except (OSError, IndexError, ValueError):
                self._forget(name)
        for gone in set(self._fds) - set(names):
            self._forget(gone)
        return total / 1e9

    def _forget(self, name: str) -> None:
        fd = self._fds.pop(name, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        for name in list(self._fds):
            self._forget(name)

    def __del__(self) -> None:  # best effort; fds also close with the process
        self.close()


def wait_counter(tasks: Path = _TASKS) -> WaitCounter | None:
    """The run-queue wait counter of this process, or None where the kernel does not keep one
    (not Linux, or schedstat unreadable, as in some sandboxes)."""
    try:
        names = os.listdir(tasks)
        if not names:
            return None
        with open(tasks / names[0] / "schedstat") as handle:
            int(handle.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    probe = SchedstatWait(tasks)
    return probe


@dataclass(frozen=True)
class ContentionRule:
    """When a sample, a round and a case count as disturbed by other processes.

    A sample is disturbed when its threads waited for a CPU more than ``sample_wait`` of its
    time (0.05: one thread kept waiting 5 % of the sample). A round is clean when at most
    ``round_disturbed`` of its samples are disturbed. Quiet-machine samples measured here
    stay below 0.02 except for rare isolated ones; loaded ones sit at 0.4-1.
    """

    sample_wait: float = 0.05
    round_disturbed: float = 0.25

    def __post_init__(self) -> None:
        for name in ("sample_wait", "round_disturbed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"ContentionRule.{name} must be a number, got {value!r}")
            if not 0 <= value <= 1:
                raise ValueError(f"ContentionRule.{name} must be in [0, 1], got {value}")


def disturbed_flags(
    samples: Sequence[float], waits: Sequence[float] | None, rule: ContentionRule
) -> tuple[bool, ...]:
    """Per sample: did its threads wait for a CPU more than ``rule.sample_wait`` of its time?

    ``waits`` are per-call wait seconds beside per-call ``samples``; None (not observable)
    means no sample is known to be disturbed.
    """
    if waits is None:
        return (False,) * len(samples)
    if len(waits) != len(samples):
        raise ValueError(f"{len(waits)} waits for {len(samples)} samples")
    return tuple(
        (w / s > rule.sample_wait) if s > 0 else (w > 0)
        for s, w in zip(samples, waits, strict=True)
    )


@dataclass(frozen=True)
class Selection:
    """Which samples a case's statistics use, and what the rounds said about contention."""

    kept: tuple[float, ...]  # per-call seconds the statistics are computed from
    rounds: int
    clean_rounds: int  # rounds with at most rule.round_disturbed of their samples disturbed
    disturbed_frac: float | None  # over every sample of every round; None: not observable
    contended: bool  # no round was clean: the case's time is not to be trusted
    note: str | None


def select_rounds(
    rounds: Sequence[tuple[Sequence[float], Sequence[float] | None]], rule: ContentionRule
) -> Selection:
    """The least disturbed part of a case's rounds (``(samples, waits)`` pairs, in order).

    The undisturbed samples of the clean rounds are kept. With no clean round the case is
    *contended*: the least disturbed round still gives the numbers (its undisturbed samples
    where it has any), so that a row exists, but it carries the flag and a note; every
    downstream consumer then treats it as unreliable.
    """
    if not rounds:
        raise ValueError("select_rounds needs at least one round")
    flags = [disturbed_flags(samples, waits, rule) for samples, waits in rounds]
    observable = any(waits is not None for _, waits in rounds)
    fracs = [sum(f) / len(f) if f else 0.0 for f in flags]
    total = sum(len(f) for f in flags)
    disturbed = sum(sum(f) for f in flags)
    clean = [i for i, frac in enumerate(fracs) if frac <= rule.round_disturbed]

    def undisturbed(i: int) -> list[float]:
        return [s for s, bad in zip(rounds[i][0], flags[i], strict=True) if not bad]

    overall = (disturbed / total if total else 0.0) if observable else None
    if clean:
        kept = [s for i in clean for s in undisturbed(i)]
        return Selection(tuple(kept), len(rounds), len(clean), overall, False, None)
    best = min(range(len(rounds)), key=lambda i: fracs[i])
    kept = undisturbed(best) or list(rounds[best][0])
    if len(rounds) == 1:
        share = f"{fracs[0]:.0%} of the samples of its only round"
    else:
        low, high = f"{min(fracs):.0%}", f"{max(fracs):.0%}"
        span = low if low == high else f"{low}-{high}"
        share = f"{span} of the samples of all {len(rounds)} rounds"
    note = f"contended: threads waited for a CPU in {share}"
    return Selection(tuple(kept), len(rounds), 0, overall, True, note)
