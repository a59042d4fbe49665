"""Measurement primitives: wall time, peak memory, structure (path length, sequential ops),
the device's peak rates and the environment record.

Measurement returns data (frozen results with ``as_row()`` columns) and never renders or
plots; harness.measure_case turns them into result rows.
"""

from harness.measure.env import environment, git_state, nvml_record
from harness.measure.memory import MemoryResult, measure_peak_memory
from harness.measure.timing import (
    TimingConfig,
    TimingResult,
    collect_samples,
    cuda_event_timer,
    time_callable,
    time_cuda,
    time_on_device,
    working_set_bytes,
)

__all__ = [
    "MemoryResult",
    "TimingConfig",
    "TimingResult",
    "collect_samples",
    "cuda_event_timer",
    "environment",
    "git_state",
    "measure_peak_memory",
    "nvml_record",
    "time_callable",
    "time_cuda",
    "time_on_device",
    "working_set_bytes",
]
