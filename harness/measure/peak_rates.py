"""The device's peak FLOP/s and memory bandwidth, for efficiency and roofline plots.

On a known GPU the vendor's datasheet numbers (dense, no sparsity) are used; elsewhere a
short probe measures them: a square matmul for FLOP/s and a large tensor copy for bytes/s
(read + write). The source is recorded beside the numbers (``env_peak_source``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GpuPeaks:
    """One datasheet row: the name tokens that identify the card, its dense FLOP/s per
    dtype and its memory bandwidth (bytes/s)."""

    tokens: tuple[str, ...]  # all must be whole tokens of the CUDA name (case-insensitive)
    flops: dict[str, float]
    bandwidth: float


def _peaks(tokens: str, f16: float, tf32: float, f32: float, f64: float,
           bandwidth: float) -> GpuPeaks:
    return GpuPeaks(tuple(tokens.lower().split()),
                    {"float16": f16, "bfloat16": f16, "tf32": tf32, "float32": f32,
                     "float64": f64}, bandwidth)


#: Datasheet peaks (dense, no sparsity), the most specific name first: the first row whose
#: tokens all appear in the device name wins, so "H100 NVL" never takes the SXM row and
#: "GH200" (a token of its own) never matches "H200". A test checks that no row is
#: shadowed by an earlier, less specific one. float64 is the FP64 *tensor-core* figure
#: (cuBLAS DGEMM uses them on A100 and Hopper, so the vector figure could be exceeded);
#: float32 the IEEE (non-tensor) one, tf32 the TF32 tensor-core one.
#: Columns: FP16/BF16, TF32, FP32, FP64 tensor core, memory bytes/s.
GPU_TABLE: tuple[GpuPeaks, ...] = (
    _peaks("GH200 HBM3e", 989e12, 494e12, 67e12, 67e12, 4.9e12),  # GH200 144G HBM3e
    _peaks("GH200", 989e12, 494e12, 67e12, 67e12, 4.0e12),  # GH200 480GB (96 GB HBM3)
    _peaks("H200 NVL", 835e12, 418e12, 60e12, 60e12, 4.8e12),
    _peaks("H200", 989e12, 494e12, 67e12, 67e12, 4.8e12),  # SXM
    _peaks("H100 NVL", 835e12, 418e12, 60e12, 60e12, 3.9e12),  # per GPU of the pair
    _peaks("H100 PCIe", 756e12, 378e12, 51e12, 51e12, 2.0e12),
    _peaks("H100", 989e12, 494e12, 67e12, 67e12, 3.35e12),  # SXM ("H100 80GB HBM3")
    _peaks("A100 40GB", 312e12, 156e12, 19.5e12, 19.5e12, 1.555e12),  # SXM4/PCIE-40GB
    _peaks("A100 PCIe", 312e12, 156e12, 19.5e12, 19.5e12, 1.935e12),  # 80GB PCIe
    _peaks("A100", 312e12, 156e12, 19.5e12, 19.5e12, 2.039e12),  # SXM4-80GB
)


def name_tokens(device_name: str) -> frozenset[str]:
    """The device name's words, lower case, split at anything not a letter or digit."""
    return frozenset(t for t in re.split(r"[^a-z0-9]+", device_name.lower()) if t)


def table_row(device_name: str) -> GpuPeaks | None:
    """The datasheet row of ``device_name`` (see :data:`GPU_TABLE`), or None."""
    tokens = name_tokens(device_name)
    return next((row for row in GPU_TABLE if set(row.tokens) <= tokens), None)


def table_peak(device_name: str, dtype: str) -> tuple[float, float] | None:
    """(FLOP/s, bytes/s) from the datasheet table, or None for an unknown device."""
    row = table_row(device_name)
    if row is None or dtype not in row.flops:
        return None
    return row.flops[dtype], row.bandwidth


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


def peak(device: str, dtype: str, device_name: str = "", *, tf32: bool = False
         ) -> dict[str, object]:
    """Environment columns: env_peak_flops, env_peak_bytes_per_s, env_peak_source.

    On a CUDA device, float32 is held against the TF32 tensor-core peak when the run allows
    TF32 (``measure.tf32``), else against the IEEE float32 peak; the source says which.
    """
    cuda = device.startswith("cuda")
    tf32_used = cuda and tf32 and dtype == "float32"
    found = table_peak(device_name, "tf32" if tf32_used else dtype) if cuda else None
    if found is not None:
        flops, bandwidth = found
        how = {"float32": "float32 on TF32 tensor cores (measure.tf32: true)" if tf32_used
               else "float32 IEEE, TF32 off", "float64": "FP64 tensor cores"}.get(dtype)
        source = f"datasheet ({device_name}{'; ' + how if how else ''})"
    elif cuda:
        from harness.measure.precision import float32_mode

        with float32_mode(tf32):  # probe the precision the cases will run at
            flops, bandwidth = probe_peak(device, dtype)
        source = "probe (best of 5: matmul 2048^3, 128 MiB copy" + (
            f"; float32 {'TF32' if tf32 else 'IEEE'})" if dtype == "float32" else ")")
    else:
        flops, bandwidth = probe_peak(device, dtype)
        source = "probe (best of 5: matmul 2048^3, 128 MiB copy)"
    return {"env_peak_flops": flops, "env_peak_bytes_per_s": bandwidth,
            "env_peak_source": source}
