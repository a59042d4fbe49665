"""When a custom op's body may run without going through the op.

The project's custom ops (``harness::band_mix``, ``harness::window_mix``) exist to be seen:
by the FLOP counters (a dispatch mode, fvcore's jit trace), by torch.compile (a fake
implementation), by autograd (a registered backward) and by the profiler. Going through
``torch.library.custom_op``'s Python dispatch cost 13 us a call at a tiny size and 45-75 us
at B = 8, n = 64, d = 512 on the project's 2-core CPU: 4-8% of DynamicConv's 1 ms call there
(docs/metrics.md "Op dispatch").
Where none of those is watching, calling the body directly computes the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch
from torch import Tensor

P = ParamSpec("P")
R = TypeVar("R")


def unobserved(*tensors: Tensor) -> bool:
    """True where nothing would see a custom op called on ``tensors``: plain eager, no graph.

    False under torch.compile or a jit trace, with a dispatch or function mode active
    (FlopCounterMode, FakeTensorMode), for tensor subclasses, inside functorch transforms,
    while the autograd profiler records, or where autograd would record the call.
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled():
        return False
    if torch._C._has_torch_function(tensors) or torch._C._are_functorch_transforms_active():
        return False
    if torch._C._autograd._profiler_enabled():
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def call_op(op: Callable[P, R], body: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``body(*args)`` where :func:`unobserved` holds for the tensor arguments, else ``op``."""
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
    return body(*args, **kwargs) if unobserved(*tensors) else op(*args, **kwargs)
