"""The custom ops' plain-eager shortcut: taken only where nothing watches the op."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from harness.flops.torch_counter import torch_formulas
from harness.layers import band_mix as bm
from harness.layers import window_mix as wm
from harness.layers.op_dispatch import unobserved


def _operands() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(2, 2, 5, 5), torch.randn(2, 5, 6)  # band (B, H, n, n), x (B, n, d)


def test_plain_eager_is_unobserved() -> None:
    band, x = _operands()
    assert unobserved(band, x)
    with torch.no_grad():
        assert unobserved(band, x.requires_grad_())


def test_a_call_autograd_would_record_is_observed() -> None:
    band, x = _operands()
    assert not unobserved(band, x.requires_grad_())


class _Passthrough(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


def test_modes_profiler_and_tracer_observe() -> None:
    band, x = _operands()
    with FlopCounterMode(display=False):
        assert not unobserved(band, x)
    with _Passthrough():
        assert not unobserved(band, x)
    with torch.autograd.profiler.profile():
        assert not unobserved(band, x)
    seen: list[bool] = []

    def traced(t: torch.Tensor) -> torch.Tensor:
        seen.append(unobserved(t))
        return t + 1

    torch.jit.trace(traced, (x,), check_trace=False)
    assert seen == [False]


class _Recorder:
    def __init__(self, op: Any) -> None:
        self.op, self.calls = op, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.op(*args)


@pytest.mark.parametrize("module, name, args", [
    (bm, "band_mix", lambda band, x: (band, x)),
    (wm, "window_mix", lambda band, x: (x, band[:, 0, :, :3].unsqueeze(2).expand(2, 5, 2, 3), 1)),
])
def test_the_op_runs_only_when_watched(monkeypatch: pytest.MonkeyPatch, module: Any, name: str,
                                       args: Any) -> None:
    band, x = _operands()
    recorder = _Recorder(getattr(module, f"{name}_op"))
    monkeypatch.setattr(module, f"{name}_op", recorder)
    public = getattr(module, name)
    direct = public(*args(band, x))
    assert recorder.calls == 0
    with FlopCounterMode(display=False, custom_mapping=torch_formulas()) as counter:
        counted = public(*args(band, x))
    assert recorder.calls == 1 and counter.get_total_flops() > 0
    torch.testing.assert_close(direct, counted, rtol=0, atol=0)
    public(*args(band.requires_grad_(), x))
    assert recorder.calls == 2


def test_window_mix_backward_runs_the_op_under_a_counter(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    band, x = _operands()
    kernels = band[:, 0, :, :3].unsqueeze(2).expand(2, 5, 2, 3).contiguous().requires_grad_()
    recorder = _Recorder(wm.window_mix_backward_op)
    monkeypatch.setattr(wm, "window_mix_backward_op", recorder)
    wm.window_mix(x, kernels, 1).sum().backward()
    assert recorder.calls == 0 and kernels.grad is not None
    plain = kernels.grad.clone()
    kernels.grad = None
    with FlopCounterMode(display=False):
        wm.window_mix(x, kernels, 1).sum().backward()
    assert recorder.calls == 1
    torch.testing.assert_close(kernels.grad, plain, rtol=0, atol=0)


@pytest.mark.parametrize("fn", [
    lambda band, x: bm.band_mix(band, x),
    lambda band, x: wm.window_mix(x, band[:, 0, :, :3].unsqueeze(2).expand(2, 5, 2, 3), 1),
])
def test_torch_compile_captures_the_op_in_one_graph(fn: Any) -> None:
    targets: list[Any] = []

    def backend(gm: torch.fx.GraphModule, inputs: Any) -> Any:
        targets.extend(node.target for node in gm.graph.nodes)
        return gm.forward

    torch.compiler.reset()
    band, x = _operands()
    compiled = torch.compile(fn, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(band, x), fn(band, x))
    ops = {getattr(t, "_name", None) for t in targets}
    assert ops & {"harness::band_mix", "harness::window_mix"}
