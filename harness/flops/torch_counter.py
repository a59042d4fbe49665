"""FLOPs by ``torch.utils.flop_counter.FlopCounterMode``, with its holes filled.

torch 2.13 has no formula for the ops this project's layers run most: the CPU flash SDPA
(``aten._scaled_dot_product_flash_attention_for_cpu`` and backward), every fused recurrence
(``aten.mkldnn_rnn_layer`` on CPU, ``aten._cudnn_rnn`` on CUDA, their backward ops) and the
plain ``mv`` / ``addmv`` / ``dot`` / ``vdot`` / ``addbmm``, and the project's own
``harness::window_mix`` (DynamicConv's shift path, :mod:`harness.layers.window_mix`) and
``harness::band_mix`` (its band path, :mod:`harness.layers.band_mix`); and
its convolution-backward formula ignores ``groups``. The formulas below (see
:mod:`harness.flops.formulas`) are passed through the counter's ``custom_mapping``, so
torch's global registry is untouched.

Every op that actually executes is also recorded: one that has no formula and is not
FLOP-free (:mod:`harness.flops.classify`) is reported in ``FlopCount.uncounted``.

Speed: by default the pass runs on the meta device (no data, no arithmetic) with
:class:`~harness.flops.metaops.CpuMirror` rerouting recurrences and SDPA to what the CPU
would execute, so a GRU at B=8, n=4096, d=512 counts in well under a second. A module that
cannot run on meta (data-dependent code, tensors held outside parameters and buffers) is
counted on its own device instead, and ``FlopCount.device`` / ``note`` say so.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from harness.flops import formulas as fm
from harness.flops.classify import is_flop_free
from harness.flops.metaops import PROBE_FAILURES, CpuMirror, OpRecorder
from harness.flops.result import FlopCount
from harness.layers import band_mix as bm
from harness.layers import window_mix as wm

aten = torch.ops.aten
DEVICES = ("auto", "meta", "native")

# --------------------------------------------------------------------------- formulas
# Called by FlopCounterMode with every tensor argument replaced by its shape.


def _mkldnn_rnn_layer(input, weight0, weight1, *args, out_shape=None, **kwargs) -> int:
    """One layer, one direction: W_ih (g*h, d_in) and W_hh (g*h, h) on every token."""
    return fm.rnn_forward_flops(input, [weight0, weight1])


def _mkldnn_rnn_layer_backward(input, weight1, weight2, *args, out_shape=None, **kwargs) -> int:
    """oneDNN computes all gradients (input, initial state, both weights): 2x forward."""
    return 2 * fm.rnn_forward_flops(input, [weight1, weight2])


def _cudnn_rnn(input, weight, *args, out_shape=None, **kwargs) -> int:
    """All layers and directions in one call; ``weight`` lists every layer's matrices."""
    return fm.rnn_forward_flops(input, weight)


def _cudnn_rnn_backward(input, weight, *args, out_shape=None, **kwargs) -> int:
    """Backward-data (input and state gradients, always run: the weight gradient needs its
    gate gradients) = forward; backward-weights = forward when output_mask[3]."""
    output_mask = args[-1]
    forward = fm.rnn_forward_flops(input, weight)
    return forward * (1 + int(bool(output_mask[3])))


def _harness_rnn(input, hx, params, mode, num_layers, bidirectional, batch_first, has_biases,
                 fused, *, out_shape=None, **kwargs) -> int:
    return fm.rnn_forward_flops(input, params)


def _harness_rnn_backward(input, hx, params, mode, num_layers, bidirectional, batch_first,
                          has_biases, fused, input_grad, hx_grad, weight_grad, *,
                          out_shape=None, **kwargs) -> int:
    if fused:  # as mkldnn_rnn_layer_backward: every gradient, 2x forward
        return 2 * fm.rnn_forward_flops(input, params)
    return fm.rnn_decomposed_backward_flops(
        input, int(hx[0][1]), params, num_layers, 2 if bidirectional else 1,
        input_grad=input_grad, hx_grad=hx_grad, weight_grad=weight_grad,
    )


def _sdpa_forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return fm.sdpa_forward_flops(query, key, value)


def _sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return fm.sdpa_backward_flops(query, key, value)


def _convolution_backward(grad_out, x, w, _bias_sizes, _stride, _padding, _dilation,
                          transposed, _output_padding, _groups, output_mask, *,
                          out_shape=None, **kwargs) -> int:
    return fm.conv_backward_flops(grad_out, x, w, transposed, output_mask)


def _mv(mat, vec, *args, out_shape=None, **kwargs) -> int:
    return 2 * fm.numel(mat)


def _addmv(_self, mat, vec, *args, out_shape=None, **kwargs) -> int:
    return 2 * fm.numel(mat)


def _dot(a, b, *args, out_shape=None, **kwargs) -> int:
    return 2 * fm.numel(a)


def _addbmm(_self, batch1, batch2, *args, out_shape=None, **kwargs) -> int:
    return fm.matmul_flops(batch1, batch2)


def _band_mix(band, x, *, out_shape=None, **kwargs) -> int:
    return bm.band_mix_flops(band, x)


def _window_mix(x, kernels, left, *, out_shape=None, **kwargs) -> int:
    return wm.window_mix_flops(x, kernels, left)


def _window_mix_backward(grad, x, kernels, left, x_grad, kernels_grad, *, out_shape=None,
                         **kwargs) -> int:
    return wm.window_mix_backward_flops(grad, x, kernels, left, x_grad, kernels_grad)


@functools.cache
def torch_formulas() -> dict[Any, Callable[..., int]]:
    """custom_mapping for FlopCounterMode: the holes of torch 2.13's registry, filled."""
    harness_ops = torch.ops.harness_flops
    return {
        aten.mkldnn_rnn_layer: _mkldnn_rnn_layer,
        aten.mkldnn_rnn_layer_backward: _mkldnn_rnn_layer_backward,
        aten._cudnn_rnn: _cudnn_rnn,
        aten._cudnn_rnn_backward: _cudnn_rnn_backward,
        harness_ops.rnn: _harness_rnn,
        harness_ops.rnn_backward: _harness_rnn_backward,
        aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward,
        aten._scaled_dot_product_fused_attention_overrideable: _sdpa_forward,
        aten._scaled_dot_product_fused_attention_overrideable_backward: _sdpa_backward,
        aten.convolution_backward: _convolution_backward,
        aten.mv: _mv,
        aten.addmv: _addmv,
        aten.dot: _dot,
        aten.vdot: _dot,
        aten.addbmm: _addbmm,
        torch.ops.harness.window_mix: _window_mix,
        torch.ops.harness.band_mix: _band_mix,
        torch.ops.harness.window_mix_backward: _window_mix_backward,
    }


# --------------------------------------------------------------------------- running


def _as_inputs(x: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    if isinstance(x, Tensor):
        return (x,)
    if isinstance(x, (tuple, list)) and all(isinstance(t, Tensor) for t in x):
        return tuple(x)
    raise TypeError(f"x must be a Tensor or a sequence of Tensors, got {type(x).__name__}")


def _tensors(module: nn.Module) -> list[Tensor]:
    return [*module.parameters(), *module.buffers()]


def module_device(module: nn.Module, inputs: Sequence[Tensor]) -> torch.device:
    for t in (*_tensors(module), *inputs):
        return t.device
    return torch.device("cpu")


def to_meta(module: nn.Module, inputs: Sequence[Tensor]) -> tuple[nn.Module, tuple[Tensor, ...]]:
    """A meta copy of the module (the original is untouched) and meta inputs of equal shapes."""
    if all(t.device.type == "meta" for t in _tensors(module)):
        meta_module = module
    else:
        meta_module = copy.deepcopy(module).to("meta")
    meta_inputs = tuple(torch.empty_like(t, device="meta") for t in inputs)
    return meta_module, meta_inputs


def _run_pass(module: nn.Module, inputs: tuple[Tensor, ...], train: bool) -> None:
    """Forward (no autograd) or forward + backward of every floating output (cotangent 1)."""
    if not train:
        with torch.no_grad():
            module(*inputs)
        return
    inputs = tuple(
        t.detach().requires_grad_(True) if t.is_floating_point() else t for t in inputs
    )
    with torch.enable_grad():
        outputs = [
            t for t in tree_leaves(module(*inputs)) if isinstance(t, Tensor) and t.requires_grad
        ]
        params = [p for p in module.parameters() if p.requires_grad]
        if not outputs:
            raise ValueError("train=True needs an output that requires grad")
        saved = [p.grad for p in params]
        try:
            # .backward(), as training runs it (FlopCounterMode's module tracker does not
            # support autograd.grad); the module's own .grad fields are restored afterwards
            torch.autograd.backward(outputs, [torch.ones_like(t) for t in outputs])
        finally:
            for p, grad in zip(params, saved, strict=True):
                p.grad = grad


def _count(module: nn.Module, inputs: tuple[Tensor, ...], train: bool, on_meta: bool,
           device: str, note: str = "") -> FlopCount:
    counter = FlopCounterMode(display=False, custom_mapping=torch_formulas())
    recorder = OpRecorder()
    mirror = CpuMirror() if on_meta else None
    # order matters: the recorder sits below the counter, so it sees exactly the ops that
    # execute (after the counter's decompositions), counted or not
    with recorder, counter:
        if mirror is None:
            _run_pass(module, inputs, train)
        else:
            with mirror:
                _run_pass(module, inputs, train)
    registered = {str(k) for k in counter.flop_registry}
    uncounted = {
        name for name in recorder.names if name not in registered and not is_flop_free(name)
    }
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return FlopCount(
        total=sum(by_op.values()), by_op=by_op, uncounted=tuple(uncounted), device=device,
        note=note,
    )


def count_torch(module: nn.Module, x: Tensor | Sequence[Tensor], *, train: bool = False,
                device: str = "auto") -> FlopCount:
    """FLOPs (2 per multiply-add) of ``module(x)`` as FlopCounterMode counts them.

    ``train=False``: one forward pass under ``torch.no_grad()``. ``train=True``: forward and
    backward, the inputs requiring grad and every floating output given a cotangent of ones
    (gradients w.r.t. inputs and trainable parameters; the module's ``.grad`` fields are
    restored afterwards).

    ``device``: "meta" counts on a meta copy, mirroring the CPU's kernel choices; "native"
    runs on the module's own device (real data, real arithmetic); "auto" (default) uses meta
    for CPU / meta modules and falls back to native when the meta pass raises, and uses
    native for CUDA modules (whose kernel choices meta would not mirror).
    """
    return meta_first(
        module, x, device,
        on_meta=lambda m, inputs: _count(m, inputs, train, True, "meta"),
        on_native=lambda m, inputs, where, note: _count(m, inputs, train, False, where, note),
        what=("pass", "counted"),
    )


def meta_first(module: nn.Module, x: Tensor | Sequence[Tensor], device: str,
               on_meta: Callable[[nn.Module, tuple], FlopCount],
               on_native: Callable[[nn.Module, tuple, str, str], FlopCount],
               what: tuple[str, str]) -> FlopCount:
    """The device policy both counters share: validate, try a meta copy when ``device`` asks
    for it (or "auto" on a CPU/meta module), fall back to the native device with a note."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    inputs = _as_inputs(x)
    native = module_device(module, inputs)
    note = ""
    if device == "meta" or (device == "auto" and native.type in ("cpu", "meta")):
        try:
            meta_module, meta_inputs = to_meta(module, inputs)
            return on_meta(meta_module, meta_inputs)
        except PROBE_FAILURES as err:
            if device == "meta" or native.type == "meta":
                raise
            note = (f"meta {what[0]} failed ({type(err).__name__}: {str(err)[:160]}); "
                    f"{what[1]} on {native}")
    return on_native(module, inputs, str(native), note)
