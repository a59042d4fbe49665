"""The sweep: every planned case ends as exactly one row, whatever happens.

Cases run one at a time in a worker process, so a hung case can be stopped (the worker
is killed at the per-case timeout and a fresh one started) and a crash of one case (the
kernel's OOM killer, a segfault in a native kernel) cannot take the sweep down. Where the
jobs run is an :class:`Executor`'s business: :class:`LocalExecutor` (one worker here) by
default, ``harness.ray_executor.RayExecutor`` (a worker per device of a Ray cluster); the
driver below - what to reuse, rows, parts, rounds, retries - is the same for both. Each row is
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from harness.measure.heap import steady_heap
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


K = TypeVar("K")
#: A job for a measuring process: ("case" | "round", the case, its settings).
Job = tuple[str, PlannedCase, ExecSettings]

#: Said in a row's message (or a round's note) when its CUDA error ended the worker.
CONTEXT_LOST = "worker replaced: a CUDA error can leave the context unusable"


def _on_cuda(planned: PlannedCase) -> bool:
    return str(planned.device).startswith("cuda")


def _worker_process(conn: Any, serve: Callable[[Any], None]) -> None:
    """A worker process's entry: hold its heap steady (harness.measure.heap: no case pays
    page faults its predecessors' frees caused), then serve jobs with ``serve``."""
    steady_heap()
    serve(conn)


def _worker_main(conn: Any) -> None:
    """Serve jobs until told to stop. A case on CUDA that fails with an error (not an OOM:
    that is status ``oom``) ends the worker after its reply (see :func:`serve_job`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    conn.send("ready")  # imports are done: start-up time is not charged to a case
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        result, lost = serve_job(job)
        conn.send((result, lost))
        if lost:
            return


def serve_job(job: Job) -> tuple[Any, bool]:
    """One job in a measuring process (a worker here, a Ray actor in harness.ray_executor):
    ``("case", ...)`` -> ``((row, rounds), lost)``, ``("round", ...)`` -> ``((status, samples
    or reason), lost)``. ``lost``: a CUDA error (not an OOM) ended the job; an illegal address
    or a device-side assert poisons the CUDA context, and every later case would fail in it,
    so the process must be replaced before the next case. The row or reason says so."""
    kind, planned, settings = job
    lost = False
    if kind == "round":
        try:
            result: Any = ("ok", retime(planned, settings))
        except BaseException as exc:  # noqa: BLE001 - the sweep keeps earlier rounds
            lost = _on_cuda(planned) and not is_oom(exc)
            result = ("error", one_line(exc) + (f" ({CONTEXT_LOST})" if lost else ""))
        return result, lost
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
    return result, lost


def round_value(reply: tuple[str, Any]) -> Samples:
    """A round's samples from a worker's ``(status, value)`` reply; RoundFailed if it failed."""
    status, value = reply
    if status != "ok":
        raise RoundFailed(value)
    return value


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
        self._proc = ctx.Process(target=_worker_process, args=(child, _worker_main), daemon=True)
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
        return round_value(self._ask(("round", planned, settings), timeout_s))

    def _ask(self, job: Job, timeout_s: float) -> Any:
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


@dataclass(frozen=True)
class Outcome:
    """What became of a job: its value (``(row, rounds)`` for a case, ``Samples`` for a
    round) or why there is none (CaseTimeout, WorkerDied, RoundFailed)."""

    value: Any = None
    error: Exception | None = None
    wall_s: float = 0.0  # from the job's start to its end, as the executor saw it
    #: why an earlier attempt of the job was lost (its worker died) and it ran again
    retried: str | None = None
    #: env_fingerprint of the environment that measured it, where not the driver's
    fingerprint: str | None = None


class Executor(Protocol):
    """Runs jobs in measuring processes and says what became of each, in any order.

    ``each`` takes ``(key, job)`` pairs and yields ``(key, outcome)`` pairs, one per job; a
    timeout or a dead worker is an outcome, never an exception. ``fingerprint`` is the
    environment a job would be measured in (what a resumed run compares earlier rows with);
    ``busy`` says how many devices are measuring now and how many there are.
    """

    def each(self, jobs: Iterable[tuple[K, Job]]) -> Iterator[tuple[K, Outcome]]: ...

    def fingerprint(self, planned: PlannedCase, settings: ExecSettings) -> str: ...

    def busy(self) -> tuple[int, int]: ...

    def close(self, *, interrupted: bool) -> None: ...


class LocalExecutor:
    """One job at a time in one worker process (or in this process, without ``isolate``),
    the worker replaced after a timeout, a crash or a lost CUDA context."""

    def __init__(self, timeout_s: float, *, isolate: bool = True) -> None:
        self.timeout_s = timeout_s
        self.isolate = isolate
        self._worker: Worker | InlineWorker | None = None
        self._running = False

    def each(self, jobs: Iterable[tuple[K, Job]]) -> Iterator[tuple[K, Outcome]]:
        for key, job in jobs:
            yield key, self.one(job)

    def one(self, job: Job) -> Outcome:
        kind, planned, settings = job
        started = time.perf_counter()
        self._running = True
        try:
            worker = self._get()
            if kind == "case":
                value: Any = worker.run(planned, settings, self.timeout_s)
            else:
                value = worker.round(planned, settings, self.timeout_s)
        except (CaseTimeout, WorkerDied) as exc:
            self._drop()
            return Outcome(error=exc, wall_s=time.perf_counter() - started)
        except RoundFailed as exc:
            self._drop_if_lost()
            return Outcome(error=exc, wall_s=time.perf_counter() - started)
        finally:
            self._running = False
        self._drop_if_lost()
        return Outcome(value=value, wall_s=time.perf_counter() - started)

    def fingerprint(self, planned: PlannedCase, settings: ExecSettings) -> str:
        return env_fingerprint(settings.env, settings.cpu_timer)

    def busy(self) -> tuple[int, int]:
        return int(self._running), 1

    def _get(self) -> Worker | InlineWorker:
        if self._worker is None:
            self._worker = Worker() if self.isolate else InlineWorker()
        return self._worker

    def _drop(self) -> None:
        if self._worker is not None:
            self._worker.kill()
            self._worker = None

    def _drop_if_lost(self) -> None:
        if self._worker is not None and self._worker.lost:
            self._drop()  # it ended itself after a CUDA error: the next case gets a fresh one

    def close(self, *, interrupted: bool) -> None:
        if self._worker is not None:
            if interrupted:
                self._worker.kill()
            else:
                self._worker.close()
            self._worker = None


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
    indices: Sequence[int] | None = None,
    executor: Executor | None = None,
) -> RunOutcome:
    """Measure every planned case not already finished; persist each row as it changes.

    ``settings_for(planned)`` gives the case's settings, its environment record included
    (a suite may sweep devices and dtypes). With ``resume``, a case is measured again unless
    an earlier row has a final status, was measured in the same environment and has all
    its rounds. Rounds 2.. of every case follow round 1 of all cases (see module docstring).
    ``indices``: each case's place in the whole plan (``case_index``) when ``plan`` is a
    shard of it. ``executor`` runs the jobs (default: :class:`LocalExecutor`).
    """
    finished = run_dir.finished() if resume else {}
    pool: Executor = executor or LocalExecutor(timeout_s, isolate=isolate)
    written = reused = 0
    interrupted = False
    timed: list[_Timed] = []
    steps = [0, sum(settings_for(p).rounds for p in plan)]  # done, total

    def step(row: Mapping[str, Any], count: int = 1) -> None:
        steps[0] += count
        if progress:
            progress(steps[0], steps[1], row)

    def first_rounds() -> Iterator[tuple[tuple[int, PlannedCase, ExecSettings, str], Job]]:
        """The cases to measure; reused and impossible cases are settled on the way."""
        nonlocal reused
        for index, planned in zip(indices if indices is not None else range(len(plan)), plan,
                                  strict=True):
            settings = settings_for(planned)
            earlier = finished.get(planned.case_id)
            fingerprint = env_fingerprint(settings.env, settings.cpu_timer)
            # asked only where there is an earlier row: a remote executor asks a worker
            if earlier is not None and _reusable(earlier, pool.fingerprint(planned, settings),
                                                 settings.rounds):
                reused += 1
                step(earlier or {}, settings.rounds)
                continue
            if planned.skip_reason:
                row, rounds = execute(planned, settings)
                settle(index, planned, settings, fingerprint, row, rounds)
                continue
            yield (index, planned, settings, fingerprint), ("case", planned, settings)

    def settle(index: int, planned: PlannedCase, settings: ExecSettings, fingerprint: str,
               row: Row, rounds: list[Samples]) -> None:
        nonlocal written
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

    def more_rounds(items: Sequence[_Timed], label: str) -> None:
        jobs = (((item, label), ("round", item.planned, item.settings)) for item in items)
        for (item, what), done in pool.each(jobs):
            if done.error is None:
                item.rounds.append(done.value)
            elif isinstance(done.error, RoundFailed):
                item.problems.append(f"{what} failed: {done.error}")
            else:
                item.problems.append(f"{what} {done.error}")
            result = apply_timing(item.row, item.rounds, item.settings)
            if item.problems:
                note = item.row.get("time_note")
                item.row["time_note"] = "; ".join([*([note] if note else []), *item.problems])
            run_dir.write_case(item.row, result.samples)
            step(item.row)

    try:
        for (index, planned, settings, fingerprint), done in pool.each(first_rounds()):
            rounds: list[Samples] = []
            if done.error is None:
                row, rounds = done.value
            else:
                row = case_row(planned)
                row.update(settings.env)
                timed_out = isinstance(done.error, CaseTimeout)
                row.update(status="timeout" if timed_out else "error",
                           message=str(done.error), wall_s=done.wall_s)
            if done.retried:
                note = row.get("time_note")
                row["time_note"] = "; ".join(
                    [*([note] if note else []), f"run again: {done.retried}"])
            settle(index, planned, settings, done.fingerprint or fingerprint, row, rounds)

        for number in range(2, max((t.settings.rounds for t in timed), default=1) + 1):
            more_rounds([t for t in timed if number <= t.settings.rounds], f"round {number}")

        for attempt in range(1, max((t.settings.retries for t in timed), default=0) + 1):
            again = [t for t in timed if t.contended() and attempt <= t.settings.retries]
            steps[1] += len(again)
            more_rounds(again, f"retry {attempt}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        pool.close(interrupted=interrupted)
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


def plain_progress(stream: Any = sys.stderr,
                   busy: Callable[[], tuple[int, int]] | None = None) -> Progress:
    """One line per step, for CI logs: the case, its status, its median so far, its note;
    with ``busy`` (an executor of several devices), how many devices are measuring."""

    def report(done: int, total: int, row: Mapping[str, Any]) -> None:
        median = row.get("time_ms_median")
        timing = f" {median:.3f} ms" if isinstance(median, float) else ""
        rounds = row.get("time_rounds")
        if isinstance(rounds, int) and rounds > 1:
            timing += f" ({rounds} rounds)"
        msg = row.get("message") or ""
        extra = f" ({msg})" if row.get("status") != "ok" and msg else ""
        note = row.get("time_note")
        if row.get("status") == "ok" and isinstance(note, str) and note:  # NaN: a reused row
            extra = f" [{note}]"
        devices = ""
        if busy is not None:
            now, of = busy()
            devices = f" [{now}/{of} devices busy]"
        print(f"[{done}/{total}]{devices} {row.get('label')}: {row.get('status')}{timing}"
              f"{extra}", file=stream, flush=True)

    return report
