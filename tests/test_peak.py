"""Peak FLOP/s and bandwidth: datasheet lookup and the probe's arithmetic."""

from __future__ import annotations

import harness.measure.peak_rates as peak_mod


def test_datasheet_lookup_prefers_the_specific_name():
    assert peak_mod.table_peak("NVIDIA H100 PCIe", "bfloat16") == (756e12, 2.0e12)
    assert peak_mod.table_peak("NVIDIA H100 80GB HBM3", "float16") == (989e12, 3.35e12)
    assert peak_mod.table_peak("NVIDIA H200", "float32") == (67e12, 4.8e12)
    assert peak_mod.table_peak("Some CPU", "float32") is None


def test_probe_turns_best_times_into_rates(monkeypatch):
    times = iter([0.5, 0.25])  # best matmul seconds, best copy seconds
    monkeypatch.setattr(peak_mod, "_best_seconds", lambda fn, sync, reps: next(times))
    flops, bandwidth = peak_mod.probe_peak("cpu", "float32", size=64, copy_mib=1)
    assert flops == 2 * 64**3 / 0.5
    assert bandwidth == 2 * 2**20 / 0.25  # 1 MiB read + 1 MiB written


def test_cpu_uses_the_probe_and_says_so(monkeypatch):
    monkeypatch.setattr(peak_mod, "probe_peak", lambda device, dtype: (1e9, 2e9))
    row = peak_mod.peak("cpu", "float32", "NVIDIA H100")
    assert row == {"env_peak_flops": 1e9, "env_peak_bytes_per_s": 2e9,
                   "env_peak_source": "probe (best of 5: matmul 2048^3, 128 MiB copy)"}
