"""Measure one planned case: build, time, measure memory, count FLOPs, measure structure.

Returns a results row (a dict of the public columns) and the timing rounds. FLOPs
and structure are computed outside the timed calls, once per distinct case (cached).
A failure in one part is recorded, not raised: an OOM or error while timing makes the row's
status ``oom``/``error``; a counter or structure failure leaves the timing intact and says
why in ``flops_note`` / ``structure_note``.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import torch

from harness import registry
from harness.measure.contention import ContentionRule, wait_counter
from harness.measure.precision import float32_mode, precision_columns
from harness.measure.telemetry import TELEMETRY_COLUMNS, CaseTelemetry, telemetry_note
from harness.measure.timing import Samples, TimingResult
from harness.results import Row
from harness.spec import LayerCase
from harness.suite.plan import PlannedCase

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class ExecSettings:
    """What to measure for a case, and the knobs of each measurement."""

    timing: Any  # harness.measure.timing.TimingConfig
    memory: bool = True
    flops: bool = True
    structure: bool = True
    structure_max_n: int = 512
    env: dict[str, Any] = field(default_factory=dict)
    #: clock of CPU cases (``measure.timer``: perf_counter or process_time); CUDA uses events
    cpu_timer: str = "perf_counter"
    #: torch intra-op threads for the case (None: leave the process's setting alone)
    threads: int | None = None
    #: rounds of timing per case (``timing`` is one round's budget); the sweep interleaves them
    rounds: int = 1
    #: extra rounds at the end of the sweep for a case disturbed in every round
    retries: int = 0
    #: when a sample, a round, a case counts as disturbed by other processes
    contention: ContentionRule = field(default_factory=ContentionRule)
    #: CUDA: flush L2 before each sample (True, False, or "auto": while the working set fits)
    flush_l2: bool | str = "auto"
    #: CUDA float32: allow TF32 (True) or force IEEE (False); see harness.measure.precision
    tf32: bool = False


def is_oom(exc: BaseException) -> bool:
    """CUDA OOM, CPU MemoryError, or an allocator 'out of memory' RuntimeError."""
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def case_row(planned: PlannedCase) -> Row:
    """A new results row for a planned case: its identity and parameters, and its layer's
    theory (harness.theory) so that reports need no layer code; nothing measured."""
    case = planned.case
    return Row(planned, registry.theory_columns(planned.layer, causal=case.causal,
                                                block=case.block,
                                                decode=planned.mode == "decode"))


def make_call(module: torch.nn.Module, x: torch.Tensor, mode: str,
              extra: tuple[torch.Tensor, ...] = (), *,
              compile: bool = False) -> Callable[[], None]:
    """The timed unit of work: a forward under inference_mode, forward + backward, or one
    decode step (harness.layers.decoding.DecodeCall: a step at position n of a state
    prefilled outside the call; repeating it leaves the state as it was, so every call
    costs the same). ``extra``: the layer's inputs after x (an encoder output), which
    train also differentiates, as an encoder-decoder's backward does.

    ``compile``: the forward (and, in train, the backward through it) runs under
    torch.compile (harness.measure.compiled); nothing is compiled until the first call.
    """
    if compile and mode == "decode":
        from harness.measure.compiled import DECODE_REASON

        raise ValueError(DECODE_REASON)
    if mode == "forward":
        module.eval()
        run = _compiled(module) if compile else module

        def forward() -> None:
            with torch.inference_mode():
                run(x, *extra)

        return forward
    if mode == "train":
        module.train()
        x = x.detach().requires_grad_(True)
        extra = tuple(t.detach().requires_grad_(True) for t in extra)
        with torch.no_grad():  # the eager module: compiling happens in the first timed call
            grad_out = torch.randn_like(module(x, *extra))
        run = _compiled(module) if compile else module

        def train_step() -> None:
            # Gradients accumulate into the .grad buffers the first call allocated, as in
            # gradient accumulation; freeing them here would hide frees from the CPU memory
            # measurement (it sees only what the call allocates) and add allocator work.
            run(x, *extra).backward(grad_out)

        return train_step
    if mode == "decode":  # x: (B, n + 1, d), n positions prefilled, then one token timed
        from harness.layers.decoding import DecodeCall

        module.eval()
        return DecodeCall(module, x, *extra)
    raise ValueError(f"mode must be 'forward', 'train' or 'decode', got {mode!r}")


def _compiled(module: torch.nn.Module) -> Callable[..., Any]:
    from harness.measure.compiled import compile_module

    return compile_module(module)


@lru_cache(maxsize=256)
def _flop_counts(layer: str, variant: str, case: LayerCase, mode: str) -> dict[str, Any]:
    from harness.flops import count_layer, count_step

    if mode == "decode":
        return count_step(registry.get(layer), case, variant)
    return count_layer(registry.get(layer), case, variant, train=(mode == "train"))


@lru_cache(maxsize=256)
def _structure(layer: str, case: LayerCase) -> dict[str, Any]:
    from harness.measure.structure import measure_path_length, measure_seq_ops

    seq = measure_seq_ops(layer, case)
    return {
        "path_length_measured": float(measure_path_length(layer, case)),
        "seq_ops_measured": float(seq.seq_ops),
        "graph_depth": int(seq.depth),
    }


@lru_cache(maxsize=256)
def _decode_problem(layer: str, variant: str) -> str | None:
    """Why the layer's module cannot decode (no decoding state), or None; built on meta."""
    from harness.layers.decoding import can_decode

    entry = registry.get(layer)
    case = LayerCase(seq_len=2, d_model=8, heads=2, kernel=3, window=2, src_len=2, height=1,
                     width=2, causal=True, batch=1)
    try:
        with torch.device("meta"):
            module = entry.build(case, variant)
    except Exception:  # noqa: BLE001 - a layer this probe case does not fit: try the real one
        return None
    if can_decode(module):
        return None
    return f"{layer} ({variant}) cannot decode: its module has no decoding state"


def _structure_key(case: LayerCase) -> LayerCase:
    """Structure does not depend on width or batch: measure on a narrow instance (always
    the eager module: compiling changes how the graph runs, not what depends on what)."""
    return replace(_eager(case), d_model=2 * (case.heads or 1), batch=1)


def _eager(case: LayerCase) -> LayerCase:
    """The case run without torch.compile: what FLOPs and structure are measured on."""
    return replace(case, compile=False)


@contextlib.contextmanager
def _case_settings(planned: PlannedCase, settings: ExecSettings) -> Iterator[None]:
    """The case's torch threads and, on CUDA, its float32 precision (IEEE or TF32)."""
    with _threads(settings.threads), contextlib.ExitStack() as stack:
        if str(planned.device).startswith("cuda"):
            stack.enter_context(float32_mode(settings.tf32))
        yield


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` for one case, the old value restored after
    (an inline run must not change its host process for good)."""
    before = torch.get_num_threads()
    if count is not None and count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def prepared(planned: PlannedCase) -> tuple[Callable[[], None], int, torch.device]:
    """The case's timed call, its working set (bytes) and its device, built from the seed
    (the pytest plugin times the same call). A compiled case's call compiles in its first
    call: run :func:`harness.measure.compiled.first_call` before timing it."""
    from harness.layers.inputs import extra_inputs
    from harness.measure.timing import working_set_bytes

    entry = registry.get(planned.layer)
    case: LayerCase = planned.case
    device = torch.device(planned.device)
    dtype = _DTYPES[planned.dtype]
    torch.manual_seed(planned.seed)
    module = entry.build(case, planned.variant, decode=planned.mode == "decode")
    module = module.to(device=device, dtype=dtype)
    positions = case.seq_len + (planned.mode == "decode")  # decode: the prefill and a token
    x = torch.randn(case.batch, positions, case.d_model, device=device, dtype=dtype)
    extra = extra_inputs(entry, case, device=device, dtype=dtype)  # after x, same RNG
    call = make_call(module, x, planned.mode, extra, compile=case.compile)
    return call, working_set_bytes(module, x, extra), device


def _time_round(call: Callable[[], None], working_set: int, device: Any,
                settings: ExecSettings) -> Samples:
    from harness.measure.timing import round_on_device

    return round_on_device(
        call, device=device, config=settings.timing, working_set=working_set,
        flush_l2=settings.flush_l2, cpu_timer=settings.cpu_timer, wait=wait_counter(),
    )


def _round(call: Callable[[], None], working_set: int, device: Any, settings: ExecSettings,
           *, compiled: bool) -> Samples:
    """One timing round; for a compiled call (already past its first call) the
    compilations during the round are counted into ``Samples.recompiles``."""
    if not compiled:
        return _time_round(call, working_set, device, settings)
    from harness.measure.compiled import CompileWatch

    with CompileWatch() as watch:
        samples = _time_round(call, working_set, device, settings)
    return replace(samples, recompiles=watch.count)


def retime(planned: PlannedCase, settings: ExecSettings) -> Samples:
    """One more round of a measured case: rebuilt from its seed (compiled again, outside
    the round, when it is a compiled case), warmed up, timed.

    Raises on failure (the sweep keeps the rounds it has and says why in the note).
    """
    from harness.measure.compiled import first_call

    with _case_settings(planned, settings):
        call, working_set, device = prepared(planned)
        if planned.case.compile:
            first_call(call)
        return _round(call, working_set, device, settings, compiled=planned.case.compile)


def apply_timing(row: Row, rounds: list[Samples], settings: ExecSettings
                 ) -> TimingResult:
    """Put the statistics of a case's rounds so far into its row, with the metrics derived
    from the median (FLOP/s, tokens/s)."""
    result = TimingResult.from_rounds(
        rounds, rule=settings.contention, spread_threshold=settings.timing.spread_threshold
    )
    row.update(result.as_row())
    throttled = telemetry_note(row)  # clocks, throttling, other GPU users: first round's
    if throttled:
        row["time_unreliable"] = True
        row["time_note"] = "; ".join(n for n in (row.get("time_note"), throttled) if n)
    median_s = result.median
    flops = row.get("flops_analytic")
    if median_s > 0:
        if isinstance(flops, (int, float)):
            row["flops_per_s"] = flops / median_s
        size = row.case.case
        tokens = size.batch * (1 if getattr(row.case, "mode", None) == "decode" else size.seq_len)
        row["tokens_per_s"] = tokens / median_s
    return result


def _release(device: torch.device) -> None:
    """After a failed case, once nothing refers to its tensors: collect reference cycles
    and hand the allocator's cached blocks back, so the next case starts from a clean
    baseline (an OOM frontier must not depend on what failed before)."""
    gc.collect()
    if device.type == "cuda":
        # after a sticky CUDA error this raises too; the row keeps the first error, and the
        # sweep replaces the worker (harness.sweep)
        with contextlib.suppress(RuntimeError):
            torch.cuda.empty_cache()


def execute(planned: PlannedCase, settings: ExecSettings) -> tuple[Row, list[Samples]]:
    """Measure one case (timing: its first round); never raises for a failure of the case.

    Returns the row and the case's timing rounds (empty when it was not timed).
    """
    started = time.time()  # the node's clock: when cases ran, and on which device at once
    with _case_settings(planned, settings):
        row, rounds = _execute(planned, settings)
    row.update(started_s=started, ended_s=time.time())
    return row, rounds


def _execute(planned: PlannedCase, settings: ExecSettings) -> tuple[Row, list[Samples]]:
    from harness.measure.compiled import first_call
    from harness.measure.memory import measure_peak_memory

    row = case_row(planned)
    row.update(settings.env)
    started = time.perf_counter()
    if planned.skip_reason:
        row.update(status="skipped", message=planned.skip_reason)
        return row, []
    rounds: list[Samples] = []
    entry = registry.get(planned.layer)
    case: LayerCase = planned.case
    try:
        cost = entry.cost_of(case, planned.variant, decode=planned.mode == "decode")
    except ValueError as exc:
        row.update(status="skipped", message=str(exc))
        return row, []
    itemsize = torch.empty((), dtype=_DTYPES[planned.dtype]).element_size()
    train = planned.mode == "train"
    flops_mode: int | None = cost.train_flops if train else cost.flops
    row.update(
        flops_analytic=flops_mode,
        flops_forward_analytic=cost.flops,
        flops_useful_analytic=cost.flops_useful * (3 if train else 1),
        flops_other_analytic=cost.flops_other,
        param_count=cost.params,
        param_bytes=cost.params * itemsize,
        act_mem_analytic_bytes=cost.activation_bytes(itemsize),
        path_length_analytic=cost.path_length,
        seq_ops_analytic=cost.seq_ops,
    )
    if planned.mode == "decode":
        reason = _decode_problem(planned.layer, planned.variant)
        if reason:
            row.update(status="skipped", message=reason)
            return row, []
        step = entry.step_cost_of(case, planned.variant)
        flops_mode = step.flops if step is not None else None
        row.update(  # the timed call is one step: its FLOPs, not the forward's
            flops_analytic=flops_mode, flops_useful_analytic=flops_mode,
            flops_other_analytic=step.flops_other if step is not None else None,
            act_mem_analytic_bytes=None,
            state_bytes_analytic=step.state_elements * itemsize if step is not None else None,
        )

    # 1. time (first round) and memory: the case itself; a failure here is the row's status
    device = torch.device(planned.device)
    row.update(dict.fromkeys(TELEMETRY_COLUMNS))
    if device.type == "cuda":
        row.update(precision_columns())  # what float32 ran as (set by _case_settings)
    telemetry: CaseTelemetry | None = None
    failed = False
    call: Callable[[], None] | None = None
    try:
        call, working_set, device = prepared(planned)
        if case.compile:  # compile in a call of its own: never a warm-up or a sample
            compiled = first_call(call)
            row.update(compile_s=compiled.seconds, compile_graphs=compiled.graphs)
        telemetry = CaseTelemetry(str(device))  # after the build: the CUDA context exists
        telemetry.start()
        first = _round(call, working_set, device, settings, compiled=case.compile)
        rounds.append(first)
        row.update(telemetry.stop(
            calls=first.warmup_calls + first.calls_per_sample * len(first.samples)
        ))
        row["state_bytes"] = getattr(call, "state_bytes", None)  # decode: the live state
        telemetry.close()
        if settings.memory:
            mem = measure_peak_memory(call, device=str(device))
            row.update(
                peak_mem_bytes=mem.peak_bytes,
                mem_baseline_bytes=mem.baseline_bytes,
                mem_method=mem.method,
            )
    except Exception as exc:  # noqa: BLE001 - every failure of a case becomes its row
        if telemetry is not None:
            telemetry.close()
        row.update(status="oom" if is_oom(exc) else "error", message=one_line(exc))
        failed = True
    # Out here the exception and its traceback (whose frames hold the case's tensors) are
    # gone; dropping the call frees the module and input, so the cache can be emptied.
    call = None
    if failed:
        _release(device)
        if rounds:
            apply_timing(row, rounds, settings)
        return row, rounds

    # 2. counted FLOPs: outside the timed calls, cached per distinct case, on the eager
    # module (what the layer computes; a compiled case's kernels may fuse or reorder it)
    if settings.flops:
        try:
            counts = _flop_counts(planned.layer, planned.variant, _eager(case), planned.mode)
            uncounted = [*counts["uncounted_torch"], *counts["uncounted_fvcore"],
                         *counts.get("uncounted_torch_train", ())]
            notes = [counts.get("note")]
            if train:  # torch counts the timed work (fwd + bwd); fvcore only the forward
                notes.append(f"flops_fvcore is forward only: {counts['train_flops_fvcore_note']}")
            row.update(
                flops_fvcore=counts["flops_fvcore"],
                flops_torch=counts["train_flops_torch"] if train else counts["flops_torch"],
                flops_uncounted=",".join(dict.fromkeys(uncounted)) or None,
                flops_note="; ".join(n for n in notes if n) or None,
            )
        except Exception as exc:  # noqa: BLE001
            row["flops_note"] = f"counting failed: {one_line(exc)}"

    # 3. structure: measured on a narrow instance, cached per structural case
    forward_problem = entry.problem(case) if planned.mode == "decode" else None
    if settings.structure and forward_problem:  # a decode case whose seq_len no forward has
        row["structure_note"] = f"not measured: no forward case of this seq_len ({forward_problem})"
    elif settings.structure:
        if case.seq_len <= settings.structure_max_n:
            try:
                row.update(_structure(planned.layer, _structure_key(case)))
            except Exception as exc:  # noqa: BLE001
                row["structure_note"] = f"structure measurement failed: {one_line(exc)}"
        else:
            row["structure_note"] = (
                f"not measured: seq_len {case.seq_len} > structure_max_n "
                f"{settings.structure_max_n}"
            )

    # 4. derived
    apply_timing(row, rounds, settings)
    if planned.mode == "decode":  # weights, the state read, the token in and out
        traffic = cost.params * itemsize + (row.get("state_bytes") or 0) \
            + 2 * case.batch * case.d_model * itemsize
    else:
        extra = sum(math.prod(shape) for shape in entry.extra_shapes(case))
        traffic = (cost.params + 2 * case.batch * case.seq_len * case.d_model + extra
                   + cost.activation_elements) * itemsize
    row["arithmetic_intensity"] = flops_mode / traffic if traffic and flops_mode else None
    row.update(status="ok", message="", wall_s=time.perf_counter() - started)
    return row, rounds
