"""A known slowdown injected into chosen layers: does ``harness compare`` catch it?

Test machinery, kept out of the measuring code. :func:`install` replaces those layers'
registry entries with ones whose modules busy-wait after each forward until the forward
took ``factor`` times as long on ``clock`` - the clock the timer reads (wall time or the
process's CPU time), so the timer sees exactly that factor whatever it measures. FLOPs,
memory and structure are untouched (a busy-wait is no tensor operation).

Child processes (``harness run`` and its spawned worker, pytest sessions) get it through a
``sitecustomize.py`` on their ``PYTHONPATH`` (:func:`child_env`): Python imports that module
at start-up, before any harness code runs.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

CLOCKS: dict[str, Callable[[], float]] = {
    "perf_counter": time.perf_counter,
    "process_time": time.process_time,
}


def parse(spec: str) -> dict[str, float]:
    """``'lstm=1.25,conv=2'`` -> ``{'lstm': 1.25, 'conv': 2.0}``."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, factor = item.partition("=")
        try:
            value = float(factor)
        except ValueError:
            value = -1.0
        if not sep or not name.strip() or value < 1:
            raise ValueError(f"slowdown {item!r} is not LAYER=FACTOR with FACTOR >= 1")
        out[name.strip()] = value
    return out


def _slowed_class() -> type:
    from torch import nn

    class Slowed(nn.Module):
        """``inner`` whose forward lasts ``factor`` times as long on ``clock``."""

        def __init__(self, inner: nn.Module, factor: float, clock: Callable[[], float]):
            super().__init__()
            self.inner = inner
            self.factor = factor
            self.clock = clock

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            start = self.clock()
            out = self.inner(*args, **kwargs)
            end = start + (self.clock() - start) * self.factor
            while self.clock() < end:
                pass
            return out

    return Slowed


def install(factors: Mapping[str, float], clock: str = "perf_counter") -> None:
    """Slow the layers named in ``factors`` in this process's registry (forward only)."""
    from harness import registry

    read = CLOCKS[clock]
    slowed = _slowed_class()
    for name, factor in factors.items():
        entry = registry.get(name)

        def wrap(builder: Any, factor: float = factor) -> Any:
            return lambda case, depth: slowed(builder(case, depth), factor, read)

        variants = {variant: wrap(builder) for variant, builder in entry.variants.items()}
        registry._REGISTRY[name] = dataclasses.replace(entry, variants=variants)


def child_env(factors: Mapping[str, float], clock: str = "perf_counter",
              env: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment whose Python processes start with :func:`install` already done.

    Writes a ``sitecustomize.py`` into a new temporary folder and puts it first on
    ``PYTHONPATH`` (the folder lives as long as the machine's temporary files).
    """
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r} (known: {', '.join(CLOCKS)})")
    folder = Path(tempfile.mkdtemp(prefix="harness-slowdown-"))
    (folder / "sitecustomize.py").write_text(
        "import harness.bench.slowdown as _slowdown\n"
        f"_slowdown.install({dict(factors)!r}, {clock!r})\n"
    )
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), out.get("PYTHONPATH")]))
    return out


if __name__ == "__main__":  # pragma: no cover - print the env line for a shell
    print(child_env(parse(sys.argv[1]))["PYTHONPATH"])
