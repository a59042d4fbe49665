"""``harness compare`` and ``harness history``: argument parsers and command functions.

The main CLI adds them with :func:`add_compare_parser` / :func:`add_history_parser`; each
sets ``func`` to a function of the parsed arguments returning the exit code (bad input
raises :class:`harness.errors.HarnessInputError`, which ``run_parser`` turns into one line
and exit 2). ``python -m harness.bench compare ...`` runs them without the main CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessInputError, run_parser

_COMPARE_EPILOG = """\
examples:
  harness compare results/quick/base results/quick/pr            # two `harness run` folders
  harness compare base.json pr.json --format markdown > verdict.md   # pytest-benchmark JSON
  harness compare results/baselines/table1-cpu results/pr --threshold 0.15

exit status: 0 no regression, 1 at least one regression, 2 bad input.
"""

_HISTORY_EPILOG = """\
examples:
  harness history results/quick                    # every run of the quick suite
  harness history .benchmarks --out reports/bench-history.html
"""


def _fraction(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number like 0.1 or 10%") from None
    if not 0 <= value < 10:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 10 (1000%)")
    return value


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number like 0.95") from None
    if not 0.5 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in [0.5, 1)")
    return value


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``compare`` to an ``add_subparsers()`` object; returns the new parser."""
    p = subparsers.add_parser(
        "compare",
        help="regression verdict: candidate vs baseline (results.parquet or benchmark JSON)",
        description="Compare two runs case by case (matched by layer and parameters). "
        "Each side is a `harness run` folder, a results.parquet, or a pytest-benchmark JSON "
        "(--benchmark-json / --benchmark-autosave), or a folder of several runs of one side. "
        "A case regresses when its fastest call is significantly slower by more than "
        "--threshold (with 3+ runs a side: an exact permutation test over the runs' fastest "
        "calls against that margin; otherwise the bootstrap interval of the ratio of medians "
        "must lie above 1), when its peak memory grows by more than --mem-threshold, when any "
        "FLOP count grows (FLOPs are exact: a change is a change, not noise), or when it "
        "fails in the candidate only. Cases on one side only are listed. Cases measured on "
        "another device or dtype are not compared unless --allow-mismatch.",
        epilog=_COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("baseline", help="run folder, results.parquet or pytest-benchmark JSON")
    p.add_argument("candidate", help="run folder, results.parquet or pytest-benchmark JSON")
    p.add_argument("--threshold", type=_fraction, default=0.10, metavar="FRACTION",
                   help="smallest relative time change that counts (default 0.10 = 10%%)")
    p.add_argument("--mem-threshold", type=_fraction, default=0.10, metavar="FRACTION",
                   help="smallest relative peak-memory change that counts (default 0.10)")
    p.add_argument("--level", type=_level, default=0.95,
                   help="confidence level: of the runs test (p <= 1 - level) and of the "
                   "interval (default 0.95)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="compare cases measured on different devices or dtypes anyway")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table",
                   help="table (terminal), markdown (a CI comment) or json")
    p.add_argument("--out", metavar="FILE",
                   help="write the verdict to FILE as well as printing it")
    p.set_defaults(func=cmd_compare)
    return p


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.bench.compare import Rules, compare_runs, to_dict
    from harness.bench.loaders import load
    from harness.bench.render import markdown, table

    baseline, candidate = load(args.baseline), load(args.candidate)
    rules = Rules(threshold=args.threshold, mem_threshold=args.mem_threshold,
                  level=args.level, allow_mismatch=args.allow_mismatch)
    result = compare_runs(baseline, candidate, rules)
    if args.format == "json":
        text = json.dumps(to_dict(result), indent=2)
    elif args.format == "markdown":
        text = markdown(result)
    else:
        text = table(result)
    print(text)
    if args.out:
        _write(Path(args.out), text + "\n")
    return result.exit_code


def add_history_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``history`` to an ``add_subparsers()`` object; returns the new parser."""
    p = subparsers.add_parser(
        "history",
        help="per-case time trend over many runs, first step change, HTML plot",
        description="Read every run under DIR (run folders with results.parquet, and "
        "pytest-benchmark JSON files, e.g. .benchmarks/), order them by their recorded time, "
        "and print each case's trend of median times with the first run where a step change "
        "appears (a piecewise-constant fit of log median time, minimising absolute "
        "deviations plus a penalty per step, as airspeed velocity does). --out writes a "
        "self-contained HTML page with the plots.",
        epilog=_HISTORY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("directory", help="folder holding run folders and/or benchmark JSON files")
    p.add_argument("--out", metavar="FILE.html", help="write an HTML page with plots")
    p.add_argument("--threshold", type=_fraction, default=0.10, metavar="FRACTION",
                   help="smallest relative step that is reported (default 0.10)")
    p.add_argument("--penalty", type=float, default=None, metavar="BETA",
                   help="cost of one more step in the fit (default: from the noise, see docs)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_history)
    return p


def cmd_history(args: argparse.Namespace) -> int:
    from harness.bench.history import build_history, history_dict, history_table

    hist = build_history(Path(args.directory), threshold=args.threshold, penalty=args.penalty)
    print(json.dumps(history_dict(hist), indent=2) if args.format == "json"
          else history_table(hist))
    if args.out:
        from harness.bench.history_html import history_html

        _write(Path(args.out), history_html(hist))
        print(f"history: {args.out}", file=sys.stderr)
    return 0


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise HarnessInputError(f"{path}: cannot write ({exc.strerror or exc})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="benchmark verdicts")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_compare_parser(sub)
    add_history_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.bench compare|history ...`` (the same as the main CLI's)."""
    return run_parser(build_parser(), argv)
