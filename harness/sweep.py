"""The sweep: every planned case ends as exactly one row, whatever happens.

Cases run one at a time in a worker process, so a hung case can be stopped (the worker
is killed at the per-case timeout and a fresh one started) and a crash of one case (the
kernel's OOM killer, a segfault in a native kernel) cannot take the sweep down. Each row is
persisted as soon as the case ends (see harness.results), so SIGKILL loses only the case
in flight, and ``resume`` finishes what is missing.

Timing comes in rounds interleaved across the sweep: round 1 of every case (with memory,
FLOPs and structure), then round 2 of every case, and so on, so that a burst of load from
another process hits different cases in different rounds instead of all rounds of one case.
A case's row is rewritten after each of its rounds with the statistics of its least
disturbed rounds (:func:`harness.measure.contention.select_rounds`). A case disturbed in
every round gets up to ``retries`` more rounds at the end of the sweep, then keeps its flag.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.measure.timing import Samples, TimingResult
from harness.measure_case import (
    ExecSettings,
    apply_timing,
    case_row,
    execute,
    is_oom,
    one_line,
    retime,
)
from harness.results import Row, RunDirectory
from harness.suite.plan import PlannedCase

#: Statuses that a resumed run does not measure again (deterministic outcomes).
FINAL_STATUSES = frozenset({"ok", "skipped", "oom"})

_FINGERPRINT_KEYS = (
    "env_device_name", "env_cpu_model", "env_torch_version", "env_torch_threads",
    "env_hostname",
)


def env_fingerprint(env: dict[str, Any], cpu_timer: str = "perf_counter") -> str:
    """Identity of the measuring environment: resume only reuses rows measured like this.

    A CPU timer other than the default is part of it (times from two clocks don't mix).
    """
    picked: dict[str, Any] = {k: env.get(k) for k in _FINGERPRINT_KEYS}
    if cpu_timer != "perf_counter":
        picked["cpu_timer"] = cpu_timer
    return hashlib.sha256(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:12]


#: Said in a row's message (or a round's note) when its CUDA error ended the worker.
CONTEXT_LOST = "worker replaced: a CUDA error can leave the context unusable"


def _on_cuda(planned: PlannedCase) -> bool:
    return str(planned.device).startswith("cuda")


def _worker_main(conn: Any) -> None:
    """Serve jobs until told to stop. A case on CUDA that fails with an error (not an OOM:
    that is status ``oom``) ends the worker after its reply: an illegal address or a
    device-side assert poisons the CUDA context, and every later case would fail in it. The
    reply says so (``(result, True)``) and the sweep starts a fresh worker for the next case."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    conn.send("ready")  # imports are done: start-up time is not charged to a case
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        kind, planned, settings = job
        lost = False
        if kind == "round":
            try:
                result: Any = ("ok", retime(planned, settings))
            except BaseException as exc:  # noqa: BLE001 - the sweep keeps earlier rounds
                lost = _on_cuda(planned) and not is_oom(exc)
                result = ("error", one_line(exc) + (f" ({CONTEXT_LOST})" if lost else ""))
            conn.send((result, lost))
            if lost:
                return
            continue
        try:
            result = execute(planned, settings)
        except BaseException as exc:  # noqa: BLE001 - report, never die silently
            row = case_row(planned)
            row.update(settings.env, status="error", message=one_line(exc))
            result = (row, [])
        row = result[0]
        lost = _on_cuda(planned) and row.get("status") == "error"
        if lost:
            row["message"] = "; ".join(m for m in (row.get("message"), CONTEXT_LOST) if m)
        conn.send((result, lost))
        if lost:
            return


class CaseTimeout(Exception):
    pass


class WorkerDied(Exception):
    pass


class RoundFailed(Exception):
    """A later timing round of a case failed; the case keeps its earlier rounds."""


class Worker:
    """A long-lived child process that measures cases; replaced after a timeout or crash."""

    #: seconds a new worker may take to import torch and the harness before its first case
    startup_timeout_s = 300.0

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self._proc.start()
        child.close()
        self._ready = False
        #: the worker ended itself after a CUDA error (see _worker_main): replace it
        self.lost = False

    def _wait_ready(self) -> None:
        if self._ready:
            return
        try:
            if not self._conn.poll(self.startup_timeout_s):
                self.kill()
                raise WorkerDied(f"worker did not start within {self.startup_timeout_s:g} s")
            greeting = self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(5)
            raise WorkerDied(
                f"worker process died at start-up with exit code {self._proc.exitcode}"
            ) from None
        if greeting != "ready":
            raise WorkerDied(f"worker sent {greeting!r} instead of 'ready'")
        self._ready = True

    def run(self, planned: PlannedCase, settings: ExecSettings, timeout_s: float
            ) -> tuple[Row, list[Samples]]:
        """The case's first round and everything else: (row, rounds)."""
        return self._ask(("case", planned, settings), timeout_s)

    def round(self, planned: PlannedCase, settings: ExecSettings, timeout_s: float) -> Samples:
        """One more timing round of a case; raises RoundFailed with the worker's reason."""
        status, value = self._ask(("round", planned, settings), timeout_s)
        if status != "ok":
            raise RoundFailed(value)
        return value

    def _ask(self, job: tuple[str, Any, ExecSettings], timeout_s: float) -> Any:
        self._wait_ready()
        self._conn.send(job)
        if not self._conn.poll(timeout_s):
            self.kill()
            raise CaseTimeout(f"timed out after {timeout_s:g} s")
        try:
            result, self.lost = self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(5)
            code = self._proc.exitcode
            hint = " (killed: out of memory?)" if code in (-9, 137) else ""
            raise WorkerDied(f"worker process died with exit code {code}{hint}") from None
        return result

    def kill(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join(5)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._proc.join(5)
        self.kill()


class InlineWorker:
    """Runs cases in this process: no timeout enforcement (for tests and debugging)."""

    lost = False  # nothing to replace: a CUDA error here stays in this process

    def run(self, planned: PlannedCase, settings: ExecSettings, timeout_s: float
            ) -> tuple[Row, list[Samples]]:
        return execute(planned, settings)

    def round(self, planned: PlannedCase, settings: ExecSettings, timeout_s: float) -> Samples:
        try:
            return retime(planned, settings)
        except Exception as exc:  # noqa: BLE001 - as the worker process reports it
            raise RoundFailed(one_line(exc)) from None

    def kill(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class RunOutcome:
    rows_written: int
    reused: int
    interrupted: bool
    contended: int = 0  # cases still disturbed in every round after the retries


#: ``progress(done, total, row)``: ``done`` of ``total`` steps (a case's round is a step; the
#: total grows when a disturbed case is retried), ``row`` the case's row as it now stands.
Progress = Callable[[int, int, Mapping[str, Any]], None]


@dataclass
class _Timed:
    """A case being timed in rounds: its row so far, its rounds, its settings."""

    planned: PlannedCase
    settings: ExecSettings
    row: Row
    rounds: list[Samples]
    problems: list[str]

    def contended(self) -> bool:
        return self.row.get("time_rounds_clean") == 0


def _reusable(earlier: Mapping[str, Any] | None, fingerprint: str, rounds: int) -> bool:
    """An earlier row a resumed run keeps: final status, same environment, all its rounds."""
    if earlier is None or earlier.get("status") not in FINAL_STATUSES:
        return False
    if earlier.get("env_fingerprint") != fingerprint:
        return False
    if earlier.get("status") != "ok":
        return True
    done = earlier.get("time_rounds")
    done = 1 if done is None or done != done else int(done)  # older files: one round
    return done >= rounds


def run_cases(
    plan: Sequence[PlannedCase],
    run_dir: RunDirectory,
    settings_for: Callable[[PlannedCase], ExecSettings],
    *,
    timeout_s: float,
    resume: bool = False,
    isolate: bool = True,
    progress: Progress | None = None,
) -> RunOutcome:
    """Measure every planned case not already finished; persist each row as it changes.

    ``settings_for(planned)`` gives the case's settings, its environment record included
    (a suite may sweep devices and dtypes). With ``resume``, a case is measured again unless
    an earlier row has a final status, was measured in the same environment and has all
    its rounds. Rounds 2.. of every case follow round 1 of all cases (see module docstring).
    """
    finished = run_dir.finished() if resume else {}
    worker: Worker | InlineWorker | None = None
    written = reused = 0
    interrupted = False
    timed: list[_Timed] = []
    steps = [0, sum(settings_for(p).rounds for p in plan)]  # done, total

    def step(row: Mapping[str, Any], count: int = 1) -> None:
        steps[0] += count
        if progress:
            progress(steps[0], steps[1], row)

    def get_worker() -> Worker | InlineWorker:
        nonlocal worker
        if worker is None:
            worker = Worker() if isolate else InlineWorker()
        return worker

    def drop_worker() -> None:
        nonlocal worker
        if worker is not None:
            worker.kill()
            worker = None

    def drop_if_lost() -> None:
        if worker is not None and worker.lost:
            drop_worker()  # it ended itself after a CUDA error: the next case gets a fresh one

    def another_round(item: _Timed, label: str) -> None:
        try:
            item.rounds.append(get_worker().round(item.planned, item.settings, timeout_s))
        except (CaseTimeout, WorkerDied) as exc:
            drop_worker()
            item.problems.append(f"{label} {exc}")
        except RoundFailed as exc:
            drop_if_lost()
            item.problems.append(f"{label} failed: {exc}")
        result = apply_timing(item.row, item.rounds, item.settings)
        if item.problems:
            note = item.row.get("time_note")
            item.row["time_note"] = "; ".join([*([note] if note else []), *item.problems])
        run_dir.write_case(item.row, result.samples)
        step(item.row)

    try:
        for index, planned in enumerate(plan):
            settings = settings_for(planned)
            fingerprint = env_fingerprint(settings.env, settings.cpu_timer)
            earlier = finished.get(planned.case_id)
            if _reusable(earlier, fingerprint, settings.rounds):
                reused += 1
                step(earlier or {}, settings.rounds)
                continue
            rounds: list[Samples] = []
            if planned.skip_reason:
                row, rounds = execute(planned, settings)
            else:
                started = time.perf_counter()
                try:
                    row, rounds = get_worker().run(planned, settings, timeout_s)
                    drop_if_lost()
                except (CaseTimeout, WorkerDied) as exc:
                    drop_worker()
                    row = case_row(planned)
                    row.update(settings.env)
                    timed_out = isinstance(exc, CaseTimeout)
                    row.update(
                        status="timeout" if timed_out else "error",
                        message=str(exc),
                        wall_s=time.perf_counter() - started,
                    )
            row["case_index"] = index
            row["env_fingerprint"] = fingerprint
            item = _Timed(planned, settings, row, list(rounds), [])
            run_dir.write_case(row, _kept(item))
            written += 1
            step(row)
            if row.get("status") == "ok" and settings.rounds > 1:
                timed.append(item)
            elif settings.rounds > 1:
                step(row, settings.rounds - 1)  # a failed case has no more rounds

        for number in range(2, max((t.settings.rounds for t in timed), default=1) + 1):
            for item in timed:
                if number <= item.settings.rounds:
                    another_round(item, f"round {number}")

        for attempt in range(1, max((t.settings.retries for t in timed), default=0) + 1):
            again = [t for t in timed if t.contended() and attempt <= t.settings.retries]
            steps[1] += len(again)
            for item in again:
                another_round(item, f"retry {attempt}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if worker is not None:
            if interrupted:
                worker.kill()
            else:
                worker.close()
    contended = sum(1 for t in timed if t.contended())
    return RunOutcome(rows_written=written, reused=reused, interrupted=interrupted,
                      contended=contended)


def _kept(item: _Timed) -> tuple[float, ...]:
    """The samples the row's statistics came from (what samples.parquet holds)."""
    if not item.rounds:
        return ()
    return TimingResult.from_rounds(
        item.rounds, rule=item.settings.contention,
        spread_threshold=item.settings.timing.spread_threshold,
    ).samples


def plain_progress(stream: Any = sys.stderr) -> Progress:
    """One line per step, for CI logs: the case, its status, its median so far, its note."""

    def report(done: int, total: int, row: Mapping[str, Any]) -> None:
        median = row.get("time_ms_median")
        timing = f" {median:.3f} ms" if isinstance(median, float) else ""
        rounds = row.get("time_rounds")
        if isinstance(rounds, int) and rounds > 1:
            timing += f" ({rounds} rounds)"
        msg = row.get("message") or ""
        extra = f" ({msg})" if row.get("status") != "ok" and msg else ""
        note = row.get("time_note")
        if row.get("status") == "ok" and note:
            extra = f" [{note}]"
        print(f"[{done}/{total}] {row.get('label')}: {row.get('status')}{timing}{extra}",
              file=stream, flush=True)

    return report
