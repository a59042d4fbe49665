"""torch.compile for a case: compile a module, time its first call apart, count recompiles.

A compiled case's timed call is the eager module wrapped in ``torch.compile`` (default
inductor backend). Compilation happens lazily, in the first call: :func:`first_call` runs
that call alone, on its own clock, so the compile time is a column of its own
(``compile_s``) and never a sample. Every later compilation is seen through dynamo's
compile-start callbacks (``torch._dynamo.callback_handler``, the hook behind
``torch._dynamo.on_compile_start``; it fires once per frame dynamo traces: a first compile,
a recompile after a guard failure, a graph-break continuation). :class:`CompileWatch`
counts them while it is open; the measuring code opens one around each timing round, and
a count above zero marks the time unreliable (a recompile inside a sample times the
compiler, not the layer).

Torch is imported inside the functions: planning a suite without compile needs none.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

#: Why a compiled decode case is refused (a skipped row); docs/compile.md says more.
DECODE_REASON = (
    "compile: decode is not run compiled (the step updates the layer's state in place at a "
    "Python-int position, on which torch.compile specialises); set compile: false for "
    "mode: decode"
)


class CallbackHandler(Protocol):
    """What :class:`CompileWatch` needs of ``torch._dynamo.callback_handler``."""

    def register_start_callback(self, callback: Callable[[Any], None]) -> Any: ...

    def remove_start_callback(self, callback: Callable[[Any], None]) -> None: ...


def dynamo_handler() -> CallbackHandler | None:
    """torch's compile-callback handler, or None where this torch has none."""
    try:
        from torch._dynamo import callback_handler
    except ImportError:  # an older or stripped torch: recompiles cannot be observed
        return None
    return callback_handler


class CompileWatch:
    """Counts compilations (dynamo frames traced) between ``__enter__`` and ``__exit__``.

    ``handler`` is ``torch._dynamo.callback_handler`` or a stand-in with the same two
    methods (tests); ``count`` is None when there is no handler (not observable).
    """

    def __init__(self, handler: CallbackHandler | str | None = "torch") -> None:
        self._handler = dynamo_handler() if isinstance(handler, str) else handler
        self.count: int | None = None if self._handler is None else 0
        self.ids: list[str] = []  # dynamo's compile ids, e.g. '0/1': frame 0, recompile 1

    def _started(self, args: Any) -> None:
        if self.count is not None:
            self.count += 1
        self.ids.append(str(getattr(args, "compile_id", "")))

    def __enter__(self) -> CompileWatch:
        if self._handler is not None:
            self._handler.register_start_callback(self._started)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handler is not None:
            self._handler.remove_start_callback(self._started)


@dataclass(frozen=True)
class FirstCall:
    """The compiling call of a case: how long it took and what it compiled."""

    seconds: float
    graphs: int | None  # graphs compiled (0: dynamo captured nothing); None: not observable
    frames: int | None  # compilations started (frames dynamo traced); None: not observable


def compiled_graphs() -> int | None:
    """Graphs dynamo has compiled in this process so far, or None where torch does not say.

    Read from dynamo's statistics counters (``torch._dynamo.utils.counters``, private but
    the count torch's own tests use): a frame dynamo traced without capturing a graph (an
    nn.LSTM, which dynamo leaves to eager by default) starts a compilation but adds none.
    """
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return int(counters["stats"]["unique_graphs"])


class CompileFailed(RuntimeError):
    """torch.compile could not compile the layer (the row's status is ``error``)."""


def compile_module(module: Any) -> Any:
    """``module`` under ``torch.compile``, compiled from scratch.

    ``torch.compiler.reset()`` first drops dynamo's caches of this process: dynamo keys its
    cache on the forward's code, shared by every instance of a layer class, so without it
    a case would reuse (or recompile, with dynamic shapes) what an earlier case of the same
    layer compiled, and its kernels and compile time would depend on the order of the plan.
    (Inductor's on-disk cache of generated code is kept: a case compiled before, in this
    run or an earlier one, compiles faster, as it would for a user.)
    """
    import torch

    _load_compiler()
    torch.compiler.reset()
    return torch.compile(module)


@functools.lru_cache(maxsize=1)
def _load_compiler() -> None:
    """Compile and run a tiny function once per process, untimed: the first compile of a
    process loads dynamo's and inductor's modules (seconds), which would otherwise land in
    the compile time of whichever case happens to come first."""
    import torch

    def tiny(x: Any) -> Any:
        return torch.relu(x) + 1

    with contextlib.suppress(Exception):  # a broken compiler shows on the case's own row
        torch.compile(tiny)(torch.ones(2))


def first_call(call: Callable[[], None], *, clock: Callable[[], float] = time.perf_counter,
               handler: CallbackHandler | str | None = "torch",
               graphs: Callable[[], int | None] = compiled_graphs) -> FirstCall:
    """Run the compiled ``call`` once: dynamo traces and inductor generates code here.

    ``clock`` times it; ``handler`` (see :class:`CompileWatch`) and ``graphs`` (a count of
    graphs compiled so far) say what it compiled. Raises :class:`CompileFailed` with the
    reason when compiling fails.
    """
    before = graphs()
    with CompileWatch(handler) as watch:
        started = clock()
        try:
            call()
        except Exception as exc:
            raise CompileFailed(f"torch.compile failed: {reason(exc)}") from exc
        seconds = clock() - started
    after = graphs()
    made = None if before is None or after is None else after - before
    return FirstCall(seconds, made, watch.count)


def reason(exc: BaseException) -> str:
    """An exception in one line; dynamo's 'backend raised:' headers take the next line too."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    return f"{type(exc).__name__}: {text}".rstrip(": ")


@functools.lru_cache(maxsize=8)
def compile_problem(device: str) -> str | None:
    """Why torch.compile's default backend cannot run on ``device`` here, or None.

    CPU: inductor writes C++ and needs a compiler (``CXX`` or g++ on the PATH); CUDA: it
    needs triton. Private torch helpers are used where torch has no public check; when one
    is missing the answer is None and a failure shows on the row when the case runs.
    """
    try:
        import torch._dynamo as dynamo
    except ImportError as exc:
        return f"compile: this torch has no torch.compile ({exc})"
    if not dynamo.is_dynamo_supported():
        return "compile: torch.compile is not supported on this Python or platform"
    if device.startswith("cuda"):
        try:
            from torch.utils._triton import has_triton
        except ImportError:
            return None
        return None if has_triton() else (
            "compile: inductor needs triton for CUDA and this torch has none "
            "(pip install triton matching torch)")
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:
        return None
    try:
        get_cpp_compiler()
    except Exception as exc:  # noqa: BLE001 - whatever the search raises, it found none
        return (f"compile: inductor found no C++ compiler for CPU code ({reason(exc)}); "
                "install g++ or set CXX")
    return None
