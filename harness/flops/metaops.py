"""Counting on the meta device as the CPU would execute, in time independent of n.

On meta, nn.LSTM / nn.GRU / nn.RNN decompose into n Python-implemented steps (about half
a second per 1,000 elementwise ops: a GRU at B=8, n=4096 takes ~30 s), and SDPA takes
the math path (backward 2x forward) where the CPU runs its flash kernel (backward 2.5x).
:class:`CpuMirror`, a TorchFunctionMode active only while counting on meta, reroutes both:

* ``torch._VF.lstm / gru / rnn_tanh / rnn_relu`` on meta tensors -> one
  ``harness_flops::rnn`` op (and ``harness_flops::rnn_backward`` in backward) whose
  formulas reproduce what the CPU executes: oneDNN's fused layer where the CPU uses it
  (found by running a tiny CPU instance once per configuration), else the step-by-step
  decomposition's count.
* ``F.scaled_dot_product_attention`` on meta -> the op the CPU would pick (again probed on a
  tiny CPU instance): ``aten._scaled_dot_product_flash_attention_for_cpu`` or the math path.

The two ``harness_flops`` ops exist only to be counted: they allocate outputs of the right
shapes on meta and refuse real tensors.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from harness.flops.formulas import GATES_BY_MODE

#: ``torch._VF`` recurrence -> the mode number cuDNN / oneDNN use.
RNN_MODES: dict[str, int] = {"rnn_relu": 0, "rnn_tanh": 1, "lstm": 2, "gru": 3}
_LSTM = RNN_MODES["lstm"]

#: What running an unsupported configuration on CPU (or a module on meta) may raise.
PROBE_FAILURES: tuple[type[Exception], ...] = (
    RuntimeError, NotImplementedError, TypeError, ValueError, IndexError, AttributeError,
)


def _require_meta(t: Tensor, op: str) -> None:
    if t.device.type != "meta":
        raise NotImplementedError(f"harness_flops::{op} only runs on the meta device")


def rnn_output_shapes(
    input_shape: tuple[int, ...], hx_shapes: list[tuple[int, ...]], weight_shapes: list,
    mode: int, num_layers: int, bidirectional: bool,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(output, h_n, c_n) shapes; c_n is (0,) unless LSTM. Output features = D * h_out."""
    directions = 2 if bidirectional else 1
    h_out = int(weight_shapes[1][1])  # W_hh: (g*h, h_out)
    out = (*input_shape[:-1], directions * h_out)
    cell = tuple(hx_shapes[1]) if mode == _LSTM else (0,)
    return out, tuple(hx_shapes[0]), cell


def _rnn_fake(
    input: Tensor, hx: list[Tensor], params: list[Tensor], mode: int, num_layers: int,
    bidirectional: bool, batch_first: bool, has_biases: bool, fused: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    shapes = rnn_output_shapes(
        tuple(input.shape), [tuple(h.shape) for h in hx], [tuple(p.shape) for p in params],
        mode, num_layers, bidirectional,
    )
    return tuple(input.new_empty(s) for s in shapes)  # type: ignore[return-value]


@torch.library.custom_op("harness_flops::rnn", mutates_args=())
def rnn(
    input: Tensor, hx: list[Tensor], params: list[Tensor], mode: int, num_layers: int,
    bidirectional: bool, batch_first: bool, has_biases: bool, fused: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """A whole multi-layer recurrence as one op (meta only): (output, h_n, c_n).

    ``fused``: the CPU would run oneDNN's layer kernel (its backward computes every
    gradient, the initial state's included).
    """
    _require_meta(input, "rnn")
    return _rnn_fake(input, hx, params, mode, num_layers, bidirectional, batch_first,
                     has_biases, fused)


rnn.register_fake(_rnn_fake)


def _rnn_backward_fake(
    input: Tensor, hx: list[Tensor], params: list[Tensor], mode: int, num_layers: int,
    bidirectional: bool, batch_first: bool, has_biases: bool, fused: bool,
    input_grad: bool, hx_grad: bool, weight_grad: list[bool],
) -> list[Tensor]:
    return [t.new_empty(t.shape) for t in (input, *hx, *params)]


@torch.library.custom_op("harness_flops::rnn_backward", mutates_args=())
def rnn_backward(
    input: Tensor, hx: list[Tensor], params: list[Tensor], mode: int, num_layers: int,
    bidirectional: bool, batch_first: bool, has_biases: bool, fused: bool,
    input_grad: bool, hx_grad: bool, weight_grad: list[bool],
) -> list[Tensor]:
    """Gradients of :func:`rnn` (meta only): [grad_input, *grad_hx, *grad_params]."""
    _require_meta(input, "rnn_backward")
    return _rnn_backward_fake(input, hx, params, mode, num_layers, bidirectional, batch_first,
                              has_biases, fused, input_grad, hx_grad, weight_grad)


rnn_backward.register_fake(_rnn_backward_fake)


def _rnn_setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
    input, hx, params = inputs[0], inputs[1], inputs[2]
    ctx.args = inputs
    ctx.flags = (
        input.requires_grad,
        any(h.requires_grad for h in hx),
        [p.requires_grad for p in params],
    )


def _rnn_autograd(ctx: Any, grad_out: Tensor, grad_hy: Tensor, grad_cy: Tensor) -> tuple:
    input, hx, params, *rest = ctx.args
    input_grad, hx_grad, weight_grad = ctx.flags
    grads = torch.ops.harness_flops.rnn_backward(
        input, hx, params, *rest, input_grad, hx_grad, weight_grad
    )
    n_hx = len(hx)
    grad_input = grads[0] if input_grad else None
    grad_hx = [g if h.requires_grad else None for g, h in zip(grads[1 : 1 + n_hx], hx, strict=True)]
    grad_params = [
        g if p.requires_grad else None for g, p in zip(grads[1 + n_hx :], params, strict=True)
    ]
    return (grad_input, grad_hx, grad_params, *([None] * len(rest)))


rnn.register_autograd(_rnn_autograd, setup_context=_rnn_setup_context)


# --------------------------------------------------------------------------- CPU probes


class OpRecorder(TorchDispatchMode):
    """Records the overload packet name of every op dispatched below it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func._overloadpacket))
        return func(*args, **(kwargs or {}))


def _ran(fn: Callable[[], Any], needle: str) -> bool:
    """Whether running ``fn`` on CPU dispatches an op whose name contains ``needle``.

    Runs in a fresh thread: dispatch and function modes are thread-local, so the probe is
    neither counted by nor rerouted by the modes of the count in progress.
    """
    names: list[str] = []

    def target() -> None:
        try:
            with OpRecorder() as recorder:
                fn()
        except PROBE_FAILURES:  # the config is unsupported on CPU: the slow path decides
            return
        names.extend(recorder.names)

    thread = threading.Thread(target=target, name="harness-flops-probe")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "LSTM with projections is not supported ..."
        thread.start()
        thread.join()
    return any(needle in name for name in names)


@functools.lru_cache(maxsize=64)
def cpu_rnn_uses_fused(mode: int, dtype: torch.dtype, has_biases: bool, projections: bool,
                       grad: bool) -> bool:
    """Whether the CPU runs this recurrence with oneDNN's ``mkldnn_rnn_layer`` (probed once,
    on a one-layer instance with hidden size 2)."""
    gates = GATES_BY_MODE[mode]
    hidden, h_out = 2, (1 if projections else 2)

    def run() -> None:
        with torch.set_grad_enabled(grad):
            def weight(*shape: int) -> Tensor:
                return torch.zeros(*shape, dtype=dtype, requires_grad=grad)

            params = [weight(gates * hidden, 2), weight(gates * hidden, h_out)]
            if has_biases:
                params += [weight(gates * hidden), weight(gates * hidden)]
            if projections:
                params.append(weight(h_out, hidden))
            x = torch.zeros(1, 2, 2, dtype=dtype, requires_grad=grad)
            h0 = torch.zeros(1, 1, h_out, dtype=dtype)
            if mode == _LSTM:
                c0 = torch.zeros(1, 1, hidden, dtype=dtype)
                torch._VF.lstm(x, (h0, c0), params, has_biases, 1, 0.0, grad, False, True)
            else:
                vf = {3: torch._VF.gru, 1: torch._VF.rnn_tanh, 0: torch._VF.rnn_relu}[mode]
                vf(x, h0, params, has_biases, 1, 0.0, grad, False, True)

    return _ran(run, "mkldnn_rnn_layer")


@functools.lru_cache(maxsize=64)
def cpu_sdpa_uses_flash(q_shape: tuple[int, ...], k_shape: tuple[int, ...],
                        v_shape: tuple[int, ...], dtype: torch.dtype, requires_grad: bool,
                        mask: tuple[tuple[int, ...], torch.dtype] | None, dropout_p: float,
                        is_causal: bool, enable_gqa: bool,
                        unit_stride: tuple[bool, bool, bool] = (True, True, True)) -> bool:
    """Whether the CPU picks its flash kernel for SDPA with these properties (probed on
    sequence length 2; batch, heads, head sizes, dtype, mask, last-dim strides kept)."""

    def tiny(shape: tuple[int, ...], unit: bool) -> Tensor:
        if unit:
            t = torch.zeros(*shape[:-2], 2, shape[-1], dtype=dtype)
        else:  # last-dim stride 2, as a transposed view has
            t = torch.zeros(*shape[:-2], shape[-1], 2, dtype=dtype).transpose(-1, -2)
        return t.requires_grad_(requires_grad)

    attn_mask = None
    if mask is not None:
        mask_shape, mask_dtype = mask
        attn_mask = torch.ones(*mask_shape[:-2], 2, 2, dtype=mask_dtype)

    def run() -> None:
        F.scaled_dot_product_attention(
            tiny(q_shape, unit_stride[0]), tiny(k_shape, unit_stride[1]),
            tiny(v_shape, unit_stride[2]), attn_mask=attn_mask,
            dropout_p=dropout_p, is_causal=is_causal, enable_gqa=enable_gqa,
        )

    return _ran(run, "_scaled_dot_product_flash_attention_for_cpu")


# --------------------------------------------------------------------------- the mode


_VF_RNN: dict[Any, int] = {
    torch._C._VariableFunctions.lstm: RNN_MODES["lstm"],
    torch._C._VariableFunctions.gru: RNN_MODES["gru"],
    torch._C._VariableFunctions.rnn_tanh: RNN_MODES["rnn_tanh"],
    torch._C._VariableFunctions.rnn_relu: RNN_MODES["rnn_relu"],
}
_SDPA = torch._C._nn.scaled_dot_product_attention


def _is_meta(x: Any) -> bool:
    return isinstance(x, Tensor) and x.device.type == "meta"


def _meta_rnn(mode: int, args: tuple) -> tuple[Tensor, ...]:
    input, hx, params, has_biases, num_layers, _dropout, _train, bidirectional, batch_first = (
        args[:9]
    )
    hx_list = list(hx) if isinstance(hx, (tuple, list)) else [hx]
    params = list(params)
    directions = 2 if bidirectional else 1
    per = len(params) // (num_layers * directions)
    projections = per in (3, 5)  # [W_ih, W_hh, (b_ih, b_hh), W_hr] per layer and direction
    fused = cpu_rnn_uses_fused(mode, input.dtype, bool(has_biases), projections,
                               torch.is_grad_enabled())
    out, hy, cy = torch.ops.harness_flops.rnn(
        input, hx_list, params, mode, int(num_layers), bool(bidirectional), bool(batch_first),
        bool(has_biases), fused,
    )
    return (out, hy, cy) if mode == _LSTM else (out, hy)


def _meta_sdpa(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
               dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
               enable_gqa: bool = False) -> Tensor:
    requires_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (query, key, value)
    )
    mask = None if attn_mask is None else (tuple(attn_mask.shape), attn_mask.dtype)
    flash = cpu_sdpa_uses_flash(
        tuple(query.shape), tuple(key.shape), tuple(value.shape), query.dtype, requires_grad,
        mask, float(dropout_p), bool(is_causal), bool(enable_gqa),
        tuple(t.dim() == 0 or t.stride(-1) == 1 for t in (query, key, value)),
    )
    if not flash:
        return _SDPA(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                     is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    if attn_mask is not None and attn_mask.dtype == torch.bool:  # as the CPU converts it
        attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device)
    out, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale
    )
    return out


class CpuMirror(TorchFunctionMode):
    """Reroute recurrences (and optionally SDPA) on meta tensors to what the CPU would run."""

    def __init__(self, *, rnn: bool = True, sdpa: bool = True) -> None:
        super().__init__()
        self.rnn = rnn
        self.sdpa = sdpa

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        mode = _VF_RNN.get(func) if self.rnn else None
        # the (input, hx, params, has_biases: bool, ...) overload; packed sequences pass through
        if (mode is not None and not kwargs and len(args) == 9 and _is_meta(args[0])
                and isinstance(args[3], bool)):
            return _meta_rnn(mode, args)
        if self.sdpa and func is _SDPA and args and _is_meta(args[0]):
            return _meta_sdpa(*args, **kwargs)
        return func(*args, **kwargs)
