"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"), as a harness layer.

Softmax attention's similarity exp(q.k) is replaced by phi(q).phi(k) with the feature map
phi(x) = elu(x) + 1 (positive, so the normaliser never vanishes). Per head (width e = d/h):

    out_t = phi(q_t) S / (phi(q_t) . z + eps),   S = sum_s phi(k_s) v_s^T,   z = sum_s phi(k_s)

summed over every position s (non-causal) or over s <= t (causal). Computing S first costs
O(n e^2) per head instead of the O(n^2 e) of the (n x n) scores: O(n d^2) per layer, with
the projections. The layer owns attention's parameters (``in_proj`` d -> 3d, ``out_proj``
d -> d), so a state dict moves between this layer and the harness's ``attention``.

Two variants compute the same function:

* ``parallel`` (default and reference): non-causal, S = phi(K)^T V at once; causal, the
  prefix sums S_t by ``cumsum`` over the outer products phi(k_t) v_t^T (a (B, h, n, e, e)
  tensor: the memory cost the paper's custom kernel avoids).
* ``recurrent``: the RNN form, a Python loop over time updating S and z one step at a time
  (causal: an output per step; non-causal: the outputs after the last step).

Every contraction is an explicit ``bmm``/``matmul`` (an outer product is a bmm with a
contraction of size 1, not a broadcast multiply), so fvcore and FlopCounterMode count what
the cost model counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness import Cost, LayerCase, LayerEntry, Theory

EPS = 1e-6


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1 > 0."""
    return F.elu(x) + 1


class LinearAttention(nn.Module):
    """Multi-head linear attention; subclasses supply the core for phi(q), phi(k), v."""

    def __init__(self, d_model: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        if heads < 1 or d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        self.d_model, self.heads, self.causal = d_model, heads, causal
        self.d_head = d_model // heads
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n, d) -> (B, n, d)
        b, n, d = x.shape
        qkv = self.in_proj(x).view(b, n, 3, self.heads, self.d_head)  # (B, n, 3, h, e)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, n, e)
        ctx = self._core(feature_map(q), feature_map(k), v)  # (B, h, n, e)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, n, d))

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, heads={self.heads}, causal={self.causal}"


class ParallelLinearAttention(LinearAttention):
    """All positions at once: S = phi(K)^T V, or its prefix sums by cumsum when causal."""

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, n, e = q.shape
        if not self.causal:
            s = k.transpose(-2, -1) @ v  # (B, h, e, e)
            z = k.sum(dim=-2).unsqueeze(-1)  # (B, h, e, 1)
            return (q @ s) / (q @ z + EPS)  # (B, h, n, e) / (B, h, n, 1)
        rows = b * h * n  # one (e x 1) @ (1 x e) outer product per position
        outer = torch.bmm(k.reshape(rows, e, 1), v.reshape(rows, 1, e))  # (B*h*n, e, e)
        s = outer.view(b, h, n, e, e).cumsum(dim=2).view(rows, e, e)  # S_t
        z = k.cumsum(dim=2).reshape(rows, e, 1)  # z_t
        q_rows = q.reshape(rows, 1, e)
        num = torch.bmm(q_rows, s).view(b, h, n, e)
        den = torch.bmm(q_rows, z).view(b, h, n, 1)
        return num / (den + EPS)


class RecurrentLinearAttention(LinearAttention):
    """The RNN form: S_t = S_{t-1} + phi(k_t) v_t^T and z_t = z_{t-1} + phi(k_t), step by step."""

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, n, e = q.shape
        bh = b * h
        q, k, v = q.reshape(bh, n, e), k.reshape(bh, n, e), v.reshape(bh, n, e)
        s = z = None
        outputs = []
        for t in range(n):
            k_t = k[:, t].unsqueeze(-1)  # (B*h, e, 1)
            outer = torch.bmm(k_t, v[:, t].unsqueeze(1))  # (B*h, e, e)
            s = outer if s is None else s + outer
            z = k_t if z is None else z + k_t
            if self.causal:
                q_t = q[:, t].unsqueeze(1)  # (B*h, 1, e)
                outputs.append(torch.bmm(q_t, s) / (torch.bmm(q_t, z) + EPS))  # (B*h, 1, e)
        out = torch.cat(outputs, dim=1) if self.causal else \
            torch.bmm(q, s) / (torch.bmm(q, z) + EPS)  # (B*h, n, e)
        return out.view(b, h, n, e)


# --------------------------------------------------------------------------- cost model


def linear_attention_cost(case: LayerCase, variant: str) -> Cost:
    """Analytic cost (2 FLOPs per multiply-add; harness/costs.py's conventions).

    ``flops``: projections 8 B n d^2 (QKV 6, output 2), the outer products phi(k) v^T
    (or phi(K)^T V) 2 B n d e, phi(q) S 2 B n d e, and the normaliser phi(q) . z 2 B n d,
    with e = d/h - the same in both variants, causal or not (the prefix sums are additions).
    ``flops_other``: biases 4 B n d, the feature map (elu, +1) on q and k 4 B n d, the sum
    or prefix sum of phi(k) B n d, the division B n d and the eps B h n; plus B n d e for
    summing the outer products where a variant adds them up elementwise (causal cumsum,
    the recurrent loop). ``train_flops``: every matmul's operands require grad, so the
    backward runs two matmuls per forward one: 3x. ``activation_elements`` (estimate):
    q, k, v, phi(q), phi(k), context and output (7 B n d), plus the outer products and
    prefix sums (2 B n d e) where they are kept per position, the numerator and
    denominator.
    """
    b, n, d, h = case.batch, case.seq_len, case.d_model, case.heads
    if variant not in ("parallel", "recurrent"):
        raise ValueError(f"linear_attention has no variant {variant!r}")
    e = d // h
    flops = 8 * b * n * d * d + 4 * b * n * d * e + 2 * b * n * d
    per_position = case.causal or variant == "recurrent"  # S_t kept for every t
    kept = 2 * b * n * d * e + 2 * b * n * d if per_position else b * d * e + b * n * d
    return Cost(
        flops=flops,
        flops_useful=flops,
        flops_other=10 * b * n * d + b * h * n + (b * n * d * e if per_position else 0),
        train_flops=3 * flops,
        params=4 * d * d + 4 * d,
        activation_elements=7 * b * n * d + kept + b * h * n,
        seq_ops=1,  # the layer's: its parallel form (the reference) has no loop over n
        path_length=1,  # every output reads every (earlier) input directly
    )


# --------------------------------------------------------------------------- registration


def _parallel(case: LayerCase, depth: int) -> nn.Module:
    return ParallelLinearAttention(case.d_model, case.heads, case.causal)


def _recurrent(case: LayerCase, depth: int) -> nn.Module:
    return RecurrentLinearAttention(case.d_model, case.heads, case.causal)


LAYERS = [
    LayerEntry(
        name="linear_attention",
        family="self-attention",
        summary="linear attention, phi = elu + 1 (Katharopoulos et al. 2020): "
                "O(n d^2), causal by prefix sums",
        params=frozenset({"heads", "causal"}),
        required=frozenset({"heads"}),
        variants={"parallel": _parallel, "recurrent": _recurrent},
        default_variant="parallel",
        reference_variant="parallel",
        cost=linear_attention_cost,
        # projections n d^2; per head the core is n d e = n d^2 / h
        theory=Theory(complexity="O(n d^2)", seq_ops="O(1)", path_length="O(1)",
                      terms=("n d^2", "n d^2 h^-1")),
        colour="#a50026",  # dark red, beside attention's oranges
        label="linear attention",
    ),
]
