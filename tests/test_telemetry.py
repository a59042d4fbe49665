"""Per-case telemetry: scripted /proc and /sys files and a fake NVML, read before and after.

Every reader is injected; a "phase" switch moves the fakes from their start values to their
stop values, so each column is checked against a known difference.
"""

from __future__ import annotations

import os
import sys
import types

import fakes
import pytest
import torch

from harness.measure.system import busy_jiffies, cpu_mhz, throttle_names
from harness.measure.telemetry import TELEMETRY_COLUMNS, CaseTelemetry, telemetry_note

GPU_COLUMNS = (*(c for c in TELEMETRY_COLUMNS if c.startswith("gpu_")), "energy_j_per_call")
CPU_COLUMNS = tuple(c for c in TELEMETRY_COLUMNS if c not in GPU_COLUMNS)
OUR_PID, RUNNER_PID = 4242, 4000

# /proc/stat: cpuN user nice system idle iowait irq softirq steal guest guest_nice
STAT_START = """\
cpu  9999 0 9999 9999 0 0 0 0 0 0
cpu0 1000 10 200 5000 50 5 5 0 300 0
cpu1 500 0 100 6000 0 0 0 0 0 0
cpu2 100 0 0 9000 0 0 0 0 0 0
intr 1 2 3
"""
# cpu0: +150 user (+100 of it guest, not counted twice) +20 system +10 steal = 180 ticks;
# cpu1: +170 user = 170 ticks; cpu2 is outside the affinity mask: its +900 must not count.
STAT_STOP = """\
cpu  9999 0 9999 9999 0 0 0 0 0 0
cpu0 1150 10 220 5000 80 5 5 10 400 0
cpu1 670 0 100 6000 0 0 0 0 0 0
cpu2 1000 0 0 9000 0 0 0 0 0 0
intr 1 2 3
"""
CPUINFO = """\
processor\t: 0
cpu MHz\t\t: 2600.5

processor\t: 1
cpu MHz\t\t: 2400.5

processor\t: 2
cpu MHz\t\t: 9999.0
"""


class Phases:
    """Values that change from the start snapshot (phase 0) to the stop one (phase 1)."""

    def __init__(self) -> None:
        self.phase = 0

    def pick(self, pair: tuple[object, object]) -> object:
        return pair[self.phase]


class FakeFiles:
    """``read(path)``: per-phase texts; a missing path raises FileNotFoundError like a real one."""

    def __init__(self, phases: Phases, files: dict[str, tuple[str, str]]) -> None:
        self.phases, self.files = phases, files

    def __call__(self, path: str) -> str:
        if path not in self.files:
            raise FileNotFoundError(path)
        return str(self.phases.pick(self.files[path]))


def _proc(pid: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(pid=pid, usedGpuMemory=1 << 20)


#: NVML query -> (start value, stop value), in NVML's units (MHz, C, mW, mJ, bitmask).
NVML_VALUES: dict[str, tuple[object, object]] = {
    "sm": (1980, 1410),
    "mem": (2619, 2619),
    "temp": (45, 83),
    "power": (120_500, 690_000),
    "reasons": (0x1, 0x20 | 0x4 | 0x2),  # idle at start; thermal + power cap (+ app clocks)
    "processes": ([_proc(OUR_PID)], [_proc(OUR_PID), _proc(RUNNER_PID), _proc(7), _proc(8)]),
    "energy": (1_000_000, 1_050_000),
}


def fake_nvml(phases: Phases, *, unsupported: tuple[str, ...] = (), init_fails: bool = False,
              values: dict[str, tuple[object, object]] | None = None) -> types.ModuleType:
    """A pynvml stand-in: the functions CaseTelemetry uses, answering by phase."""
    table = {**NVML_VALUES, **(values or {})}
    clocks = {1: "sm", 2: "mem"}
    return fakes.fake_nvml({
        "nvmlDeviceGetHandleByUUID": lambda uuid: "handle",
        "nvmlDeviceGetHandleByIndex": lambda index: "handle",
        "nvmlDeviceGetClockInfo": lambda h, kind: phases.pick(table[clocks[kind]]),
        "nvmlDeviceGetTemperature": lambda h, sensor: phases.pick(table["temp"]),
        "nvmlDeviceGetPowerUsage": lambda h: phases.pick(table["power"]),
        "nvmlDeviceGetCurrentClocksEventReasons": lambda h: phases.pick(table["reasons"]),
        "nvmlDeviceGetCurrentClocksThrottleReasons": lambda h: phases.pick(table["reasons"]),
        "nvmlDeviceGetComputeRunningProcesses": lambda h: phases.pick(table["processes"]),
        "nvmlDeviceGetTotalEnergyConsumption": lambda h: phases.pick(table["energy"]),
    }, unsupported=unsupported, init_fails=init_fails)


def telemetry(device: str, phases: Phases, *, nvml: object = None,
              files: dict[str, tuple[str, str]] | None = None,
              cuda_context: bool = True) -> CaseTelemetry:
    """A CaseTelemetry whose every reader follows ``phases``: 2 s wall, 1.5 s of own CPU."""
    if files is None:
        files = {"/proc/stat": (STAT_START, STAT_STOP), "/proc/cpuinfo": (CPUINFO, CPUINFO)}
    return CaseTelemetry(
        device,
        nvml=nvml,
        read=FakeFiles(phases, files),
        loadavg=lambda: (phases.pick((0.5, 1.75)), 9.0, 9.0),
        clock=lambda: phases.pick((10.0, 12.0)),
        process_cpu=lambda: phases.pick((1.0, 2.5)),
        cpus=lambda: {0, 1},
        pids=(OUR_PID, RUNNER_PID),
        ticks_per_s=100,
        cuda_context=lambda: cuda_context,
    )


def run(t: CaseTelemetry, phases: Phases, calls: int | None = 100) -> dict[str, object]:
    t.start()
    phases.phase = 1
    return t.stop(calls=calls)


# --- columns -----------------------------------------------------------------------------


def test_every_telemetry_column_is_returned_in_order() -> None:
    for device in ("cpu", "cuda"):
        phases = Phases()
        assert tuple(run(telemetry(device, phases, nvml=fake_nvml(phases)), phases)) == (
            TELEMETRY_COLUMNS
        )
    assert tuple(CaseTelemetry("cpu").stop()) == TELEMETRY_COLUMNS  # no start: all None
    assert all(v is None for v in CaseTelemetry("cpu").stop().values())


def test_cpu_columns_from_scripted_files() -> None:
    phases = Phases()
    files = {
        "/proc/stat": (STAT_START, STAT_STOP),
        "/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": ("2000000\n", "1000000\n"),
        "/sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq": ("3000000\n", "3000000\n"),
        "/sys/devices/system/cpu/cpu2/cpufreq/scaling_cur_freq": ("100000\n", "100000\n"),
    }
    row = run(telemetry("cpu", phases, files=files), phases)
    assert row["env_loadavg_before"] == 0.5 and row["env_loadavg_after"] == 1.75
    assert row["env_cpu_mhz_before"] == 2500.0  # kHz -> MHz, mean over cpu0 and cpu1 only
    assert row["env_cpu_mhz_after"] == 2000.0
    # busy: (180 + 170) ticks / 100 Hz = 3.5 CPU-s; ours 1.5 s; others 2.0 CPU-s over 2 s
    assert row["cpu_others_busy"] == pytest.approx(1.0)


def test_cpu_mhz_falls_back_to_cpuinfo() -> None:
    read = FakeFiles(Phases(), {"/proc/cpuinfo": (CPUINFO, CPUINFO)})
    assert cpu_mhz(read, {0, 1}) == pytest.approx(2500.5)
    assert cpu_mhz(read, {7}) == pytest.approx((2600.5 + 2400.5 + 9999.0) / 3)  # no numbers
    assert cpu_mhz(FakeFiles(Phases(), {}), {0}) is None


def test_others_busy_is_clamped_and_none_when_unreadable() -> None:
    assert busy_jiffies(STAT_START, {0, 1}) == {0: 1220, 1: 600}
    assert busy_jiffies("intr 1 2\n", {0}) is None
    phases = Phases()
    t = telemetry("cpu", phases)
    t._process_cpu = lambda: phases.pick((0.0, 100.0))  # we used more than the CPUs did
    assert run(t, phases)["cpu_others_busy"] == 0.0
    phases = Phases()
    no_stat = run(telemetry("cpu", phases, files={}), phases)  # not Linux
    assert no_stat["cpu_others_busy"] is None
    assert no_stat["env_cpu_mhz_before"] is None
    phases = Phases()
    short = telemetry("cpu", phases)
    short._clock = lambda: phases.pick((10.0, 10.01))  # one tick would be 1 CPU: not judged
    assert run(short, phases)["cpu_others_busy"] is None


def test_loadavg_unavailable_is_none() -> None:
    def fail() -> tuple[float, float, float]:
        raise OSError("no load average here")

    phases = Phases()
    t = telemetry("cpu", phases)
    t._loadavg = fail
    row = run(t, phases)
    assert row["env_loadavg_before"] is None and row["env_loadavg_after"] is None


# --- GPU ---------------------------------------------------------------------------------


def test_gpu_columns_from_a_fake_nvml() -> None:
    phases = Phases()
    nvml = fake_nvml(phases)
    row = run(telemetry("cuda:0", phases, nvml=nvml), phases, calls=100)
    assert (row["gpu_sm_clock_mhz_before"], row["gpu_sm_clock_mhz_after"]) == (1980, 1410)
    assert (row["gpu_mem_clock_mhz_before"], row["gpu_mem_clock_mhz_after"]) == (2619, 2619)
    assert (row["gpu_temperature_c_before"], row["gpu_temperature_c_after"]) == (45, 83)
    assert (row["gpu_power_w_before"], row["gpu_power_w_after"]) == (120.5, 690.0)  # mW -> W
    assert row["gpu_energy_j"] == pytest.approx(50.0)  # mJ -> J
    assert row["energy_j_per_call"] == pytest.approx(0.5)
    # idle and applications clocks ignored; reasons from start and stop together, bit order
    assert row["gpu_throttle_reasons"] == "sw_power_cap,sw_thermal_slowdown"
    assert row["gpu_other_processes"] == 2  # 7 and 8; ours and our runner's are not counted
    assert nvml.calls.count("nvmlInit") == 1 and nvml.calls.count("nvmlShutdown") == 1
    assert nvml.calls[-1] == "nvmlShutdown"


def test_energy_per_call_needs_calls() -> None:
    for calls in (None, 0):
        phases = Phases()
        row = run(telemetry("cuda", phases, nvml=fake_nvml(phases)), phases, calls=calls)
        assert row["gpu_energy_j"] == pytest.approx(50.0)
        assert row["energy_j_per_call"] is None
    phases = Phases()  # a counter that went backwards (driver reload) is not an energy
    nvml = fake_nvml(phases, values={"energy": (5_000, 1_000)})
    row = run(telemetry("cuda", phases, nvml=nvml), phases)
    assert row["gpu_energy_j"] is None and row["energy_j_per_call"] is None


def test_old_nvml_throttle_reasons_and_none_active() -> None:
    phases = Phases()
    nvml = fake_nvml(phases, values={"reasons": (0x40, 0x0)})
    del nvml.nvmlDeviceGetCurrentClocksEventReasons  # nvidia-ml-py before 12.535
    row = run(telemetry("cuda", phases, nvml=nvml), phases)
    assert row["gpu_throttle_reasons"] == "hw_thermal_slowdown"
    phases = Phases()
    quiet = fake_nvml(phases, values={"reasons": (0x1, 0x2)})
    assert run(telemetry("cuda", phases, nvml=quiet), phases)["gpu_throttle_reasons"] is None


def test_throttle_names() -> None:
    assert throttle_names(0) is None
    assert throttle_names(0x1 | 0x2) is None
    assert throttle_names(0x8 | 0x80) == "hw_slowdown,hw_power_brake_slowdown"
    assert throttle_names(0x20 | 0x1000) == "sw_thermal_slowdown,0x1000"  # unknown bit shown


def test_other_processes_when_nvml_lists_host_pids() -> None:
    """In a container NVML lists host pids: our process is then one of the unknown pids."""
    listed = {"processes": ([_proc(1001)], [_proc(1001), _proc(1002)])}
    phases = Phases()
    ours = run(telemetry("cuda", phases, nvml=fake_nvml(phases, values=listed)), phases)
    assert ours["gpu_other_processes"] == 1  # max(0, 1)
    phases = Phases()
    t = telemetry("cuda", phases, nvml=fake_nvml(phases, values=listed), cuda_context=False)
    assert run(t, phases)["gpu_other_processes"] == 2  # no CUDA context here: none is ours


def test_default_own_processes_are_this_one_and_its_parent() -> None:
    """A worker's runner (its parent) may hold a CUDA context too: that is not contention."""
    phases = Phases()
    listed = [_proc(os.getpid()), _proc(os.getppid()), _proc(1)]
    nvml = fake_nvml(phases, values={"processes": (listed, listed)})
    t = CaseTelemetry("cuda", nvml=nvml)
    t.start()
    assert t.stop()["gpu_other_processes"] == 1


def test_unsupported_queries_are_none_one_by_one() -> None:
    phases = Phases()
    nvml = fake_nvml(phases, unsupported=(
        "nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons",
        "nvmlDeviceGetComputeRunningProcesses",
    ))
    row = run(telemetry("cuda", phases, nvml=nvml), phases)
    for column in ("gpu_power_w_before", "gpu_power_w_after", "gpu_energy_j",
                   "energy_j_per_call", "gpu_throttle_reasons", "gpu_other_processes"):
        assert row[column] is None, column
    assert row["gpu_sm_clock_mhz_after"] == 1410  # the supported ones still land
    assert row["gpu_temperature_c_after"] == 83


@pytest.mark.parametrize(
    "unsupported, init_fails",
    [((), True), (("nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByUUID"), False)],
)
def test_no_nvml_device_leaves_gpu_columns_none(
    unsupported: tuple[str, ...], init_fails: bool
) -> None:
    phases = Phases()
    nvml = fake_nvml(phases, unsupported=unsupported, init_fails=init_fails)
    row = run(telemetry("cuda", phases, nvml=nvml), phases)
    assert all(row[c] is None for c in GPU_COLUMNS)
    assert row["env_loadavg_after"] == 1.75  # the CPU side is unaffected
    assert nvml.calls.count("nvmlShutdown") == (0 if init_fails else 1)


def test_cpu_device_never_touches_nvml() -> None:
    phases = Phases()
    nvml = fake_nvml(phases)
    row = run(telemetry("cpu", phases, nvml=nvml), phases)
    assert all(row[c] is None for c in GPU_COLUMNS)
    assert all(row[c] is not None for c in CPU_COLUMNS)
    assert nvml.calls == []


def test_cuda_without_pynvml_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    phases = Phases()
    row = run(telemetry("cuda", phases), phases)
    assert all(row[c] is None for c in GPU_COLUMNS)
    assert row["cpu_others_busy"] == pytest.approx(1.0)


def test_close_after_an_abandoned_case_shuts_nvml_down() -> None:
    phases = Phases()
    nvml = fake_nvml(phases)
    t = telemetry("cuda", phases, nvml=nvml)
    t.start()
    t.start()  # a second start re-initialises instead of leaking a session
    t.close()
    t.close()
    assert nvml.calls.count("nvmlInit") == 2 and nvml.calls.count("nvmlShutdown") == 2


# --- note --------------------------------------------------------------------------------


def test_note_names_what_is_wrong() -> None:
    phases = Phases()
    row = run(telemetry("cuda", phases, nvml=fake_nvml(phases)), phases)
    assert telemetry_note(row) == (
        "GPU throttled (sw_thermal_slowdown); 2 other processes on the GPU; "
        "SM clock fell from 1980 to 1410 MHz"
    )
    assert telemetry_note({"gpu_other_processes": 1}) == "1 other process on the GPU"
    assert telemetry_note({"gpu_throttle_reasons": "hw_slowdown,sync_boost"}) == (
        "GPU throttled (hw_slowdown, sync_boost)"
    )


def test_note_is_none_when_nothing_is_wrong() -> None:
    assert telemetry_note(dict.fromkeys(TELEMETRY_COLUMNS)) is None
    assert telemetry_note({}) is None
    assert telemetry_note({"cpu_others_busy": 1.9}) is None  # judged by the scheduler instead
    assert telemetry_note({"gpu_throttle_reasons": "sw_power_cap"}) is None  # steady state
    assert telemetry_note({"gpu_other_processes": 0}) is None
    assert telemetry_note({"gpu_other_processes": float("nan")}) is None  # read back as NaN
    # a fall of 10 % or less is normal boost variation; a rise is not a problem
    assert telemetry_note({"gpu_sm_clock_mhz_before": 1980, "gpu_sm_clock_mhz_after": 1785}) is None
    assert telemetry_note({"gpu_sm_clock_mhz_before": 345, "gpu_sm_clock_mhz_after": 1980}) is None
    assert telemetry_note({"gpu_sm_clock_mhz_before": 1980, "gpu_sm_clock_mhz_after": 1780}) == (
        "SM clock fell from 1980 to 1780 MHz"
    )


# --- a real device -----------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_gpu_telemetry() -> None:
    a = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    t = CaseTelemetry("cuda")
    t.start()
    for _ in range(200):
        a = (a @ a).clamp_(-1, 1)
    torch.cuda.synchronize()
    row = t.stop(calls=200)
    print({k: v for k, v in row.items() if v is not None})
    assert row["gpu_sm_clock_mhz_after"] and row["gpu_sm_clock_mhz_after"] > 0
    assert row["gpu_temperature_c_after"] is not None
    assert row["gpu_power_w_after"] is not None and row["gpu_power_w_after"] > 0
    assert isinstance(row["gpu_other_processes"], int)
    if row["gpu_energy_j"] is not None:  # Volta and newer keep an energy counter
        assert row["gpu_energy_j"] >= 0
        assert row["energy_j_per_call"] == pytest.approx(row["gpu_energy_j"] / 200)
