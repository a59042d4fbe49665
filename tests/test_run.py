"""``harness run`` end to end: rows for every case, faults as rows, resume, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from harness.results import read_results
from harness.theory import THEORY_COLUMNS

TINY = """\
name: tiny
device: cpu
mode: forward
batch: 1
layers: [lstm, conv, attention]
sweep:
  seq_len: [8, 12]
  d_model: [8]
  heads: [2]
  kernel: [3]
measure:
  time_budget_s: 0.02
  min_samples: 3
  warmup_s: 0.0
  min_warmup: 1
  timeout_s: 60
  structure_max_n: 16
"""


def slowed(factors: dict[str, float]) -> dict[str, str]:
    """An environment whose harness processes (the worker too) run those layers slowed."""
    from harness.bench.slowdown import child_env

    return child_env(factors, "perf_counter", {**os.environ, "PYTHONPATH": str(REPO)})


def harness(*args: str, env: dict[str, str] | None = None, timeout: float = 240,
            report: bool = False):
    if args[0] == "run" and not report:
        args = (*args, "--no-report")
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True,
        timeout=timeout, env=full_env, cwd=REPO,
    )


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_run_writes_one_row_per_case_with_every_metric(tiny, tmp_path):
    out = tmp_path / "run"
    proc = harness("run", str(tiny), "--out", str(out), report=True)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.html").stat().st_size > 0 and (out / "report.pdf").exists()
    df = read_results(out)
    assert len(df) == 6 and set(df["status"]) == {"ok"}
    assert df["case_id"].is_unique
    for column in ("time_ms_median", "time_ms_iqr", "time_cv", "peak_mem_bytes",
                   "param_count", "flops_analytic", "flops_fvcore", "flops_torch",
                   "path_length_analytic", "path_length_measured", "seq_ops_measured",
                   "flops_per_s", "tokens_per_s", "arithmetic_intensity",
                   "env_torch_version", "env_device_name", "env_peak_flops"):
        assert df[column].notna().all(), column
    # the heads axis does not apply to lstm/conv: recorded as missing, not crossed
    assert df.loc[df.layer == "lstm", "heads"].isna().all()
    assert (df["path_length_measured"] == df["path_length_analytic"]).all()
    lstm = df[df.layer == "lstm"].set_index("seq_len")
    assert list(lstm["seq_ops_measured"]) == [8.0, 12.0]  # O(n), measured
    assert (df.loc[df.layer != "lstm", "seq_ops_measured"] == 1).all()
    # each row carries its layer's theory, so the report needs no registry (nor torch)
    assert df[list(THEORY_COLUMNS[:-3])].notna().all().all()
    assert dict(zip(df["layer"], df["family"], strict=True)) == {
        "lstm": "recurrent", "conv": "convolution", "attention": "self-attention"}
    assert set(df.loc[df.layer == "attention", "theory_terms"]) == {"n^2 d + n d^2"}
    samples = pd.read_parquet(out / "samples.parquet")
    assert set(samples["case_id"]) == set(df["case_id"])
    assert (out / "suite.yaml").read_text().startswith("name: tiny")
    assert "status: ok 6" in proc.stdout


def test_hung_case_times_out_and_the_sweep_goes_on(tiny, tmp_path):
    # one hung case, one healthy one; the timeout leaves the healthy case ample time even on
    # a loaded machine (4 s was once too short for it while other jobs ran)
    text = tiny.read_text().replace("timeout_s: 60", "timeout_s: 20")
    tiny.write_text(text.replace("[lstm, conv, attention]", "[conv, attention]")
                    .replace("seq_len: [8, 12]", "seq_len: [8]"))
    out = tmp_path / "run"
    proc = harness("run", str(tiny), "--out", str(out), env=slowed({"conv": 1e9}))
    assert proc.returncode == 0, proc.stderr
    df = read_results(out)
    by_layer = df.groupby("layer")["status"].agg(set).to_dict()
    assert by_layer == {"conv": {"timeout"}, "attention": {"ok"}}
    assert set(df.loc[df.layer == "conv", "family"]) == {"convolution"}  # a row all the same
    assert df.loc[df.layer == "conv", "message"].str.contains("timed out after 20 s").all()


def test_impossible_allocation_is_an_oom_row(tiny, tmp_path):
    tiny.write_text(tiny.read_text().replace("[lstm, conv, attention]", "[conv]")
                    .replace("seq_len: [8, 12]", "seq_len: [8, 1048576]")
                    .replace("batch: 1", "batch: 65536"))
    out = tmp_path / "run"
    proc = harness("run", str(tiny), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    df = read_results(out).set_index("seq_len")
    assert df.loc[1048576, "status"] == "oom", df.loc[1048576, "message"]
    assert df.loc[8, "status"] == "ok"


def _wait_for_parts(out: Path, count: int, proc: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if len(list((out / "parts").glob("*.parquet"))) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("no parts appeared")


def _default_sigint() -> None:
    # A test run started in the background (`cmd &` in a script) inherits SIGINT ignored,
    # and Python then installs no KeyboardInterrupt handler: give the child the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(tiny: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(tiny), "--out", str(out), "--no-report"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env=slowed({"attention": 20}),
        preexec_fn=_default_sigint,
    )


def test_sigkill_mid_sweep_then_resume_measures_every_case_exactly_once(tiny, tmp_path):
    out = tmp_path / "run"
    proc = _start(tiny, out)
    _wait_for_parts(out, 2, proc)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    kept = {p.name for p in (out / "parts").glob("*.parquet")}
    assert 2 <= len(kept) < 6
    # a case is finished once all its rounds are in; one killed between rounds is measured
    # again (its earlier rounds' raw samples are not kept)
    complete = sum(int(pd.read_parquet(out / "parts" / name)["time_rounds"].iloc[0]) >= 3
                   for name in kept)
    resumed = harness("run", str(tiny), "--out", str(out), "--resume",
                      env=slowed({"attention": 20}))
    assert resumed.returncode == 0, resumed.stderr
    df = read_results(out)
    assert len(df) == 6 and df["case_id"].is_unique and set(df["status"]) == {"ok"}
    assert (df["time_rounds"] >= 3).all()  # 3 rounds, more where contention forced retries
    assert f"{complete} reused" in resumed.stdout
    assert kept <= {p.name for p in (out / "parts").glob("*.parquet")}


def test_ctrl_c_stops_after_saving(tiny, tmp_path):
    out = tmp_path / "run"
    proc = _start(tiny, out)
    _wait_for_parts(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    df = read_results(out)
    assert 1 <= len(df) < 6 and set(df["status"]) == {"ok"}


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_input_is_one_line_and_exit_2(tiny, tmp_path):
    _one_line_error(harness("run", str(tmp_path / "nope.yaml")), "nope.yaml")
    _one_line_error(harness("validate", str(tiny), "--set", "sweep.seq_len=[-4]"),
                    "sweep.seq_len[0]", "-4")
    _one_line_error(harness("run", str(tiny), "--device", "cuda"), "cuda")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_error(harness("run", str(tiny), "--out", str(blocker / "sub")), "cannot write")


def test_existing_results_are_never_touched_without_resume_or_force(tiny, tmp_path):
    out = tmp_path / "run"
    (out / "parts").mkdir(parents=True)
    sentinel = out / "results.parquet"
    sentinel.write_bytes(b"earlier results")
    _one_line_error(harness("run", str(tiny), "--out", str(out)), "already holds results")
    assert sentinel.read_bytes() == b"earlier results"


def test_validate_counts_cases_per_layer(tiny):
    proc = harness("validate", str(tiny))
    assert proc.returncode == 0, proc.stderr
    assert "total" in proc.stdout and " 6 " in proc.stdout.splitlines()[-1] + " "


def test_process_time_timer_is_recorded(tiny, tmp_path):
    tiny.write_text(tiny.read_text().replace("[lstm, conv, attention]", "[lstm]"))
    out = tmp_path / "run"
    proc = harness("run", str(tiny), "--out", str(out), "--set", "measure.timer=process_time")
    assert proc.returncode == 0, proc.stderr
    df = read_results(out)
    assert set(df["status"]) == {"ok"} and set(df["time_timer"]) == {"process_time"}


def test_resume_does_not_mix_clocks():
    from harness.sweep import env_fingerprint

    env = {"env_cpu_model": "x", "env_torch_version": "2.13.0", "env_torch_threads": 1}
    assert env_fingerprint(env) == env_fingerprint(env, "perf_counter")  # old runs resume
    assert env_fingerprint(env, "process_time") != env_fingerprint(env)


def test_a_reader_that_goes_away_is_not_a_traceback():
    """`harness layers | head -1`: the pipe closes before the output is written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "layers"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
    )
    proc.stdout.close()  # the reader is gone before the command writes
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141
    assert b"Traceback" not in err and b"BrokenPipeError" not in err


def test_resume_with_nothing_to_resume_starts_from_scratch(tiny, tmp_path):
    """A job killed before its first case finished and requeued with the same command."""
    out = tmp_path / "run"
    (out / "parts").mkdir(parents=True)  # what a run killed during its first case leaves
    proc = harness("run", str(tiny), "--out", str(out), "--resume",
                   "--set", "measure.rounds=1")
    assert proc.returncode == 0, proc.stderr
    assert "nothing to resume yet; starting from scratch" in proc.stderr
    df = read_results(out)
    assert len(df) == 6 and set(df["status"]) == {"ok"}
    assert (df["time_rounds"] == 1).all()


def test_thread_policy():
    from harness.measure.system import CpuLoad
    from harness.run_command import resolve_threads

    quiet = CpuLoad(allowed=4, busy=0.1, free=4, per_cpu={})
    busy = CpuLoad(allowed=4, busy=1.8, free=2, per_cpu={})
    assert resolve_threads("auto", quiet) == (4, None)
    count, why = resolve_threads("auto", busy)
    assert count == 2 and "1.8 of 4 CPUs busy" in why and "env_torch_threads" in why
    assert resolve_threads("auto", None, allowed=3) == (3, None)  # load unknown: every CPU
    assert resolve_threads(2, busy) == (2, None)  # a count is the user's choice
    count, why = resolve_threads(8, quiet)
    assert count == 8 and "threads will wait for each other" in why
    assert resolve_threads("auto", busy, resumed=4) == (4, None)  # a resumed run keeps its own
