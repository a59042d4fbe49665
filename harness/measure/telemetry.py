"""Per-case telemetry: what can change between one case and the next, read around its timing.

The sweep-wide environment record (``env.py``) is taken once; load, CPU frequency, GPU
clocks, temperature, power, throttling and other GPU users drift while a sweep runs. A
:class:`CaseTelemetry` reads them just before and just after one case's timed calls, so a
throttled or shared machine shows in that case's row, and the GPU's energy counter gives
the energy per call. Every reader is injected (files, load average, clocks, NVML), so tests
script them; an unreadable value is None, never an exception.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from harness import schema
from harness.measure.env import nvml_session
from harness.measure.system import (
    PROC_STAT,
    allowed_cpus,
    busy_jiffies,
    cpu_mhz,
    read_clock_reasons,
    read_text,
    throttle_names,
)
from harness.values import number

#: Every column :meth:`CaseTelemetry.stop` returns, in order (None when unknown).
TELEMETRY_COLUMNS = schema.column_names("telemetry")

#: Active reasons that do not make :func:`telemetry_note` distrust a time: a card under a
#: heavy kernel routinely runs at its power cap, which is its steady state, not a disturbance
#: (a clock that falls by more than :data:`CLOCK_FALL` is still flagged).
NOTE_IGNORES_REASONS = frozenset({"sw_power_cap"})

#: A relative SM clock drop between start and stop larger than this is flagged.
CLOCK_FALL = 0.10

#: ``cpu_others_busy`` needs a window of at least this many clock ticks (0.1 s at 100 Hz):
#: /proc/stat counts whole ticks per CPU, so a shorter window is mostly rounding.
MIN_WINDOW_TICKS = 10

def _ticks_per_s() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, OSError, ValueError):
        return 100.0


@dataclass
class _Snapshot:
    """One reading of everything; None where a reader failed."""

    wall_s: float
    process_cpu_s: float
    loadavg: float | None = None
    cpu_mhz: float | None = None
    busy_jiffies: dict[int, int] | None = None
    gpu: dict[str, Any] = field(default_factory=dict)


class CaseTelemetry:
    """Reads CPU and GPU state before (:meth:`start`) and after (:meth:`stop`) one case.

    ``device`` is the case's torch device string; NVML is used only for ``cuda`` devices.
    ``nvml`` is the ``pynvml`` module or a stand-in (default: imported, if installed).
    ``read(path) -> text`` reads /proc and /sys files (raises OSError when absent).
    ``pids`` are the processes counted as this measurement's own on the GPU (default: this
    one and its parent, the sweep that spawned this worker); ``cpus``, ``ticks_per_s`` and
    ``cuda_context`` exist for tests.
    NVML is initialised in :meth:`start` and shut down in :meth:`stop` (or :meth:`close`).
    """

    def __init__(
        self,
        device: str,
        *,
        nvml: Any = None,
        read: Callable[[str], str] = read_text,
        loadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
        clock: Callable[[], float] = time.perf_counter,
        process_cpu: Callable[[], float] = time.process_time,
        cpus: Callable[[], Collection[int]] = allowed_cpus,
        pids: Collection[int] | None = None,
        ticks_per_s: float | None = None,
        cuda_context: Callable[[], bool] = torch.cuda.is_initialized,
    ) -> None:
        self.device = torch.device(device)
        self._nvml_module = nvml
        self._read = read
        self._loadavg = loadavg
        self._clock = clock
        self._process_cpu = process_cpu
        self._cpus_of = cpus
        self._pids = frozenset((os.getpid(), os.getppid()) if pids is None else pids)
        self._ticks = _ticks_per_s() if ticks_per_s is None else float(ticks_per_s)
        self._cuda_context = cuda_context
        self._cpus: frozenset[int] = frozenset()
        self._nvml: Any = None  # (module, handle, query) while NVML is open for a case
        self._session = contextlib.ExitStack()
        self._before: _Snapshot | None = None

    # -- public -------------------------------------------------------------------------

    def start(self) -> None:
        """Snapshot before the timed phase (initialises NVML for a CUDA device)."""
        self.close()
        try:
            self._cpus = frozenset(self._cpus_of())
        except OSError:
            self._cpus = frozenset()
        if self.device.type == "cuda":
            self._open_nvml()
        self._before = self._snapshot(before=True)

    def stop(self, calls: int | None = None) -> dict[str, object]:
        """Snapshot after the timed phase; the columns of :data:`TELEMETRY_COLUMNS`.

        ``calls``: timed calls made since :meth:`start` (warm-up included), for
        ``energy_j_per_call``. Without a :meth:`start` every column is None.
        """
        columns: dict[str, object] = dict.fromkeys(TELEMETRY_COLUMNS)
        before, self._before = self._before, None
        if before is None:
            self.close()
            return columns
        try:
            after = self._snapshot(before=False)
        finally:
            self.close()
        columns.update(
            env_loadavg_before=before.loadavg,
            env_loadavg_after=after.loadavg,
            env_cpu_mhz_before=before.cpu_mhz,
            env_cpu_mhz_after=after.cpu_mhz,
            cpu_others_busy=self._others_busy(before, after),
        )
        columns.update(_gpu_columns(before.gpu, after.gpu, calls))
        return columns

    def close(self) -> None:
        """Shut NVML down if :meth:`start` initialised it (idempotent; :meth:`stop` calls it)."""
        self._nvml = None
        self._session.close()

    # -- snapshots ----------------------------------------------------------------------

    def _snapshot(self, *, before: bool) -> _Snapshot:
        """The counters (wall, own CPU time, /proc/stat, GPU energy) sit next to the timed
        phase - read last before it, first after it - so the work of reading the rest
        (NVML, cpuinfo) stays out of the window they measure."""
        if before:
            gpu, load, mhz = self._gpu(), self._load(), cpu_mhz(self._read, self._cpus)
            busy = self._stat()
            snap = _Snapshot(wall_s=self._clock(), process_cpu_s=self._process_cpu())
        else:
            snap = _Snapshot(wall_s=self._clock(), process_cpu_s=self._process_cpu())
            busy = self._stat()
            gpu, load, mhz = self._gpu(), self._load(), cpu_mhz(self._read, self._cpus)
        snap.busy_jiffies, snap.gpu, snap.loadavg, snap.cpu_mhz = busy, gpu, load, mhz
        return snap

    def _load(self) -> float | None:
        try:
            return float(self._loadavg()[0])
        except (OSError, IndexError, TypeError, ValueError):
            return None

    def _stat(self) -> dict[int, int] | None:
        try:
            text = self._read(PROC_STAT)
        except OSError:
            return None
        return busy_jiffies(text, self._cpus)

    def _others_busy(self, before: _Snapshot, after: _Snapshot) -> float | None:
        """Average number of the allowed CPUs other processes kept busy between the snapshots:
        (busy ticks / ticks per second - this process's CPU seconds) / wall seconds, in
        [0, number of CPUs]."""
        if before.busy_jiffies is None or after.busy_jiffies is None:
            return None
        common = before.busy_jiffies.keys() & after.busy_jiffies.keys()
        elapsed = after.wall_s - before.wall_s
        if not common or self._ticks <= 0 or elapsed * self._ticks < MIN_WINDOW_TICKS:
            return None
        busy_s = sum(after.busy_jiffies[c] - before.busy_jiffies[c] for c in common) / self._ticks
        own_s = after.process_cpu_s - before.process_cpu_s
        return min(float(len(common)), max(0.0, (busy_s - own_s) / elapsed))

    # -- NVML ---------------------------------------------------------------------------

    def _open_nvml(self) -> None:
        session = self._session.enter_context(nvml_session(self.device, self._nvml_module))
        if session is not None and session[1] is not None:
            self._nvml = session
        else:
            self.close()

    def _gpu(self) -> dict[str, Any]:
        if self._nvml is None:
            return {}
        nvml, h, ask = self._nvml
        power_mw = ask(lambda: nvml.nvmlDeviceGetPowerUsage(h))
        reasons = read_clock_reasons(nvml, h, ask)
        return {
            "sm": ask(lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)),
            "mem": ask(lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM)),
            "temp": ask(lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
            "power_w": None if power_mw is None else power_mw / 1000,
            "reasons": reasons,
            "others": self._other_processes(
                ask(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(h))
            ),
            "energy_mj": ask(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h)),
        }

    def _other_processes(self, processes: Any) -> int | None:
        """Compute processes on the device other than ours (``pids``).

        In a container NVML reports host pids, so none of ours may be listed under the pid
        we know: then, if this process holds a CUDA context, one listed process is taken
        as this one (a parent holding a context too would count as another).
        """
        if processes is None:
            return None
        try:
            pids = [int(p.pid) for p in processes]
        except (AttributeError, TypeError, ValueError):
            return None
        if self._pids.intersection(pids):
            return sum(p not in self._pids for p in pids)
        ours = 1 if pids and _safe_bool(self._cuda_context) else 0
        return len(pids) - ours


def _safe_bool(call: Callable[[], bool]) -> bool:
    try:
        return bool(call())
    except (RuntimeError, AssertionError):
        return False


def _gpu_columns(
    before: Mapping[str, Any], after: Mapping[str, Any], calls: int | None
) -> dict[str, object]:
    energy_j = None
    start_mj, stop_mj = before.get("energy_mj"), after.get("energy_mj")
    if start_mj is not None and stop_mj is not None and stop_mj >= start_mj:
        energy_j = (stop_mj - start_mj) / 1000
    per_call = energy_j / calls if energy_j is not None and calls and calls > 0 else None
    others = [v for v in (before.get("others"), after.get("others")) if v is not None]
    seen = [v for v in (before.get("reasons"), after.get("reasons")) if v is not None]
    mask = 0
    for value in seen:
        mask |= value
    return {
        "gpu_sm_clock_mhz_before": before.get("sm"),
        "gpu_sm_clock_mhz_after": after.get("sm"),
        "gpu_mem_clock_mhz_before": before.get("mem"),
        "gpu_mem_clock_mhz_after": after.get("mem"),
        "gpu_temperature_c_before": before.get("temp"),
        "gpu_temperature_c_after": after.get("temp"),
        "gpu_power_w_before": before.get("power_w"),
        "gpu_power_w_after": after.get("power_w"),
        "gpu_throttle_reasons": throttle_names(mask) if seen else None,
        "gpu_other_processes": max(others) if others else None,
        "gpu_energy_j": energy_j,
        "energy_j_per_call": per_call,
    }


# -- pure parsers and rules (tested directly) ---------------------------------------------


def telemetry_note(columns: Mapping[str, object]) -> str | None:
    """Why the telemetry says a row's times are not to be trusted; None when nothing is wrong.

    Flags active throttle reasons (except :data:`NOTE_IGNORES_REASONS`), other compute
    processes on the GPU, and an SM clock that fell by more than :data:`CLOCK_FALL`.
    CPU contention is judged from the scheduler (``contention.py``), not here.
    """
    notes: list[str] = []
    reasons = columns.get("gpu_throttle_reasons")
    if isinstance(reasons, str):
        bad = [r for r in reasons.split(",") if r and r not in NOTE_IGNORES_REASONS]
        if bad:
            notes.append(f"GPU throttled ({', '.join(bad)})")
    others = number(columns.get("gpu_other_processes"))
    if others is not None and others > 0:
        count = int(others)
        notes.append(f"{count} other {'process' if count == 1 else 'processes'} on the GPU")
    before = number(columns.get("gpu_sm_clock_mhz_before"))
    after = number(columns.get("gpu_sm_clock_mhz_after"))
    if before is not None and after is not None and before > 0 and after < before * (
        1 - CLOCK_FALL
    ):
        notes.append(f"SM clock fell from {before:.0f} to {after:.0f} MHz")
    return "; ".join(notes) or None
