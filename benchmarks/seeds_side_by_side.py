"""Side-by-side benchmark for issue 14: local 2D vs full attention, cross attention's
decode step against n and m, and local 2D attention's decode step (the image's last pixel)
against the image size next to full attention's at the same n, each set measured in one
process with the calls interleaved (round-robin over the set, repeated), so machine drift
hits every member alike.

``python benchmarks/seeds_side_by_side.py [--rounds R] [--sets forward,cross,local2d-decode]``
prints, per member, the median
over rounds of the per-round minimum time (robust to a busy machine), the peak memory of one
call (harness.measure.memory; not disturbed by other processes) and ratios against the set's
baseline. A benchmark that prints, not a test: it asserts nothing about this machine's speed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's harness
from harness import registry
from harness.layers.inputs import extra_inputs
from harness.measure.memory import measure_peak_memory
from harness.measure_case import make_call
from harness.spec import LayerCase

Call = Callable[[], None]


def _call(layer: str, variant: str, case: LayerCase, mode: str = "forward") -> Call:
    torch.manual_seed(0)
    entry = registry.get(layer)
    module = entry.build(case, variant, decode=mode == "decode")
    x = torch.randn(case.batch, case.seq_len + (mode == "decode"), case.d_model)
    return make_call(module, x, mode, extra_inputs(entry, case))


def _best_of(call: Call, budget_s: float) -> float:
    """Fastest of the calls that fit in ``budget_s`` (at least 3), in ms."""
    best, spent, count = float("inf"), 0.0, 0
    while count < 3 or spent < budget_s:
        start = time.perf_counter()
        call()
        took = time.perf_counter() - start
        best, spent, count = min(best, took), spent + took, count + 1
    return best * 1e3


def interleaved(calls: dict[str, Call], rounds: int, budget_s: float) -> dict[str, float]:
    """Median over rounds of each call's per-round fastest time (ms), calls interleaved."""
    for call in calls.values():
        call()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(rounds):
        order = list(calls) if r % 2 == 0 else list(reversed(calls))
        for name in order:
            times[name].append(_best_of(calls[name], budget_s))
    return {name: statistics.median(v) for name, v in times.items()}


def _print(title: str, calls: dict[str, Call], base: str, rounds: int, budget_s: float,
           memory: bool = True) -> None:
    times = interleaved(calls, rounds, budget_s)
    print(f"\n{title}")
    for name, ms in times.items():
        mem = ""
        if memory:
            peak = measure_peak_memory(calls[name], device="cpu").peak_bytes
            mem = f"  peak {peak / 2**20:9.2f} MiB"
        print(f"  {name:40s} {ms:10.3f} ms  ({times[base] / ms:6.2f}x vs {base}){mem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per member and round")
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: a thread waiting for a busy core stalls every "
                        "parallel op's barrier, by milliseconds)")
    parser.add_argument("--sets", default="forward,cross,local2d-decode",
                        help="comma-separated sets to run")
    args = parser.parse_args()
    sets = set(args.sets.split(","))
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; other processes may "
          "share the cores: compare within a set, not across runs")
    if "forward" in sets:
        _forward(args)
    if "cross" in sets:
        _cross(args)
    if "local2d-decode" in sets:
        _local2d_decode(args)


def _local2d_decode(args: argparse.Namespace) -> None:
    """The step generating an image's last pixel (n = H W - 1 held): blocked local 2D
    (8 x 8 query blocks, flange 8) reads its memory block whatever the image; full attention
    (matmul) at the same n reads every held position."""
    calls = {}
    for side in (16, 32, 64):
        n = side * side - 1
        case = LayerCase(seq_len=n, d_model=args.d, heads=args.heads, height=side, width=side,
                         causal=True)
        calls[f"local2d blocked step {side}x{side}"] = _call("attention_local2d", "blocked",
                                                             case, "decode")
        calls[f"attention matmul step n={n}"] = _call(
            "attention", "matmul", LayerCase(seq_len=n, d_model=args.d, heads=args.heads,
                                             causal=True), "decode")
    _print(f"decode step, last pixel of the image: d = {args.d}, h = {args.heads}, batch 1",
           calls, "local2d blocked step 16x16", args.rounds, args.budget / 4)


def _forward(args: argparse.Namespace) -> None:
    for side in (32, 64):
        n = side * side
        image = LayerCase(seq_len=n, d_model=args.d, heads=args.heads, height=side, width=side)
        calls = {
            "attention (full, matmul)": _call("attention", "matmul", image),
            "attention_sdpa (full, fused)": _call("attention_sdpa", "sdpa", image),
            "local2d reference (full mask)": _call("attention_local2d", "reference", image),
            "local2d blocked (8x8 query, 8 flange)": _call("attention_local2d", "blocked", image),
        }
        _print(f"local 2D vs full attention: {side}x{side} image, n = {n}, d = {args.d}, "
               f"h = {args.heads}, batch 1, forward", calls, "attention (full, matmul)",
               args.rounds, args.budget)


def _cross(args: argparse.Namespace) -> None:
    for m in (256,):
        calls = {f"naive step n={n}": _call(
            "attention_cross", "naive",
            LayerCase(seq_len=n, d_model=args.d * 2, heads=args.heads, src_len=m), "decode")
            for n in (128, 512, 2048, 8192)}
        _print(f"cross attention decode step vs n: m = {m}, d = {args.d * 2}", calls,
               "naive step n=128", args.rounds, args.budget / 4)
    calls = {f"naive step m={m}": _call(
        "attention_cross", "naive",
        LayerCase(seq_len=256, d_model=args.d * 2, heads=args.heads, src_len=m), "decode")
        for m in (128, 512, 2048, 8192)}
    _print(f"cross attention decode step vs m: n = 256, d = {args.d * 2}", calls,
           "naive step m=128", args.rounds, args.budget / 4)


if __name__ == "__main__":
    main()
