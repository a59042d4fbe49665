"""Reading one side of a comparison: a harness run (results.parquet) or pytest-benchmark JSON.

Both become a :class:`RunRecord`: one :class:`CaseRecord` per case, keyed by the case's
identity (:data:`IDENTITY`: the layer and its parameters, so that a results.parquet and a
benchmark JSON of one suite match case by case; a benchmark without the harness's
``extra_info`` by its ``fullname``), with ``device`` and ``dtype`` beside it. Raw per-call
samples come from samples.parquet or ``stats.data``; without them :attr:`PassStats.samples`
is None and only summary statistics are known. A case timed more than once on one side
(``--harness-passes``, or a folder of runs) is one record with several passes, each
remembering its run (file, process) and its row's ``time_unreliable`` / ``time_note``.
docs/ci.md, "2. ``harness compare``", says what a user gives and gets.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness import schema
from harness.errors import HarnessInputError
from harness.values import missing as _missing
from harness.values import number
from harness.values import plain as _plain

#: The parameters that identify a case across files and formats.
IDENTITY = schema.IDENTITY
_INT_KEYS = schema.axis_names("size")
_FLAGS = schema.axis_names("flag")
FLOP_SOURCES = ("flops_analytic", "flops_fvcore", "flops_torch")

Key = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class PassStats:
    """The timing of one pass over a case: raw per-call seconds and/or their statistics."""

    samples: np.ndarray | None  # raw per-call seconds, or None (summary statistics only)
    median: float
    q1: float | None = None
    q3: float | None = None
    stddev: float | None = None
    count: int = 0
    min: float | None = None  # fastest call: second-fastest positive sample (from_samples)
    run: int = 0  # which run (file, process) of its side this pass came from
    unreliable: bool = False  # the row's time_unreliable: contention, throttling or spread
    note: str | None = None  # the row's time_note: why it is unreliable

    @classmethod
    def from_samples(cls, samples: np.ndarray) -> PassStats:
        """Statistics of raw per-call seconds.

        The pass's fastest call is its *second*-fastest positive sample: a call cannot take
        no time, so a 0 is a timer glitch (seen with a CPU-time clock), and a single reading
        far below every other is one too (seen once in 10,296 passes here: 159 us among
        samples of 240 us and up, and below every other pass of the case). Read as the
        fastest call, one such reading would make any other run look 50 % slower; the
        second-fastest cannot be set by one glitch. With one positive sample, that sample.
        """
        q1, median, q3 = (float(v) for v in np.quantile(samples, [0.25, 0.5, 0.75]))
        stddev = float(np.std(samples, ddof=1)) if samples.size > 1 else 0.0
        positive = np.sort(samples[samples > 0])
        fastest = float(positive[min(1, positive.size - 1)]) if positive.size else None
        return cls(samples, median, q1, q3, stddev, int(samples.size), fastest)

    @property
    def iqr(self) -> float | None:
        return None if self.q1 is None or self.q3 is None else self.q3 - self.q1


@dataclass(frozen=True)
class CaseRecord:
    """One case of one side, measured in one or more passes. Times in seconds per call.

    A *pass* is one timing of the case: one ``harness run``, or one pytest-benchmark entry.
    Several passes (``--harness-passes``, or a folder of runs given as one side) sample the
    machine at different times; the case's time is the median of its fastest pass (see
    :mod:`harness.bench.compare` for why).
    """

    key: Key
    label: str
    device: str | None
    dtype: str | None
    status: str  # ok, error, oom, timeout, skipped
    message: str = ""
    passes: tuple[PassStats, ...] = ()
    peak_mem_bytes: float | None = None
    flops: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def layer(self) -> str | None:
        return dict(self.key).get("layer")

    @property
    def raw(self) -> bool:
        """Whether every pass has its raw samples (else the statistics are summaries)."""
        return bool(self.passes) and all(p.samples is not None for p in self.passes)

    @property
    def best(self) -> PassStats | None:
        """The pass with the lowest median (None when nothing was timed)."""
        return min(self.passes, key=lambda p: p.median) if self.passes else None

    @property
    def median(self) -> float | None:
        best = self.best
        return None if best is None else best.median

    @property
    def count(self) -> int:
        return sum(p.count for p in self.passes)

    @property
    def minimum(self) -> float | None:
        """The fastest call seen in any pass (None when no pass knows its minimum)."""
        mins = [p.min for p in self.passes if p.min is not None]
        return min(mins) if mins else None

    @property
    def pass_minima(self) -> list[float]:
        return [p.min for p in self.passes if p.min is not None]

    @property
    def run_minima(self) -> list[float]:
        """The fastest call of each run (process), over all of that run's passes."""
        fastest: dict[int, float] = {}
        for p in self.passes:
            if p.min is not None:
                fastest[p.run] = min(p.min, fastest.get(p.run, math.inf))
        return [fastest[run] for run in sorted(fastest)]


@dataclass(frozen=True)
class RunRecord:
    """One side: where it came from, when it was recorded, its cases by identity."""

    path: Path
    kind: str  # "harness" (results.parquet) or "pytest-benchmark" (JSON)
    recorded_at: dt.datetime | None
    cases: dict[Key, list[CaseRecord]]  # usually one record per key; several if devices differ
    machine: dict[str, Any] = field(default_factory=dict)
    runs: int = 1  # how many runs (files) were merged into this side

    def all_cases(self) -> list[CaseRecord]:
        return [case for group in self.cases.values() for case in group]

    @property
    def name(self) -> str:
        return self.path.parent.name if self.path.name == "results.parquet" else self.path.name


def _clean(name: str, value: Any) -> Any:
    if _missing(value):
        return False if name in _FLAGS else None  # flags default to off
    if name in _INT_KEYS:
        return int(value)
    if name in _FLAGS:
        return bool(value)
    if hasattr(value, "item"):
        value = value.item()
    return str(value) if schema.column(name).dtype == "str" else value


def identity(params: Mapping[str, Any]) -> Key:
    """The identity key of a case from its parameters (missing ones are None)."""
    return tuple((name, _clean(name, params.get(name))) for name in IDENTITY)


def _positive(value: Any) -> float | None:
    found = number(value)
    return found if found is not None and found > 0 else None


def load(path: str | os.PathLike[str]) -> RunRecord:
    """Read one side: a run directory, results.parquet, pytest-benchmark JSON, or a folder.

    A folder that is not a run directory but holds several runs (run directories and/or
    benchmark JSON files, found recursively) is one side measured in several passes: the
    runs are merged case by case (:func:`merge_passes`). The format of a file is sniffed
    from its content. Anything else - a missing path, a corrupt file, a JSON that is not
    pytest-benchmark's - is a one-line :class:`HarnessInputError`.
    """
    p = Path(path)
    if p.is_dir() and not (p / "results.parquet").exists():
        runs = find_runs(p)
        if not runs:
            raise HarnessInputError(
                f"{p}: no results.parquet and no benchmark JSON in this directory; give a run "
                "directory of `harness run`, a results.parquet or a pytest-benchmark JSON file"
            )
        return merge_passes([load_file(run) for run in runs], path=p)
    return load_file(p)


def find_runs(folder: Path) -> list[Path]:
    """Every results.parquet and *.json below ``folder`` (sorted by path)."""
    found = sorted({*folder.rglob("results.parquet"), *folder.rglob("*.json")})
    return [f for f in found if "parts" not in f.relative_to(folder).parts[:-1]]


def load_file(p: Path) -> RunRecord:
    """One results.parquet or pytest-benchmark JSON file (format sniffed)."""
    if p.is_dir():
        if (p / "results.parquet").exists():
            return load_parquet(p / "results.parquet")
        raise HarnessInputError(f"{p}: a directory without results.parquet")
    if not p.exists():
        raise HarnessInputError(f"{p}: no such file or directory")
    try:
        with p.open("rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise HarnessInputError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if head.startswith(b"PAR1"):
        return load_parquet(p)
    if head.lstrip()[:1] in (b"{", b"["):
        return load_benchmark_json(p)
    if not head:
        raise HarnessInputError(f"{p}: empty file, not a results.parquet or benchmark JSON")
    raise HarnessInputError(
        f"{p}: neither a Parquet results file nor a pytest-benchmark JSON; give a run "
        "directory, results.parquet or the file of --benchmark-json / --benchmark-autosave"
    )


def _merge_cases(records: list[CaseRecord]) -> CaseRecord:
    """One case measured in several passes: passes concatenated, failures kept visible."""
    ok = [r for r in records if r.status == "ok"]
    if not ok:
        return records[0]
    first = ok[0]
    mems = [r.peak_mem_bytes for r in ok if r.peak_mem_bytes is not None]
    return CaseRecord(
        key=first.key, label=first.label, device=first.device, dtype=first.dtype,
        status="ok", message=first.message,
        passes=tuple(p for r in ok for p in r.passes),
        peak_mem_bytes=min(mems) if mems else None,
        flops=first.flops,
    )


def group_passes(records: list[CaseRecord]) -> dict[Key, list[CaseRecord]]:
    """Records with the same identity, device and dtype become one record with passes."""
    grouped: dict[tuple[Key, Any, Any], list[CaseRecord]] = {}
    for record in records:
        grouped.setdefault((record.key, record.device, record.dtype), []).append(record)
    out: dict[Key, list[CaseRecord]] = {}
    for (key, _, _), group in grouped.items():
        out.setdefault(key, []).append(_merge_cases(group))
    return out


def merge_passes(runs: list[RunRecord], path: Path) -> RunRecord:
    """Several runs of the same code as one side (each run is a pass of every case)."""
    kinds = sorted({run.kind for run in runs})
    stamps = [run.recorded_at for run in runs if run.recorded_at is not None]
    machine: dict[str, Any] = {}
    for run in runs:
        for k, v in run.machine.items():
            machine.setdefault(k, v)
    return RunRecord(
        path=path, kind="+".join(kinds), recorded_at=min(stamps) if stamps else None,
        cases=group_passes([_in_run(c, index) for index, run in enumerate(runs)
                            for c in run.all_cases()]),
        machine=machine, runs=len(runs),
    )


def _in_run(case: CaseRecord, run: int) -> CaseRecord:
    """``case`` with every pass marked as measured in run number ``run``."""
    return replace(case, passes=tuple(replace(p, run=run) for p in case.passes))


# --- harness results ----------------------------------------------------------------------


def _read_samples(path: Path) -> dict[str, np.ndarray]:
    """Raw samples by case_id from samples.parquet (empty when absent)."""
    if not path.exists():
        return {}
    from harness.results import read_table

    frame = read_table(path, "samples file").to_pandas()
    if not {"case_id", "seconds"} <= set(frame.columns):
        raise HarnessInputError(f"{path}: not a harness samples file (needs case_id, seconds)")
    if "sample" in frame.columns:
        frame = frame.sort_values(["case_id", "sample"], kind="stable")
    return {
        str(cid): group["seconds"].to_numpy(dtype=float)
        for cid, group in frame.groupby("case_id", sort=False)
    }


def _parse_time(text: Any) -> dt.datetime | None:
    if _missing(text):
        return None
    try:
        stamp = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


def _reliability(source: Mapping[str, Any]) -> dict[str, Any]:
    """``unreliable`` and ``note`` of a pass from a row's or an ``extra_info``'s
    ``time_unreliable`` / ``time_note`` (absent or missing: reliable, no note)."""
    flag, note = source.get("time_unreliable"), source.get("time_note")
    return {"unreliable": False if _missing(flag) else bool(flag),
            "note": None if _missing(note) or not str(note).strip() else str(note)}


def _row_pass(row: dict[str, Any], data: np.ndarray | None) -> PassStats | None:
    """A results row's timing: from its raw samples, else from its summary columns (ms)."""
    if data is not None and data.size:
        return replace(PassStats.from_samples(data), **_reliability(row))
    median = number(row.get("time_ms_median"))
    if median is None:
        return None
    ms = 1e-3
    iqr = number(row.get("time_ms_iqr"))
    half = None if iqr is None else iqr * ms / 2
    mean, cv = number(row.get("time_ms_mean")), number(row.get("time_cv"))
    return PassStats(
        samples=None, median=median * ms,
        q1=None if half is None else median * ms - half,
        q3=None if half is None else median * ms + half,
        stddev=mean * ms * cv if mean is not None and cv is not None else None,
        count=int(number(row.get("time_samples")) or 0),
        min=None if (fastest := _positive(row.get("time_ms_min"))) is None else fastest * ms,
        **_reliability(row),
    )


def load_parquet(path: Path) -> RunRecord:
    """A harness results file (validated by :func:`harness.results.read_results`)."""
    from harness.results import read_results

    frame = read_results(path)
    samples = _read_samples(path.with_name("samples.parquet"))
    records = []
    times = []
    for row in frame.to_dict("records"):
        status = str(row.get("status"))
        timing = _row_pass(row, samples.get(str(row.get("case_id"))))
        records.append(CaseRecord(
            key=identity(row),
            label=str(row.get("label") or row.get("case_id")),
            device=_clean("device", row.get("device")),
            dtype=_clean("dtype", row.get("dtype")),
            status=status,
            message=str(row.get("message") or ""),
            passes=(timing,) if status == "ok" and timing is not None else (),
            peak_mem_bytes=number(row.get("peak_mem_bytes")),
            flops={name: number(row.get(name)) for name in FLOP_SOURCES},
        ))
        stamp = _parse_time(row.get("env_time_utc"))
        if stamp is not None:
            times.append(stamp)
    machine: dict[str, Any] = {}
    if len(frame):
        first = frame.iloc[0]
        machine = {k: _plain(first[k]) for k in _MACHINE_KEYS if k in frame.columns}
    if "time_timer" in frame.columns:
        timers = {str(t) for t in frame["time_timer"].dropna()}
        if len(timers) == 1:
            machine["timer"] = timers.pop()
    return RunRecord(path=path, kind="harness", recorded_at=min(times) if times else None,
                     cases=group_passes(records), machine=machine)


_MACHINE_KEYS = ("env_device_name", "env_cpu_model", "env_hostname", "env_torch_version",
                 "env_torch_threads", "env_git_commit")


# --- pytest-benchmark JSON ------------------------------------------------------------------

_STAT_KEYS = ("median", "min", "rounds")


def _not_benchmark(path: Path, why: str) -> HarnessInputError:
    return HarnessInputError(
        f"{path}: not a pytest-benchmark JSON file ({why}); write one with "
        "`pytest --benchmark-only --benchmark-json=FILE` or --benchmark-autosave"
    )


def load_benchmark_json(path: Path) -> RunRecord:
    """A ``--benchmark-json`` / ``--benchmark-autosave`` file of pytest-benchmark."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _not_benchmark(path, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise HarnessInputError(
            f"{path}: corrupt JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except OSError as exc:
        raise HarnessInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise _not_benchmark(path, "no top-level 'benchmarks' list")
    records = [_bench_record(path, i, bench) for i, bench in enumerate(doc["benchmarks"])]
    machine_info = _mapping(doc.get("machine_info"))
    cpu = _mapping(machine_info.get("cpu"))
    machine = {
        "env_hostname": machine_info.get("node"),
        "env_cpu_model": cpu.get("brand_raw"),
    }
    infos = [_mapping(b.get("extra_info")) for b in doc["benchmarks"] if isinstance(b, dict)]
    for key in ("env_torch_version", "env_torch_threads", "env_device_name"):
        values = {i.get(key) for i in infos if i.get(key) is not None}
        if len(values) == 1:
            machine[key] = values.pop()
    timers = {str(b["options"].get("timer")) for b in doc["benchmarks"]
              if isinstance(b, dict) and isinstance(b.get("options"), dict)
              and b["options"].get("timer")}
    if len(timers) == 1:  # pytest-benchmark names the function: perf_counter, process_time
        machine["timer"] = timers.pop()
    commit = _mapping(doc.get("commit_info"))
    if commit.get("id"):
        machine["env_git_commit"] = commit.get("id")
    return RunRecord(path=path, kind="pytest-benchmark",
                     recorded_at=_parse_time(doc.get("datetime")), cases=group_passes(records),
                     machine={k: v for k, v in machine.items() if v is not None})


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` where it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def _bench_record(path: Path, index: int, bench: Any) -> CaseRecord:
    if not isinstance(bench, dict) or not isinstance(bench.get("stats"), dict):
        raise _not_benchmark(path, f"benchmarks[{index}] has no 'stats' mapping")
    stats = bench["stats"]
    missing = [k for k in _STAT_KEYS if number(stats.get(k)) is None]
    if missing or not isinstance(bench.get("name"), str):
        what = ", ".join(missing) if missing else "name"
        raise _not_benchmark(path, f"benchmarks[{index}] lacks {what}")
    info = _mapping(bench.get("extra_info"))
    if info.get("harness") and info.get("layer"):
        key = identity(info)
        label = str(info.get("label") or bench["name"])
    else:
        key = (("benchmark", str(bench.get("fullname") or bench["name"])),)
        label = str(bench["name"])
    data = stats.get("data")
    timing: PassStats
    if isinstance(data, list) and data:
        try:
            samples = np.asarray([float(v) for v in data], dtype=float)
        except (TypeError, ValueError):
            raise _not_benchmark(path, f"benchmarks[{index}].stats.data is not numbers") from None
        timing = replace(PassStats.from_samples(samples), **_reliability(info))
    else:
        timing = PassStats(
            samples=None, median=float(stats["median"]),
            q1=number(stats.get("q1")), q3=number(stats.get("q3")),
            stddev=number(stats.get("stddev")), count=int(number(stats.get("rounds")) or 0),
            min=_positive(stats.get("min")), **_reliability(info),
        )
    return CaseRecord(
        key=key, label=label,
        device=_clean("device", info.get("device")), dtype=_clean("dtype", info.get("dtype")),
        status="ok", passes=(timing,),
        peak_mem_bytes=number(info.get("peak_mem_bytes")),
        flops={name: number(info.get(name)) for name in FLOP_SOURCES if name in info},
    )

