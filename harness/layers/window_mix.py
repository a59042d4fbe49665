"""Per-step window weighting as k shifted multiply-adds: DynamicConv's "shift" path.

``out[b, t, h, :] = sum_j kernels[b, t, h, j] * x[b, t + j - left, h, :]`` (zero outside the
sequence). Written as one pass per tap over the whole (B, n, d) tensor (a multiply for the
centre tap, then one ``addcmul_`` per other tap on the overlapping time range), it needs no
padded copy, no window copy and no bmm of (1 x k)(k x d/H) products: at small k it is the
fastest CPU formulation measured here (docs/metrics.md). Its arithmetic is elementwise,
which the FLOP counters treat as FLOP-free, so the computation is a custom op
(``harness::window_mix`` and its backward) with formulas of its own in both counters: the
multiply-adds the taps inside the sequence execute (:func:`window_macs`), 2 FLOPs each.
Plain eager calls that nothing watches skip the ops' dispatch (:mod:`harness.layers.op_dispatch`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from harness.layers.op_dispatch import call_op


def tap_ranges(n: int, kernel: int, left: int) -> list[tuple[int, int, int]]:
    """(tap j, first step, end step) of every tap that reaches inside the sequence.

    Step t reads x[t + j - left]: tap j covers t in [max(0, left - j), min(n, n + left - j)).
    """
    out = []
    for j in range(kernel):
        shift = j - left
        lo, hi = max(0, -shift), min(n, n - shift)
        if lo < hi:
            out.append((j, lo, hi))
    return out


def window_macs(batch: int, n: int, d: int, kernel: int, left: int) -> int:
    """Multiply-adds of one forward pass: d per (sequence, step, tap inside the sequence)."""
    return batch * d * sum(hi - lo for _, lo, hi in tap_ranges(n, kernel, left))


def _check(x: Tensor, kernels: Tensor, left: int) -> tuple[int, int, int, int, int]:
    if x.dim() != 3 or kernels.dim() != 4:
        raise ValueError(f"window_mix takes x (B, n, d) and kernels (B, n, H, k), got "
                         f"{tuple(x.shape)} and {tuple(kernels.shape)}")
    b, n, d = x.shape
    h, k = kernels.shape[2], kernels.shape[3]
    if tuple(kernels.shape[:2]) != (b, n) or d % h:
        raise ValueError(f"kernels {tuple(kernels.shape)} do not fit x {tuple(x.shape)}")
    if not 0 <= left < k:
        raise ValueError(f"left padding {left} outside a kernel of {k} taps")
    return b, n, d, h, k


def window_mix(x: Tensor, kernels: Tensor, left: int) -> Tensor:
    """x (B, n, d) weighted by per-step kernels (B, n, H, k) over the window t - left ...

    Through the custom op wherever anything watches (counters, compile, autograd; see
    :func:`~harness.layers.op_dispatch.unobserved`), its body directly elsewhere.
    """
    return call_op(window_mix_op, _window_mix, x, kernels, left)


@torch.library.custom_op("harness::window_mix", mutates_args=())
def window_mix_op(x: Tensor, kernels: Tensor, left: int) -> Tensor:
    """The custom op ``harness::window_mix``: what :func:`window_mix` computes."""
    return _window_mix(x, kernels, left)


def _window_mix(x: Tensor, kernels: Tensor, left: int) -> Tensor:
    b, n, d, h, k = _check(x, kernels, left)
    xv = x.reshape(b, n, h, d // h)  # (B, n, H, c)
    out = xv * kernels[..., left, None]  # the centre tap covers every step
    for j, lo, hi in tap_ranges(n, k, left):
        if j != left:
            shift = j - left
            out[:, lo:hi].addcmul_(xv[:, lo + shift:hi + shift], kernels[:, lo:hi, :, j, None])
    return out.view(b, n, d)


@window_mix_op.register_fake
def _window_mix_fake(x: Tensor, kernels: Tensor, left: int) -> Tensor:
    _check(x, kernels, left)
    return x.new_empty(x.shape)


def window_mix_backward(grad: Tensor, x: Tensor, kernels: Tensor, left: int, x_grad: bool,
                        kernels_grad: bool) -> tuple[Tensor, Tensor]:
    """(grad of x, grad of kernels); one not asked for is an empty tensor, never computed.

    Per tap inside the sequence: grad_x[t + j - left] += grad[t] * kernels[t, j] and
    grad_kernels[t, j] = sum over a head's channels of grad[t] * x[t + j - left]. Through
    the custom op ``harness::window_mix_backward`` where anything watches, as the forward.
    """
    return call_op(window_mix_backward_op, _window_mix_backward, grad, x, kernels, left,
                   x_grad, kernels_grad)


@torch.library.custom_op("harness::window_mix_backward", mutates_args=())
def window_mix_backward_op(grad: Tensor, x: Tensor, kernels: Tensor, left: int,
                           x_grad: bool, kernels_grad: bool) -> tuple[Tensor, Tensor]:
    """The custom op ``harness::window_mix_backward``: what :func:`window_mix_backward` does."""
    return _window_mix_backward(grad, x, kernels, left, x_grad, kernels_grad)


def _window_mix_backward(grad: Tensor, x: Tensor, kernels: Tensor, left: int, x_grad: bool,
                         kernels_grad: bool) -> tuple[Tensor, Tensor]:
    b, n, d, h, k = _check(x, kernels, left)
    gv = grad.reshape(b, n, h, d // h)  # (B, n, H, c)
    xv = x.reshape(b, n, h, d // h)
    gx = torch.zeros_like(xv) if x_grad else x.new_empty(0)
    gk = torch.zeros_like(kernels) if kernels_grad else kernels.new_empty(0)
    for j, lo, hi in tap_ranges(n, k, left):
        src = slice(lo + j - left, hi + j - left)
        if x_grad:
            gx[:, src].addcmul_(gv[:, lo:hi], kernels[:, lo:hi, :, j, None])
        if kernels_grad:
            gk[:, lo:hi, :, j] = (gv[:, lo:hi] * xv[:, src]).sum(-1)  # (B, hi - lo, H)
    return gx.view(x.shape) if x_grad else gx, gk


@window_mix_backward_op.register_fake
def _window_mix_backward_fake(grad: Tensor, x: Tensor, kernels: Tensor, left: int,
                              x_grad: bool, kernels_grad: bool) -> tuple[Tensor, Tensor]:
    return (x.new_empty(x.shape) if x_grad else x.new_empty(0),
            kernels.new_empty(kernels.shape) if kernels_grad else kernels.new_empty(0))


def _setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
    x, kernels, left = inputs
    ctx.save_for_backward(x, kernels)
    ctx.left = left


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
    x, kernels = ctx.saved_tensors
    x_grad, kernels_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    gx, gk = window_mix_backward(grad, x, kernels, ctx.left, x_grad, kernels_grad)
    return (gx if x_grad else None), (gk if kernels_grad else None), None


window_mix_op.register_autograd(_backward, setup_context=_setup_context)


def window_mix_flops(x: Any, kernels: Any, left: int) -> int:
    """FLOPs of :func:`window_mix` from its argument shapes: 2 per multiply-add executed."""
    b, n, d = (int(v) for v in x)
    return 2 * window_macs(b, n, d, int(kernels[3]), int(left))


def window_mix_backward_flops(grad: Any, x: Any, kernels: Any, left: int, x_grad: bool,
                              kernels_grad: bool) -> int:
    """Each gradient asked for repeats the forward's multiply-adds once."""
    return window_mix_flops(x, kernels, left) * (int(bool(x_grad)) + int(bool(kernels_grad)))
