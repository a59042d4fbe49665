"""Fidelity benchmark: does our timer agree with torch.utils.benchmark on the same call?

``python benchmarks/timer_fidelity.py`` times each module's forward with
:func:`harness.measure.timing.time_callable` and with
``torch.utils.benchmark.Timer(...).blocked_autorange(min_run_time=...)`` (same thread count),
alternating the two in A-B / B-A order over several rounds so machine drift hits both alike,
and prints per module the ratio of medians, the median of the paired per-round ratios and
the ratio of minima (target: within 10%). A benchmark that prints, not a test: it asserts
nothing about this machine's speed. A check of the harness's timer, not part of the harness:
it runs this checkout's harness (installed or not).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's harness
from harness.measure.timing import TimingConfig, time_callable

Call = Callable[[], object]


@dataclass(frozen=True)
class Comparison:
    name: str
    ours_ms: float  # median over rounds of our per-round medians
    torch_ms: float  # same for torch.utils.benchmark
    ratios: tuple[float, ...]  # ours / torch, per round
    ours_unreliable: bool  # any round flagged IQR/median above threshold
    ours_min_ms: float  # fastest per-call sample over all rounds: robust to a busy machine
    torch_min_ms: float

    @property
    def ratio(self) -> float:
        """Ratio of the two medians over rounds."""
        return self.ours_ms / self.torch_ms

    @property
    def paired_ratio(self) -> float:
        """Median of per-round ratios: each pair ran back to back, so slow drift of a busy
        machine cancels within a pair."""
        return statistics.median(self.ratios)


def plain_modules(batch: int = 4, n: int = 128, d: int = 256) -> Iterator[tuple[str, Call]]:
    """Plain torch modules (no dependence on the layer files)."""
    torch.manual_seed(0)
    x = torch.randn(batch, n, d)  # (B, n, d)
    lstm = nn.LSTM(d, d, batch_first=True).eval()
    yield f"nn.LSTM({d},{d}) {tuple(x.shape)}", lambda: lstm(x)
    mha = nn.MultiheadAttention(d, 4, batch_first=True).eval()
    yield f"nn.MultiheadAttention({d},4) {tuple(x.shape)}", lambda: mha(
        x, x, x, need_weights=False
    )
    mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)).eval()
    yield f"Linear {d}-{4 * d}-{d} {tuple(x.shape)}", lambda: mlp(x)
    xc = torch.randn(batch, d, n)  # (B, d, n): channels first
    conv = nn.Conv1d(d, d, 7, padding=3).eval()
    yield f"nn.Conv1d({d},{d},7) {tuple(xc.shape)}", lambda: conv(xc)


def registry_modules(batch: int = 4, n: int = 128, d: int = 256) -> Iterator[tuple[str, Call]]:
    """Every registered layer's default variant, where the registry and the case allow."""
    try:
        from harness import registry
        from harness.spec import LayerCase

        entries = registry.entries()
    except Exception as exc:  # noqa: BLE001 - an optional extra: report and carry on
        print(f"(registry layers skipped: {type(exc).__name__}: {exc})", file=sys.stderr)
        return
    case = LayerCase(seq_len=n, d_model=d, heads=4, kernel=7, window=16, batch=batch)
    torch.manual_seed(0)
    x = torch.randn(batch, n, d)  # (B, n, d)
    for entry in entries:
        try:
            module = entry.build(case).eval()
        except Exception as exc:  # noqa: BLE001
            print(f"({entry.name}: not built: {exc})", file=sys.stderr)
            continue
        yield f"{entry.name}/{entry.default_variant}", functools.partial(module, x)


def compare(name: str, call: Call, *, budget_s: float, rounds: int) -> Comparison:
    threads = torch.get_num_threads()
    config = TimingConfig(budget_s=budget_s)
    timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=threads)
    ours: list[float] = []
    theirs: list[float] = []
    mins = [float("inf"), float("inf")]
    flagged = False

    def run_ours() -> None:
        nonlocal flagged
        result = time_callable(call, config=config)
        ours.append(result.median)
        mins[0] = min(mins[0], result.min)
        flagged = flagged or result.unreliable

    def run_theirs() -> None:
        measurement = timer.blocked_autorange(min_run_time=budget_s)
        theirs.append(measurement.median)
        mins[1] = min(mins[1], *measurement.times)

    with torch.no_grad():
        for round_index in range(rounds):
            order = (run_ours, run_theirs) if round_index % 2 == 0 else (run_theirs, run_ours)
            for step in order:
                step()
    return Comparison(
        name=name,
        ours_ms=statistics.median(ours) * 1e3,
        torch_ms=statistics.median(theirs) * 1e3,
        ratios=tuple(a / b for a, b in zip(ours, theirs, strict=True)),
        ours_unreliable=flagged,
        ours_min_ms=mins[0] * 1e3,
        torch_min_ms=mins[1] * 1e3,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/timer_fidelity.py",
        description="Compare our timer's median with torch.utils.benchmark's per module.",
    )
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per timing (both)")
    parser.add_argument("--rounds", type=int, default=3, help="A-B rounds per module")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as is)")
    parser.add_argument("--no-registry", action="store_true", help="plain torch modules only")
    args = parser.parse_args(argv)
    if args.budget <= 0 or args.rounds < 1:
        parser.error("--budget must be > 0 and --rounds >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"budget {args.budget:g} s x {args.rounds} rounds (median of per-round medians)"
    )
    header = (
        f"{'module':<40} {'ours ms':>8} {'torch ms':>8} {'ratio':>6} {'paired':>6} "
        f"{'min':>6}  per-round ratios"
    )
    print(header)
    print("-" * len(header))
    cases = list(plain_modules())
    if not args.no_registry:
        cases.extend(registry_modules())
    results = []
    for name, call in cases:
        c = compare(name, call, budget_s=args.budget, rounds=args.rounds)
        results.append(c)
        rounds = " ".join(f"{r:.3f}" for r in c.ratios)
        flag = "  (ours: unreliable spread)" if c.ours_unreliable else ""
        min_ratio = c.ours_min_ms / c.torch_min_ms
        print(
            f"{name:<40} {c.ours_ms:8.3f} {c.torch_ms:8.3f} {c.ratio:6.3f} "
            f"{c.paired_ratio:6.3f} {min_ratio:6.3f}"
            f"  {rounds}{flag}"
        )
    within = sum(abs(c.ratio - 1) <= 0.10 for c in results)
    paired = sum(abs(c.paired_ratio - 1) <= 0.10 for c in results)
    print(
        f"\nwithin 10% of torch.utils.benchmark: {within}/{len(results)} by ratio of medians, "
        f"{paired}/{len(results)} by paired ratio"
    )
    if any(c.ours_unreliable for c in results):
        print("spread above threshold: the machine is busy; rerun on a quiet one to judge")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
