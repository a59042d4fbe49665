"""``harness doctor`` and the system probes behind it, on scripted machines (no timing)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types

import fakes
import pytest

from harness import doctor
from harness.cli import main
from harness.doctor import Check, judge, summary_line
from harness.measure import system
from harness.measure.system import CpuLoad, GpuState, SystemState, ThreadSettings


def files(contents: dict[str, str]):  # type: ignore[no-untyped-def]
    """A ``read(path)`` over a fake file system; missing paths raise FileNotFoundError."""

    def read(path: str) -> str:
        if path not in contents:
            raise FileNotFoundError(path)
        return contents[path]

    return read


def stat_text(*cpus: tuple[int, ...]) -> str:
    """/proc/stat with an aggregate line and one ``cpuN`` line per tuple of jiffies."""
    lines = ["cpu  1 2 3 4 5 6 7 8 0 0"]
    lines += [f"cpu{i} " + " ".join(str(v) for v in fields) for i, fields in enumerate(cpus)]
    lines += ["intr 1 2 3", "ctxt 99", "btime 1700000000"]
    return "\n".join(lines) + "\n"


def two_snapshots(before: str, after: str):  # type: ignore[no-untyped-def]
    texts = iter([before, after])
    return lambda path: next(texts) if path == system.PROC_STAT else files({})(path)


# ---------------------------------------------------------------- cpu_load

def test_cpu_load_busy_fractions_from_two_snapshots() -> None:
    # fields: user nice system idle iowait irq softirq steal guest guest_nice
    before = stat_text((100, 0, 50, 800, 50, 0, 0, 0, 0, 0), (0, 0, 0, 1000, 0, 0, 0, 0, 0, 0))
    # cpu0: +30 user +10 nice +5 system +2 irq +2 softirq +1 steal = 50 busy; +40 idle
    # +10 iowait (idle) -> 50 of 100. guest (+30) is already inside user: not added to total.
    # cpu1: +25 busy (system) of 100.
    after = stat_text(
        (130, 10, 55, 840, 60, 2, 2, 1, 30, 0), (0, 0, 25, 1075, 0, 0, 0, 0, 0, 0)
    )
    slept: list[float] = []
    load = system.cpu_load(
        0.25, read=two_snapshots(before, after), sleep=slept.append, affinity=lambda: {0, 1}
    )
    assert slept == [0.25]
    assert load is not None
    assert load.per_cpu == {0: pytest.approx(0.5), 1: pytest.approx(0.25)}
    assert load.busy == pytest.approx(0.75)
    assert load.allowed == 2
    assert load.free == 1  # 2 - round(0.75)


@pytest.mark.parametrize(
    ("busy_jiffies", "free"),
    [
        ((0, 0, 0, 0), 4),  # quiet
        ((40, 0, 0, 0), 4),  # 0.4 CPU rounds to 0
        ((60, 0, 0, 0), 3),  # 0.6 CPU rounds to 1
        ((100, 100, 100, 0), 1),  # 3 of 4 busy
        ((100, 100, 100, 100), 1),  # all busy: never below 1
    ],
)
def test_cpu_load_free_cores_and_the_clamp(busy_jiffies: tuple[int, ...], free: int) -> None:
    before = stat_text(*[(0, 0, 0, 0, 0, 0, 0, 0)] * 4)
    after = stat_text(*[(b, 0, 0, 100 - b, 0, 0, 0, 0) for b in busy_jiffies])
    load = system.cpu_load(
        read=two_snapshots(before, after), sleep=lambda s: None, affinity=lambda: {0, 1, 2, 3}
    )
    assert load is not None
    assert load.busy == pytest.approx(sum(busy_jiffies) / 100)
    assert load.free == free
    assert 1 <= load.free <= load.allowed


def test_cpu_load_counts_only_the_allowed_cpus() -> None:
    before = stat_text(*[(0, 0, 0, 0)] * 4)
    after = stat_text((0, 0, 0, 100), (100, 0, 0, 0), (100, 0, 0, 0), (100, 0, 0, 0))
    load = system.cpu_load(
        read=two_snapshots(before, after), sleep=lambda s: None, affinity=lambda: {0, 3}
    )
    assert load is not None
    assert load.allowed == 2
    assert load.per_cpu == {0: 0.0, 3: 1.0}
    assert load.free == 1


def test_cpu_load_with_no_ticks_in_the_window_reads_idle() -> None:
    same = stat_text((5, 0, 5, 90), (5, 0, 5, 90))
    load = system.cpu_load(read=two_snapshots(same, same), sleep=lambda s: None,
                           affinity=lambda: {0, 1})
    assert load == CpuLoad(allowed=2, busy=0.0, free=2, per_cpu={0: 0.0, 1: 0.0})


def test_cpu_load_is_none_without_proc_stat() -> None:
    slept: list[float] = []
    assert system.cpu_load(read=files({}), sleep=slept.append, affinity=lambda: {0}) is None
    assert slept == []  # gave up before waiting
    garbage = files({system.PROC_STAT: "cpu0 a b c\n"})
    assert system.cpu_load(read=garbage, sleep=lambda s: None, affinity=lambda: {0}) is None


@pytest.mark.parametrize(("window", "error"), [(0, ValueError), (-1.0, ValueError),
                                               (float("nan"), ValueError), ("0.3", TypeError),
                                               (True, TypeError)])
def test_cpu_load_rejects_a_bad_window(window: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="window_s"):
        system.cpu_load(window, read=files({}), sleep=lambda s: None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- other readers

CPU = system.SYS_CPU


def test_readers_return_none_on_a_machine_without_the_files() -> None:
    empty = files({})
    assert system.cpu_governors(read=empty, affinity=lambda: {0, 1}) is None
    assert system.turbo_enabled(read=empty) is None
    assert system.cpu_mhz(read=empty, affinity=lambda: {0}) is None

    def no_loadavg() -> tuple[float, float, float]:
        raise OSError("no load average here")

    assert system.load_average(no_loadavg) is None
    assert system.load_average(lambda: (1, 0.5, 0.25)) == (1.0, 0.5, 0.25)


def test_governors_of_the_allowed_cpus() -> None:
    read = files({
        f"{CPU}/cpu0/cpufreq/scaling_governor": "performance\n",
        f"{CPU}/cpu1/cpufreq/scaling_governor": "powersave\n",
        f"{CPU}/cpu2/cpufreq/scaling_governor": "ondemand\n",
    })
    assert system.cpu_governors(read=read, affinity=lambda: {0, 1}) == {
        0: "performance", 1: "powersave"}


@pytest.mark.parametrize(
    ("contents", "expected"),
    [
        ({f"{CPU}/intel_pstate/no_turbo": "1\n"}, False),
        ({f"{CPU}/intel_pstate/no_turbo": "0\n"}, True),
        ({f"{CPU}/cpufreq/boost": "1\n"}, True),
        ({f"{CPU}/cpufreq/boost": "0\n"}, False),
        ({f"{CPU}/cpufreq/boost": "maybe\n"}, None),
    ],
)
def test_turbo_state(contents: dict[str, str], expected: bool | None) -> None:
    assert system.turbo_enabled(read=files(contents)) is expected


def test_cpu_mhz_prefers_cpufreq_then_cpuinfo() -> None:
    cpufreq = files({
        f"{CPU}/cpu0/cpufreq/scaling_cur_freq": "2000000\n",  # kHz
        f"{CPU}/cpu1/cpufreq/scaling_cur_freq": "3000000\n",
    })
    assert system.cpu_mhz(read=cpufreq, affinity=lambda: {0, 1}) == pytest.approx(2500.0)
    cpuinfo = files({system.PROC_CPUINFO: (
        "processor\t: 0\ncpu MHz\t\t: 1000.0\n\n"
        "processor\t: 1\ncpu MHz\t\t: 3000.0\n\n"
        "processor\t: 2\ncpu MHz\t\t: 5000.0\n"
    )})
    assert system.cpu_mhz(read=cpuinfo, affinity=lambda: {1, 2}) == pytest.approx(4000.0)


def test_thread_settings_from_torch_and_the_environment() -> None:
    got = system.thread_settings(environ={"OMP_NUM_THREADS": "4"}, torch_threads=lambda: 4)
    assert got == ThreadSettings(torch_threads=4, omp_num_threads="4", mkl_num_threads=None)


def test_snapshot_of_a_scripted_cpu_machine() -> None:
    quiet = stat_text((0, 0, 0, 100), (0, 0, 0, 100))
    state = system.snapshot(
        "cpu", read=two_snapshots(quiet, quiet), sleep=lambda s: None, affinity=lambda: {0, 1},
        getloadavg=lambda: (0.1, 0.2, 0.3), cpu_count=lambda: 2, environ={},
        torch_threads=lambda: 2,
    )
    assert state.allowed == 2 and state.cpus_online == 2
    assert state.load is not None and state.load.free == 2
    assert state.load_average == (0.1, 0.2, 0.3)
    assert state.governors is None and state.turbo is None and state.cpu_mhz is None
    assert state.gpu is None  # no GPU probes for a CPU device


# ---------------------------------------------------------------- NVML

def fake_nvml(*, unsupported: tuple[str, ...] = (), init_fails: bool = False,
              pids: tuple[int, ...] = (), reasons: int = 0x1,
              persistence: int = 1) -> types.ModuleType:
    """A pynvml stand-in with the calls gpu_state makes; ``unsupported`` ones raise."""
    clocks, max_clocks = {1: 1410, 2: 2619}, {1: 1980, 2: 2619}
    return fakes.fake_nvml({
        "nvmlDeviceGetHandleByUUID": "handle",
        "nvmlDeviceGetHandleByIndex": lambda i: f"handle{i}",
        "nvmlDeviceGetClockInfo": lambda h, k: clocks[k],
        "nvmlDeviceGetMaxClockInfo": lambda h, k: max_clocks[k],
        "nvmlDeviceGetCurrentClocksEventReasons": reasons,
        "nvmlDeviceGetCurrentClocksThrottleReasons": reasons,
        "nvmlDeviceGetPersistenceMode": persistence,
        "nvmlDeviceGetComputeRunningProcesses":
            [types.SimpleNamespace(pid=p, usedGpuMemory=2**30) for p in pids],
        "nvmlDeviceGetTemperature": lambda h, s: 47,
    }, unsupported=unsupported, init_fails=init_fails)


def test_gpu_state_from_nvml() -> None:
    fake = fake_nvml(pids=(4242, 77, os.getpid()), reasons=0x1 | 0x20, persistence=0)
    gpu = system.gpu_state("cuda:0", nvml=fake)
    assert gpu == GpuState(
        sm_clock_mhz=1410, sm_clock_max_mhz=1980, mem_clock_mhz=2619, mem_clock_max_mhz=2619,
        clock_reasons=("idle", "software thermal slowdown"), persistence_mode=False,
        other_processes=(77, 4242),  # this process is not "other"
        temperature_c=47,
    )
    assert fake.calls[0] == "nvmlInit" and fake.calls[-1] == "nvmlShutdown"


def test_gpu_state_unsupported_queries_are_none() -> None:
    fake = fake_nvml(unsupported=(
        "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetPersistenceMode",
        "nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetTemperature",
    ), reasons=0x4)
    gpu = system.gpu_state("cuda", nvml=fake)
    assert gpu is not None
    assert gpu.clock_reasons == ("software power cap",)  # from the older throttle-reasons call
    assert gpu.persistence_mode is None
    assert gpu.other_processes is None
    assert gpu.temperature_c is None
    assert gpu.sm_clock_mhz == 1410


def test_gpu_state_is_none_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    assert system.gpu_state("cuda", nvml=fake_nvml(init_fails=True)) is None
    no_handle = fake_nvml(unsupported=("nvmlDeviceGetHandleByUUID",
                                       "nvmlDeviceGetHandleByIndex"))
    assert system.gpu_state("cuda:3", nvml=no_handle) is None
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    assert system.gpu_state("cuda") is None
    with pytest.raises(ValueError, match="CUDA device"):
        system.gpu_state("cpu", nvml=fake_nvml())


# ---------------------------------------------------------------- judging

QUIET = SystemState(
    device="cpu",
    allowed=2,
    cpus_online=2,
    load=CpuLoad(allowed=2, busy=0.03, free=2, per_cpu={0: 0.02, 1: 0.01}),
    load_average=(0.10, 0.20, 0.15),
    governors={0: "performance", 1: "performance"},
    turbo=False,
    cpu_mhz=2600.0,
    threads=ThreadSettings(torch_threads=2, omp_num_threads="2", mkl_num_threads=None),
    gpu=None,
)
BUSY_LOAD = CpuLoad(allowed=2, busy=1.02, free=1, per_cpu={0: 0.02, 1: 1.0})
GPU_OK = GpuState(
    sm_clock_mhz=1980, sm_clock_max_mhz=1980, mem_clock_mhz=2619, mem_clock_max_mhz=2619,
    clock_reasons=(), persistence_mode=True, other_processes=(), temperature_c=40,
)


def by_name(verdicts: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in verdicts}


def test_a_quiet_tuned_machine_is_all_ok() -> None:
    verdicts = by_name(judge(QUIET))
    assert verdicts["free CPUs"].status == "ok"
    assert verdicts["free CPUs"].value.startswith("2 of 2")
    assert [c.name for c in judge(QUIET) if c.status == "warn"] == []
    for name in ("device", "load average", "CPU governor", "turbo", "torch threads",
                 "thread variables"):
        assert verdicts[name].status == "ok", verdicts[name]


def test_torch_compile_without_a_compiler_is_said_with_the_reason() -> None:
    assert by_name(judge(QUIET))["torch.compile"].status == "ok"
    reason = "compile: inductor found no C++ compiler for CPU code; install g++ or set CXX"
    check = by_name(judge(QUIET, compile_problem=reason))["torch.compile"]
    assert (check.value, check.status, check.advice) == ("unavailable", "info", reason)


def test_another_busy_process_warns_with_advice() -> None:
    busy = dataclasses.replace(QUIET, load=BUSY_LOAD, load_average=(1.02, 0.9, 0.5))
    verdicts = by_name(judge(busy))
    free = verdicts["free CPUs"]
    assert free.status == "warn"
    assert free.value.startswith("1 of 2")
    assert "another process is using 1 of 2 CPUs; timings will be disturbed" in free.advice
    assert "measure.threads: auto" in free.advice
    assert verdicts["load average"].status == "info"
    assert verdicts["torch threads"].status == "info"  # 2 threads, 1 free CPU
    saturated = dataclasses.replace(busy, load_average=(2.5, 2.0, 1.0))
    assert by_name(judge(saturated))["load average"].status == "warn"


def test_load_average_is_only_info_under_a_restricted_affinity() -> None:
    pinned = dataclasses.replace(QUIET, cpus_online=64, load_average=(30.0, 30.0, 30.0))
    check = by_name(judge(pinned))["load average"]
    assert check.status == "info"
    assert "64" in check.advice


def test_cpu_settings_that_vary_the_clock_are_info() -> None:
    state = dataclasses.replace(QUIET, governors={0: "powersave", 1: "performance"},
                                turbo=True)
    verdicts = by_name(judge(state))
    assert verdicts["CPU governor"].status == "info"
    assert verdicts["CPU governor"].value == "mixed: performance, powersave"
    assert verdicts["turbo"].status == "info"
    assert "turbo makes clocks vary with temperature" in verdicts["turbo"].advice


@pytest.mark.parametrize(
    ("threads", "status"),
    [
        (ThreadSettings(4, None, None), "warn"),  # more threads than CPUs
        (ThreadSettings(1, "1", None), "info"),  # fewer: fine if on purpose
        (ThreadSettings(2, "2", None), "ok"),
    ],
)
def test_torch_threads_vs_allowed_cpus(threads: ThreadSettings, status: str) -> None:
    check = by_name(judge(dataclasses.replace(QUIET, threads=threads)))["torch threads"]
    assert check.status == status


@pytest.mark.parametrize(
    ("threads", "status"),
    [
        (ThreadSettings(2, None, None), "info"),  # unset
        (ThreadSettings(2, "2", None), "ok"),
        (ThreadSettings(2, None, "2"), "ok"),
        (ThreadSettings(2, "4", None), "info"),  # torch overrides it
        (ThreadSettings(2, "lots", None), "warn"),
    ],
)
def test_thread_variables(threads: ThreadSettings, status: str) -> None:
    check = by_name(judge(dataclasses.replace(QUIET, threads=threads)))["thread variables"]
    assert check.status == status


def test_what_cannot_be_read_is_unknown_info_and_never_fails() -> None:
    blind = SystemState(
        device="cuda", allowed=1, cpus_online=None, load=None, load_average=None,
        governors=None, turbo=None, cpu_mhz=None,
        threads=ThreadSettings(None, None, None), gpu=None,
    )
    verdicts = judge(blind)
    unknown = [c for c in verdicts if c.value == "unknown"]
    assert {c.name for c in unknown} == {
        "load average", "free CPUs", "CPU governor", "turbo", "CPU clock", "torch threads",
        "GPU (NVML)",
    }
    assert all(c.status == "info" and c.advice for c in unknown)
    blind_gpu = dataclasses.replace(blind, gpu=GpuState(*[None] * 8))
    gpu_checks = [c for c in judge(blind_gpu) if c.name.startswith("GPU")]
    assert len(gpu_checks) == 4
    assert all(c.value == "unknown" and c.status == "info" for c in gpu_checks)


def test_gpu_checks() -> None:
    on_gpu = dataclasses.replace(QUIET, device="cuda:0", gpu=GPU_OK)
    verdicts = by_name(judge(on_gpu))
    for name in ("GPU clocks", "GPU persistence mode", "GPU processes"):
        assert verdicts[name].status == "ok", verdicts[name]
    assert verdicts["GPU temperature"].value == "40 C"

    idle = dataclasses.replace(GPU_OK, sm_clock_mhz=345, clock_reasons=("idle",),
                               persistence_mode=False, other_processes=(999, 1001))
    verdicts = by_name(judge(dataclasses.replace(on_gpu, gpu=idle)))
    assert verdicts["GPU clocks"].status == "info"
    assert verdicts["GPU clocks"].value.startswith("SM 345/1980 MHz")
    assert verdicts["GPU persistence mode"].status == "info"
    procs = verdicts["GPU processes"]
    assert procs.status == "warn"
    assert "999 1001" in procs.value and "cuda:0" in procs.advice

    hot = dataclasses.replace(GPU_OK, sm_clock_mhz=1200,
                              clock_reasons=("hardware thermal slowdown",))
    clocks = by_name(judge(dataclasses.replace(on_gpu, gpu=hot)))["GPU clocks"]
    assert clocks.status == "warn"
    assert "hardware thermal slowdown" in clocks.advice


def test_a_missing_device_warns() -> None:
    check = judge(QUIET, device_problem="is not available: no CUDA")[0]
    assert (check.name, check.status) == ("device", "warn")


def test_check_status_is_validated() -> None:
    with pytest.raises(ValueError, match="status"):
        Check("x", "y", "error")


# ---------------------------------------------------------------- summary, table, CLI

def test_summary_line_on_a_busy_machine() -> None:
    state = dataclasses.replace(
        QUIET, load=BUSY_LOAD, load_average=(1.02, 0.9, 0.5), governors=None,
        threads=ThreadSettings(2, None, None),
    )
    assert summary_line("cpu", state=state) == (
        "doctor: load 1.02 on 2 CPUs, 1 free; governor unknown; torch threads 2 "
        "(warn: another process is busy; see 'harness doctor')"
    )


def test_summary_line_on_a_quiet_gpu_machine() -> None:
    state = dataclasses.replace(QUIET, device="cuda:0", gpu=GPU_OK)
    line = summary_line("cpu", state=state)
    assert line == ("doctor: load 0.10 on 2 CPUs, 2 free; governor performance; "
                    "torch threads 2; GPU SM 1980/1980 MHz, 0 other processes")
    assert "\n" not in line


def test_summary_line_uses_the_load_it_is_given() -> None:
    line = summary_line("cpu", CpuLoad(allowed=1, busy=5.0, free=1, per_cpu={0: 1.0}))
    assert line.startswith("doctor: load ")
    assert "\n" not in line
    assert "another process is busy" in line  # round(5.0) CPUs kept busy by others


def test_render_puts_advice_under_the_row() -> None:
    verdicts = [Check("free CPUs", "1 of 2", "warn", "stop it"),
                Check("turbo", "off", "ok", "not shown"),
                Check("CPU clock", "2600 MHz", "info")]
    lines = doctor.render(verdicts).splitlines()
    assert lines[0].split() == ["check", "status", "value"]
    assert lines[2].split() == ["free", "CPUs", "warn", "1", "of", "2"]
    assert lines[3].strip() == "-> stop it"
    assert lines[3].index("->") == lines[2].index("1 of 2")
    assert "not shown" not in "\n".join(lines)
    assert lines[-1] == "1 warning(s): timings taken now may be disturbed"


def test_parse_device() -> None:
    for good in ("auto", "cpu", "cuda", "cuda:1"):
        assert doctor.parse_device(good) == good
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", ""):
        with pytest.raises(ValueError, match="not a device"):
            doctor.parse_device(bad)


def test_cli_doctor_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["check", "status", "value"]
    for name in ("free CPUs", "load average", "torch threads"):
        assert name in out


def test_cli_doctor_json_and_a_missing_gpu_still_exit_0(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(system, "cpu_load", lambda *a, **k: None)  # no sampling wait
    assert main(["doctor", "--device", "cuda:7", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["status"] for r in rows} <= {"ok", "warn", "info"}
    assert any(r["name"].startswith("GPU") for r in rows)


def test_cli_doctor_bad_device_is_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--device" in err and "gpu" in err
