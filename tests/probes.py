"""Test helpers shared by the layer tests (kept apart from harness.measure.structure on purpose:
an independent probe of the same path-length fact)."""

from __future__ import annotations

import math

import torch


def dependency_depth(make, n: int, d: int, causal: bool, max_depth: int) -> float:
    """Least stack depth at which every output depends on every (earlier-or-equal) input.

    Batch element j carries output position j's probe: one backward of sum_j y[j, j] gives
    in row j of the input gradient exactly the inputs that output j depends on.
    """
    torch.manual_seed(0)
    need = torch.ones(n, n, dtype=torch.bool)
    if causal:
        need = need.tril()
    layers = [make().double().eval() for _ in range(max_depth)]
    x = torch.randn(1, n, d, dtype=torch.float64).expand(n, n, d).clone().requires_grad_(True)
    y = x
    for depth, layer in enumerate(layers, start=1):
        y = layer(y)
        (grad,) = torch.autograd.grad(y.diagonal(dim1=0, dim2=1).sum(), x, retain_graph=True)
        reach = grad.abs().sum(-1) > 0  # (out j, in i)
        if bool(reach[need].all()):
            return depth
    return math.inf
