"""``harness history DIR``: every case's time across runs, and where it stepped.

Runs are the run folders (results.parquet) and pytest-benchmark JSON files found under DIR,
ordered by the time they recorded (``env_time_utc`` of a harness run, ``datetime`` of a
benchmark file; the file's modification time when neither is there). A case's value in a
run is its median time (the fastest pass's, when it was timed in several passes). Steps are
found on the log of those values (:mod:`harness.bench.steps`); the *first step* of a case is
the first one whose relative change is at least ``threshold``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.bench.loaders import Key, RunRecord, find_runs, load_file
from harness.bench.steps import Step, default_penalty, find_steps
from harness.errors import HarnessInputError


@dataclass(frozen=True)
class RunInfo:
    index: int
    name: str
    path: Path
    recorded_at: dt.datetime


@dataclass
class CaseHistory:
    label: str
    key: Key
    device: str | None
    dtype: str | None
    points: list[tuple[int, float, float | None, float | None]]  # (run, median, q1, q3) s
    steps: list[Step] = field(default_factory=list)
    first_step: Step | None = None

    @property
    def layer(self) -> str:
        return str(dict(self.key).get("layer") or dict(self.key).get("benchmark") or "")


@dataclass
class History:
    folder: Path
    runs: list[RunInfo]
    cases: list[CaseHistory]
    threshold: float
    penalty: float | None
    skipped: list[str]


def _name(folder: Path, path: Path) -> str:
    rel = path.relative_to(folder)
    return str(rel.parent if path.name == "results.parquet" else rel) or folder.name


def _stamp(run: RunRecord, path: Path) -> dt.datetime:
    if run.recorded_at is not None:
        return run.recorded_at
    return dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.timezone.utc)


def load_runs(folder: Path) -> tuple[list[tuple[RunInfo, RunRecord]], list[str]]:
    """Every readable run under ``folder`` in recorded order; unreadable files are listed."""
    if not folder.is_dir():
        raise HarnessInputError(f"{folder}: not a directory; give a folder of runs")
    loaded, skipped = [], []
    for path in find_runs(folder):
        try:
            run = load_file(path)
        except HarnessInputError as exc:
            skipped.append(str(exc))
            continue
        loaded.append((_stamp(run, path), _name(folder, path), path, run))
    if not loaded:
        why = f" ({len(skipped)} files unreadable: {skipped[0]})" if skipped else ""
        raise HarnessInputError(
            f"{folder}: no runs found (no results.parquet and no pytest-benchmark JSON){why}"
        )
    loaded.sort(key=lambda item: (item[0], item[1]))
    return [(RunInfo(i, name, path, stamp), run)
            for i, (stamp, name, path, run) in enumerate(loaded)], skipped


def build_history(folder: Path, *, threshold: float = 0.10, penalty: float | None = None,
                  min_size: int = 2) -> History:
    runs, skipped = load_runs(folder)
    series: dict[tuple[Key, Any, Any], CaseHistory] = {}
    for info, run in runs:
        for case in run.all_cases():
            best = case.best
            if case.status != "ok" or best is None or best.median <= 0:
                continue
            item = series.setdefault(
                (case.key, case.device, case.dtype),
                CaseHistory(case.label, case.key, case.device, case.dtype, []),
            )
            item.points.append((info.index, best.median, best.q1, best.q3))
            item.label = case.label  # the latest run's name for the case
    for item in series.values():
        logs = [math.log(p[1]) for p in item.points]
        item.steps = find_steps(logs, penalty, min_size)
        item.first_step = next((s for s in item.steps if abs(s.change) >= threshold), None)
    return History(folder, [info for info, _ in runs], list(series.values()), threshold,
                   penalty, skipped)


def step_run(hist: History, case: CaseHistory, step: Step) -> RunInfo:
    """The run where ``step`` begins (steps index the case's own points)."""
    return hist.runs[case.points[step.index][0]]


def history_dict(hist: History) -> dict[str, Any]:
    def step(case: CaseHistory, s: Step) -> dict[str, Any]:
        run = step_run(hist, case, s)
        return {"run": run.name, "run_index": run.index,
                "recorded_at": run.recorded_at.isoformat(),
                "before_s": math.exp(s.before), "after_s": math.exp(s.after),
                "change": s.change}

    return {
        "folder": str(hist.folder),
        "threshold": hist.threshold,
        "runs": [{"index": r.index, "name": r.name, "recorded_at": r.recorded_at.isoformat()}
                 for r in hist.runs],
        "skipped": hist.skipped,
        "cases": [{
            "label": c.label, "identity": dict(c.key), "device": c.device, "dtype": c.dtype,
            "medians_s": {hist.runs[i].name: m for i, m, _, _ in c.points},
            "steps": [step(c, s) for s in c.steps],
            "first_step": step(c, c.first_step) if c.first_step else None,
            "penalty": hist.penalty if hist.penalty is not None
            else default_penalty([math.log(p[1]) for p in c.points]),
        } for c in hist.cases],
    }


def history_table(hist: History) -> str:
    from tabulate import tabulate

    from harness.bench.render import fmt_time

    lines = [f"{len(hist.runs)} runs under {hist.folder}, "
             f"{hist.runs[0].recorded_at:%Y-%m-%d %H:%M} .. "
             f"{hist.runs[-1].recorded_at:%Y-%m-%d %H:%M} UTC"]
    lines += [f"skipped: {s}" for s in hist.skipped]
    rows = []
    for c in hist.cases:
        where = "-"
        if c.first_step is not None:
            where = f"{step_run(hist, c, c.first_step).name} ({c.first_step.change:+.0%})"
        rows.append((c.label, str(len(c.points)), fmt_time(c.points[0][1]),
                     fmt_time(c.points[-1][1]), where))
    lines.append(tabulate(rows, ("case", "runs", "first", "latest", "first step"),
                          disable_numparse=True, colalign=("left", *["right"] * 3, "left")))
    stepped = sum(1 for c in hist.cases if c.first_step is not None)
    lines.append(f"{stepped} of {len(hist.cases)} cases have a step of at least "
                 f"{hist.threshold:.0%}")
    return "\n".join(lines)
