"""``harness doctor``: is this machine fit to time layers right now, and if not, what to do.

Modelled on what pyperf's ``system show`` checks: other processes on our CPUs, load, clock
governor and turbo, thread settings, and on CUDA the GPU's clocks, persistence mode and
co-tenants. The readings come from :mod:`harness.measure.system`; this module only judges
them (:func:`judge` is pure) and renders the verdicts. It never fails: a reading it cannot
get is a check with value ``unknown`` and status ``info``.

``harness run`` prints :func:`summary_line` before measuring.
"""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from tabulate import tabulate

from harness.measure.system import THROTTLE_REASONS, CpuLoad, SystemState, snapshot

STATUSES = ("ok", "warn", "info")
UNKNOWN = "unknown"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")

#: Short words for a warning in :func:`summary_line`, by check name.
_SHORT = {
    "device": "device not available",
    "load average": "machine overloaded",
    "free CPUs": "another process is busy",
    "torch threads": "more threads than CPUs",
    "GPU clocks": "GPU clocks throttled",
    "GPU processes": "another process is on the GPU",
}


@dataclass(frozen=True)
class Check:
    """One verdict: what was checked, what was seen, ok / warn / info, and what to do."""

    name: str
    value: str
    status: str
    advice: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Check.status must be one of {STATUSES}, got {self.status!r}")


def _unknown(name: str, why: str) -> Check:
    return Check(name, UNKNOWN, "info", why)


def parse_device(device: str) -> str:
    """``device`` if it is auto, cpu, cuda or cuda:N; ValueError otherwise."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string, got {device!r}")
    if not _DEVICE.fullmatch(device):
        raise ValueError(f"{device!r} is not a device (one of auto, cpu, cuda, cuda:N)")
    return device


def _resolve(device: str) -> tuple[str, str | None]:
    """(device with auto resolved, why it cannot run here or None)."""
    from harness.suite.check import device_problem, resolve_device

    resolved = resolve_device(parse_device(device))
    return resolved, device_problem(resolved)


def checks(
    device: str = "auto", *, state: SystemState | None = None, window_s: float = 0.3
) -> list[Check]:
    """Every check for ``device`` (auto, cpu, cuda, cuda:N), reading the machine now unless
    ``state`` is given. CPU load is sampled over ``window_s`` seconds."""
    from harness.measure.compiled import compile_problem

    resolved, problem = _resolve(device)
    if state is None:
        state = snapshot(resolved, window_s=window_s)
    return judge(state, device_problem=problem, compile_problem=compile_problem(resolved))


def judge(state: SystemState, *, device_problem: str | None = None,
          compile_problem: str | None = None) -> list[Check]:
    """The verdicts on one snapshot of the machine (pure: no reading here).
    ``compile_problem``: why torch.compile cannot run on the device (suites with
    ``sweep.compile: true`` then plan those cases as skipped), or None."""
    out = [
        Check("device", state.device, "warn", f"{state.device} {device_problem}")
        if device_problem
        else Check("device", state.device, "ok"),
        _load_average(state),
        _free_cpus(state.load),
        _governor(state.governors),
        _turbo(state.turbo),
        _cpu_mhz(state.cpu_mhz),
        _torch_threads(state),
        _thread_env(state),
        Check("torch.compile", "unavailable", "info", compile_problem)
        if compile_problem
        else Check("torch.compile", "available", "ok"),
    ]
    if state.device.startswith("cuda"):
        out += _gpu(state)
    return out


def _load_average(state: SystemState) -> Check:
    name = "load average"
    if state.load_average is None:
        return _unknown(name, "os.getloadavg() is not available on this system")
    one, five, fifteen = state.load_average
    value = f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min) on {state.allowed} CPUs"
    total = state.cpus_online
    if total is not None and state.allowed < total:
        return Check(
            name, value + f" of {total}", "info",
            f"the load average counts all {total} CPUs of the machine, this process may use "
            f"{state.allowed}; 'free CPUs' measures ours",
        )
    if one >= state.allowed:
        return Check(
            name, value, "warn",
            f"the last minute averaged {one:.1f} runnable tasks for {state.allowed} CPUs: the "
            "machine is saturated and timings will be disturbed; wait until it is quiet",
        )
    if one >= 0.5:
        return Check(
            name, value, "info",
            "other work ran in the last minute; 'free CPUs' says whether it still runs",
        )
    return Check(name, value, "ok")


def _free_cpus(load: CpuLoad | None) -> Check:
    name = "free CPUs"
    if load is None:
        return _unknown(name, "/proc/stat is not readable (not Linux?): other processes' CPU "
                        "use cannot be seen")
    others = min(load.allowed, round(load.busy))
    value = f"{load.free} of {load.allowed} (others kept {load.busy:.2f} CPUs busy)"
    if others >= 1:
        return Check(
            name, value, "warn",
            f"another process is using {others} of {load.allowed} CPUs; timings will be "
            "disturbed: stop it, or run with measure.threads: auto, which uses only the free "
            "cores",
        )
    if load.busy >= 0.2:
        return Check(
            name, value, "info",
            f"light background activity ({load.busy:.2f} CPU): watch the CV of the timings",
        )
    return Check(name, value, "ok")


def _governor(governors: dict[int, str] | None) -> Check:
    name = "CPU governor"
    if not governors:
        return _unknown(name, "no cpufreq governor readable (common in VMs and containers): "
                        "the host decides the clocks")
    names = sorted(set(governors.values()))
    value = names[0] if len(names) == 1 else "mixed: " + ", ".join(names)
    if names == ["performance"]:
        return Check(name, value, "ok")
    return Check(
        name, value, "info",
        "clocks follow the load, so the first samples after a pause run slower (warm-up "
        "absorbs most of it); for steadier timings: sudo cpupower frequency-set -g performance",
    )


def _turbo(turbo: bool | None) -> Check:
    name = "turbo"
    if turbo is None:
        return _unknown(name, "no intel_pstate/no_turbo or cpufreq/boost to read (VM, "
                        "container, or no cpufreq driver)")
    if not turbo:
        return Check(name, "off", "ok")
    return Check(
        name, "on", "info",
        "turbo makes clocks vary with temperature and with how many cores are busy, so runs "
        "can differ by a few %; to disable it: echo 1 > /sys/devices/system/cpu/intel_pstate/"
        "no_turbo (or echo 0 > /sys/devices/system/cpu/cpufreq/boost)",
    )


def _cpu_mhz(mhz: float | None) -> Check:
    name = "CPU clock"
    if mhz is None:
        return _unknown(name, "neither cpufreq nor /proc/cpuinfo reports a clock")
    return Check(name, f"{mhz:.0f} MHz (average of the allowed CPUs)", "info")


def _torch_threads(state: SystemState) -> Check:
    name = "torch threads"
    threads, allowed, load = state.threads.torch_threads, state.allowed, state.load
    if threads is None:
        return _unknown(name, "torch.get_num_threads() could not be read")
    value = f"{threads} for {allowed} allowed CPUs"
    if threads > allowed:
        return Check(
            name, value, "warn",
            "more threads than CPUs: threads wait for each other at every parallel region; "
            f"set measure.threads (or torch.set_num_threads) to at most {allowed}",
        )
    if load is not None and threads > load.free:
        return Check(
            name, value, "info",
            f"only {load.free} CPUs are free now; measure.threads: auto would use {load.free}",
        )
    if threads < allowed:
        return Check(name, value, "info", f"uses {threads} of {allowed} CPUs (fine if on purpose)")
    return Check(name, value, "ok")


def _thread_env(state: SystemState) -> Check:
    name = "thread variables"
    t = state.threads
    shown = [
        f"{var}={val}" if val is not None else f"{var} unset"
        for var, val in (("OMP_NUM_THREADS", t.omp_num_threads),
                         ("MKL_NUM_THREADS", t.mkl_num_threads))
    ]
    value = ", ".join(shown)
    if t.omp_num_threads is None and t.mkl_num_threads is None:
        return Check(
            name, value, "info",
            "torch uses one thread per allowed CPU, so the thread count (and the timings) "
            "change from machine to machine; set OMP_NUM_THREADS or measure.threads to "
            "compare machines",
        )
    omp = t.omp_num_threads
    if omp is not None and not (omp.strip().isdigit() and int(omp) > 0):
        return Check(name, value, "warn", f"OMP_NUM_THREADS={omp!r} is not a positive integer")
    if omp is not None and t.torch_threads is not None and int(omp) != t.torch_threads:
        return Check(
            name, value, "info",
            f"torch uses {t.torch_threads} threads, not OMP_NUM_THREADS={omp} "
            "(torch.set_num_threads or measure.threads overrides it)",
        )
    return Check(name, value, "ok")


def _gpu(state: SystemState) -> list[Check]:
    gpu, device = state.gpu, state.device
    if gpu is None:
        return [_unknown("GPU (NVML)", "NVML is not available (nvidia-ml-py missing, no "
                         "driver, or the device is unknown): GPU clocks, persistence mode and "
                         "other processes are unchecked")]
    out = [_gpu_clocks(gpu.sm_clock_mhz, gpu.sm_clock_max_mhz, gpu.mem_clock_mhz,
                       gpu.mem_clock_max_mhz, gpu.clock_reasons)]
    if gpu.persistence_mode is None:
        out.append(_unknown("GPU persistence mode", "NVML does not report it for this device"))
    elif gpu.persistence_mode:
        out.append(Check("GPU persistence mode", "on", "ok"))
    else:
        out.append(Check(
            "GPU persistence mode", "off", "info",
            "the driver sets the GPU up again for each process (a slow first call, clocks "
            "start low); sudo nvidia-smi -pm 1 keeps it ready",
        ))
    others = gpu.other_processes
    if others is None:
        out.append(_unknown("GPU processes", "NVML cannot list processes here (e.g. inside a "
                            "container)"))
    elif others:
        pids = " ".join(str(p) for p in others)
        out.append(Check(
            "GPU processes", f"{len(others)} other (pid {pids})", "warn",
            f"{len(others)} other process(es) hold a context on {device}; they share its SMs "
            "and memory bandwidth and timings will be disturbed: stop them or use another GPU",
        ))
    else:
        out.append(Check("GPU processes", "none other", "ok"))
    if gpu.temperature_c is None:
        out.append(_unknown("GPU temperature", "NVML does not report it for this device"))
    else:
        out.append(Check("GPU temperature", f"{gpu.temperature_c} C", "info"))
    return out


def _gpu_clocks(
    sm: int | None, sm_max: int | None, mem: int | None, mem_max: int | None,
    reasons: tuple[str, ...] | None,
) -> Check:
    name = "GPU clocks"
    if sm is None or sm_max is None:
        return _unknown(name, "NVML does not report SM clocks for this device")
    value = f"SM {sm}/{sm_max} MHz"
    if mem is not None and mem_max is not None:
        value += f", memory {mem}/{mem_max} MHz"
    if reasons:
        value += f" ({', '.join(reasons)})"
    held = sorted(THROTTLE_REASONS.intersection(reasons or ()))
    if held:
        return Check(
            name, value, "warn",
            f"clocks held down by {', '.join(held)}: timings run slow and drift; check cooling "
            "and the power limit (nvidia-smi -q -d PERFORMANCE)",
        )
    if sm < sm_max or (mem is not None and mem_max is not None and mem < mem_max):
        return Check(
            name, value, "info",
            "below maximum (an idle GPU clocks down; clocks ramp up under load and warm-up "
            "absorbs it); for steadier timings lock them: sudo nvidia-smi --lock-gpu-clocks=MHz",
        )
    return Check(name, value, "ok")


def summary_line(
    device: str, load: CpuLoad | None = None, *, state: SystemState | None = None
) -> str:
    """One line on the machine for the start of ``harness run``.

    ``load`` reuses a CpuLoad already sampled (None: sample one now); ``state`` replaces
    every reading (tests).
    """
    resolved, problem = _resolve(device)
    if state is None:
        state = snapshot(resolved, load=load)
    verdicts = judge(state, device_problem=problem)
    la = state.load_average
    parts = [f"load {la[0]:.2f}" if la else f"load {UNKNOWN}"]
    parts[0] += f" on {state.allowed} CPUs"
    if state.load is not None:
        parts[0] += f", {state.load.free} free"
    governors = sorted(set((state.governors or {}).values()))
    parts.append("governor " + (", ".join(governors) if governors else UNKNOWN))
    threads = state.threads.torch_threads
    parts.append(f"torch threads {threads if threads is not None else UNKNOWN}")
    if state.device.startswith("cuda"):
        gpu = state.gpu
        if gpu is None:
            parts.append(f"GPU {UNKNOWN}")
        else:
            clocks = (f"SM {gpu.sm_clock_mhz}/{gpu.sm_clock_max_mhz} MHz"
                      if gpu.sm_clock_mhz is not None else f"clocks {UNKNOWN}")
            others = gpu.other_processes
            who = f"{len(others)} other processes" if others is not None else f"processes {UNKNOWN}"
            parts.append(f"GPU {clocks}, {who}")
    line = "doctor: " + "; ".join(parts)
    warned = [_SHORT.get(c.name, c.name) for c in verdicts if c.status == "warn"]
    if warned:
        line += f" (warn: {', '.join(dict.fromkeys(warned))}; see 'harness doctor')"
    return line


def render(verdicts: Sequence[Check], width: int = 100) -> str:
    """A plain aligned table: check, status, value, with advice wrapped under its value."""
    head, rule, *body = tabulate([(c.name, c.status, c.value) for c in verdicts],
                                 ("check", "status", "value"), disable_numparse=True).splitlines()
    indent = " " * (rule.rindex(" ") + 1)  # advice starts under the value column
    out = [head, rule]
    for check, row in zip(verdicts, body, strict=True):
        out.append(row)
        if check.advice and check.status != "ok":
            out += textwrap.wrap(
                check.advice, width=max(40, width), initial_indent=f"{indent}-> ",
                subsequent_indent=f"{indent}   ", break_on_hyphens=False,
            )
    warns = sum(c.status == "warn" for c in verdicts)
    out.append("")
    out.append(
        f"{warns} warning(s): timings taken now may be disturbed" if warns
        else "no warnings"
    )
    return "\n".join(out)


def as_json(verdicts: Sequence[Check]) -> str:
    """The checks as a JSON list of {name, value, status, advice}."""
    return json.dumps([dataclasses.asdict(c) for c in verdicts], indent=2)
