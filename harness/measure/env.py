"""The environment a measurement ran in, as result columns (``env_`` prefix).

Numbers are only comparable between rows whose environment matches (device, threads,
clocks, library versions, code version), so every row carries this record. Missing pieces
(no GPU, no NVML, no git) are None, never an error.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import harness
from harness.measure.heap import heap_policy

_CPUINFO = Path("/proc/cpuinfo")
_REPO_DIR = Path(harness.__file__).resolve().parent.parent

#: NVML keys, always present in the record (None when unknown).
NVML_KEYS = (
    "env_driver_version",
    "env_cuda_driver_version",
    "env_gpu_sm_clock_mhz",
    "env_gpu_sm_clock_max_mhz",
    "env_gpu_mem_clock_mhz",
    "env_gpu_mem_clock_max_mhz",
    "env_gpu_temperature_c",
    "env_gpu_power_limit_w",
)


def environment(device: str) -> dict[str, object]:
    """One flat record of the machine, libraries and code version for ``device``."""
    dev = torch.device(device)
    cpu_model = cpu_model_name()
    commit, dirty = git_state()
    record: dict[str, object] = {
        "env_device": str(dev),
        "env_device_name": cpu_model if dev.type == "cpu" else _cuda_device_name(dev),
        "env_cuda_version": torch.version.cuda,
        "env_cudnn_version": _cudnn_version() if dev.type == "cuda" else None,
        "env_cpu_model": cpu_model,
        "env_cpu_count": os.cpu_count(),
        "env_torch_threads": torch.get_num_threads(),
        "env_torch_interop_threads": torch.get_num_interop_threads(),
        "env_malloc": heap_policy(),
        "env_torch_version": torch.__version__,
        "env_python_version": platform.python_version(),
        "env_numpy_version": _numpy_version(),
        "env_git_commit": commit,
        "env_git_dirty": dirty,
        "env_harness_version": harness.__version__,
        "env_hostname": socket.gethostname(),
        "env_cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "env_platform": platform.platform(),
        "env_time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(nvml_record(dev) if dev.type == "cuda" else dict.fromkeys(NVML_KEYS))
    return record


def cpu_model_name() -> str | None:
    """``model name`` from /proc/cpuinfo (Linux), else what ``platform`` knows, else None."""
    try:
        for line in _CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def git_state(path: Path | None = None) -> tuple[str | None, bool | None]:
    """(HEAD commit, dirty) of the git working tree holding ``path`` (default: this code).

    Dirty means tracked changes or untracked, non-ignored files: either can change what ran.
    (None, None) when git is absent or ``path`` is not in a repository.
    """
    where = _REPO_DIR if path is None else Path(path)
    commit = _git(where, "rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = _git(where, "status", "--porcelain")
    return commit, (None if status is None else bool(status))


def _git(where: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(where), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _numpy_version() -> str | None:
    try:
        import numpy
    except ImportError:
        return None
    return numpy.__version__


def _cuda_device_name(dev: torch.device) -> str | None:
    try:
        if not torch.cuda.is_available():
            return None
        return torch.cuda.get_device_name(dev)
    except (RuntimeError, AssertionError, ValueError):
        return None


def _cudnn_version() -> int | None:
    try:
        return torch.backends.cudnn.version()
    except (RuntimeError, AssertionError):
        return None


def _cuda_uuid(dev: torch.device) -> str | None:
    """The device's UUID as NVML spells it ("GPU-..."), to find it despite CUDA_VISIBLE_DEVICES."""
    try:
        if not torch.cuda.is_available():
            return None
        uuid = getattr(torch.cuda.get_device_properties(dev), "uuid", None)
    except (RuntimeError, AssertionError, ValueError):
        return None
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_record(dev: torch.device, nvml: Any = None) -> dict[str, object]:
    """Driver, clocks, temperature and power limit from NVML (``nvml``: see
    :func:`nvml_session`); None for whatever is unknown."""
    record: dict[str, object] = dict.fromkeys(NVML_KEYS)
    with nvml_session(dev, nvml) as session:
        if session is None:
            return record
        nvml, dev_handle, ask = session
        record["env_driver_version"] = ask(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        record["env_cuda_driver_version"] = ask(nvml.nvmlSystemGetCudaDriverVersion)
        if dev_handle is None:
            return record
        sm, mem = nvml.NVML_CLOCK_SM, nvml.NVML_CLOCK_MEM
        record["env_gpu_sm_clock_mhz"] = ask(lambda: nvml.nvmlDeviceGetClockInfo(dev_handle, sm))
        record["env_gpu_sm_clock_max_mhz"] = ask(
            lambda: nvml.nvmlDeviceGetMaxClockInfo(dev_handle, sm)
        )
        record["env_gpu_mem_clock_mhz"] = ask(lambda: nvml.nvmlDeviceGetClockInfo(dev_handle, mem))
        record["env_gpu_mem_clock_max_mhz"] = ask(
            lambda: nvml.nvmlDeviceGetMaxClockInfo(dev_handle, mem)
        )
        record["env_gpu_temperature_c"] = ask(
            lambda: nvml.nvmlDeviceGetTemperature(dev_handle, nvml.NVML_TEMPERATURE_GPU)
        )
        milliwatts = ask(lambda: nvml.nvmlDeviceGetPowerManagementLimit(dev_handle))
        record["env_gpu_power_limit_w"] = None if milliwatts is None else milliwatts / 1000
    return record


@contextlib.contextmanager
def nvml_session(dev: torch.device, nvml: Any = None) -> Iterator[
        tuple[Any, Any, Callable[[Callable[[], Any]], Any]] | None]:
    """NVML started: (the module, ``dev``'s handle or None, :func:`query` for its errors),
    shut down on leaving; None where pynvml is missing or NVML does not start. ``nvml`` is
    the ``pynvml`` module (package nvidia-ml-py) or a stand-in; imported here by default."""
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            yield None
            return
        nvml = pynvml
    errors = nvml_errors(nvml)
    try:
        nvml.nvmlInit()
    except errors:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: no NVML here
        yield None
        return
    ask = functools.partial(query, errors=errors)
    try:
        yield nvml, handle(nvml, dev, ask), ask
    finally:
        ask(nvml.nvmlShutdown)


def handle(nvml: Any, dev: torch.device, query: Callable[[Callable[[], Any]], Any]) -> Any:
    """NVML's handle for ``dev``: by UUID, which CUDA_VISIBLE_DEVICES does not renumber, else
    by index; None when NVML knows neither. ``query`` runs one call (see :func:`query`)."""
    uuid = _cuda_uuid(dev)
    if uuid is not None:
        found = query(lambda: nvml.nvmlDeviceGetHandleByUUID(uuid))
        if found is not None:
            return found
    index = dev.index if dev.index is not None else _current_index()
    return query(lambda: nvml.nvmlDeviceGetHandleByIndex(index))


def _current_index() -> int:
    try:
        return torch.cuda.current_device() if torch.cuda.is_available() else 0
    except RuntimeError:
        return 0


def nvml_errors(nvml: Any) -> tuple[type[BaseException], ...]:
    """What a failed NVML query raises: pynvml's NVMLError family, or a missing function."""
    base = getattr(nvml, "NVMLError", None)
    own = (base,) if isinstance(base, type) and issubclass(base, Exception) else ()
    return (*own, AttributeError, OSError, TypeError, ValueError)


def query(call: Callable[[], Any], errors: tuple[type[BaseException], ...]) -> Any:
    """One NVML query; None where the device or driver does not support it."""
    try:
        return call()
    except errors:
        return None


if __name__ == "__main__":  # pragma: no cover - a quick look at this machine
    for key, value in environment(sys.argv[1] if len(sys.argv) > 1 else "cpu").items():
        print(f"{key}: {value}")
