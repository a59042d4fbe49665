"""Peak FLOP/s and bandwidth: datasheet lookup and the probe's arithmetic."""

from __future__ import annotations

import pytest

import harness.measure.peak_rates as peak_mod


def test_datasheet_lookup_prefers_the_specific_name():
    assert peak_mod.table_peak("NVIDIA H100 PCIe", "bfloat16") == (756e12, 2.0e12)
    assert peak_mod.table_peak("NVIDIA H100 80GB HBM3", "float16") == (989e12, 3.35e12)
    assert peak_mod.table_peak("NVIDIA H200", "float32") == (67e12, 4.8e12)
    assert peak_mod.table_peak("Some CPU", "float32") is None


@pytest.mark.parametrize(("name", "row"), [
    ("NVIDIA H100 80GB HBM3", "h100"),
    ("NVIDIA H100 PCIe", "h100 pcie"),
    ("NVIDIA H100 NVL", "h100 nvl"),
    ("NVIDIA H200", "h200"),
    ("NVIDIA H200 NVL", "h200 nvl"),
    ("NVIDIA GH200 480GB", "gh200"),
    ("NVIDIA GH200 144G HBM3e", "gh200 hbm3e"),
    ("NVIDIA A100-SXM4-80GB", "a100"),
    ("NVIDIA A100-SXM4-40GB", "a100 40gb"),
    ("NVIDIA A100-PCIE-40GB", "a100 40gb"),
    ("NVIDIA A100 80GB PCIe", "a100 pcie"),
    ("NVIDIA H800", None),  # not in the table: probed, never a neighbour's figures
    ("NVIDIA A1000", None),
    ("NVIDIA H1000", None),
])
def test_device_names_match_whole_tokens_most_specific_first(name, row):
    found = peak_mod.table_row(name)
    assert (None if found is None else " ".join(found.tokens)) == row


def test_near_misses_get_their_own_figures():
    assert peak_mod.table_peak("NVIDIA H100 NVL", "float32")[1] == 3.9e12  # not SXM's 3.35
    assert peak_mod.table_peak("NVIDIA GH200 480GB", "float16")[1] == 4.0e12  # not H200's 4.8


def test_no_table_row_is_shadowed_by_an_earlier_one():
    rows = peak_mod.GPU_TABLE
    for i, earlier in enumerate(rows):
        for later in rows[i + 1:]:
            assert not set(earlier.tokens) <= set(later.tokens), (earlier.tokens, later.tokens)


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


def test_float32_peak_follows_the_tf32_choice_and_float64_uses_tensor_cores():
    ieee = peak_mod.peak("cuda", "float32", "NVIDIA H100 80GB HBM3")
    assert ieee["env_peak_flops"] == 67e12 and "float32 IEEE, TF32 off" in ieee["env_peak_source"]
    tf32 = peak_mod.peak("cuda:0", "float32", "NVIDIA H100 80GB HBM3", tf32=True)
    assert tf32["env_peak_flops"] == 494e12 and "TF32" in tf32["env_peak_source"]
    half = peak_mod.peak("cuda", "float16", "NVIDIA H100 80GB HBM3", tf32=True)
    assert half["env_peak_flops"] == 989e12  # tf32 concerns float32 only
    double = peak_mod.peak("cuda", "float64", "NVIDIA A100-SXM4-80GB")
    assert double["env_peak_flops"] == 19.5e12 and "FP64 tensor cores" in double["env_peak_source"]
