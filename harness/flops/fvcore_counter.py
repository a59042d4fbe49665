"""FLOPs by fvcore's ``FlopCountAnalysis``, converted to 2 FLOPs per multiply-add.

fvcore counts **one per multiply-add**; every number returned here is fvcore's count x 2,
in the project's convention (harness/costs.py). fvcore traces the forward pass with
``torch.jit`` and only sees forward ops, so it gives no training count (we never fake one
as 3x forward).

Handles added (fvcore 0.1.5 has none, or a wrong one): ``aten::lstm / gru / rnn_tanh /
rnn_relu`` (every 2-D weight applied to every token), ``aten::scaled_dot_product_attention``
(q k^T and p v), ``harness::window_mix`` (DynamicConv's shifted multiply-adds),
``harness::band_mix`` (its per-head bands),
``harness_flops::rnn`` (the meta stand-in recurrence of
:mod:`harness.flops.metaops`), ``aten::baddbmm / addbmm / mv / addmv / dot / vdot``, and
``aten::matmul`` (fvcore's assumes the first operand carries every batch dim and fails on
vectors). fvcore's own handles kept: ``addmm, bmm, mm, linear, _convolution, einsum``
(einsum: numpy's optimal contraction path, its FLOP count halved). fvcore's handles for
norms, upsampling and pooling are dropped: those ops are elementwise, FLOP-free by the
convention. Its list of unsupported ops is collected, silently, and filtered through
:func:`harness.flops.classify.is_flop_free` into ``FlopCount.uncounted``.

Speed: the trace runs on the meta device when it can (recurrences rerouted to one op, as
for the torch counter). Tracing a convolution on meta fails in torch 2.13 (its meta kernel
checks traced sizes), so such modules are traced on their own device with real shapes;
``FlopCount.device`` / ``note`` report it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import (
    addmm_flop_jit,
    bmm_flop_jit,
    conv_flop_jit,
    einsum_flop_jit,
    get_shape,
    linear_flop_jit,
)
from torch import Tensor, nn

from harness.flops import formulas as fm
from harness.flops.classify import is_flop_free
from harness.flops.metaops import CpuMirror
from harness.flops.result import FlopCount
from harness.flops.torch_counter import meta_first
from harness.layers import band_mix as bm
from harness.layers import window_mix as wm

Handle = Callable[[list[Any], list[Any]], Any]

# --------------------------------------------------------------------------- handles
# fvcore calls handle(inputs, outputs) with torch._C.Value lists; they return multiply-adds.


def _shape(value: Any) -> list[int]:
    shape = get_shape(value)
    if shape is None:
        raise ValueError(f"fvcore handle: no complete shape for {value}")
    return list(shape)


def _list_shapes(value: Any) -> list[list[int]]:
    """Shapes of a traced Tensor[] argument (a prim::ListConstruct of tensors)."""
    return [_shape(v) for v in value.node().inputs()]


def _is_list(value: Any) -> bool:
    return isinstance(value.type(), torch._C.ListType)


def rnn_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::lstm / gru / rnn_tanh / rnn_relu, both overloads.

    (input, hx, params, has_biases, ...) or, packed, (data, batch_sizes, hx, params, ...).
    """
    params = inputs[3] if _is_list(inputs[3]) else inputs[2]
    return fm.rnn_forward_flops(_shape(inputs[0]), _list_shapes(params)) // 2


def harness_rnn_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """harness_flops::rnn(input, hx, params, ...)."""
    return fm.rnn_forward_flops(_shape(inputs[0]), _list_shapes(inputs[2])) // 2


def sdpa_handle(inputs: list[Any], outputs: list[Any]) -> int:
    q, k, v = (_shape(x) for x in inputs[:3])
    return fm.sdpa_forward_flops(q, k, v) // 2


def matmul_handle(inputs: list[Any], outputs: list[Any]) -> int:
    return fm.matmul_flops(_shape(inputs[0]), _shape(inputs[1])) // 2


def batched_add_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """baddbmm / addbmm (self, batch1, batch2, ...)."""
    return fm.matmul_flops(_shape(inputs[1]), _shape(inputs[2])) // 2


def mv_handle(inputs: list[Any], outputs: list[Any]) -> int:
    return fm.numel(_shape(inputs[0]))


def addmv_handle(inputs: list[Any], outputs: list[Any]) -> int:
    return fm.numel(_shape(inputs[1]))


def window_mix_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """harness::window_mix (DynamicConv's shift path): its multiply-adds, from the shapes."""
    left = inputs[2].toIValue()
    return wm.window_mix_flops(_shape(inputs[0]), _shape(inputs[1]), int(left)) // 2


def band_mix_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """harness::band_mix (DynamicConv's band path): B H n n d/H multiply-adds."""
    return bm.band_mix_flops(_shape(inputs[0]), _shape(inputs[1])) // 2


def dot_handle(inputs: list[Any], outputs: list[Any]) -> int:
    return fm.numel(_shape(inputs[0]))


FVCORE_HANDLES: dict[str, Handle] = {
    "aten::addmm": addmm_flop_jit,
    "aten::bmm": bmm_flop_jit,
    "aten::mm": matmul_handle,
    "aten::matmul": matmul_handle,
    "aten::linear": linear_flop_jit,
    "aten::_convolution": conv_flop_jit,
    "aten::einsum": einsum_flop_jit,
    "aten::baddbmm": batched_add_handle,
    "aten::addbmm": batched_add_handle,
    "aten::mv": mv_handle,
    "aten::addmv": addmv_handle,
    "aten::dot": dot_handle,
    "aten::vdot": dot_handle,
    "aten::lstm": rnn_handle,
    "aten::gru": rnn_handle,
    "aten::rnn_tanh": rnn_handle,
    "aten::rnn_relu": rnn_handle,
    "aten::scaled_dot_product_attention": sdpa_handle,
    "harness_flops::rnn": harness_rnn_handle,
    "harness::window_mix": window_mix_handle,
    "harness::band_mix": band_mix_handle,
}

# --------------------------------------------------------------------------- running


def _analyse(module: nn.Module, inputs: tuple[Tensor, ...], on_meta: bool, device: str,
             note: str = "") -> FlopCount:
    analysis = FlopCountAnalysis(module, inputs)
    analysis.clear_op_handles().set_op_handle(**FVCORE_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    fvcore_log = logging.getLogger("fvcore")
    level = fvcore_log.level
    fvcore_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the trace is lazy: it runs inside the first query, under the mirror on meta
            if on_meta:
                with CpuMirror(rnn=True, sdpa=False):
                    by_operator = analysis.by_operator()
            else:
                by_operator = analysis.by_operator()
            unsupported = analysis.unsupported_ops()
    finally:
        fvcore_log.setLevel(level)
    by_op = {name: 2 * round(count) for name, count in by_operator.items() if count}
    uncounted = tuple(name for name in unsupported if not is_flop_free(name))
    return FlopCount(total=sum(by_op.values()), by_op=by_op, uncounted=uncounted,
                     device=device, note=note)


def count_fvcore(module: nn.Module, x: Tensor | Sequence[Tensor], *,
                 device: str = "auto") -> FlopCount:
    """Forward FLOPs of ``module(x)`` by fvcore, **doubled** to 2 FLOPs per multiply-add.

    Forward only: fvcore traces the forward pass, so no training count exists here.
    ``device`` as for :func:`harness.flops.count_torch` ("auto": trace on meta, falling
    back to the module's own device when the meta trace raises).
    """
    def on_native(m: nn.Module, inputs: tuple, where: str, note: str) -> FlopCount:
        with torch.no_grad():
            return _analyse(m, inputs, False, where, note)

    return meta_first(
        module, x, device,
        on_meta=lambda m, inputs: _analyse(m, inputs, True, "meta"),
        on_native=on_native, what=("trace", "traced"),
    )
