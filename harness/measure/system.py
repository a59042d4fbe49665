"""Readers of this machine's state that decide whether timings can be trusted right now.

Other processes on our CPUs, clock governors and turbo, thread settings, and on CUDA the
GPU's clocks, persistence mode and co-tenants (via NVML). ``harness doctor`` judges these
and ``harness run`` prints a one-line summary of them before measuring.

Every reader takes what it reads as an injectable callable (file text, sleep, affinity, the
``pynvml`` module), so tests script a machine with fakes. Every reader returns None for
what it cannot know (no /proc, no cpufreq in a VM, no NVML) and never raises for a missing
file or driver. ``read(path)`` returns the file's text or raises OSError.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.values import number

#: ``read(path) -> text``; raises OSError when the file is missing or unreadable.
Reader = Callable[[str], str]

PROC_STAT = "/proc/stat"
PROC_CPUINFO = "/proc/cpuinfo"
SYS_CPU = "/sys/devices/system/cpu"

# /proc/stat per-CPU fields (jiffies): user nice system idle iowait irq softirq steal guest
# guest_nice. guest time is already inside user/nice, so the total is the first eight.
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)
_TOTAL_FIELDS = 8

#: NVML's bits for why clocks are below their maximum (nvmlClocksEventReason*, formerly
#: nvmlClocksThrottleReason*): bit -> (name in the ``gpu_throttle_reasons`` column, the words
#: ``harness doctor`` shows). One table, so the two never disagree on what a bit means.
CLOCK_REASONS: dict[int, tuple[str, str]] = {
    0x1: ("gpu_idle", "idle"),
    0x2: ("applications_clocks_setting", "application clocks setting"),
    0x4: ("sw_power_cap", "software power cap"),
    0x8: ("hw_slowdown", "hardware slowdown"),
    0x10: ("sync_boost", "sync boost"),
    0x20: ("sw_thermal_slowdown", "software thermal slowdown"),
    0x40: ("hw_thermal_slowdown", "hardware thermal slowdown"),
    0x80: ("hw_power_brake_slowdown", "power brake"),
    0x100: ("display_clock_setting", "display clock setting"),
    0x200: ("board_limit", "board limit"),
    0x400: ("reliability", "reliability"),
}
_KNOWN_REASONS = functools.reduce(int.__or__, CLOCK_REASONS)
#: Left out of the ``gpu_throttle_reasons`` column: GPU idle and the applications-clocks
#: setting say nothing about contention (a GPU idles between cases).
NOT_THROTTLING = 0x1 | 0x2
#: Doctor's words for the reasons that mean the GPU is being held back (as opposed to idling
#: or set on purpose): these make ``harness doctor`` warn.
THROTTLE_REASONS = frozenset(
    {
        "software power cap",
        "hardware slowdown",
        "software thermal slowdown",
        "hardware thermal slowdown",
        "power brake",
    }
)


def read_text(path: str) -> str:
    """The text of ``path``; OSError when it is missing or unreadable."""
    return Path(path).read_text()


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity); all CPUs where that is not known."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class CpuLoad:
    """How busy this process's allowed CPUs were during a short window.

    ``per_cpu`` maps each allowed CPU to the fraction of the window it was busy; ``busy`` is
    their sum (CPUs' worth of work); ``free`` = ``max(1, allowed - round(busy))`` CPUs left
    for a measurement when the busy time is other processes'.
    """

    allowed: int
    busy: float
    free: int
    per_cpu: dict[int, float]


def _cpu_jiffies(text: str) -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies per CPU from /proc/stat's ``cpuN`` lines.

    A malformed line is skipped (that CPU reads as offline) rather than losing every CPU.
    """
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit():
            continue
        try:
            fields = [int(v) for v in rest.split()[:_TOTAL_FIELDS]]
        except ValueError:
            continue
        fields += [0] * (_TOTAL_FIELDS - len(fields))  # old kernels have fewer columns
        out[int(name[3:])] = (sum(fields[i] for i in _BUSY_FIELDS), sum(fields))
    return out


def busy_jiffies(stat: str, cpus: Collection[int]) -> dict[int, int] | None:
    """Busy clock ticks of each CPU in ``cpus`` from /proc/stat text; None when none is listed.

    Busy = user + nice + system + irq + softirq + steal (steal: a hypervisor gave the CPU to
    another guest); guest time is already inside user, so it is not added again.
    """
    busy = {cpu: ticks for cpu, (ticks, _) in _cpu_jiffies(stat).items() if cpu in cpus}
    return busy or None


def cpu_load(
    window_s: float = 0.3,
    *,
    read: Reader = read_text,
    sleep: Callable[[float], None] = time.sleep,
    affinity: Callable[[], set[int]] = allowed_cpus,
) -> CpuLoad | None:
    """Busy fraction of each allowed CPU over ``window_s`` seconds, from /proc/stat read twice.

    Call it while this process is idle: the busy time it sees is then other processes'. None
    where /proc/stat cannot be read or parsed (not Linux).
    """
    if isinstance(window_s, bool) or not isinstance(window_s, (int, float)):
        raise TypeError(f"window_s must be a number of seconds, got {window_s!r}")
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be a positive number of seconds, got {window_s}")
    try:
        before = _cpu_jiffies(read(PROC_STAT))
        sleep(window_s)
        after = _cpu_jiffies(read(PROC_STAT))
    except OSError:
        return None
    cpus = affinity()
    per_cpu: dict[int, float] = {}
    for cpu in sorted(cpus):
        if cpu not in before or cpu not in after:
            continue  # offline or hidden
        busy = after[cpu][0] - before[cpu][0]
        total = after[cpu][1] - before[cpu][1]
        per_cpu[cpu] = min(1.0, max(0.0, busy / total)) if total > 0 else 0.0
    if not per_cpu:
        return None
    allowed = len(cpus)
    total_busy = sum(per_cpu.values())
    return CpuLoad(
        allowed=allowed, busy=total_busy, free=max(1, allowed - round(total_busy)),
        per_cpu=per_cpu,
    )


def load_average(
    getloadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
) -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages (runnable tasks, whole machine), or None."""
    try:
        one, five, fifteen = getloadavg()
    except (AttributeError, OSError, ValueError):
        return None
    return float(one), float(five), float(fifteen)


def _read_stripped(read: Reader, path: str) -> str | None:
    try:
        text = read(path).strip()
    except OSError:
        return None
    return text or None


def cpu_governors(
    *, read: Reader = read_text, affinity: Callable[[], set[int]] = allowed_cpus
) -> dict[int, str] | None:
    """The cpufreq governor of each allowed CPU (``performance``, ``powersave``, ...).

    None where no governor is readable (VMs and containers often have no cpufreq).
    """
    out = {}
    for cpu in sorted(affinity()):
        governor = _read_stripped(read, f"{SYS_CPU}/cpu{cpu}/cpufreq/scaling_governor")
        if governor is not None:
            out[cpu] = governor
    return out or None


def turbo_enabled(*, read: Reader = read_text) -> bool | None:
    """Whether turbo / boost is on: intel_pstate's ``no_turbo``, else cpufreq's ``boost``."""
    no_turbo = _read_stripped(read, f"{SYS_CPU}/intel_pstate/no_turbo")
    if no_turbo in ("0", "1"):
        return no_turbo == "0"
    boost = _read_stripped(read, f"{SYS_CPU}/cpufreq/boost")
    if boost in ("0", "1"):
        return boost == "1"
    return None


def cpu_mhz(
    read: Reader = read_text,
    cpus: Collection[int] | None = None,
    *,
    affinity: Callable[[], Collection[int]] = allowed_cpus,
) -> float | None:
    """Average current clock in MHz of ``cpus`` (default: ``affinity()``, the allowed CPUs):
    cpufreq's ``scaling_cur_freq``, else the ``cpu MHz`` lines of /proc/cpuinfo (each
    processor once; all of them when none of ``cpus`` is listed); None when neither is
    readable. ``cpus`` lets telemetry average the same CPUs before and after a case."""
    chosen = sorted(affinity() if cpus is None else cpus)
    khz = []
    for cpu in chosen:
        freq = number(_read_stripped(read, f"{SYS_CPU}/cpu{cpu}/cpufreq/scaling_cur_freq"))
        if freq is not None:
            khz.append(freq)
    if khz:
        return sum(khz) / len(khz) / 1000
    try:
        info = read(PROC_CPUINFO)
    except OSError:
        return None
    mhz: dict[int, float] = {}
    processor = -1
    for line in info.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            processor = int(value) if value.strip().isdigit() else -1
        elif key == "cpu MHz" and (found := number(value)) is not None:
            mhz[processor] = found
    listed = [v for cpu, v in mhz.items() if cpu in chosen] or list(mhz.values())
    return sum(listed) / len(listed) if listed else None


@dataclass(frozen=True)
class ThreadSettings:
    """The intra-op thread count torch will use, and the environment variables that set it
    (None: unset)."""

    torch_threads: int | None
    omp_num_threads: str | None
    mkl_num_threads: str | None


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def thread_settings(
    *,
    environ: Mapping[str, str] | None = None,
    torch_threads: Callable[[], int] = _torch_threads,
) -> ThreadSettings:
    """torch's intra-op thread count and OMP_NUM_THREADS / MKL_NUM_THREADS as set."""
    env = os.environ if environ is None else environ
    try:
        threads: int | None = int(torch_threads())
    except (ImportError, RuntimeError, ValueError):
        threads = None
    return ThreadSettings(
        torch_threads=threads,
        omp_num_threads=env.get("OMP_NUM_THREADS"),
        mkl_num_threads=env.get("MKL_NUM_THREADS"),
    )


@dataclass(frozen=True)
class GpuState:
    """What NVML says about one GPU; None for each value it does not support.

    ``clock_reasons``: why clocks are below maximum right now (:func:`clock_reason_names`;
    empty: at maximum). ``other_processes``: process ids with a CUDA context on the device
    other than this one.
    """

    sm_clock_mhz: int | None
    sm_clock_max_mhz: int | None
    mem_clock_mhz: int | None
    mem_clock_max_mhz: int | None
    clock_reasons: tuple[str, ...] | None
    persistence_mode: bool | None
    other_processes: tuple[int, ...] | None
    temperature_c: int | None


def clock_reason_names(mask: int) -> tuple[str, ...]:
    """Doctor's words for every NVML clock-reason bit set in ``mask``, idle included."""
    return tuple(_reason_names(mask, words=True))


def throttle_names(mask: int) -> str | None:
    """The ``gpu_throttle_reasons`` column: comma-separated names of the reasons in ``mask``
    other than :data:`NOT_THROTTLING`; None when none is left."""
    return ",".join(_reason_names(mask & ~NOT_THROTTLING, words=False)) or None


def _reason_names(mask: int, *, words: bool) -> list[str]:
    """Names of the bits set in ``mask`` in bit order; a bit newer than :data:`CLOCK_REASONS`
    is shown in hex rather than hidden."""
    which = 1 if words else 0
    names = [pair[which] for bit, pair in CLOCK_REASONS.items() if mask & bit]
    rest = mask & ~_KNOWN_REASONS
    names += [f"0x{1 << i:x}" for i in range(rest.bit_length()) if rest >> i & 1]
    return names


def gpu_state(device: str = "cuda", *, nvml: Any = None, own_pid: int | None = None) -> (
    GpuState | None
):
    """Clocks vs maximum, persistence mode, other processes and temperature of a CUDA device.

    ``nvml``: see :func:`harness.measure.env.nvml_session`. None when NVML is missing, fails
    to start, or does not know the device.
    """
    if not isinstance(device, str) or not device.startswith("cuda"):
        raise ValueError(f"gpu_state needs a CUDA device (cuda, cuda:N), got {device!r}")
    import torch

    from harness.measure.env import nvml_session

    with nvml_session(torch.device(device), nvml) as session:
        if session is None or session[1] is None:
            return None
        return _read_gpu(*session, os.getpid() if own_pid is None else own_pid)


def read_clock_reasons(nvml: Any, handle: Any, query: Callable[..., Any]) -> int | None:
    """The device's current clock-reason bitmask, None if unsupported; older drivers and
    bindings only have the older (throttle) name. A non-integer answer counts as unknown."""
    mask = query(lambda: nvml.nvmlDeviceGetCurrentClocksEventReasons(handle))
    if mask is None:
        mask = query(lambda: nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))
    return mask if isinstance(mask, int) and not isinstance(mask, bool) else None


def _read_gpu(nvml: Any, handle: Any, query: Callable[..., Any], own_pid: int) -> GpuState:
    sm, mem = getattr(nvml, "NVML_CLOCK_SM", 1), getattr(nvml, "NVML_CLOCK_MEM", 2)
    mask = read_clock_reasons(nvml, handle, query)
    persistence = query(lambda: nvml.nvmlDeviceGetPersistenceMode(handle))
    processes = query(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle))
    others = None
    if processes is not None:
        pids = {getattr(p, "pid", None) for p in processes}
        others = tuple(sorted(p for p in pids if isinstance(p, int) and p != own_pid))
    sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
    return GpuState(
        sm_clock_mhz=query(lambda: nvml.nvmlDeviceGetClockInfo(handle, sm)),
        sm_clock_max_mhz=query(lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, sm)),
        mem_clock_mhz=query(lambda: nvml.nvmlDeviceGetClockInfo(handle, mem)),
        mem_clock_max_mhz=query(lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, mem)),
        clock_reasons=None if mask is None else clock_reason_names(mask),
        persistence_mode=None if persistence is None else bool(persistence),
        other_processes=others,
        temperature_c=query(lambda: nvml.nvmlDeviceGetTemperature(handle, sensor)),
    )


@dataclass(frozen=True)
class SystemState:
    """Everything the readers above say about the machine, gathered once for one device."""

    device: str
    allowed: int
    cpus_online: int | None
    load: CpuLoad | None
    load_average: tuple[float, float, float] | None
    governors: dict[int, str] | None
    turbo: bool | None
    cpu_mhz: float | None
    threads: ThreadSettings
    gpu: GpuState | None


def snapshot(
    device: str,
    *,
    load: CpuLoad | None = None,
    window_s: float = 0.3,
    read: Reader = read_text,
    sleep: Callable[[float], None] = time.sleep,
    affinity: Callable[[], set[int]] = allowed_cpus,
    getloadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
    cpu_count: Callable[[], int | None] = os.cpu_count,
    environ: Mapping[str, str] | None = None,
    torch_threads: Callable[[], int] = _torch_threads,
    nvml: Any = None,
) -> SystemState:
    """Read every probe for ``device`` (resolved: cpu, cuda or cuda:N). ``load`` reuses a
    CpuLoad already taken; None samples one now over ``window_s``. GPU probes only on CUDA."""
    if load is None:
        load = cpu_load(window_s, read=read, sleep=sleep, affinity=affinity)
    return SystemState(
        device=device,
        allowed=len(affinity()),
        cpus_online=cpu_count(),
        load=load,
        load_average=load_average(getloadavg),
        governors=cpu_governors(read=read, affinity=affinity),
        turbo=turbo_enabled(read=read),
        cpu_mhz=cpu_mhz(read=read, affinity=affinity),
        threads=thread_settings(environ=environ, torch_threads=torch_threads),
        gpu=gpu_state(device, nvml=nvml) if device.startswith("cuda") else None,
    )
