"""The sweep runner: every planned case ends as exactly one row, whatever happens.

Cases run one at a time in a worker process, so a hung case can be stopped (the worker
is killed at the per-case timeout and a fresh one started) and a crash of one case (the
kernel's OOM killer, a segfault in a native kernel) cannot take the sweep down. Each row is
persisted as soon as the case ends (see harness.results), so SIGKILL loses only the case
in flight, and ``resume`` finishes what is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.execute import ExecSettings, case_row, execute, one_line
from harness.results import RunDirectory

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


def _worker_main(conn: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    conn.send("ready")  # imports are done: start-up time is not charged to a case
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        planned, settings = job
        try:
            result = execute(planned, settings)
        except BaseException as exc:  # noqa: BLE001 - report, never die silently
            row = case_row(planned)
            row.update(settings.env, status="error", message=one_line(exc))
            result = (row, [])
        conn.send(result)


class CaseTimeout(Exception):
    pass


class WorkerDied(Exception):
    pass


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

    def run(self, planned: Any, settings: ExecSettings, timeout_s: float) -> tuple[dict, list]:
        self._wait_ready()
        self._conn.send((planned, settings))
        if not self._conn.poll(timeout_s):
            self.kill()
            raise CaseTimeout(f"timed out after {timeout_s:g} s")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(5)
            code = self._proc.exitcode
            hint = " (killed: out of memory?)" if code in (-9, 137) else ""
            raise WorkerDied(f"worker process died with exit code {code}{hint}") from None

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

    def run(self, planned: Any, settings: ExecSettings, timeout_s: float) -> tuple[dict, list]:
        return execute(planned, settings)

    def kill(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class RunOutcome:
    rows_written: int
    reused: int
    interrupted: bool


Progress = Callable[[int, int, dict[str, Any]], None]


def run_cases(
    plan: Sequence[Any],
    run_dir: RunDirectory,
    settings_for: Callable[[Any], ExecSettings],
    *,
    timeout_s: float,
    resume: bool = False,
    isolate: bool = True,
    progress: Progress | None = None,
) -> RunOutcome:
    """Measure every planned case not already finished; persist each row as it ends.

    ``settings_for(planned)`` gives the case's settings, its environment record included
    (a suite may sweep devices and dtypes). With ``resume``, a case is measured again unless
    an earlier row has a final status and was measured in the same environment.
    """
    finished = run_dir.finished() if resume else {}
    worker: Worker | InlineWorker | None = None
    written = reused = 0
    interrupted = False
    try:
        for index, planned in enumerate(plan):
            settings = settings_for(planned)
            fingerprint = env_fingerprint(settings.env, settings.cpu_timer)
            earlier = finished.get(planned.case_id)
            if (earlier is not None and earlier.get("status") in FINAL_STATUSES
                    and earlier.get("env_fingerprint") == fingerprint):
                reused += 1
                if progress:
                    progress(index, len(plan), earlier)
                continue
            if planned.skip_reason:
                row, samples = execute(planned, settings)
            else:
                if worker is None:
                    worker = Worker() if isolate else InlineWorker()
                started = time.perf_counter()
                try:
                    row, samples = worker.run(planned, settings, timeout_s)
                except (CaseTimeout, WorkerDied) as exc:
                    worker.kill()
                    worker = None
                    row = case_row(planned)
                    row.update(settings.env)
                    timed_out = isinstance(exc, CaseTimeout)
                    row.update(
                        status="timeout" if timed_out else "error",
                        message=str(exc),
                        wall_s=time.perf_counter() - started,
                    )
                    samples = []
            row["case_index"] = index
            row["env_fingerprint"] = fingerprint
            run_dir.write_case(row, samples)
            written += 1
            if progress:
                progress(index, len(plan), row)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if worker is not None:
            if interrupted:
                worker.kill()
            else:
                worker.close()
    return RunOutcome(rows_written=written, reused=reused, interrupted=interrupted)


def plain_progress(stream: Any = sys.stderr) -> Progress:
    """One line per case, for CI logs."""

    def report(index: int, total: int, row: dict[str, Any]) -> None:
        median = row.get("time_ms_median")
        timing = f" {median:.3f} ms" if isinstance(median, float) else ""
        msg = row.get("message") or ""
        extra = f" ({msg})" if row.get("status") != "ok" and msg else ""
        print(f"[{index + 1}/{total}] {row.get('label')}: {row.get('status')}{timing}{extra}",
              file=stream, flush=True)

    return report
