"""Self-attention with learned relative-position logits: Shaw et al. 2018 vs Music Transformer.

logits[t, s] = (q_t . k_s + q_t . E[clip(s - t, -K, K)]) / sqrt(dh), with E a
(2K + 1, dh) table shared by the heads (Shaw et al.'s a^K; their value-side a^V is left
out, as Huang et al. do). K = ``max_relative`` (Shaw's clip k), default n - 1: no clip.

Variants, same parameters, same function:

* ``materialized`` (Shaw): gathers R[t, s] = E[clip(s - t)] as an (n, n, dh) tensor and
  contracts it with q per query (one bmm over t): O(n^2 dh) intermediate memory.
* ``skewed`` (Huang et al., Music Transformer): S = q E_full^T with E_full the (2n - 1, dh)
  rows for distances -(n - 1) .. n - 1, then the "skew": pad one column, flatten, and read
  the (n, n) relative logits off a shifted view. O(n dh) for the embeddings plus one buffer
  of the logits' order (B h n 2n), no dh factor.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from harness.costs import Cost, StepCost
from harness.layers.attention import DENSE_THEORY, split_qkv
from harness.layers.decoding import Decoder, State
from harness.registry import Builder, LayerEntry
from harness.spec import LayerCase


class _RelativeAttention(Decoder, nn.Module):
    """Decoding (causal): a KV cache (B, h, capacity, dh) per k and v; step ``pos`` writes
    row ``pos`` and scores rows 0..pos with q . (k_s + E[clip(s - pos)]). The table is a
    parameter, not state: the state is the KV cache, 2 B pos d."""

    def __init__(self, d_model: int, heads: int, seq_len: int, causal: bool = False,
                 max_relative: int | None = None) -> None:
        super().__init__()
        if heads < 1 or d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        if max_relative is not None and max_relative < 0:
            raise ValueError(f"max_relative must be >= 0, got {max_relative}")
        self.d_model, self.heads, self.causal = d_model, heads, causal
        self.d_head = d_model // heads
        self.scale = 1.0 / math.sqrt(self.d_head)
        self.max_relative = seq_len - 1 if max_relative is None else max_relative
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=True)
        self.out_proj = nn.Linear(d_model, d_model, bias=True)
        self.rel = nn.Parameter(torch.randn(2 * self.max_relative + 1, self.d_head) * 0.1)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, heads={self.heads}, causal={self.causal}, "
                f"max_relative={self.max_relative}")

    def _rows(self, distance: torch.Tensor) -> torch.Tensor:
        """Table rows for relative distances (s - t), clipped to [-K, K]."""
        k = self.max_relative
        return self.rel[distance.clamp(-k, k) + k]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n, d) -> (B, n, d)
        b, n, d = x.shape
        q, k, v = self._qkv(x)  # each (B, h, n, dh)
        scores = q @ k.transpose(-2, -1) + self._relative_logits(q)  # (B, h, n, n)
        scores = scores * self.scale
        if self.causal:
            banned = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(banned, float("-inf"))
        ctx = scores.softmax(dim=-1) @ v  # (B, h, n, dh)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, n, d))

    def _relative_logits(self, q: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # decoding ------------------------------------------------------------------------

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return split_qkv(self.in_proj, x, self.heads)  # each (B, h, n, dh)

    def decode_init(self, batch: int, capacity: int, like: torch.Tensor) -> State:
        shape = (batch, self.heads, max(capacity, 1), self.d_head)
        return {"k": like.new_zeros(shape), "v": like.new_zeros(shape)}

    def decode_prefill(self, x: torch.Tensor, state: State) -> None:
        _, k, v = self._qkv(x)
        n = x.shape[1]
        state["k"][:, :, :n] = k
        state["v"][:, :, :n] = v

    def decode_step(self, x_t: torch.Tensor, state: State, pos: int) -> torch.Tensor:
        b = x_t.shape[0]
        q, k, v = self._qkv(x_t)  # each (B, h, 1, dh)
        state["k"][:, :, pos : pos + 1] = k
        state["v"][:, :, pos : pos + 1] = v
        keys, values = state["k"][:, :, : pos + 1], state["v"][:, :, : pos + 1]
        rows = self._rows(torch.arange(pos + 1, device=x_t.device) - pos)  # (pos+1, dh)
        scores = (q @ keys.transpose(-2, -1) + q @ rows.transpose(0, 1)) * self.scale
        ctx = scores.softmax(dim=-1) @ values  # (B, h, 1, dh)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, 1, self.d_model))

    def state_elements(self, state: State, pos: int) -> int:
        b, h, _, dh = state["k"].shape
        return 2 * b * h * pos * dh


class MaterializedRelativeAttention(_RelativeAttention):
    """Shaw et al.: R (n, n, dh) gathered, then q_t . R[t, s] as one bmm batched over t."""

    def _relative_logits(self, q: torch.Tensor) -> torch.Tensor:
        b, h, n, dh = q.shape
        t = torch.arange(n, device=q.device)
        r = self._rows(t[None, :] - t[:, None])  # (n, n, dh): R[t, s]
        q_t = q.permute(2, 0, 1, 3).reshape(n, b * h, dh)  # (n, B*h, dh)
        rel = torch.bmm(q_t, r.transpose(1, 2))  # (n, B*h, n)
        return rel.view(n, b, h, n).permute(1, 2, 0, 3)  # (B, h, n, n)


class SkewedRelativeAttention(_RelativeAttention):
    """Huang et al.: S = q E^T over the 2n - 1 distances, then the skew (pad, flatten, view)."""

    def _relative_logits(self, q: torch.Tensor) -> torch.Tensor:
        b, h, n, _ = q.shape
        e = self._rows(torch.arange(-(n - 1), n, device=q.device))  # (2n-1, dh), distance s-t
        s = q @ e.transpose(0, 1)  # (B, h, n, 2n-1): column c is distance c - (n - 1)
        # want out[t, s'] = S[t, s' - t + n - 1]: pad to width 2n, flatten; index
        # t*2n + s' - t + n - 1 = t*(2n-1) + s' + (n - 1)
        flat = nn.functional.pad(s, (0, 1)).reshape(b, h, 2 * n * n)
        return flat[..., n - 1 : n - 1 + n * (2 * n - 1)].view(b, h, n, 2 * n - 1)[..., :n]


# --------------------------------------------------------------------------- cost model


def _k(case: LayerCase) -> int:
    """The clip distance K: the case's ``max_relative``, or n - 1 (no clip)."""
    return case.n - 1 if case.max_relative is None else case.max_relative


def relative_attention_cost(case: LayerCase, variant: str) -> Cost:
    """Projections 8 B n d^2, q k^T and p v 4 B n^2 d (as dense attention), plus the
    relative logits: ``materialized`` 2 B n^2 d (one dh-dot per (t, s) pair and head),
    ``skewed`` 2 B n (2n - 1) d (q against all 2n - 1 distances). Every op is a matmul/bmm
    whose backward is two matmuls: train = 3x forward. Causal masking changes
    ``flops_useful`` only (pairs s <= t).

    ``activation_elements``: q, k, v, context, output (5 B n d), scores and probabilities
    (2 B h n^2), the relative logits (B h n^2) and, ``materialized``: R (n^2 dh) and the
    permuted q (B n d); ``skewed``: S and its padded copy (B h n (4n - 1)), the rows
    (2n - 1) dh.
    """
    b, n, d, h = case.batch, case.n, case.d, case.h
    dh = d // h
    proj = 8 * b * n * d * d
    core = 4 * b * n * n * d
    pairs = n * (n + 1) // 2 if case.causal else n * n
    base_act = 5 * b * n * d + 3 * b * h * n * n
    if variant == "materialized":
        rel, rel_useful = 2 * b * n * n * d, 2 * b * pairs * d
        act = base_act + n * n * dh + b * n * d
        scores = b * h * n * n
    elif variant == "skewed":
        rel, rel_useful = 2 * b * n * (2 * n - 1) * d, 2 * b * pairs * d
        act = base_act + b * h * n * (4 * n - 1) + (2 * n - 1) * dh
        scores = b * h * n * n
    else:
        raise ValueError(f"attention_relative has no variant {variant!r}")
    return Cost(
        flops=proj + core + rel,
        flops_useful=proj + 4 * b * pairs * d + rel_useful,
        # biases, then per score: add relative logits, scale, softmax (5)
        flops_other=4 * b * n * d + 7 * scores,
        train_flops=3 * (proj + core + rel),
        params=4 * d * d + 4 * d + (2 * _k(case) + 1) * dh,
        activation_elements=act,
        seq_ops=1,
        path_length=1,
    )


def relative_attention_step_cost(case: LayerCase, variant: str) -> StepCost:
    """One decode step (both variants decode alike): projections 8 B d^2, q K^T and p V
    over the n + 1 held keys 4 B (n + 1) d, q against their n + 1 table rows 2 B (n + 1) d;
    state: the KV cache of n positions, 2 B n d (the table is a parameter)."""
    b, n, d, h = case.batch, case.n, case.d, case.h
    keys = n + 1
    return StepCost(
        flops=8 * b * d * d + 6 * b * keys * d,
        flops_other=4 * b * d + 7 * b * h * keys,
        state_elements=2 * b * n * d,
    )


def _builder(cls: type[_RelativeAttention]) -> Builder:
    def build(case: LayerCase, depth: int) -> nn.Module:
        return cls(case.d_model, case.h, case.seq_len, case.causal, case.max_relative)

    return build


LAYERS = [
    LayerEntry(
        name="attention_relative",
        family="self-attention",
        summary="self-attention with learned relative-position logits: Shaw et al.'s "
                "materialized (n, n, d_h) vs Music Transformer's skewing "
                "(O(n^2 d) + O(n d^2) projections)",
        params=frozenset({"heads", "causal", "max_relative"}),
        required=frozenset({"heads"}),
        variants={"materialized": _builder(MaterializedRelativeAttention),
                  "skewed": _builder(SkewedRelativeAttention)},
        default_variant="skewed",
        reference_variant="materialized",
        cost=relative_attention_cost,
        step_cost=relative_attention_step_cost,
        theory=DENSE_THEORY,  # the relative logits add n^2 d_h h = n^2 d, same order
        colour="#8c564b",
    ),
]
