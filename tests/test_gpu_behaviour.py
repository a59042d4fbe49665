"""What the CUDA paths do on a real device (issue 16): each test asserts a fact - agreement
within a tolerance, an ordering, a presence, a healthy row after a failure - never a speed.

All are marked ``gpu`` and skip without CUDA; ``scripts/gpu-check.sh`` runs them
(``pytest -m gpu``). Their CPU counterparts, through fakes, are in ``test_gpu_paths.py``.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

MIB = 2**20


def _planned(layer: str, n: int, *, dtype: str = "float16", d: int = 64, heads: int | None = 4,
             kernel: int | None = 3, batch: int = 2, device: str = "cuda") -> Any:
    from harness import registry
    from harness.spec import LayerCase
    from harness.suite.plan import PlannedCase

    entry = registry.get(layer)
    case = LayerCase(seq_len=n, d_model=d, batch=batch,
                     heads=heads if "heads" in entry.params else None,
                     kernel=kernel if "kernel" in entry.params else None)
    return PlannedCase(layer=layer, variant=entry.default_variant, case=case, dtype=dtype,
                       device=device, mode="forward", seed=0, label=f"{layer}-n{n}")


def _settings(**extra: Any) -> Any:
    from harness.measure.timing import TimingConfig
    from harness.measure_case import ExecSettings

    timing = TimingConfig(min_warmup=2, warmup_s=0.01, budget_s=0.05, min_samples=3)
    return ExecSettings(timing=timing, flops=False, structure=False, **extra)


# ---- the whole path: harness run, spawned worker, CUDA ----------------------------------


def test_harness_run_measures_cuda_cases_in_its_spawned_worker(tmp_path: Path) -> None:
    import pandas as pd

    suite = tmp_path / "smoke.yaml"
    suite.write_text(
        "name: gpu-smoke\ndevice: cuda\ndtype: float16\nmode: forward\nbatch: 2\n"
        "layers: [conv, lstm]\n"
        "sweep: {seq_len: [256, 4096], d_model: [64], heads: [4], kernel: [3]}\n"
        "measure: {time_budget_s: 0.05, warmup_s: 0.01, min_samples: 3, rounds: 1, "
        "retries: 0, flops: false, structure: false, timeout_s: 60, flush_l2: false}\n"
    )
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(suite), "--out", str(out), "--no-report"],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 4 and set(df["status"]) == {"ok"}, df[["label", "status", "message"]]
    assert set(df["time_timer"]) == {"cuda_event"}
    assert not df["time_l2_flushed"].any()  # pinned false although every working set fits L2
    assert (df["time_ms_median"] > 0).all() and (df["peak_mem_bytes"] > 0).all()
    assert set(df["mem_method"]) == {"cuda_allocator"}
    assert not df["tf32_conv"].any() and not df["tf32_matmul"].any()  # IEEE by default
    assert df["env_device_name"].iloc[0] == torch.cuda.get_device_name()


# ---- 1. a CUDA error replaces the worker; the next case is healthy ----------------------


def _poisoning_worker(conn: Any) -> None:
    """The sweep's worker, but a case at n = 256 triggers a device-side assert."""
    import harness.measure_case as mc
    import harness.sweep as sweep

    real = mc.prepared

    def prepared(planned: Any) -> Any:
        call, working_set, device = real(planned)
        if planned.case.seq_len != 256:
            return call, working_set, device
        table = torch.zeros(4, device=device)
        index = torch.tensor([1 << 20], device=device)

        def poison() -> None:
            table[index] += 1  # out of bounds: device-side assert
            torch.cuda.synchronize()

        return poison, working_set, device

    mc.prepared = prepared
    sweep._worker_main(conn)


def test_a_device_side_assert_ends_its_worker_and_the_next_case_is_healthy(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import harness.sweep as sweep
    from harness.results import RunDirectory

    monkeypatch.setattr(sweep, "_worker_main", _poisoning_worker)
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create()
    plan = [_planned("conv", 256), _planned("conv", 512), _planned("conv", 1024)]
    sweep.run_cases(plan, run_dir, lambda p: _settings(), timeout_s=120)
    df = run_dir.merge().set_index("seq_len")
    assert df.loc[256, "status"] == "error"
    assert sweep.CONTEXT_LOST in df.loc[256, "message"]
    assert list(df.loc[[512, 1024], "status"]) == ["ok", "ok"]


# ---- 2. float32 precision ----------------------------------------------------------------


def test_float32_forced_ieee_is_ieee_and_tf32_is_not() -> None:
    from harness.measure.precision import float32_mode, precision_columns

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(1024, 4096, generator=gen, dtype=torch.float64)
    b = torch.randn(4096, 1024, generator=gen, dtype=torch.float64)
    x = torch.randn(4, 256, 1024, generator=gen, dtype=torch.float64)
    w = torch.randn(256, 256, 7, generator=gen, dtype=torch.float64)
    exact_mm, exact_conv = a @ b, torch.nn.functional.conv1d(x, w)

    def rel_err(got: torch.Tensor, exact: torch.Tensor) -> float:
        return float((got.double().cpu() - exact).norm() / exact.norm())

    def run() -> tuple[float, float]:
        mm = a.float().cuda() @ b.float().cuda()
        conv = torch.nn.functional.conv1d(x.float().cuda(), w.float().cuda())
        return rel_err(mm, exact_mm), rel_err(conv, exact_conv)

    with float32_mode(False):
        assert not any(v for k, v in precision_columns().items() if k.startswith("tf32"))
        mm_ieee, conv_ieee = run()
    with float32_mode(True):
        mm_tf32, _ = run()
    assert mm_ieee < 1e-5 and conv_ieee < 1e-5  # fp32 rounding: ~1e-7
    assert mm_tf32 > 1e-5  # a 10-bit mantissa: ~1e-4 .. 1e-3


def test_a_float32_case_row_records_ieee_and_stays_under_its_peak() -> None:
    from harness.measure.env import environment
    from harness.measure.peak_rates import peak
    from harness.measure_case import execute

    env = environment("cuda")
    env.update(peak("cuda", "float32", str(env["env_device_name"])))
    row, _ = execute(_planned("conv", 4096, dtype="float32", d=512, kernel=7, batch=8),
                     _settings(env=env))
    assert row["status"] == "ok", row["message"]
    assert row["tf32_conv"] is False and row["tf32_matmul"] is False
    assert row["flops_per_s"] <= row["env_peak_flops"]


# ---- 3. an OOM row, then a healthy case on a clean allocator ----------------------------


def test_an_oom_row_releases_its_memory_and_the_next_case_is_healthy() -> None:
    from harness.measure_case import execute

    torch.cuda.empty_cache()
    reserved_before = torch.cuda.memory_reserved()
    free, _ = torch.cuda.mem_get_info()
    # naive attention, B = h = 1, float16: each n x n matrix takes 60 % of the free memory,
    # so the first fits (and is cached) and the second does not
    n = int(math.sqrt(0.6 * free / 2))
    row, _ = execute(_planned("attention", n, d=16, heads=1, batch=1), _settings())
    assert row["status"] == "oom", row["message"]
    assert torch.cuda.memory_reserved() <= reserved_before + 256 * MIB  # handed back
    healthy, _ = execute(_planned("conv", 4096), _settings())
    assert healthy["status"] == "ok", healthy["message"]
    assert healthy["mem_baseline_bytes"] < 1024 * MIB


# ---- 4. the timed device is current ------------------------------------------------------


def test_timing_leaves_the_current_device_as_it_was() -> None:
    from harness.measure.timing import TimingConfig, time_cuda

    before = torch.cuda.current_device()
    a = torch.randn(256, 256, device=f"cuda:{before}")
    time_cuda(lambda: a @ a, config=TimingConfig(warmup_s=0, budget_s=0.01, min_samples=2),
              device=f"cuda:{before}")
    assert torch.cuda.current_device() == before


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_events_time_the_work_on_cuda_1() -> None:
    from harness.measure.timing import TimingConfig, time_callable, time_cuda

    a = torch.randn(4096, 4096, device="cuda:1", dtype=torch.float16)
    cfg = TimingConfig(warmup_s=0.02, budget_s=0.1, min_samples=5)
    with torch.cuda.device(0):
        events = time_cuda(lambda: a @ a, config=cfg, device="cuda:1", flush_l2=False)
        host = time_callable(lambda: a @ a, config=cfg,
                             sync=lambda: torch.cuda.synchronize("cuda:1"))
    assert events.median == pytest.approx(host.median, rel=0.2)


# ---- timers agree; a cold cache is never faster -------------------------------------------


def test_events_agree_with_synchronised_perf_counter() -> None:
    from harness.measure.timing import TimingConfig, time_callable, time_cuda

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)  # ~1-2 ms per matmul
    cfg = TimingConfig(warmup_s=0.05, budget_s=0.2, min_samples=5)
    events = time_cuda(lambda: a @ a, config=cfg, flush_l2=False)
    host = time_callable(lambda: a @ a, config=cfg, sync=torch.cuda.synchronize)
    assert events.timer == "cuda_event"
    assert events.median == pytest.approx(host.median, rel=0.1)


def test_a_flushed_l2_is_never_faster_on_a_memory_bound_op() -> None:
    from harness.measure.timing import TimingConfig, time_cuda, working_set_bytes

    src = torch.randn(2 * MIB, device="cuda")  # 8 MiB in, 8 MiB out: fits in L2
    dst = torch.empty_like(src)
    cfg = TimingConfig(warmup_s=0.02, budget_s=0.1, min_samples=20)
    ws = working_set_bytes(src, dst)
    flushed = time_cuda(lambda: dst.copy_(src), config=cfg, working_set_bytes=ws, flush_l2=True)
    warm = time_cuda(lambda: dst.copy_(src), config=cfg, working_set_bytes=ws, flush_l2=False)
    assert flushed.l2_flushed and not warm.l2_flushed
    assert flushed.median >= warm.median


# ---- NVML; the plugin's timer; the datasheet row -----------------------------------------


def test_nvml_fields_are_filled() -> None:
    pytest.importorskip("pynvml")
    from harness.measure.env import NVML_KEYS, environment
    from harness.measure.peak_rates import table_row

    record = environment("cuda")
    missing = [k for k in NVML_KEYS if record[k] is None]
    assert not missing, missing
    limit = record["env_gpu_power_limit_w"]
    assert isinstance(limit, float) and 100 <= limit <= 1200
    row = table_row(str(record["env_device_name"]))
    if row is not None and row.tokens in (("h100",), ("h200",)):  # SXM boards: 700 W
        assert 500 <= limit <= 750
    assert 0 < record["env_gpu_sm_clock_mhz"] <= record["env_gpu_sm_clock_max_mhz"]


def test_the_plugins_synchronised_timer_waits_for_the_device() -> None:
    from harness.bench.timers import device_timer

    timer = device_timer(time.perf_counter, "cuda")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    t0 = timer()
    start.record()
    for _ in range(20):
        a @ a
    end.record()
    t1 = timer()
    end.synchronize()
    assert t1 - t0 >= 0.9 * start.elapsed_time(end) / 1e3


def test_this_device_has_a_datasheet_row_that_bounds_what_it_does() -> None:
    from harness.measure.peak_rates import probe_peak, table_peak, table_row

    name = torch.cuda.get_device_name()
    if table_row(name) is None:
        pytest.skip(f"{name!r} is not in the datasheet table (its peaks are probed)")
    found = table_peak(name, "float16")
    assert found is not None
    flops, bandwidth = probe_peak("cuda", "float16", size=8192, copy_mib=1024)
    assert flops <= found[0] * 1.05 and bandwidth <= found[1] * 1.05
