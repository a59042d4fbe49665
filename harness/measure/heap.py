"""glibc's heap held steady, so that a call's time does not depend on what ran before it.

torch's CPU allocator takes every tensor from malloc. glibc hands large blocks back to the
system (mmap'ed blocks when freed, the heap's top once more than the trim threshold of it is
free), and both thresholds move with what the process allocated and freed before. A call
whose multi-MB buffers come back as fresh pages pays a page fault for every 4 KiB it
touches: on this project's 2-core machine, DynamicConv's band path through bmm and
head-major copies (n = 64, d = 1024, batch 8) took 2.5 ms a call with 1504 page faults after
one allocation history and 0.7 ms with none after another, in the same process. A worker
that measures case after case would rank a case by its predecessors.

Setting the trim threshold to 1 GiB and the mmap threshold to its 64-bit ceiling (32 MiB)
keeps freed blocks under 32 MiB in the heap: after the warm-up a call's buffers come back
without faults whatever ran before. Blocks over 32 MiB are still mapped afresh every time
(a cost such a call has in any process). Measuring processes call :func:`steady_heap` once at
start; ``env_malloc`` records the policy.
"""

from __future__ import annotations

import ctypes
from typing import Any

#: glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD = 2**30
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's ceiling on 64-bit
STEADY = "glibc steady: trim 1 GiB, mmap 32 MiB"
DEFAULT = "default"


def _mallopt(libc: Any = None) -> Any:
    try:
        return (libc if libc is not None else ctypes.CDLL(None)).mallopt
    except (OSError, AttributeError):
        return None


def heap_policy(libc: Any = None) -> str:
    """The policy :func:`steady_heap` applies here: STEADY with glibc, else DEFAULT."""
    return STEADY if _mallopt(libc) is not None else DEFAULT


def steady_heap(libc: Any = None) -> str:
    """Hold this process's heap steady (see the module docstring); returns the policy in
    force: DEFAULT where the C library has no mallopt (not glibc) or refuses a value."""
    mallopt = _mallopt(libc)
    if mallopt is None:
        return DEFAULT
    done = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) and mallopt(M_MMAP_THRESHOLD,
                                                                  MMAP_THRESHOLD_MAX)
    return STEADY if done else DEFAULT
