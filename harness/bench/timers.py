"""Timers for pytest-benchmark that wait for the device before the clock is read.

pytest-benchmark reads ``timer()`` before and after a loop of calls. CUDA kernels are
launched asynchronously, so without a synchronisation the second reading measures launch
overhead, not the work. :func:`synchronized` wraps whatever timer pytest-benchmark was
configured with (``--benchmark-timer``) so that every reading first waits for the device.
On CPU nothing is wrapped: there is nothing to wait for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Timer = Callable[[], float]

_CACHE: dict[tuple[Any, str], Timer] = {}


def synchronized(timer: Timer, sync: Callable[[], object]) -> Timer:
    """``timer`` preceded by ``sync()``: pending device work completes before each reading."""

    def synced() -> float:
        sync()
        return timer()

    synced.__name__ = f"synchronized_{getattr(timer, '__name__', 'timer')}"
    synced.__qualname__ = synced.__name__
    return synced


def device_timer(timer: Timer, device: object) -> Timer:
    """The timer to use for work on ``device``: synchronised on CUDA, ``timer`` elsewhere.

    Cached per (timer, device) so pytest-benchmark measures each wrapper's precision once.
    """
    import torch

    dev = torch.device(str(device))
    if dev.type != "cuda":
        return timer
    key = (timer, str(dev))
    if key not in _CACHE:
        _CACHE[key] = synchronized(timer, lambda: torch.cuda.synchronize(dev))
    return _CACHE[key]


def use_device_timer(benchmark: Any, device: object) -> None:
    """Make a pytest-benchmark fixture read its clock only after ``device`` is idle.

    pytest-benchmark keeps its timer in the fixture's ``_timer`` attribute (read when the
    benchmark starts); replacing it keeps the user's ``--benchmark-timer`` choice underneath.
    """
    benchmark._timer = device_timer(benchmark._timer, device)
