"""Per-head bands applied to a (B, n, d) tensor where it lies (DynamicConv and LightConv bands).

``out[b, t, head h's channels] = sum_s band[b, h, t, s] * x[b, s, head h's channels]``.
torch.bmm takes one batch stride, and in a (B, n, d) tensor the sequence and head strides
(n d and d/H) do not merge into one (fairseq's time-major (T, B, C) ones do), so a bmm needs
the input copied into head-major (B H, n, d/H) order and its output copied back: two passes
over B n d elements, 7% of the call at n = 64, d = 1024, k = 31 on the project's CPU.

MKL's grouped GEMM takes one pointer per product instead of a stride, so it reads x and
writes the output where they lie. torch's x86-64 Linux wheels link MKL into libtorch_cpu and
export its Fortran entry point ``SGEMM_BATCH_64`` (ILP64); this module calls it through
ctypes for float32 CPU tensors. Where it is absent (other platforms, builds without MKL,
other dtypes or devices) the op runs the bmm with the two copies. Either way it is one
custom op, ``harness::band_mix``, with a fake implementation (torch.compile), autograd, and
its FLOP formula in both counters: 2 per multiply-add of the B H (n x n)(n x d/H) products,
as the bmm it replaces was counted. Plain eager calls that nothing watches skip the op's
dispatch (:mod:`harness.layers.op_dispatch`).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from harness.layers.op_dispatch import call_op

#: The grouped GEMM's name in libtorch_cpu (MKL's Fortran interface, 64-bit integers).
GROUPED_GEMM_SYMBOL = "SGEMM_BATCH_64"


def _torch_cpu_library() -> Path:
    return Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"


def load_grouped_gemm(library: Path) -> Callable[..., Any] | None:
    """MKL's ``SGEMM_BATCH_64`` from ``library``, or None where the file or symbol is absent."""
    try:
        return getattr(ctypes.CDLL(str(library)), GROUPED_GEMM_SYMBOL)
    except (OSError, AttributeError):
        return None


@functools.cache
def grouped_gemm() -> Callable[..., Any] | None:
    """The grouped GEMM of this torch build, looked up once (None: the bmm path runs)."""
    return load_grouped_gemm(_torch_cpu_library())


def _check(band: Tensor, x: Tensor) -> tuple[int, int, int, int]:
    if band.dim() != 4 or x.dim() != 3:
        raise ValueError(f"band_mix takes band (B, H, n, n) and x (B, n, d), got "
                         f"{tuple(band.shape)} and {tuple(x.shape)}")
    b, h, n, m = band.shape
    if (b, n) != tuple(x.shape[:2]) or m != n or x.shape[2] % h:
        raise ValueError(f"band {tuple(band.shape)} does not fit x {tuple(x.shape)}")
    return b, h, n, x.shape[2]


@functools.lru_cache(maxsize=64)
def _offsets(b: int, h: int, n: int, d: int, seq_stride: int, head_stride: int,
             itemsize: int) -> tuple[Tensor, Tensor]:
    """Byte offsets of each (sequence, head) block in x (B, n, d) and in the bands: the
    pointer arrays are these plus the base addresses (cached: a few small ops per call)."""
    group = torch.arange(b * h)
    seq, head = group // h, group % h
    x_offsets = (seq * n * d + head * (d // h)) * itemsize
    return x_offsets, (seq * seq_stride + head * head_stride) * itemsize


def _grouped(band: Tensor, x: Tensor, gemm: Callable[..., Any]) -> Tensor | None:
    """The products by one grouped GEMM call, or None where its operands do not fit it.

    Column-major, as the Fortran interface sees memory: head h's output block of sequence b
    is C^T (d/H x n, leading dimension d) = X^T (d/H x n, ld d) . A^T, where A^T is the band
    read as stored ("N" for a row-major band, "T" for a transposed view of one).
    """
    b, h, n, d = _check(band, x)
    if x.device.type != "cpu" or x.dtype != torch.float32 or band.dtype != torch.float32 \
            or band.device.type != "cpu" or not x.is_contiguous():
        return None
    if band.stride(3) == 1:
        trans, ld_band = b"N", band.stride(2)
    elif band.stride(2) == 1:
        trans, ld_band = b"T", band.stride(3)
    else:
        return None
    out = torch.empty_like(x)  # (B, n, d)
    x_offsets, band_offsets = _offsets(b, h, n, d, band.stride(0), band.stride(1),
                                       x.element_size())
    x_ptrs = x_offsets + x.data_ptr()
    out_ptrs = x_offsets + out.data_ptr()
    band_ptrs = band_offsets + band.data_ptr()
    c = d // h
    i64 = ctypes.c_int64

    def ref(value: Any) -> Any:
        return ctypes.byref(value)

    gemm(ref(ctypes.c_char(b"N")), ref(ctypes.c_char(trans)), ref(i64(c)), ref(i64(n)),
         ref(i64(n)), ref(ctypes.c_float(1.0)), ctypes.c_void_p(x_ptrs.data_ptr()),
         ref(i64(d)), ctypes.c_void_p(band_ptrs.data_ptr()), ref(i64(ld_band)),
         ref(ctypes.c_float(0.0)), ctypes.c_void_p(out_ptrs.data_ptr()), ref(i64(d)),
         ref(i64(1)), ref(i64(b * h)))
    return out


def band_bmm(band: Tensor, x: Tensor) -> Tensor:
    """The same products by one bmm: x copied into head-major order, the output copied back."""
    b, h, n, d = _check(band, x)
    cols = x.view(b, n, h, d // h).transpose(1, 2).reshape(b * h, n, d // h)  # (B*H, n, c)
    out = torch.bmm(band.reshape(b * h, n, n), cols)  # (B*H, n, c)
    return out.view(b, h, n, d // h).transpose(1, 2).reshape(b, n, d)


def _band_mix(band: Tensor, x: Tensor) -> Tensor:
    gemm = grouped_gemm()
    out = _grouped(band, x.contiguous(), gemm) if gemm is not None else None
    return band_bmm(band, x) if out is None else out


def band_mix(band: Tensor, x: Tensor) -> Tensor:
    """band (B, H, n, n) applied to each head's (n, d/H) columns of x (B, n, d) -> (B, n, d).

    Through the custom op wherever anything watches (counters, compile, autograd; see
    :func:`~harness.layers.op_dispatch.unobserved`), its body directly elsewhere.
    """
    return call_op(band_mix_op, _band_mix, band, x)


@torch.library.custom_op("harness::band_mix", mutates_args=())
def band_mix_op(band: Tensor, x: Tensor) -> Tensor:
    """The custom op ``harness::band_mix``: what :func:`band_mix` computes."""
    return _band_mix(band, x)


@band_mix_op.register_fake
def _band_mix_fake(band: Tensor, x: Tensor) -> Tensor:
    _check(band, x)
    return x.new_empty(x.shape)


def _setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """grad_x[b, :, h] = band[b, h]^T grad[b, :, h] (band_mix again: the grouped GEMM reads the
    transposed bands as stored); grad_band[b, h] = grad[b, :, h] x[b, :, h]^T (a matmul)."""
    band, x = ctx.saved_tensors
    b, h, n, d = _check(band, x)
    grad_band = grad_x = None
    if ctx.needs_input_grad[0]:
        gv = grad.reshape(b, n, h, d // h).transpose(1, 2)  # (B, H, n, c)
        xv = x.reshape(b, n, h, d // h).transpose(1, 2)
        grad_band = torch.matmul(gv, xv.transpose(-1, -2))  # (B, H, n, n)
    if ctx.needs_input_grad[1]:
        grad_x = band_mix(band.transpose(-1, -2), grad)
    return grad_band, grad_x


band_mix_op.register_autograd(_backward, setup_context=_setup_context)


def band_mix_flops(band: Any, x: Any) -> int:
    """FLOPs of :func:`band_mix` from its argument shapes: 2 per multiply-add, B H n n d/H."""
    b, h, n, _ = (int(v) for v in band)
    return 2 * b * h * n * n * (int(x[2]) // h)
