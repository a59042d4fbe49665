"""The device's peak FLOP/s and memory bandwidth, for efficiency and roofline plots.

On a known GPU the vendor's datasheet numbers (dense, no sparsity) are used; elsewhere a
short probe measures them: a square matmul for FLOP/s and a large tensor copy for bytes/s
(read + write). The source is recorded beside the numbers (``env_peak_source``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

# Datasheet peaks (dense): FLOP/s per dtype and memory bytes/s. Matched on the CUDA name.
_GPU_TABLE: tuple[tuple[str, dict[str, float], float], ...] = (
    ("H200", {"float16": 989e12, "bfloat16": 989e12, "float32": 67e12, "float64": 34e12}, 4.8e12),
    ("H100 PCIe", {"float16": 756e12, "bfloat16": 756e12, "float32": 51e12,
                   "float64": 26e12}, 2.0e12),
    ("H100", {"float16": 989e12, "bfloat16": 989e12, "float32": 67e12, "float64": 34e12},
     3.35e12),
    ("A100", {"float16": 312e12, "bfloat16": 312e12, "float32": 19.5e12,
              "float64": 9.7e12}, 2.0e12),
)


def table_peak(device_name: str, dtype: str) -> tuple[float, float] | None:
    """(FLOP/s, bytes/s) from the datasheet table, or None for an unknown device."""
    for key, flops, bandwidth in _GPU_TABLE:
        if key.lower() in device_name.lower() and dtype in flops:
            return flops[dtype], bandwidth
    return None


def _best_seconds(fn: Callable[[], object], sync: Callable[[], None], reps: int) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def probe_peak(device: str, dtype: str, *, size: int = 2048, copy_mib: int = 128,
               reps: int = 5) -> tuple[float, float]:
    """Measured (FLOP/s, bytes/s): best of ``reps`` matmuls and copies on ``device``."""
    dev = torch.device(device)
    dt = getattr(torch, dtype)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    a = torch.randn(size, size, device=dev, dtype=dt)
    b = torch.randn(size, size, device=dev, dtype=dt)
    matmul_s = _best_seconds(lambda: torch.mm(a, b), sync, reps)
    n = copy_mib * 2**20 // a.element_size()
    src = torch.empty(n, device=dev, dtype=dt)
    dst = torch.empty_like(src)
    copy_s = _best_seconds(lambda: dst.copy_(src), sync, reps)
    return 2.0 * size**3 / matmul_s, 2.0 * n * a.element_size() / copy_s


def peak(device: str, dtype: str, device_name: str = "") -> dict[str, object]:
    """Environment columns: env_peak_flops, env_peak_bytes_per_s, env_peak_source."""
    found = table_peak(device_name, dtype) if device.startswith("cuda") else None
    if found is not None:
        flops, bandwidth = found
        source = f"datasheet ({device_name})"
    else:
        flops, bandwidth = probe_peak(device, dtype)
        source = "probe (best of 5: matmul 2048^3, 128 MiB copy)"
    return {"env_peak_flops": flops, "env_peak_bytes_per_s": bandwidth,
            "env_peak_source": source}
