"""``harness run --executor ray``: the sweep's jobs on Ray actors, each holding its device.

The driver is the local one (:func:`harness.sweep.run_cases`): it plans, decides what a
resumed run reuses, writes each row as an atomic part, merges and reports. Only where a job
runs changes. Each job goes to a :class:`CaseServer` actor that holds one whole GPU
(``num_gpus=1``) for a CUDA case, or the CPUs of its thread count for a CPU case, so two
cases are never timed on one device at once; an actor serves job after job on its device, as
the local runner reuses its worker process. An actor is replaced after a timeout (killed: the
case is a ``timeout`` row), after a CUDA error that can poison its context, and when it
dies: a job whose actor died runs once more on a fresh one, then is an ``error`` row.

A row's environment columns come from the actor that measured it (its host, its GPU, its
``CUDA_VISIBLE_DEVICES``), and so does its ``env_fingerprint``: a resumed run reuses a row
when a worker of this cluster would measure it in the same environment.

Ray is an optional dependency (``pip install -e ".[ray]"``); nothing imports it unless
``--executor ray`` is asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from harness.errors import HarnessInputError
from harness.measure.heap import steady_heap
from harness.measure_case import ExecSettings, one_line
from harness.suite.plan import PlannedCase
from harness.sweep import (
    CaseTimeout,
    Job,
    K,
    Outcome,
    RoundFailed,
    WorkerDied,
    env_fingerprint,
    round_value,
    serve_job,
)

MISSING_RAY = ("--executor ray needs Ray, an optional extra: pip install -e \".[ray]\" "
               "(or pip install ray)")

#: environment columns that describe the device; unknown where the node cannot open it
_DEVICE_KEYS = ("env_device_name", "env_peak_flops", "env_peak_bytes_per_s", "env_peak_source")


def import_ray() -> Any:
    """The ``ray`` module, or bad input naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise HarnessInputError(MISSING_RAY) from None
    return ray


def node_env(planned: PlannedCase, settings: ExecSettings) -> dict[str, Any]:
    """The environment record of this process for a case, as ``harness run`` records it
    locally; a device this node cannot open (CUDA on a CPU-only node, where the case will
    fail) leaves the device's own columns missing and keeps the host's."""
    from harness.run_command import case_env

    try:
        return case_env(planned.device, planned.dtype, settings.tf32, settings.threads)
    except Exception:  # noqa: BLE001 - the case itself reports why the device is unusable
        env = case_env("cpu", planned.dtype, settings.tf32, settings.threads)
        return {**env, **dict.fromkeys(_DEVICE_KEYS), "env_device": planned.device}


class CaseServer:
    """A Ray actor: measures the jobs it is sent, one at a time, on the device it holds."""

    def __init__(self) -> None:
        steady_heap()  # as a local worker's process (harness.measure.heap)

    def info(self) -> dict[str, Any]:
        """Who and where it is; the first call also says it has started (imports done)."""
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def fingerprint(self, planned: PlannedCase, settings: ExecSettings) -> str:
        return env_fingerprint(node_env(planned, settings), settings.cpu_timer)

    def serve(self, job: Job) -> tuple[Any, bool, str]:
        """:func:`harness.sweep.serve_job` with this node's environment; and its fingerprint."""
        kind, planned, settings = job
        settings = replace(settings, env=node_env(planned, settings))
        result, lost = serve_job((kind, planned, settings))
        return result, lost, env_fingerprint(settings.env, settings.cpu_timer)


#: A resource class: the kind of device a job needs, and its torch threads on a CPU.
Kind = tuple[str, int]


def kind_of(planned: PlannedCase, settings: ExecSettings) -> Kind:
    if str(planned.device).startswith("cuda"):
        return ("cuda", 0)
    return ("cpu", max(1, settings.threads or 1))


@dataclass
class _Pending:
    key: Any
    job: Job
    retried: str | None = None  # why the first attempt's worker died


@dataclass
class _Slot:
    """One actor and what it is doing."""

    kind: Kind
    actor: Any
    since: float  # when it was started, or given its current job
    info: dict[str, Any] | None = None  # set once it has started
    job: _Pending | None = None
    ref: Any = None  # the pending call: info() while starting, serve() while busy

    def who(self) -> str:
        if not self.info:
            return "a Ray worker that had not started"
        return f"Ray worker pid {self.info['pid']} on {self.info['host']}"


@dataclass
class RayExecutor:
    """Jobs on Ray actors (see module docstring). ``address``: a cluster to join (None:
    start a local Ray instance, or use the one this process already started)."""

    timeout_s: float
    address: str | None = None
    #: seconds an actor may take to start (import torch and the harness) before its first job
    startup_timeout_s: float = 300.0
    #: start-up failures of one kind after which its waiting jobs become error rows
    max_start_failures: int = 3
    _slots: list[_Slot] = field(default_factory=list)
    _failures: dict[Kind, int] = field(default_factory=dict)
    _fingerprints: dict[tuple[Any, ...], str] = field(default_factory=dict)
    _owned: bool = False
    _last_failure: str = "unknown"

    def __post_init__(self) -> None:
        ray = import_ray()
        self._ray = ray
        if not ray.is_initialized():
            _reachable(self.address)
            options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
            if self.address is None:
                options["include_dashboard"] = False
            try:
                ray.init(address=self.address, **options)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = self.address or "a local instance"
                raise HarnessInputError(f"--ray-address: cannot start or join Ray at {where} "
                                        f"({one_line(exc)})") from None
            self._owned = True
        self._server = ray.remote(CaseServer)
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        #: GPUs and CPUs of each live node: an actor fits on one node or nowhere
        self._node_gpus = [int(n.get("GPU", 0)) for n in nodes]
        self._node_cpus = [int(n.get("CPU", 0)) for n in nodes]

    # -- checks and capacity --------------------------------------------------------------

    def check(self, plan: Sequence[PlannedCase], threads: int | None) -> None:
        """Bad input (one line) for a plan this cluster can never run."""
        cuda = [p for p in plan if str(p.device).startswith("cuda") and p.runnable]
        pinned = sorted({p.device for p in cuda if re.fullmatch(r"cuda:\d+", p.device)})
        if pinned:
            raise HarnessInputError(
                f"--executor ray: device {pinned[0]} names a GPU, but Ray gives each case a "
                "whole GPU of its choosing; write device: cuda")
        if cuda and sum(self._node_gpus) < 1:
            raise HarnessInputError(
                f"--executor ray: {len(cuda)} CUDA cases, but the Ray cluster has no GPU "
                "(start its nodes with GPUs, or run the suite with --device cpu)")
        if any(p.runnable and not str(p.device).startswith("cuda") for p in plan):
            need = max(1, threads or 1)
            if need > max(self._node_cpus, default=0):
                raise HarnessInputError(
                    f"--executor ray: measure.threads {need} > "
                    f"{max(self._node_cpus, default=0)} CPUs of the "
                    "largest Ray node; set measure.threads to at most that")

    def _capacity(self, kind: Kind) -> int:
        """How many actors of ``kind`` the cluster can hold at once."""
        if kind[0] == "cuda":
            return sum(self._node_gpus)
        return max(1, sum(cpus // kind[1] for cpus in self._node_cpus))

    def busy(self) -> tuple[int, int]:
        """(devices measuring now, devices this sweep may use)."""
        kinds = {slot.kind for slot in self._slots}
        return (sum(1 for s in self._slots if s.job is not None),
                sum(self._capacity(k) for k in kinds))

    def running(self) -> list[dict[str, Any]]:
        """The actors measuring now: their info (pid, host, gpus) and the case's label."""
        out = []
        for slot in list(self._slots):  # may be read from another thread (a progress display)
            info, pending = slot.info, slot.job
            if info and pending is not None:
                out.append({**info, "label": pending.job[1].label})
        return out

    # -- actors -------------------------------------------------------------------------

    def _start(self, kind: Kind) -> _Slot:
        if kind[0] == "cuda":
            options: dict[str, Any] = {"num_gpus": 1, "num_cpus": 0}
        else:
            options = {"num_cpus": kind[1]}
        actor = self._server.options(max_restarts=0, max_task_retries=0, **options).remote()
        slot = _Slot(kind, actor, time.monotonic())
        slot.ref = actor.info.remote()
        self._slots.append(slot)
        return slot

    def _drop(self, slot: _Slot) -> None:
        self._slots.remove(slot)
        with contextlib.suppress(Exception):  # already gone
            self._ray.kill(slot.actor, no_restart=True)

    def _started(self, slot: _Slot) -> str | None:
        """Collect a starting actor's info(); the reason when it failed to start."""
        try:
            slot.info = self._ray.get(slot.ref)
        except Exception as exc:  # noqa: BLE001 - any failure to start is the same to us
            self._drop(slot)
            return one_line(exc)
        slot.ref = None
        self._failures[slot.kind] = 0
        return None

    def _ready(self, kind: Kind) -> _Slot:
        """An idle, started actor of ``kind`` (started now if there is none)."""
        for slot in self._slots:
            if slot.kind == kind and slot.info and slot.job is None:
                return slot
        slot = self._start(kind)
        done, _ = self._ray.wait([slot.ref], timeout=self.startup_timeout_s)
        reason = self._started(slot) if done else "did not start in time"
        if reason:
            if slot in self._slots:
                self._drop(slot)
            raise HarnessInputError(f"--executor ray: no Ray worker could start ({reason})")
        return slot

    def fingerprint(self, planned: PlannedCase, settings: ExecSettings) -> str:
        kind = kind_of(planned, settings)
        key = (kind, planned.device, planned.dtype, settings.tf32, settings.threads,
               settings.cpu_timer)
        if key not in self._fingerprints:
            slot = self._ready(kind)
            self._fingerprints[key] = self._ray.get(
                slot.actor.fingerprint.remote(planned, settings))
        return self._fingerprints[key]

    # -- running jobs -------------------------------------------------------------------

    def each(self, jobs: Iterable[tuple[K, Job]]) -> Iterator[tuple[K, Outcome]]:
        queue = deque(_Pending(key, job) for key, job in jobs)
        while queue or any(s.ref is not None for s in self._slots):
            for pending, reason in self._dispatch(queue):  # no worker could start for them
                yield pending.key, Outcome(error=WorkerDied(reason), retried=pending.retried)
            calls = [s.ref for s in self._slots if s.ref is not None]
            if not calls:  # nothing running, nothing starting: no room for these jobs at all
                while queue:
                    pending = queue.popleft()
                    yield pending.key, Outcome(error=WorkerDied(
                        "the Ray cluster has no resources for this case"))
                return
            now = time.monotonic()
            wait = max(0.0, min(self._deadline(s) for s in self._slots if s.ref is not None)
                       - now)
            done, _ = self._ray.wait(calls, num_returns=1, timeout=wait)
            now = time.monotonic()
            for slot in list(self._slots):
                if slot.ref is None or not (slot.ref in done or now >= self._deadline(slot)):
                    continue
                if slot.job is None:
                    failed: str | None = (
                        self._started(slot) if slot.ref in done
                        else f"did not start within {self.startup_timeout_s:g} s")
                    if failed:
                        if slot in self._slots:
                            self._drop(slot)
                        self._failures[slot.kind] = self._failures.get(slot.kind, 0) + 1
                        self._last_failure = failed
                    continue
                finished = self._finish(slot, slot.job, queue, timed_out=slot.ref not in done)
                if finished is not None:
                    yield finished

    def _deadline(self, slot: _Slot) -> float:
        return slot.since + (self.startup_timeout_s if slot.job is None else self.timeout_s)

    def _dispatch(self, queue: deque[_Pending]) -> list[tuple[_Pending, str]]:
        """Give waiting jobs to idle actors, start actors where there is room; returns the
        jobs of a kind whose actors keep failing to start (to be reported as errors)."""
        waiting: dict[Kind, int] = {}
        hopeless: list[tuple[_Pending, str]] = []
        for pending in list(queue):
            kind = kind_of(pending.job[1], pending.job[2])
            started = any(s.kind == kind and s.info for s in self._slots)
            if self._failures.get(kind, 0) >= self.max_start_failures and not started:
                queue.remove(pending)
                hopeless.append((pending, f"no Ray worker could start ({self._last_failure})"))
                continue
            idle = next((s for s in self._slots
                         if s.kind == kind and s.info and s.job is None and s.ref is None),
                        None)
            if idle is None:
                waiting[kind] = waiting.get(kind, 0) + 1
                continue
            queue.remove(pending)
            idle.job, idle.since = pending, time.monotonic()
            idle.ref = idle.actor.serve.remote(pending.job)
        for kind, count in waiting.items():
            mine = [s for s in self._slots if s.kind == kind]
            starting = sum(1 for s in mine if s.info is None)
            for _ in range(min(self._capacity(kind) - len(mine), count - starting)):
                self._start(kind)
        return hopeless

    def _finish(self, slot: _Slot, pending: _Pending, queue: deque[_Pending], *,
                timed_out: bool) -> tuple[Any, Outcome] | None:
        """What became of the slot's job; None when it goes back in the queue (retry)."""
        ref = slot.ref
        wall = time.monotonic() - slot.since
        slot.job, slot.ref = None, None
        if timed_out:
            self._drop(slot)  # cancels the call; the actor's device is free again
            return pending.key, Outcome(error=CaseTimeout(f"timed out after {self.timeout_s:g} s"),
                                        wall_s=wall, retried=pending.retried)
        try:
            result, lost, fingerprint = self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as exc:  # serve() itself raised
            self._drop(slot)
            return pending.key, Outcome(error=WorkerDied(f"{slot.who()}: {one_line(exc)}"),
                                        wall_s=wall, retried=pending.retried)
        except self._ray.exceptions.RayError as exc:  # the actor, its process or node died
            reason = f"{slot.who()} died ({_first_line(exc)})"
            if slot in self._slots:
                self._drop(slot)
            if pending.retried is None:
                queue.appendleft(replace(pending, retried=reason))
                return None
            return pending.key, Outcome(
                error=WorkerDied(f"{reason}; it had died once before: {pending.retried}"),
                wall_s=wall, retried=pending.retried)
        if lost:
            self._drop(slot)  # a CUDA error may have poisoned its context
        kind, _, _ = pending.job
        if kind == "round":
            try:
                value: Any = round_value(result)
            except RoundFailed as exc:
                return pending.key, Outcome(error=exc, wall_s=wall, retried=pending.retried,
                                            fingerprint=fingerprint)
        else:
            value = result
        return pending.key, Outcome(value=value, wall_s=wall, retried=pending.retried,
                                    fingerprint=fingerprint)

    def close(self, *, interrupted: bool) -> None:
        for slot in list(self._slots):
            self._drop(slot)
        if self._owned:
            self._ray.shutdown()
            self._owned = False


def _reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Bad input, at once, for a HOST:PORT nobody answers at (Ray itself retries for
    minutes); other forms (None, 'auto', ray://...) are left to Ray."""
    match = re.fullmatch(r"([\w.-]+):(\d+)", address or "")
    if match is None:
        return
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout_s).close()
    except OSError as exc:
        raise HarnessInputError(f"--ray-address {address}: nothing answers there ({exc}); "
                                "start the cluster with 'ray start --head'") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
