"""Encoder-decoder (cross) attention: queries from x (B, n, d), keys and values from an
encoder output (B, m, d), the case's second input (``LayerEntry.inputs``).

softmax(q k^T / sqrt(dh)) v with q = x W_q, [k, v] = source W_kv: O(n m d) for the scores
and p v, O(n d^2 + m d^2) for the projections, one sequential operation, and every output
reads every source position directly (path length 1 from the source). Output t depends on
x only at t: the layer mixes the source into the sequence, not the sequence with itself.

Variants, same parameters, same function: ``naive`` (explicit q k^T, softmax, @ v) and
``sdpa`` (torch's fused scaled_dot_product_attention).

Decoding: the encoder's K and V are computed once, when the state is made (``decode_init``
with the source), and a step projects one query and attends to the m source rows: its cost
depends on m, not on the n positions decoded before it; the state is 2 B m d.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.costs import Cost, StepCost
from harness.layers.decoding import Decoder, State
from harness.registry import Builder, LayerEntry
from harness.spec import LayerCase
from harness.theory import Theory


class _CrossAttention(Decoder, nn.Module):
    """Shared projections: ``q_proj`` (d -> d) for x, ``kv_proj`` (d -> 2d) for the source,
    ``out_proj`` (d -> d); subclasses supply the core softmax(q k^T / sqrt(dh)) v."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        self.d_model, self.heads = d_model, heads
        self.d_head = d_model // heads
        self.scale = 1.0 / math.sqrt(self.d_head)
        self.q_proj = nn.Linear(d_model, d_model, bias=True)
        self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=True)
        self.out_proj = nn.Linear(d_model, d_model, bias=True)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, heads={self.heads}"

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (B, l, d) -> (B, h, l, dh)
        b, length, _ = t.shape
        return t.view(b, length, self.heads, self.d_head).transpose(1, 2)

    def _source_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, m, _ = source.shape
        kv = self.kv_proj(source).view(b, m, 2, self.heads, self.d_head)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, m, dh)
        return k, v

    def forward(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape  # x (B, n, d), source (B, m, d) -> (B, n, d)
        q = self._heads(self.q_proj(x))  # (B, h, n, dh)
        k, v = self._source_kv(source)  # (B, h, m, dh)
        ctx = self._core(q, k, v)  # (B, h, n, dh)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, n, d))

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # decoding ------------------------------------------------------------------------

    def decode_init(self, batch: int, capacity: int, like: torch.Tensor,
                    *extra: torch.Tensor) -> State:
        """The source's K and V (B, h, m, dh), projected once; nothing grows with n."""
        if len(extra) != 1:
            raise ValueError("cross attention decodes against one source: "
                             "decode_init(batch, capacity, like, source)")
        k, v = self._source_kv(extra[0])
        return {"k": k.contiguous(), "v": v.contiguous()}

    def decode_prefill(self, x: torch.Tensor, state: State) -> None:
        """Earlier decoder positions leave no trace: output t reads x only at t."""

    def decode_step(self, x_t: torch.Tensor, state: State, pos: int) -> torch.Tensor:
        b = x_t.shape[0]
        q = self._heads(self.q_proj(x_t))  # (B, h, 1, dh)
        ctx = self._core(q, state["k"], state["v"])  # (B, h, 1, dh)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, 1, self.d_model))

    def state_elements(self, state: State, pos: int) -> int:
        return state["k"].numel() + state["v"].numel()  # 2 B m d, whatever pos is


class NaiveCrossAttention(_CrossAttention):
    """The unfused reference: explicit (n, m) scores, softmax, weighted sum."""

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, h, n, m)
        return scores.softmax(dim=-1) @ v  # (B, h, n, dh)


class SdpaCrossAttention(_CrossAttention):
    """torch's fused scaled_dot_product_attention (no mask: every source position is visible)."""

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, scale=self.scale)


# --------------------------------------------------------------------------- cost model


def cross_attention_cost(case: LayerCase, variant: str) -> Cost:
    """Projections: q and out 4 B n d^2, K and V of the source 4 B m d^2; q k^T and p v
    4 B n m d. ``naive``'s backward is two matmuls per forward matmul (train = 3x, the
    source requiring grad as an encoder's output does); ``sdpa``'s fused backward recomputes
    q k^T and runs four more matmuls: core 5/2 of its forward (as attention_sdpa).

    ``activation_elements``: q, context, output (3 B n d), K and V (2 B m d), plus for
    ``naive`` scores and probabilities (2 B h n m), for ``sdpa`` a log-sum-exp per row
    (B h n). Path length 1 from every source position; seq ops 1.
    """
    b, n, m, d, h = case.batch, case.n, case.m, case.d, case.h
    proj = 4 * b * n * d * d + 4 * b * m * d * d
    core = 4 * b * n * m * d
    if variant == "naive":
        train_core, act = 3 * core, 3 * b * n * d + 2 * b * m * d + 2 * b * h * n * m
    elif variant == "sdpa":
        train_core, act = 7 * core // 2, 3 * b * n * d + 2 * b * m * d + b * h * n
    else:
        raise ValueError(f"attention_cross has no variant {variant!r}")
    return Cost(
        flops=proj + core,
        flops_useful=proj + core,
        # biases (q and out B n d each, K and V 2 B m d) + scaling and softmax (6 per score)
        flops_other=2 * b * n * d + 2 * b * m * d + 6 * b * h * n * m,
        train_flops=3 * proj + train_core,
        params=4 * d * d + 4 * d,
        activation_elements=act,
        seq_ops=1,
        path_length=1,
    )


def cross_attention_step_cost(case: LayerCase, variant: str) -> StepCost:
    """One decode step: q and out projections 4 B d^2, the query against the m source rows
    4 B m d; no term in n. State: the source's K and V, 2 B m d (projected once, outside
    the step)."""
    b, m, d, h = case.batch, case.m, case.d, case.h
    return StepCost(
        flops=4 * b * d * d + 4 * b * m * d,
        flops_other=2 * b * d + 6 * b * h * m,
        state_elements=2 * b * m * d,
    )


def source_shape(case: LayerCase) -> tuple[tuple[int, ...], ...]:
    """The encoder output, the case's second input: (B, m, d)."""
    return ((case.batch, case.m, case.d_model),)


def _builder(cls: type[_CrossAttention]) -> Builder:
    def build(case: LayerCase, depth: int) -> nn.Module:
        return cls(case.d_model, case.h)

    return build


#: Path length and sequential operations are counted from the source: every output reads
#: every source position through one layer.
CROSS_THEORY = Theory(complexity="O(n m d) + O(n d^2 + m d^2) projections", seq_ops="O(1)",
                      path_length="O(1)", terms=("n m d", "n d^2", "m d^2"))

LAYERS = [
    LayerEntry(
        name="attention_cross",
        family="self-attention",
        summary="encoder-decoder attention: queries from x (n), keys and values from an "
                "encoder output (m) (O(n m d) + O(n d^2 + m d^2) projections)",
        params=frozenset({"heads", "src_len"}),
        required=frozenset({"heads", "src_len"}),
        variants={"naive": _builder(NaiveCrossAttention), "sdpa": _builder(SdpaCrossAttention)},
        default_variant="naive",
        reference_variant="naive",
        cost=cross_attention_cost,
        step_cost=cross_attention_step_cost,
        theory=CROSS_THEORY,
        inputs=source_shape,
        colour="#17becf",
    ),
]
