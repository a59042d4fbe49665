"""What does ``--executor ray`` cost over the local executor? Start-up and per case.

    python benchmarks/ray_overhead.py                 # 12 tiny cases, 1 device each way
    python benchmarks/ray_overhead.py --cases 24 --repeat 2

In one process, side by side, on the same tiny cases (a convolution at n = 8, one timing
round with a small budget, so that the measuring itself is nearly constant):

* **start-up**: ``ray.init`` of a local instance, then its first worker actor ready (torch
  and the harness imported); against the local executor's first worker process ready;
* **per case**: a sweep over the cases with one device (the local worker; Ray with 1 CPU
  and threads 1, so one actor), after start-up. The worker stamps each case's start and end
  (``started_s``, ``ended_s``); the gap from one case's end to the next one's start is what
  getting a row back and the next case to the worker costs (a pipe or a Ray call, pickling,
  writing the part). The median gap is the per-case overhead; the sweep's wall time over
  the cases is printed too (it includes ending the worker, once per sweep).

A benchmark, not a test: its numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO))

SUITE = """\
name: overhead
device: cpu
batch: 1
layers: [conv]
sweep:
  seq_len: [{lengths}]
  d_model: [8]
  kernel: [3]
measure:
  time_budget_s: 0.02
  min_samples: 3
  warmup_s: 0.0
  min_warmup: 1
  rounds: 1
  retries: 0
  threads: 1
  flops: false
  structure: false
"""


def _plan(cases: int, folder: Path) -> tuple[Any, list[Any]]:
    from harness.suite import expand, load_suite

    path = folder / "suite.yaml"
    path.write_text(SUITE.format(lengths=", ".join(str(8 + i) for i in range(cases))))
    suite = load_suite(path)
    return suite, expand(suite)


def _sweep(plan: list[Any], suite: Any, folder: Path, executor: Any, env: Any
           ) -> tuple[float, float]:
    """(median seconds between one case's end and the next one's start, sweep seconds)."""
    from harness.results import RunDirectory
    from harness.run_command import exec_settings
    from harness.sweep import run_cases

    base = replace(exec_settings(suite), threads=1)
    run = RunDirectory(folder)
    run.create()
    started = time.perf_counter()
    outcome = run_cases(plan, run, lambda p: replace(base, env=env(p, base)),
                        timeout_s=120, executor=executor)
    took = time.perf_counter() - started
    if outcome.rows_written != len(plan):
        raise SystemExit(f"only {outcome.rows_written} of {len(plan)} cases written")
    rows = run.merge().sort_values("started_s")
    gaps = rows["started_s"].to_numpy()[1:] - rows["ended_s"].to_numpy()[:-1]
    return float(statistics.median(gaps)), took


def _warm(executor: Any, planned: Any, settings: Any) -> Any:
    """The executor with a worker started and one case measured (imports done)."""
    list(executor.each([(0, ("case", planned, settings))]))
    return executor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=1, help="sweeps per executor")
    args = parser.parse_args()

    import ray

    from harness.ray_executor import RayExecutor, node_env
    from harness.run_command import case_env, exec_settings
    from harness.sweep import LocalExecutor, Worker

    def local_env(p: Any, s: Any) -> Any:
        return case_env(p.device, p.dtype, s.tf32, s.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        suite, plan = _plan(args.cases, folder)
        settings = replace(exec_settings(suite), threads=1)
        first = plan[0]

        started = time.perf_counter()
        worker = Worker()
        worker._wait_ready()  # the start-up a first case waits for
        local_start = time.perf_counter() - started
        worker.close()

        started = time.perf_counter()
        ray.init(num_cpus=1, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)
        init_s = time.perf_counter() - started
        probe = RayExecutor(timeout_s=120)
        probe.fingerprint(first, settings)  # starts the first actor and waits for it
        actor_s = time.perf_counter() - started - init_s
        probe.close(interrupted=False)

        local, remote = [], []
        for i in range(args.repeat):
            executor = _warm(LocalExecutor(120), first, replace(
                settings, env=local_env(first, settings)))
            local.append(_sweep(plan, suite, folder / f"local{i}", executor, local_env))
            on_ray = _warm(RayExecutor(timeout_s=120), first, replace(
                settings, env=node_env(first, settings)))
            remote.append(_sweep(plan, suite, folder / f"ray{i}", on_ray, node_env))
        ray.shutdown()

    print(f"start-up: local worker ready {local_start:.2f} s; ray.init {init_s:.2f} s, "
          f"then first actor ready {actor_s:.2f} s")
    print(f"per case ({args.cases} cases, 1 device, best of {args.repeat} sweeps):")
    for name, runs in (("local", local), ("ray", remote)):
        gap, took = min(runs)
        print(f"  {name:5s}: {gap * 1e3:5.1f} ms from a case's end to the next one's start "
              f"(median); the sweep {took / args.cases * 1e3:4.0f} ms a case")


if __name__ == "__main__":
    main()
