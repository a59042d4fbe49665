"""pytest plugin: a suite's cases as pytest-benchmark benchmarks, and ``layer_benchmark``.

Registered as a ``pytest11`` entry point. What it offers a user - ``--harness-suite``,
``--harness-passes``, the ``harness_case`` and ``layer_benchmark`` fixtures, why a plain
``pytest`` skips the suite's cases, the ``extra_info`` keys, the contention flag - is
docs/ci.md, "1. The suite as benchmarks". Here: the parametrized arguments are the results
columns (:data:`CASE_PARAMS`, from the schema); :func:`benchmark_case` measures a case's
metrics with :func:`harness.measure_case.execute` before pytest-benchmark times the call,
with a timer that synchronises CUDA; :func:`watched` reads the run-queue wait around the
timed calls and :func:`contention_info` turns it into ``time_unreliable`` / ``time_note``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness import schema
from harness.values import plain

if TYPE_CHECKING:  # importing harness.measure imports torch: only where measuring needs it
    from harness.measure.contention import ContentionRule, WaitCounter

#: Parametrized argument names (= results columns); ``--benchmark-group-by=param:NAME``.
CASE_PARAMS = ("layer", "variant", *schema.axis_names())
DEFAULT_SUITE = "suites/quick.yaml"
#: Options that ask for benchmarks to run (pytest-benchmark's option destinations).
RUN_OPTIONS = (
    "benchmark_only", "benchmark_enable", "benchmark_json", "benchmark_save",
    "benchmark_autosave", "harness_suite", "harness_passes",
)
SKIP_REASON = (
    "harness suite benchmark: run with `pytest --benchmark-only` (or --benchmark-enable)"
)
#: Metric columns copied from the metric pass into ``extra_info``.
INFO_METRICS = tuple(c.name for c in schema.COLUMNS if c.info)


@dataclass(frozen=True)
class SuiteCase:
    """One planned case with what it takes to measure it (the ``harness_case`` fixture)."""

    planned: Any  # harness.suite.PlannedCase
    settings: Any  # harness.measure_case.ExecSettings for the metric pass (one timed call only)
    suite: str  # the suite's name
    pass_index: int = 0  # which pass of --harness-passes this is
    passes: int = 1
    wait: WaitCounter | None = None  # run-queue wait counter; None: contention not observed

    def params(self) -> dict[str, Any]:
        return {name: self.planned.params()[name] for name in CASE_PARAMS}

    def run(self, benchmark: Any) -> dict[str, Any]:
        """Measure this case with pytest-benchmark's fixture (see :func:`benchmark_case`)."""
        return benchmark_case(benchmark, self)


@dataclass(frozen=True)
class SuitePlan:
    source: Path
    name: str
    cases: tuple[SuiteCase, ...]
    passes: int = 1

    def lookup(self, values: dict[str, Any]) -> SuiteCase:
        for case in self.cases:
            if case.params() == {name: values.get(name) for name in CASE_PARAMS}:
                return case
        raise LookupError(f"no case of suite {self.name!r} has parameters {values}")


_PLAN = pytest.StashKey[SuitePlan]()


def plugin_cli_args() -> list[str]:
    """``["-p", "harness.bench.plugin"]`` for a pytest command line, unless an installed
    ``pytest11`` entry point loads this plugin already (naming it twice is an error)."""
    from importlib import metadata

    try:
        eps = list(metadata.entry_points(group="pytest11"))
    except Exception:  # noqa: BLE001 - broken metadata: load the plugin by name
        eps = []
    if any(ep.value.split(":")[0] == __name__ for ep in eps):
        return []
    return ["-p", __name__]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "seqlayer-harness benchmarks")
    group.addoption(
        "--harness-suite", metavar="PATH", default=None,
        help="suite whose cases become the `harness_case` benchmarks "
        f"(default: {DEFAULT_SUITE}); giving it also runs them without --benchmark-only",
    )
    group.addoption(
        "--harness-passes", metavar="N", type=int, default=None,
        help="time every suite case N times, pass after pass over the suite (default 1); "
        "`harness compare` uses each case's fastest pass, robust to bursts of load",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "harness_suite: a benchmark generated from a harness suite (skipped in a plain "
        "`pytest`; runs with --benchmark-only / --benchmark-enable)",
    )


def _suite_path(config: pytest.Config) -> Path:
    given = config.getoption("harness_suite", None)
    raw = Path(given or DEFAULT_SUITE)
    candidates = [raw] if raw.is_absolute() else [Path.cwd() / raw, config.rootpath / raw]
    for path in candidates:
        if path.is_file():
            return path
    where = " or ".join(str(p) for p in candidates)
    hint = "" if given else "; give a suite with --harness-suite PATH"
    raise pytest.UsageError(f"--harness-suite: no suite file at {where}{hint}")


def load_plan(config: pytest.Config) -> SuitePlan:
    """The suite's cases, loaded once per session (bad input: a one-line usage error)."""
    if _PLAN in config.stash:
        return config.stash[_PLAN]
    from harness.errors import HarnessInputError
    from harness.run_command import exec_settings
    from harness.suite import expand, load_suite

    path = _suite_path(config)
    try:
        suite = load_suite(path)
        plan = expand(suite)
        base = exec_settings(suite)
    except HarnessInputError as exc:
        raise pytest.UsageError(f"--harness-suite: {exc}") from None
    settings = replace(base, timing=_one_call_timing())
    cases = tuple(SuiteCase(planned=p, settings=settings, suite=suite.name) for p in plan)
    passes = config.getoption("harness_passes", None) or 1
    if passes < 1:
        raise pytest.UsageError(f"--harness-passes: {passes} is not a positive number")
    cases = tuple(replace(case, passes=passes) for case in cases)
    config.stash[_PLAN] = SuitePlan(source=path, name=suite.name, cases=cases, passes=passes)
    return config.stash[_PLAN]


def _one_call_timing() -> Any:
    """The metric pass times a single call: the real timing is pytest-benchmark's."""
    from harness.measure.timing import TimingConfig

    return TimingConfig(min_warmup=1, warmup_s=0.0, budget_s=0.0, min_samples=1,
                        max_samples=1, min_block_s=0.0)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "harness_case" not in metafunc.fixturenames:
        return
    plan = load_plan(metafunc.config)
    values = []
    for index in range(plan.passes):  # pass-major order: each pass runs the whole suite
        for case in plan.cases:
            marks = [pytest.mark.harness_suite]
            if case.planned.skip_reason:
                marks.append(pytest.mark.skip(reason=case.planned.skip_reason))
            params = case.params()
            label = case.planned.label if plan.passes == 1 else f"{case.planned.label}-p{index}"
            values.append(pytest.param(*(params[n] for n in CASE_PARAMS), index, id=label,
                                       marks=marks))
    metafunc.parametrize([*CASE_PARAMS, "harness_pass"], values)


def benchmarks_requested(config: pytest.Config) -> bool:
    """Whether this session asked for benchmarks (see the module docstring)."""
    return any(config.getoption(name, None) for name in RUN_OPTIONS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if benchmarks_requested(config):
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "harness_case" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_benchmark_group_stats(config: pytest.Config, benchmarks: list[Any], group_by: str
                                 ) -> list[tuple[str | None, list[Any]]] | None:
    """``--benchmark-group-by`` with ``param:NAME`` that tolerates benchmarks without NAME.

    pytest-benchmark's own grouping fails on a benchmark that is not parametrized (a user's
    ``layer_benchmark`` test beside the suite's); here such a benchmark takes NAME from its
    ``extra_info``, or groups under ``NAME=None``. Other groupings are left to pytest-benchmark.
    """
    keys = group_by.split(",")
    if not any(key.startswith("param:") for key in keys):
        return None

    def part(bench: Any, key: str) -> Any:
        if key.startswith("param:"):
            name = key.split(":", 1)[1]
            params = bench["params"] or {}
            value = params[name] if name in params else (bench["extra_info"] or {}).get(name)
            return f"{name}={value}"
        simple = {"group": "group", "name": "name", "fullname": "fullname", "param": "param"}
        if key in simple:
            return bench[simple[key]]
        if key in ("func", "fullfunc"):
            return bench["name" if key == "func" else "fullname"].split("[")[0]
        raise pytest.UsageError(f"--benchmark-group-by: unsupported grouping {key!r}")

    groups: dict[str | None, list[Any]] = {}
    for bench in benchmarks:
        label = " ".join(str(p) for p in (part(bench, key) for key in keys) if p) or None
        groups.setdefault(label, []).append(bench)
    for members in groups.values():
        members.sort(key=lambda bench: bench["fullname" if "full" in group_by else "name"])
    return sorted(groups.items(), key=lambda item: item[0] or "")


def _harness_case(request: pytest.FixtureRequest, harness_pass: int,
                  harness_wait_counter: WaitCounter | None, **params: Any) -> SuiteCase:
    """The suite case this test is parametrized with (see :func:`benchmark_case`)."""
    case = load_plan(request.config).lookup(params)
    return replace(case, pass_index=harness_pass, wait=harness_wait_counter)


# pytest passes a fixture the arguments its signature names: the parametrized CASE_PARAMS
_harness_case.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
    inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for name in ("request", "harness_pass", "harness_wait_counter", *CASE_PARAMS)
])
harness_case = pytest.fixture(_harness_case, name="harness_case")


@pytest.fixture(scope="session")
def harness_wait_counter() -> WaitCounter | None:
    """This process's run-queue wait counter (seconds its threads waited for a CPU), or None
    where the kernel keeps none; read around each benchmark to detect contention. A project
    (or a test) overrides this fixture to supply another counter."""
    from harness.measure.contention import wait_counter

    return wait_counter()


@pytest.fixture
def layer_benchmark(benchmark: Any, harness_wait_counter: WaitCounter | None) -> Any:
    """``layer_benchmark(module, x, mode="forward")``: benchmark a user's ``nn.Module``.

    FLOPs (FlopCounterMode and fvcore, 2 per multiply-add), peak memory and the parameter
    count are measured before the timed calls and stored in ``benchmark.extra_info``, and
    contention during them after (see :func:`contention_info`); returns that dict.
    """

    def run(module: Any, x: Any, *, mode: str = "forward", flops: bool = True,
            memory: bool = True) -> dict[str, Any]:
        return benchmark_module(benchmark, module, x, mode=mode, flops=flops, memory=memory,
                                wait=harness_wait_counter)

    return run


# --- measuring ----------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-safe scalars: numpy -> Python, NaN and inf -> None."""
    value = plain(value)
    return None if isinstance(value, float) and math.isinf(value) else value


def case_info(case: SuiteCase, row: Mapping[str, Any]) -> dict[str, Any]:
    """``extra_info`` of a suite benchmark: the case's parameters and its non-time metrics."""
    planned = case.planned
    info: dict[str, Any] = {"harness": 1, "suite": case.suite, "label": planned.label,
                            "case_id": planned.case_id}
    info.update({k: _plain(v) for k, v in planned.params().items()})
    info.update({k: _plain(row.get(k)) for k in INFO_METRICS if k in row})
    if case.passes > 1:
        info.update(harness_pass=case.pass_index, harness_passes=case.passes)
    return info


def benchmark_case(benchmark: Any, case: SuiteCase) -> dict[str, Any]:
    """Measure one suite case: metrics first (untimed), then pytest-benchmark's timing.

    A case that cannot be built at these parameters is a pytest skip with the reason; an
    out-of-memory is a skip too (the device is too small, not the code wrong); any other
    failure fails the test with the error's first line.
    """
    from harness.bench.timers import use_device_timer
    from harness.measure_case import execute, prepared

    planned = case.planned
    if planned.skip_reason:
        pytest.skip(planned.skip_reason)
    if planned.case_id not in _ROWS:  # once per case and session: passes share the metrics
        _ROWS[planned.case_id], _ = execute(planned,
                                            replace(case.settings, env=_env(planned.device)))
    row = _ROWS[planned.case_id]
    status, message = row.get("status"), row.get("message") or ""
    if status == "skipped":
        pytest.skip(message)
    if status == "oom":
        pytest.skip(f"out of memory: {message}")
    if status != "ok":
        pytest.fail(f"{planned.label}: {status}: {message}", pytrace=False)
    info = case_info(case, row)
    benchmark.extra_info.update(info)
    if benchmark.group is None:
        benchmark.group = planned.layer

    call, _, device = prepared(planned)
    use_device_timer(benchmark, device)
    if not planned.case.compile:
        info.update(watched(benchmark, call, case.wait))
        return info
    from harness.measure.compiled import CompileWatch, first_call

    first_call(call)  # compiled again for this call: outside pytest-benchmark's timing
    with CompileWatch() as watch:
        info.update(watched(benchmark, call, case.wait))
    info.update(recompile_info(watch.count, info))
    benchmark.extra_info.update(info)
    return info


def recompile_info(count: int | None, info: Mapping[str, Any]) -> dict[str, Any]:
    """``compile_recompiles`` of a compiled benchmark (compilations during pytest-benchmark's
    calibration, warm-up and rounds), and the flag and note when there were any."""
    out: dict[str, Any] = {"compile_recompiles": count}
    if count:
        note = f"recompiled {count}x while timing (rounds may hold compile time)"
        out["time_unreliable"] = True
        out["time_note"] = "; ".join(n for n in (info.get("time_note"), note) if n)
    return out


def watched(benchmark: Any, call: Any, wait: WaitCounter | None) -> dict[str, Any]:
    """Run ``benchmark(call)`` and record in its ``extra_info`` whether it was contended.

    ``wait`` (a :data:`harness.measure.contention.WaitCounter`, or None) is read just before
    and just after the benchmark, outside the timed calls. Its window also holds
    pytest-benchmark's calibration, warm-up and one last untimed call, all charged to the
    measured time: the check errs towards "contended". Returns the keys it added.
    """
    before = wait() if wait is not None else None
    benchmark(call)
    waited = None  # an exited thread takes its share along: clamp at 0
    if wait is not None and before is not None:
        waited = max(wait() - before, 0.0)
    info = contention_info(waited, measured_seconds(benchmark))
    benchmark.extra_info.update(info)
    return info


def measured_seconds(benchmark: Any) -> float | None:
    """The time pytest-benchmark measured over all rounds (None when it timed nothing, as
    with ``--benchmark-disable``): its per-iteration ``stats.total`` times the iterations
    per round."""
    meta = getattr(benchmark, "stats", None)
    stats = getattr(meta, "stats", None)
    if not stats:
        return None
    return float(stats.total) * int(getattr(meta, "iterations", 1) or 1)


def contention_info(waited: float | None, measured: float | None,
                    rule: ContentionRule | None = None) -> dict[str, Any]:
    """``time_unreliable`` / ``time_note`` / ``time_wait_s`` of one benchmark.

    Contended when this process's threads waited for a CPU (``waited`` seconds) more than
    ``rule.sample_wait`` (:class:`harness.measure.contention.ContentionRule`) of the time
    the benchmark measured: the same share the timing engine allows one sample. Not
    observable (no counter, nothing measured): reliable as far as is known, no note.
    """
    from harness.measure.contention import ContentionRule

    rule = rule or ContentionRule()
    out: dict[str, Any] = {"time_unreliable": False, "time_note": None, "time_wait_s": waited}
    if waited is None or not measured or measured <= 0:
        return out
    share = waited / measured
    if share > rule.sample_wait:
        out["time_unreliable"] = True
        out["time_note"] = (f"contended: threads waited for a CPU {waited:.4g} s during the "
                            f"benchmark, {share:.0%} of its {measured:.4g} s of timed calls "
                            f"(limit {rule.sample_wait:.0%})")
    return out


_ENV: dict[str, dict[str, Any]] = {}
_ROWS: dict[str, Mapping[str, Any]] = {}


def _env(device: str) -> dict[str, Any]:
    if device not in _ENV:
        from harness.measure.env import environment
        from harness.measure.heap import DEFAULT

        # pytest's own process measures here, and its heap is left as glibc keeps it
        _ENV[device] = {**environment(device), "env_malloc": DEFAULT}
    return _ENV[device]


def module_info(module: Any, x: Any, *, mode: str, flops: bool) -> dict[str, Any]:
    """Untimed facts about a user's module on input ``x``: shape, parameters, FLOPs."""
    info: dict[str, Any] = {
        "module": type(module).__name__,
        "input_shape": list(x.shape),
        "dtype": str(x.dtype).replace("torch.", ""),
        "device": str(x.device),
        "mode": mode,
        "param_count": int(sum(p.numel() for p in module.parameters())),
    }
    if not flops:
        return info
    from harness.flops import count_fvcore, count_torch
    from harness.measure_case import one_line

    notes = []
    if mode == "decode":  # the timed call is one step at position n of x's n + 1
        from harness.layers.decoding import DecodeStep, require_decoder

        require_decoder(module)
        n = x.shape[1] - 1
        module = DecodeStep(module, module.decode_init(x.shape[0], n + 1, x), n)
        x = x[:, n:]
    try:
        counted = count_torch(module, x, train=(mode == "train"))
        info["flops_torch"] = counted.total
        info["flops_torch_uncounted"] = list(counted.uncounted)
    except Exception as exc:  # noqa: BLE001 - a counter failure must not lose the timing
        info["flops_torch"] = None
        notes.append(f"FlopCounterMode failed: {one_line(exc)}")
    if mode in ("forward", "decode"):
        try:
            counted = count_fvcore(module, x)
            info["flops_fvcore"] = counted.total
            info["flops_fvcore_uncounted"] = list(counted.uncounted)
        except Exception as exc:  # noqa: BLE001
            info["flops_fvcore"] = None
            notes.append(f"fvcore failed: {one_line(exc)}")
    else:
        info["flops_fvcore"] = None
        notes.append("fvcore counts the forward pass only")
    if notes:
        info["flops_note"] = "; ".join(notes)
    return info


def benchmark_module(benchmark: Any, module: Any, x: Any, *, mode: str = "forward",
                     flops: bool = True, memory: bool = True,
                     wait: WaitCounter | None = None) -> dict[str, Any]:
    """Benchmark ``module(x)`` (forward, or forward + backward with ``mode="train"``, or
    with ``mode="decode"`` one step at position n after a prefill of x's first n = len - 1
    positions, for a module implementing harness.layers.decoding.Decoder).

    ``wait``: the run-queue wait counter read around the timed calls (the
    ``harness_wait_counter`` fixture); None leaves contention unobserved.
    """
    from harness.bench.timers import use_device_timer
    from harness.measure.memory import measure_peak_memory
    from harness.measure_case import make_call

    info = module_info(module, x, mode=mode, flops=flops)
    call = make_call(module, x, mode)
    if memory:
        mem = measure_peak_memory(call, device=str(x.device))
        info.update(peak_mem_bytes=mem.peak_bytes, mem_method=mem.method)
    benchmark.extra_info.update(info)
    use_device_timer(benchmark, x.device)
    info.update(watched(benchmark, call, wait))
    return info

