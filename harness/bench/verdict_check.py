"""Is the verdict trustworthy? A/A and A/B repetitions of a suite on this machine.

    python -m harness.bench.verdict_check --reps 5                    # pytest-benchmark path
    python -m harness.bench.verdict_check --reps 5 --source harness   # `harness run` path

Each repetition times the suite as it is (``A``), with a known slowdown of one layer
(``B``, ``--slowdown lstm=1.25`` through :mod:`harness.bench.slowdown`) and as it is again
(``A2``), each side ``--runs`` separate processes of ``--passes`` passes, interleaved, then
compares A with A2 (every flag a false alarm) and A with B (the slowed layer's cases must
be flagged, no other). docs/ci.md, "Is the verdict trustworthy?", has the protocol's
reasons and its results. Prints one line per repetition and the totals; ``--out`` keeps
every run and verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.bench.compare import Comparison, Rules, compare_runs
from harness.bench.loaders import load
from harness.bench.plugin import plugin_cli_args
from harness.bench.render import markdown
from harness.bench.slowdown import child_env as slowdown_env
from harness.bench.slowdown import parse

_REPO = Path(__file__).resolve().parents[2]

#: glibc malloc with fixed thresholds: big tensors come from the heap and stay mapped, instead
#: of a per-process history deciding whether each call maps fresh pages (page faults are CPU
#: time). Measured here on attention-n256 of the quick suite (a 2 MiB score matrix): with
#: glibc's dynamic thresholds, separate processes took 322 or 960 minor faults per call
#: (1.9-3.0 ms); with these, 0 in every process (1.6-1.9 ms).
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def _env(args: argparse.Namespace, slowdown: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
    if slowdown:  # every timer of the protocol reads this clock: the slowdown waits on it
        clock = "process_time" if args.timer.endswith("process_time") else "perf_counter"
        env = slowdown_env(parse(slowdown), clock, env)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    if args.fixed_malloc:
        env.update(FIXED_MALLOC)
    return env


def run_pytest(args: argparse.Namespace, out: Path, slowdown: str | None) -> Path:
    """One pytest-benchmark session over the suite, all passes; returns its JSON."""
    target = out.with_suffix(".json")
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pytest", *plugin_cli_args(), str(_REPO / "tests" / "benchmarks"),
        "-q", "-p", "no:cacheprovider", "--benchmark-only",
        f"--harness-suite={args.suite}", f"--harness-passes={args.passes}",
        f"--benchmark-json={target}", f"--benchmark-max-time={args.max_time}",
        f"--benchmark-timer={args.timer}",
    ]
    _run(cmd, _env(args, slowdown), out.with_suffix(".log"))
    return target


def run_harness(args: argparse.Namespace, out: Path, slowdown: str | None) -> Path:
    """One ``harness run`` of the suite into ``out``."""
    timer = "process_time" if args.timer.endswith("process_time") else "perf_counter"
    cmd = [sys.executable, "-m", "harness", "run", str(args.suite), "--out", str(out), "--force",
           "--no-report", "--set", f"measure.timer={timer}"]
    _run(cmd, _env(args, slowdown), out.with_suffix(".log"))
    return out


def _run(cmd: list[str], env: dict[str, str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        done = subprocess.run(cmd, env=env, cwd=_REPO, stdout=handle, stderr=subprocess.STDOUT,
                              check=False)
    if done.returncode != 0:
        raise SystemExit(f"verdict_check: {' '.join(cmd[:6])} ... failed "
                         f"(exit {done.returncode}); see {log}")


@dataclass
class Tally:
    aa_regressed: int = 0
    aa_improved: int = 0
    ab_expected: int = 0
    ab_caught: int = 0
    ab_others: int = 0
    ab_all_caught_reps: int = 0
    reps: int = 0


def _expected(comparison: Comparison, layers: set[str]) -> set[str]:
    return {v.label for v in comparison.cases
            if v.baseline is not None and v.baseline.layer in layers}


def measure_rep(args: argparse.Namespace, rep: int, root: Path) -> tuple[Path, Path, Path]:
    """The three sides of one repetition (A, B, A2), their runs interleaved."""
    sides = {"A": None, "B": args.slowdown, "A2": None}
    paths = {name: root / f"rep{rep}" / name for name in sides}
    run = run_pytest if args.source == "pytest" else run_harness
    for index in range(args.runs):
        for name, slowdown in sides.items():
            run(args, paths[name] / f"run{index}", slowdown)
    return paths["A"], paths["B"], paths["A2"]


def build_parser() -> argparse.ArgumentParser:
    """The options; their defaults are the protocol the CI example and README repeat."""
    parser = argparse.ArgumentParser(prog="python -m harness.bench.verdict_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--source", choices=("pytest", "harness"), default="pytest")
    parser.add_argument("--suite", default=str(_REPO / "suites" / "quick.yaml"))
    parser.add_argument("--slowdown", default="lstm=1.25", help="LAYER=FACTOR[,...]")
    parser.add_argument("--runs", type=int, default=8, help="processes per side")
    parser.add_argument("--passes", type=int, default=3,
                        help="passes inside each pytest session (--harness-passes)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS for the measured runs (0: leave as is)")
    parser.add_argument("--fixed-malloc", action=argparse.BooleanOptionalAction, default=True,
                        help="run the measured processes with glibc's malloc thresholds "
                        "fixed (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ = 1 GiB)")
    parser.add_argument("--timer", default="time.process_time",
                        help="pytest-benchmark timer (pytest source); harness source: "
                        "measure.timer=process_time when it names process_time, else "
                        "perf_counter")
    parser.add_argument("--max-time", type=float, default=0.2,
                        help="--benchmark-max-time per benchmark (pytest source)")
    parser.add_argument("--threshold", type=float, default=Rules().threshold)
    parser.add_argument("--level", type=float, default=Rules().level)
    parser.add_argument("--out", help="keep runs and verdicts here (default: a temp dir)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="verdict-check-"))
    layers = {item.split("=")[0].strip() for item in args.slowdown.split(",") if item.strip()}
    rules = Rules(threshold=args.threshold, level=args.level)
    tally = Tally()
    print(f"verdict_check: {args.reps} reps, source {args.source}, runs {args.runs} x "
          f"passes {args.passes}, fixed malloc {args.fixed_malloc}, "
          f"threads {args.threads or 'default'}, slowdown {args.slowdown}, "
          f"threshold {rules.threshold:.0%}; runs in {root}", flush=True)
    records = []
    for rep in range(1, args.reps + 1):
        started = time.time()
        a_path, b_path, a2_path = measure_rep(args, rep, root)
        a, b, a2 = load(a_path), load(b_path), load(a2_path)
        aa, ab = compare_runs(a, a2, rules), compare_runs(a, b, rules)
        (root / f"rep{rep}" / "aa.md").write_text(markdown(aa))
        (root / f"rep{rep}" / "ab.md").write_text(markdown(ab))
        expected = _expected(ab, layers)
        flagged = {v.label for v in ab.regressed}
        caught, others = expected & flagged, flagged - expected
        aa_bad = [v.label for v in aa.regressed]
        aa_better = [v.label for v in aa.cases if v.verdict == "improved"]
        tally.reps += 1
        tally.aa_regressed += len(aa_bad)
        tally.aa_improved += len(aa_better)
        tally.ab_expected += len(expected)
        tally.ab_caught += len(caught)
        tally.ab_others += len(others)
        tally.ab_all_caught_reps += int(caught == expected and bool(expected))
        ratios = {v.label: round(v.time.ratio, 3) for v in ab.cases
                  if v.label in expected and v.time is not None}
        print(f"rep {rep}: A/A {len(aa_bad)} regressed {sorted(aa_bad)}, "
              f"{len(aa_better)} improved | A/B caught {len(caught)}/{len(expected)} "
              f"{ratios}, other cases flagged {len(others)} {sorted(others)} "
              f"[{time.time() - started:.0f} s]", flush=True)
        records.append({"rep": rep, "aa_regressed": aa_bad, "aa_improved": aa_better,
                        "ab_expected": sorted(expected), "ab_caught": sorted(caught),
                        "ab_others": sorted(others), "ab_ratios": ratios})
    summary = {
        "reps": tally.reps, "source": args.source, "runs": args.runs, "passes": args.passes,
        "threads": args.threads, "timer": args.timer if args.source == "pytest" else None,
        "fixed_malloc": args.fixed_malloc,
        "threshold": rules.threshold, "level": rules.level, "slowdown": args.slowdown,
        "aa_false_regressions": tally.aa_regressed, "aa_false_improvements": tally.aa_improved,
        "ab_cases_expected": tally.ab_expected, "ab_cases_caught": tally.ab_caught,
        "ab_reps_all_caught": tally.ab_all_caught_reps, "ab_other_cases_flagged": tally.ab_others,
        "per_rep": records,
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"A/A: {tally.aa_regressed} false regressions ({tally.aa_improved} false "
          f"improvements) in {tally.reps} reps")
    print(f"A/B: {tally.ab_caught}/{tally.ab_expected} slowed cases caught, all caught in "
          f"{tally.ab_all_caught_reps}/{tally.reps} reps, {tally.ab_others} other cases flagged")
    if not args.out:
        shutil.rmtree(root, ignore_errors=True)
    ok = tally.aa_regressed == 0 and tally.ab_others == 0 and tally.ab_caught == tally.ab_expected
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
