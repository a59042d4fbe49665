"""``--executor ray`` on a local Ray instance: same cases and statuses as the local executor,
dead workers retried, a killed driver resumed, GPUs owned one case at a time (fake GPUs).

One Ray instance for the module (2 CPUs, 4 fake GPUs): starting Ray costs seconds. The CLI
runs join it with ``--ray-address``; the in-process tests use it directly.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import REPO
from test_run import TINY, _default_sigint, _wait_for_parts, harness

from harness.results import RunDirectory, read_results

ray = pytest.importorskip("ray")

ONE_THREAD = ("--set", "measure.threads=1")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray instance, its address for other drivers."""
    import logging

    if ray.is_initialized():
        pytest.skip("Ray already initialised in this process by something else")
    ray.init(num_cpus=2, num_gpus=4, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _suite(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def _load(path: Path):
    from harness.suite import expand, load_suite

    suite = load_suite(path, check_device=False)
    return suite, expand(suite)


def test_quick_suite_on_ray_has_the_local_cases_and_statuses(cluster, tmp_path):
    # a subset of the quick suite (one n, every layer, decode included), one round
    small = ("--set", "sweep.seq_len=[64]", "--set", "measure.rounds=1",
             "--set", "measure.retries=0", *ONE_THREAD)
    quick = str(REPO / "suites" / "quick.yaml")
    local = harness("run", quick, "--out", str(tmp_path / "local"), *small, timeout=600)
    assert local.returncode == 0, local.stderr
    on_ray = harness("run", quick, "--out", str(tmp_path / "ray"), *small, "--executor", "ray",
                     "--ray-address", cluster, timeout=600)
    assert on_ray.returncode == 0, on_ray.stderr
    assert "on Ray" in on_ray.stderr and "devices busy]" in on_ray.stderr
    a, b = read_results(tmp_path / "local"), read_results(tmp_path / "ray")
    assert len(a) == 14
    assert list(a["case_id"]) == list(b["case_id"])  # same cases, same order
    assert list(a["status"]) == list(b["status"])
    assert list(a["flops_analytic"].fillna(-1)) == list(b["flops_analytic"].fillna(-1))
    # the rows say where they were measured: a Ray worker process, not the driver
    measured = b[b["status"] == "ok"]
    assert measured["env_hostname"].notna().all() and measured["started_s"].notna().all()
    assert (measured["env_torch_threads"] == 1).all()


def _cpu_plan(tmp_path: Path, budget_s: float):
    text = (TINY.replace("[lstm, conv, attention]", "[conv]")
            .replace("time_budget_s: 0.02", f"time_budget_s: {budget_s}")
            .replace("min_samples: 3", "min_samples: 3\n  rounds: 1\n  retries: 0\n  threads: 1"))
    return _load(_suite(tmp_path, text))


def _settings_for(suite: Any):
    from dataclasses import replace

    from harness.ray_executor import node_env
    from harness.run_command import exec_settings

    base = replace(exec_settings(suite), threads=1)
    return lambda planned: replace(base, env=node_env(planned, base))


def test_a_ray_worker_killed_mid_case_is_retried_once(cluster, tmp_path):
    from harness.ray_executor import RayExecutor
    from harness.sweep import run_cases

    suite, plan = _cpu_plan(tmp_path, budget_s=3.0)
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create()
    executor = RayExecutor(timeout_s=120)
    done: dict[str, Any] = {}
    sweep = threading.Thread(target=lambda: done.update(outcome=run_cases(
        plan, run_dir, _settings_for(suite), timeout_s=120, executor=executor)))
    sweep.start()
    killed: list[int] = []
    deadline = time.monotonic() + 120
    while not killed and time.monotonic() < deadline and sweep.is_alive():
        for worker in executor.running():
            if worker["label"] == plan[0].label:
                time.sleep(0.5)  # well inside its 3 s of timing
                os.kill(worker["pid"], signal.SIGKILL)
                killed.append(worker["pid"])
                break
        time.sleep(0.05)
    sweep.join(300)
    assert killed and not sweep.is_alive()
    df = run_dir.merge().set_index("label")
    first = df.loc[plan[0].label]
    assert first["status"] == "ok"  # the retry, on a fresh worker, measured it
    assert f"pid {killed[0]}" in first["time_note"] and "died" in first["time_note"]
    assert df.loc[plan[1].label, "status"] == "ok"
    assert done["outcome"].rows_written == 2


def test_a_job_whose_worker_dies_twice_is_an_error_row(cluster, tmp_path):
    from harness.ray_executor import RayExecutor
    from harness.sweep import run_cases

    suite, plan = _cpu_plan(tmp_path, budget_s=3.0)
    plan = plan[:1]
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create()
    executor = RayExecutor(timeout_s=120)
    sweep = threading.Thread(target=lambda: run_cases(
        plan, run_dir, _settings_for(suite), timeout_s=120, executor=executor))
    sweep.start()
    killed: set[int] = set()
    deadline = time.monotonic() + 180
    while len(killed) < 2 and time.monotonic() < deadline and sweep.is_alive():
        for worker in executor.running():
            if worker["pid"] not in killed:
                time.sleep(0.5)
                os.kill(worker["pid"], signal.SIGKILL)
                killed.add(worker["pid"])
        time.sleep(0.05)
    sweep.join(300)
    assert len(killed) == 2 and not sweep.is_alive()
    row = run_dir.merge().iloc[0]
    assert row["status"] == "error"
    assert "died" in row["message"] and "died once before" in row["message"]


def test_a_case_past_its_timeout_is_a_timeout_row_and_its_worker_replaced(cluster, tmp_path):
    from harness.ray_executor import RayExecutor
    from harness.sweep import run_cases

    suite, plan = _cpu_plan(tmp_path, budget_s=30.0)  # far past the 2 s timeout
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create()
    executor = RayExecutor(timeout_s=2)
    run_cases(plan, run_dir, _settings_for(suite), timeout_s=2, executor=executor)
    df = run_dir.merge()
    assert list(df["status"]) == ["timeout", "timeout"]
    assert df["message"].str.contains("timed out after 2 s").all()
    assert df["wall_s"].ge(2).all()


def test_driver_killed_then_resume_measures_every_case_once(cluster, tmp_path):
    suite = _suite(tmp_path, TINY.replace("time_budget_s: 0.02", "time_budget_s: 0.5"))
    out = tmp_path / "run"
    args = ["run", str(suite), "--out", str(out), "--no-report", "--executor", "ray",
            "--ray-address", cluster, *ONE_THREAD]
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=_default_sigint)
    _wait_for_parts(out, 2, proc, limit=240)
    proc.kill()  # SIGKILL: the driver gets no chance to clean up
    proc.wait()
    kept = {p.name for p in (out / "parts").glob("*.parquet")}
    assert 2 <= len(kept) < 6
    complete = sum(int(pd.read_parquet(out / "parts" / name)["time_rounds"].iloc[0]) >= 3
                   for name in kept)
    resumed = harness(*args[:-2], "--resume", *ONE_THREAD, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    df = read_results(out)
    assert len(df) == 6 and df["case_id"].is_unique and set(df["status"]) == {"ok"}
    assert (df["time_rounds"] >= 3).all()
    assert f"{complete} reused" in resumed.stdout


def test_cuda_cases_each_hold_a_whole_gpu(cluster, tmp_path):
    """With 4 fake GPUs: every case ran with one GPU of its own visible, and no two cases'
    runs overlap on one GPU. (The CPU build of torch fails each case, after its run.)"""
    from harness.ray_executor import RayExecutor
    from harness.sweep import run_cases

    suite, plan = _load(_suite(tmp_path, TINY.replace("device: cpu", "device: cuda")
                               .replace("timeout_s: 60", "timeout_s: 120")))
    assert all(p.device == "cuda" for p in plan)
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create()
    executor = RayExecutor(timeout_s=120)
    executor.check(plan, threads=1)
    run_cases(plan, run_dir, _settings_for(suite), timeout_s=120, executor=executor)
    df = run_dir.merge()
    assert len(df) == len(plan)
    gpus = df["env_cuda_visible_devices"]
    assert gpus.isin(["0", "1", "2", "3"]).all(), list(gpus)
    assert gpus.nunique() > 1  # cases ran on several GPUs at once
    assert df["started_s"].notna().all() and df["ended_s"].notna().all()
    for _, runs in df.groupby("env_cuda_visible_devices"):
        spans = sorted(zip(runs["started_s"], runs["ended_s"], strict=True))
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start  # one case at a time on each GPU
    # rows from the measuring worker: the device as asked, the host's facts
    assert (df["env_device"] == "cuda").all() and df["env_hostname"].notna().all()


def test_a_plan_the_cluster_cannot_run_is_bad_input(cluster, tmp_path):
    from harness.errors import HarnessInputError
    from harness.ray_executor import RayExecutor

    _, plan = _load(_suite(tmp_path, TINY.replace("device: cpu", "device: cuda:1")))
    executor = RayExecutor(timeout_s=10)
    with pytest.raises(HarnessInputError, match="write device: cuda"):
        executor.check(plan, threads=1)
    _, plan = _load(_suite(tmp_path, TINY))
    with pytest.raises(HarnessInputError, match="CPUs of the largest Ray node"):
        executor.check(plan, threads=64)


def test_an_address_nobody_answers_at_is_one_line_and_no_folder(tmp_path):
    out = tmp_path / "run"
    proc = harness("run", str(_suite(tmp_path)), "--out", str(out), "--executor", "ray",
                   "--ray-address", "127.0.0.1:1")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines()
             if not line.startswith("harness: layer plugin")]  # an environment's warning
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "ray start" in lines[0], lines
    assert not out.exists()
