"""``harness run``: choose the output folder, record the environment, sweep, summarise.

Kept apart from the sweep (harness.sweep: measures and persists) and from the CLI parser.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import HarnessInputError
from harness.results import RunDirectory

EXIT_INTERRUPTED = 130


def _has_results(path: Path) -> bool:
    return (path / "results.parquet").exists() or any((path / "parts").glob("*.parquet"))


def choose_run_dir(suite_name: str, out: str | None, *, resume: bool, force: bool,
                   root: Path = Path("results"), tag: str | None = None) -> RunDirectory:
    """The run folder: new by default, the newest run with --resume, replaced with --force.

    ``tag`` (a shard's, e.g. ``shard-2-of-8``) ends the default folder's name, and a resumed
    shard looks only at folders of that shard."""
    if out is None:
        base = root / suite_name
        suffix = f"-{tag}" if tag else ""
        if resume:
            runs = sorted(p for p in base.glob(f"*{suffix}") if p.is_dir() and _has_results(p)
                          and (tag or "-shard-" not in p.name))
            if runs:
                return RunDirectory(runs[-1])
            print(f"harness: no earlier run of suite {suite_name!r} under {base} to resume; "
                  "starting from scratch", file=sys.stderr)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return RunDirectory(base / f"{stamp}{suffix}")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise HarnessInputError(f"{path}: exists and is not a directory; choose another --out")
    if _has_results(path) and not (resume or force):
        raise HarnessInputError(
            f"{path}: already holds results; use --resume to finish them, --force to "
            "replace them, or another --out"
        )
    if resume and not _has_results(path):
        # a job killed before its first case finished and requeued with the same command
        print(f"harness: {path}: nothing to resume yet; starting from scratch", file=sys.stderr)
    return RunDirectory(path)


def _clear(run_dir: RunDirectory) -> None:
    """--force: remove the results this harness wrote there (nothing else)."""
    if run_dir.parts.is_dir():
        shutil.rmtree(run_dir.parts)
    for name in ("results.parquet", "samples.parquet"):
        (run_dir.path / name).unlink(missing_ok=True)


def resolve_threads(setting: str | int, load: Any, allowed: int | None = None,
                    resumed: int | None = None) -> tuple[int, str | None]:
    """``measure.threads`` as a count, and a line for stderr when the user should know.

    ``auto`` takes the CPUs this process may use that other processes were not keeping busy
    at the start (``load``: :class:`harness.measure.system.CpuLoad`, None when unknown), so
    torch's threads do not wait on a thread that is not running; a resumed run keeps the
    count it started with (``resumed``), so that its rows stay comparable and reusable. A
    count is used as given.
    """
    if allowed is None:
        allowed = load.allowed if load is not None else len(os.sched_getaffinity(0))
    if setting == "auto" and resumed is not None:
        return resumed, None
    if setting != "auto":
        count = int(setting)
        if count > allowed:
            return count, (f"measure.threads {count} > {allowed} CPUs this process may use: "
                           "threads will wait for each other")
        return count, None
    if load is None:
        return allowed, None
    count = max(1, min(allowed, load.free))
    if count < allowed:
        return count, (f"other processes keep {load.busy:.1f} of {allowed} CPUs busy; "
                       f"measure.threads auto uses {count} thread(s) (env_torch_threads), not "
                       f"{allowed}: times will not compare with a quiet run's")
    return count, None


def _threads_of(run_dir: RunDirectory) -> int | None:
    """The thread count an interrupted run's rows were measured with, if any."""
    for row in run_dir.finished().values():
        value = row.get("env_torch_threads")
        if isinstance(value, (int, float)) and value == value and value >= 1:
            return int(value)
    return None


def _first_device(plan: list[Any]) -> str:
    return str(plan[0].device) if plan else "cpu"


def exec_settings(suite: Any) -> Any:
    from harness.measure_case import ExecSettings

    m = suite.measure
    return ExecSettings(
        timing=round_config(m), memory=m.memory, flops=m.flops, structure=m.structure,
        structure_max_n=m.structure_max_n, cpu_timer=m.timer,
        rounds=m.rounds, retries=m.retries, flush_l2=m.flush_l2, tf32=m.tf32,
    )


def round_config(m: Any) -> Any:
    """One round's share of the suite's ``measure`` budget.

    The sampled time, the samples and the warm-up are split between the rounds; each round
    keeps at least 2 samples and 1 warm-up call (it rebuilds the layer, whose first call
    allocates), and at most ``max_samples``.
    """
    from harness.measure.timing import TimingConfig

    rounds = m.rounds
    return TimingConfig(
        min_warmup=max(1, math.ceil(m.min_warmup / rounds)) if m.min_warmup else 0,
        warmup_s=m.warmup_s / rounds,
        budget_s=m.time_budget_s / rounds,
        min_samples=min(m.max_samples, max(2, math.ceil(m.min_samples / rounds))),
        max_samples=m.max_samples,
        min_block_s=m.min_block_s,
        spread_threshold=m.spread_threshold,
    )


def case_env(device: str, dtype: str, tf32: bool, threads: int | None) -> dict[str, Any]:
    """The environment record of a case measured by this process with ``threads`` threads."""
    return dict(_environment(device, dtype, tf32), env_torch_threads=threads)


@lru_cache(maxsize=16)
def _environment(device: str, dtype: str, tf32: bool = False) -> dict[str, Any]:
    from harness.measure.env import environment
    from harness.measure.peak_rates import peak

    env = environment(device)
    env.update(peak(device, dtype, str(env.get("env_device_name") or ""), tf32=tf32))
    return env


def _progress(busy: Callable[[], tuple[int, int]] | None = None):
    """One tqdm bar for the whole sweep on a terminal (steps are case rounds), plain lines in
    a log; with ``busy`` (an executor of several devices) both say how many are measuring."""
    from harness.sweep import plain_progress

    if not sys.stderr.isatty():
        return plain_progress(sys.stderr, busy), lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="round", dynamic_ncols=True, file=sys.stderr)

    def report(done: int, total: int, row: dict[str, Any]) -> None:
        bar.total = total
        devices = ""
        if busy is not None:
            now, of = busy()
            devices = f" | {now}/{of} devices busy"
        bar.set_postfix_str(f"{row.get('label')}: {row.get('status')}{devices}", refresh=False)
        bar.update(done - bar.n)

    return report, bar.close


def _num(row: Any, key: str, scale: float = 1.0, fmt: str = "{:.3g}") -> str:
    value = row.get(key)
    try:
        if value is None or value != value:
            return "-"
        return fmt.format(float(value) * scale)
    except (TypeError, ValueError):
        return "-"


def summary_table(df: Any, limit: int = 60) -> str:
    """A compact per-case table for the terminal: time, FLOPs, memory, path length."""
    from tabulate import tabulate

    rows = [
        (str(row["label"])[:40], row["status"], _num(row, "time_ms_median"),
         _num(row, "flops_analytic", 1e-9), _num(row, "peak_mem_bytes", 2**-20),
         f"{_num(row, 'path_length_measured', fmt='{:g}')}/"
         f"{_num(row, 'path_length_analytic', fmt='{:g}')}")
        for _, row in df.head(limit).iterrows()
    ]
    lines = [tabulate(rows, ("case", "status", "median ms", "GFLOP", "peak MiB", "path m/a"),
                      disable_numparse=True, colalign=("left", "left", *["right"] * 4))]
    if len(df) > limit:
        lines.append(f"... and {len(df) - limit} more cases in the results file")
    counts = df["status"].value_counts().to_dict()
    lines.append("status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return "\n".join(lines)


def _shard(plan: list[Any], suite: Any, spec: str | None) -> tuple[Any, list[int] | None]:
    """The shard asked for (None) and the indices of its cases in ``plan`` (None: all)."""
    if spec is None:
        return None, None
    from harness.shard import Shard, select

    try:
        shard = Shard.parse(spec)
    except ValueError as exc:
        raise HarnessInputError(f"--shard: {exc}") from None
    return shard, select(plan, shard, suite.measure)


def _executor(args: argparse.Namespace, plan: list[Any], threads: int, timeout_s: float
              ) -> Any:
    """None for the local executor; a RayExecutor for --executor ray (checked against the
    cluster: bad input when it can never run the plan)."""
    if getattr(args, "executor", "local") != "ray":
        if getattr(args, "ray_address", None):
            raise HarnessInputError("--ray-address: only with --executor ray")
        return None
    from harness.ray_executor import RayExecutor

    executor = RayExecutor(timeout_s=timeout_s, address=args.ray_address)
    try:
        executor.check(plan, threads)
    except HarnessInputError:
        executor.close(interrupted=False)
        raise
    return executor


def run_suite(suite: Any, plan: list[Any], args: argparse.Namespace) -> int:
    from harness.sweep import run_cases

    shard, indices = _shard(plan, suite, getattr(args, "shard", None))
    if indices is not None:
        plan = [plan[i] for i in indices]
    run_dir = choose_run_dir(suite.name, args.out, resume=args.resume, force=args.force,
                             tag=shard.tag if shard else None)
    from harness.doctor import summary_line
    from harness.measure.system import cpu_load

    load = cpu_load()
    threads, why = resolve_threads(suite.measure.threads, load,
                                   resumed=_threads_of(run_dir) if args.resume else None)
    # Ray joined and checked against the plan before any folder is made
    executor = _executor(args, plan, threads, suite.measure.timeout_s)
    run_dir.create()
    if args.force:
        _clear(run_dir)
        run_dir.create()
    (run_dir.path / "suite.yaml").write_text(suite.to_yaml())
    if executor is None:  # the machine that measures is this one
        print(summary_line(_first_device(plan), load), file=sys.stderr)
    if why:
        print(f"harness: {why}", file=sys.stderr)
    base = replace(exec_settings(suite), threads=threads)

    def settings_for(planned: Any) -> Any:
        if executor is not None:  # the driver need not have the device; workers record theirs
            from harness.ray_executor import node_env

            return replace(base, env=node_env(planned, base))
        return replace(base, env=case_env(planned.device, planned.dtype, base.tf32, threads))

    where = f" (shard {shard.index}/{shard.count})" if shard else ""
    how = " on Ray" if executor is not None else ""
    print(f"harness: {len(plan)} cases of suite {suite.name!r}{where}{how} -> {run_dir.path}",
          file=sys.stderr)
    report, close = _progress(executor.busy if executor is not None else None)
    try:
        outcome = run_cases(
            plan, run_dir, settings_for, timeout_s=suite.measure.timeout_s,
            resume=args.resume, isolate=not args.no_isolate, progress=report,
            indices=indices, executor=executor,
        )
    finally:
        close()
    df = run_dir.merge()
    print(summary_table(df))
    print(f"results: {run_dir.results_file} ({outcome.rows_written} cases measured, "
          f"{outcome.reused} reused)")
    if outcome.contended:
        print(f"harness: {outcome.contended} case(s) were disturbed by other processes in "
              "every round, retries included; their rows say time_unreliable, with the reason "
              "in time_note (see 'harness doctor')", file=sys.stderr)
    if not args.no_report and not outcome.interrupted:
        from harness.report.command import write_report

        written = write_report(run_dir.path, run_dir.path)
        print("report: " + ", ".join(str(p) for p in written))
    if outcome.interrupted:
        print("harness: interrupted; finished cases are saved, continue with --resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
