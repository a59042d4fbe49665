"""Do timings stay true on a busy machine? One suite quiet, then with CPUs kept busy.

    python benchmarks/contention_check.py --out /tmp/cc            # suites/contention.yaml
    python benchmarks/contention_check.py --threads auto --out /tmp/cc-auto

Runs ``harness run SUITE`` twice in fresh processes: *quiet*, then *loaded* while ``--busy``
other processes (default: one per CPU beyond the first) spin on the CPU. Both runs use the
same thread count (``--threads``, default every CPU this process may use), so a loaded
median that differs from the quiet one is contention, not configuration. Prints:

* loaded/quiet median ratio per case, and whether the loaded row is flagged;
* the targets: no case whose loaded median is > ``--inflated`` (1.5) x its quiet median
  left unflagged; among unflagged cases, time increasing with n for every layer; at most
  1 case in 20 flagged in the quiet run;
* what the rounds cost: the time spent timing (warm-up, rebuilds and the engine included)
  over the sampled time, per run.

A benchmark, not a test: it takes minutes and its numbers depend on the machine. A check
of the harness, not part of it: it runs this checkout's harness (installed or not).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

_REPO = Path(__file__).resolve().parents[1]
_KEY = ["layer", "variant", "seq_len"]


def _harness(args: list[str]) -> float:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness", *args], check=True, env=env)
    return time.perf_counter() - started


def _spinners(count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` processes that keep one CPU each busy (pure arithmetic, no memory traffic)."""
    code = "while True:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


def _run(suite: str, out: Path, threads: str, report: bool) -> float:
    args = ["run", suite, "--out", str(out), "--force", "--set", f"measure.threads={threads}"]
    return _harness(args if report else [*args, "--no-report"])


def monotone_breaks(df: Any) -> list[str]:
    """(layer, variant) curves whose median time falls as n grows, among reliable rows."""
    breaks = []
    for (layer, variant), group in df.groupby(["layer", "variant"]):
        ordered = group.sort_values("seq_len")
        times = list(ordered["time_ms_median"])
        ns = list(ordered["seq_len"])
        for i in range(1, len(times)):
            if times[i] < times[i - 1]:
                breaks.append(f"{layer}/{variant} n={ns[i - 1]}->{ns[i]}: "
                              f"{times[i - 1]:.3f} -> {times[i]:.3f} ms")
    return breaks


def overhead(df: Any) -> float:
    """Time spent timing over time sampled, summed over the run's ok rows."""
    ok = df[df["status"] == "ok"]
    return float(ok["time_wall_s"].sum() / ok["time_sampled_s"].sum())


def summarize(quiet: Any, loaded: Any, inflated: float) -> tuple[list[str], bool]:
    """The report lines and whether every target was met."""
    import pandas as pd

    both = pd.merge(quiet[[*_KEY, "time_ms_median", "time_unreliable", "time_note"]],
                    loaded[[*_KEY, "time_ms_median", "time_unreliable", "time_note"]],
                    on=_KEY, suffixes=("_quiet", "_loaded"))
    both["ratio"] = both["time_ms_median_loaded"] / both["time_ms_median_quiet"]
    rows = [(f"{r['layer']}/{r['variant']} n={r['seq_len']}", f"{r['time_ms_median_quiet']:.3f}",
             f"{r['time_ms_median_loaded']:.3f}", f"{r['ratio']:.2f}",
             r["time_note_loaded"] if r["time_unreliable_loaded"] else "-")
            for _, r in both.sort_values(_KEY).iterrows()]
    lines = tabulate(rows, ("case", "quiet ms", "loaded ms", "ratio", "loaded flag"),
                     disable_numparse=True, colalign=("left", "right", "right", "right",
                                                      "left")).splitlines()
    flagged = both["time_unreliable_loaded"].astype(bool)
    missed = both[(both["ratio"] > inflated) & ~flagged]
    quiet_flagged = int(quiet["time_unreliable"].astype(bool).sum())
    reliable = loaded[~loaded["time_unreliable"].astype(bool)]
    breaks = monotone_breaks(reliable)
    ok = missed.empty and not breaks and quiet_flagged * 20 <= len(quiet)
    lines += [
        "",
        f"loaded medians > {inflated}x quiet: {int((both['ratio'] > inflated).sum())} of "
        f"{len(both)}; flagged {int((flagged & (both['ratio'] > inflated)).sum())}, "
        f"unflagged {len(missed)} (target 0)",
        f"loaded run flagged: {int(flagged.sum())} of {len(both)}; median ratio of flagged "
        f"{_median(both.loc[flagged, 'ratio'])}, of unflagged "
        f"{_median(both.loc[~flagged, 'ratio'])}",
        f"unflagged loaded curves not increasing in n: {len(breaks)} (target 0)"
        + "".join(f"\n  {b}" for b in breaks),
        f"quiet run flagged: {quiet_flagged} of {len(quiet)} (target <= {len(quiet) / 20:g})",
        f"timing cost / sampled time: quiet {overhead(quiet):.2f}, loaded {overhead(loaded):.2f}"
        " (goal <= 1.3 quiet)",
    ]
    return lines, ok


def _median(values: Any) -> str:
    return "-" if len(values) == 0 else f"{float(values.median()):.2f}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/contention_check.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default=str(_REPO / "suites" / "contention.yaml"))
    p.add_argument("--out", type=Path, required=True, help="folder for both runs")
    cpus = len(os.sched_getaffinity(0))
    p.add_argument("--busy", type=int, default=max(1, cpus - 1),
                   help="processes spinning during the loaded run (default: CPUs - 1)")
    p.add_argument("--threads", default=str(cpus),
                   help="measure.threads of both runs (default: every CPU; 'auto' lets the "
                        "loaded run shrink)")
    p.add_argument("--inflated", type=float, default=1.5,
                   help="a loaded/quiet median ratio above this must be flagged")
    p.add_argument("--skip-quiet", action="store_true", help="reuse OUT/quiet")
    return p


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(_REPO))  # this checkout's harness, installed or not
    from harness.results import read_results

    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.skip_quiet:
        took = _run(args.suite, args.out / "quiet", args.threads, report=False)
        print(f"quiet run: {took:.0f} s", file=sys.stderr)
    spinners = _spinners(args.busy)
    try:
        time.sleep(1.0)  # let the spinners reach the scheduler's steady state
        took = _run(args.suite, args.out / "loaded", args.threads, report=True)
        print(f"loaded run ({args.busy} busy): {took:.0f} s", file=sys.stderr)
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()
    quiet = read_results(args.out / "quiet")
    loaded = read_results(args.out / "loaded")
    lines, ok = summarize(quiet, loaded, args.inflated)
    text = "\n".join(lines)
    print(text)
    (args.out / "summary.txt").write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
