"""Environment record: the columns exist, NVML absence is not an error, NVML values land right."""

from __future__ import annotations

import builtins
import datetime as dt
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import fakes
import pytest
import torch

import harness
from harness.measure import env
from harness.measure.env import NVML_KEYS, environment, git_state, nvml_record
from harness.measure.heap import heap_policy

EXPECTED_KEYS = {
    "env_device",
    "env_device_name",
    "env_cuda_version",
    "env_cudnn_version",
    "env_cpu_model",
    "env_cpu_count",
    "env_torch_threads",
    "env_torch_interop_threads",
    "env_malloc",
    "env_torch_version",
    "env_python_version",
    "env_numpy_version",
    "env_git_commit",
    "env_git_dirty",
    "env_harness_version",
    "env_hostname",
    "env_cuda_visible_devices",
    "env_platform",
    "env_time_utc",
    *NVML_KEYS,
}


def test_cpu_record_has_every_column_and_true_values() -> None:
    record = environment("cpu")
    assert set(record) == EXPECTED_KEYS
    assert all(key.startswith("env_") for key in record)
    assert record["env_device"] == "cpu"
    assert record["env_device_name"] == record["env_cpu_model"]
    assert record["env_cuda_visible_devices"] == os.environ.get("CUDA_VISIBLE_DEVICES")
    assert record["env_torch_threads"] == torch.get_num_threads()
    assert record["env_torch_interop_threads"] == torch.get_num_interop_threads()
    assert record["env_malloc"] == heap_policy()
    assert record["env_torch_version"] == torch.__version__
    assert record["env_harness_version"] == harness.__version__
    assert record["env_python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert all(record[key] is None for key in NVML_KEYS)  # no GPU asked for: no NVML
    stamp = dt.datetime.fromisoformat(str(record["env_time_utc"]))
    assert stamp.utcoffset() == dt.timedelta(0)


def test_cpu_model_from_proc_cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Test CPU 9000 @ 3.0GHz\n")
    monkeypatch.setattr(env, "_CPUINFO", info)
    assert env.cpu_model_name() == "Test CPU 9000 @ 3.0GHz"
    monkeypatch.setattr(env, "_CPUINFO", tmp_path / "missing")  # not Linux: ask platform
    monkeypatch.setattr(env.platform, "processor", lambda: "")
    monkeypatch.setattr(env.platform, "machine", lambda: "arm64")
    assert env.cpu_model_name() == "arm64"


def _hide_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fail(name: str, *args: object, **kwargs: object) -> object:
        if name == "pynvml":
            raise ImportError("no NVML here")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.setattr(builtins, "__import__", fail)


def test_cuda_record_without_nvml_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_pynvml(monkeypatch)
    record = environment("cuda")
    assert set(record) == EXPECTED_KEYS
    assert all(record[key] is None for key in NVML_KEYS)
    if not torch.cuda.is_available():
        assert record["env_device_name"] is None


def fake_nvml(*, init_fails: bool = False, unsupported: tuple[str, ...] = ()) -> types.ModuleType:
    """A pynvml stand-in with known values (clocks MHz, temperature C, power mW)."""
    clocks, max_clocks = {1: 1755, 2: 2619}, {1: 1980, 2: 2619}
    return fakes.fake_nvml({
        "nvmlSystemGetDriverVersion": b"550.54.15",
        "nvmlSystemGetCudaDriverVersion": 12040,
        "nvmlDeviceGetHandleByUUID": "handle",
        "nvmlDeviceGetHandleByIndex": lambda i: f"handle{i}",
        "nvmlDeviceGetClockInfo": lambda h, kind: clocks[kind],
        "nvmlDeviceGetMaxClockInfo": lambda h, kind: max_clocks[kind],
        "nvmlDeviceGetTemperature": lambda h, sensor: 41,
        "nvmlDeviceGetPowerManagementLimit": 700_000,
    }, unsupported=unsupported, init_fails=init_fails)


def test_nvml_values_land_in_their_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env, "_cuda_uuid", lambda dev: None)  # no CUDA here: go by index
    fake = fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    record = environment("cuda:0")
    assert record["env_driver_version"] == "550.54.15"  # bytes decoded
    assert record["env_cuda_driver_version"] == 12040
    assert record["env_gpu_sm_clock_mhz"] == 1755
    assert record["env_gpu_sm_clock_max_mhz"] == 1980
    assert record["env_gpu_mem_clock_mhz"] == 2619
    assert record["env_gpu_mem_clock_max_mhz"] == 2619
    assert record["env_gpu_temperature_c"] == 41
    assert record["env_gpu_power_limit_w"] == 700.0  # NVML reports milliwatts
    assert fake.calls[0] == "nvmlInit" and fake.calls[-1] == "nvmlShutdown"
    assert "nvmlDeviceGetHandleByIndex" in fake.calls


def test_nvml_prefers_the_uuid_handle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env, "_cuda_uuid", lambda dev: "GPU-1234")
    fake = fake_nvml()
    record = nvml_record(torch.device("cuda:1"), fake)
    assert "nvmlDeviceGetHandleByUUID" in fake.calls
    assert "nvmlDeviceGetHandleByIndex" not in fake.calls
    assert record["env_gpu_temperature_c"] == 41


def test_nvml_failures_leave_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env, "_cuda_uuid", lambda dev: None)
    assert nvml_record(torch.device("cuda"), fake_nvml(init_fails=True)) == dict.fromkeys(
        NVML_KEYS
    )
    partial = nvml_record(
        torch.device("cuda"), fake_nvml(unsupported=("nvmlDeviceGetPowerManagementLimit",))
    )
    assert partial["env_gpu_power_limit_w"] is None
    assert partial["env_gpu_sm_clock_mhz"] == 1755
    no_device = nvml_record(
        torch.device("cuda"), fake_nvml(unsupported=("nvmlDeviceGetHandleByIndex",))
    )
    assert no_device["env_driver_version"] == "550.54.15"
    assert no_device["env_gpu_sm_clock_mhz"] is None


def test_git_state_outside_a_repository_is_none(tmp_path: Path) -> None:
    assert git_state(tmp_path) == (None, None)


def test_git_state_without_git_is_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_git(*args: object, **kwargs: object) -> object:
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert git_state(tmp_path) == (None, None)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state_reads_commit_and_dirty_flag(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    git("init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD")
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "a.txt").write_text("two\n")
    assert git_state(tmp_path) == (head, True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_record_on_a_real_device() -> None:
    record = environment("cuda")
    assert record["env_device_name"] == torch.cuda.get_device_name()
    assert record["env_cuda_version"] == torch.version.cuda
