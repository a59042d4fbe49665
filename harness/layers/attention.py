"""Multi-head self-attention: dense (explicit matmul, fused SDPA) and restricted to a window.

Vaswani et al. 2017, Table 1: self-attention costs O(n^2 d) per layer with O(1) sequential
operations and path length; restricted to a neighbourhood of r positions it costs O(r n d)
and needs O(n/r) stacked layers to connect every pair of positions.

All three layers (and all their variants) own the same two parameters, ``in_proj``
(Linear d -> 3d, q/k/v stacked) and ``out_proj`` (Linear d -> d), so one state dict
transfers between any of them; with a window >= 2n the local layer equals the dense one.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from harness.costs import Cost, StepCost
from harness.layers.common import pad_left, reach
from harness.layers.decoding import Decoder, State
from harness.layers.pathlen import stacked_path_length
from harness.registry import Builder, LayerEntry
from harness.spec import LayerCase
from harness.theory import Theory

# --------------------------------------------------------------------------- modules


def split_qkv(in_proj: nn.Module, x: torch.Tensor,
              heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q, K and V of x (B, n, d) from one fused projection d -> 3d, each (B, h, n, d/h): the
    layout every attention layer here shares (so their state dicts transfer)."""
    b, n, d = x.shape
    qkv = in_proj(x).view(b, n, 3, heads, d // heads)  # (B, n, 3, h, dh)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, n, dh)
    return q, k, v


class _SelfAttention(Decoder, nn.Module):
    """Shared projections; subclasses supply the core softmax(q k^T / sqrt(dh)) v.

    Decoding (causal only): a KV cache (B, h, capacity, dh) per k and v; step ``pos``
    writes row ``pos`` and attends to rows 0..pos (:mod:`harness.layers.decoding`).
    """

    def __init__(self, d_model: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        if heads < 1 or d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        self.d_model = d_model
        self.heads = heads
        self.causal = causal
        self.d_head = d_model // heads
        self.scale = 1.0 / math.sqrt(self.d_head)
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=True)
        self.out_proj = nn.Linear(d_model, d_model, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n, d) -> (B, n, d)
        b, n, d = x.shape
        q, k, v = self._qkv(x)  # each (B, h, n, dh)
        ctx = self._core(q, k, v)  # (B, h, n, dh)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, n, d))  # (B, n, d)

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, heads={self.heads}, causal={self.causal}"

    # decoding ------------------------------------------------------------------------

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return split_qkv(self.in_proj, x, self.heads)  # each (B, h, n, dh)

    def _slots(self, capacity: int) -> int:
        """Cache rows: the whole context for dense attention."""
        return capacity

    def _slot(self, pos: int) -> int:
        return pos

    def _held(self, pos: int) -> int:
        """Cache rows a step at ``pos`` reads (including its own)."""
        return pos + 1

    def decode_init(self, batch: int, capacity: int, like: torch.Tensor) -> State:
        shape = (batch, self.heads, self._slots(max(capacity, 1)), self.d_head)
        return {"k": like.new_zeros(shape), "v": like.new_zeros(shape)}

    def decode_prefill(self, x: torch.Tensor, state: State) -> None:
        n = x.shape[1]
        first = max(0, n - state["k"].shape[2])  # a ring keeps only the last rows
        _, k, v = self._qkv(x[:, first:])
        slots = [self._slot(p) for p in range(first, n)]
        state["k"][:, :, slots] = k
        state["v"][:, :, slots] = v

    def decode_step(self, x_t: torch.Tensor, state: State, pos: int) -> torch.Tensor:
        b = x_t.shape[0]
        q, k, v = self._qkv(x_t)  # each (B, h, 1, dh)
        slot = self._slot(pos)
        state["k"][:, :, slot : slot + 1] = k
        state["v"][:, :, slot : slot + 1] = v
        held = self._held(pos)
        ctx = self._step_core(q, state["k"][:, :, :held], state["v"][:, :, :held])
        return self.out_proj(ctx.transpose(1, 2).reshape(b, 1, self.d_model))  # (B, 1, d)

    def _step_core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """One query (B, h, 1, dh) against every held key: nothing to mask."""
        return _dense_attend(q, k, v, self.scale, None)

    def state_elements(self, state: State, pos: int) -> int:
        b, h, _, dh = state["k"].shape
        return 2 * b * h * self._live(pos) * dh

    def _live(self, pos: int) -> int:
        """Positions < pos the cache holds."""
        return pos


def _dense_attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, banned: torch.Tensor | None
) -> torch.Tensor:
    """softmax(q k^T * scale, banned pairs -> -inf) v on full (n x n) scores."""
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, h, n, n)
    if banned is not None:
        scores = scores.masked_fill(banned, float("-inf"))
    return scores.softmax(dim=-1) @ v  # (B, h, n, dh)


class MatmulAttention(_SelfAttention):
    """The unfused reference: explicit scores, mask, softmax and weighted sum."""

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = q.shape[-2]
        banned = None
        if self.causal:  # key s > query t is the future
            banned = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)  # (n, n)
        return _dense_attend(q, k, v, self.scale, banned)


class SdpaAttention(_SelfAttention):
    """torch's fused scaled_dot_product_attention (flash / memory-efficient / math backend)."""

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale)

    def _step_core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, scale=self.scale)


class _LocalAttention(_SelfAttention):
    """Query t attends to the r keys t - pad_left(r) .. t - pad_left(r) + r - 1 inside [0, n)."""

    def __init__(self, d_model: int, heads: int, window: int, causal: bool = False) -> None:
        super().__init__(d_model, heads, causal)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.pad = pad_left(window, causal)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window={self.window}"

    # decoding (causal): a ring of r cache rows, position p in row p % r; a step attends to
    # the min(pos + 1, r) rows held (their order does not matter to softmax-weighted sums)

    def _slots(self, capacity: int) -> int:
        return self.window

    def _slot(self, pos: int) -> int:
        return pos % self.window

    def _held(self, pos: int) -> int:
        return min(pos + 1, self.window)

    def _live(self, pos: int) -> int:
        return min(pos, self.window - 1)


class UnfoldLocalAttention(_LocalAttention):
    """Linear in n: each query scores only its own r keys, gathered by unfolding padded K, V.

    The contractions are explicit bmms (einsum turns a size-1 contraction, r = 1, into an
    elementwise multiply that FLOP counters miss).
    Padded positions are computed (then masked), so executed FLOPs are 4*B*n*r*d.
    """

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, n, dh = q.shape
        r = self.window
        rows = b * h * n  # one (1 x dh) @ (dh x r) product per query
        pads = (0, 0, self.pad, r - 1 - self.pad)  # pad the time axis (dim -2)
        k_win = F.pad(k, pads).unfold(-2, r, 1).reshape(rows, dh, r)  # (B*h*n, dh, r)
        v_win = F.pad(v, pads).unfold(-2, r, 1).reshape(rows, dh, r)  # (B*h*n, dh, r)
        scores = torch.bmm(q.reshape(rows, 1, dh), k_win).view(b, h, n, r) * self.scale
        pos = (
            torch.arange(n, device=q.device)[:, None]
            - self.pad
            + torch.arange(r, device=q.device)[None, :]
        )  # (n, r) key position of window slot j for query t
        outside = (pos < 0) | (pos >= n)  # keys in the padding
        scores = scores.masked_fill(outside, float("-inf"))
        probs = scores.softmax(dim=-1).reshape(rows, 1, r)
        out = torch.bmm(probs, v_win.transpose(1, 2))  # (B*h*n, 1, dh)
        return out.view(b, h, n, dh)


class MaskedLocalAttention(_LocalAttention):
    """Same function as the unfold path, computed densely with a band mask: O(n^2) executed."""

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = q.shape[-2]
        t = torch.arange(n, device=q.device)
        offset = t[None, :] - t[:, None] + self.pad  # (n, n) slot of key s in query t's window
        banned = (offset < 0) | (offset >= self.window)
        return _dense_attend(q, k, v, self.scale, banned)


# --------------------------------------------------------------------------- cost models


def _clipped(reach_: int, n: int) -> int:
    """Window slots that fall off one end of the sequence, summed over the n queries."""
    p = min(reach_, n)
    return p * reach_ - p * (p - 1) // 2


def window_pairs(n: int, window: int, causal: bool) -> int:
    """Number of (query, key) pairs inside the sequence for a width-``window`` attention."""
    back, ahead = reach(window, causal)
    return n * window - _clipped(back, n) - _clipped(ahead, n)


def _projection_flops(case: LayerCase) -> int:
    """QKV (6 B n d^2) + output projection (2 B n d^2); biases are in flops_other."""
    return 8 * case.batch * case.n * case.d * case.d


def _cost(case: LayerCase, keys_per_query: int, useful_pairs: int, train_core_halves: int,
          activation: int, path_length: float) -> Cost:
    """Assemble a Cost from the executed keys per query and the useful (query, key) pairs
    (``useful_pairs`` summed over the batch).

    Core matmuls (q k^T and p v) execute 4 * B * n * keys_per_query * d FLOPs.
    ``train_core_halves`` is 2 x (forward + backward) / forward for the core (integer maths).
    """
    b, n, d, h = case.batch, case.n, case.d, case.h
    proj = _projection_flops(case)
    core = 4 * b * n * keys_per_query * d
    scores = b * h * n * keys_per_query
    return Cost(
        flops=proj + core,
        flops_useful=proj + 4 * d * useful_pairs,  # useful_pairs counts every batch item
        # biases (3 B n d in, B n d out) + scaling (1) and softmax (5) per score element
        flops_other=4 * b * n * d + 6 * scores,
        # projections: forward + grad input + grad weight = 3x (input requires grad)
        train_flops=3 * proj + train_core_halves * core // 2,
        params=4 * d * d + 4 * d,
        activation_elements=activation,
        seq_ops=1,
        path_length=path_length,
    )


def attention_cost(case: LayerCase, variant: str) -> Cost:
    """Dense attention: 8 B n d^2 + 4 B n^2 d executed, causal or not.

    Neither the explicit-mask nor the SDPA path skips masked pairs in our FLOP convention,
    so a causal mask changes ``flops_useful`` only (B d n (n+1)/2 pairs x 4).

    ``train_flops``: the matmul variant's backward runs two matmuls per forward matmul
    (grad of each operand), so train = 3x forward, what FlopCounterMode counts on CPU.
    The SDPA variant's fused backward (flash / efficient kernels) recomputes q k^T and runs
    four more matmuls: 5 vs 2 forward, i.e. backward core = 2.5x forward core (the
    FlashAttention convention and torch.utils.flop_counter's formula for the CUDA ops);
    projections stay 3x.

    ``activation_elements``: q, k, v, context and output (5 B n d) plus, for the matmul
    variant, scores and probabilities (2 B h n^2); SDPA's fused kernels keep only a
    per-row log-sum-exp (B h n) instead of the score matrix.
    """
    b, n, d, h = case.batch, case.n, case.d, case.h
    pairs = n * (n + 1) // 2 if case.causal else n * n
    if variant == "matmul":
        return _cost(case, n, b * pairs, 6, 5 * b * n * d + 2 * b * h * n * n, 1)
    if variant == "sdpa":
        return _cost(case, n, b * pairs, 2 + 5, 5 * b * n * d + b * h * n, 1)
    raise ValueError(f"attention has no variant {variant!r}")


def local_attention_cost(case: LayerCase, variant: str) -> Cost:
    """Restricted attention with window r.

    ``flops``: "unfold" executes 8 B n d^2 + 4 B n r d (window slots that fall in the padding
    are computed, then masked); "masked" executes the dense 8 B n d^2 + 4 B n^2 d.
    ``flops_useful`` (both): 8 B n d^2 + 4 B d P with P the (query, key) pairs inside the
    sequence (P = n r minus the slots clipped at both ends), so with r >= 2n it equals dense
    attention's. Both variants' backward is two matmuls per forward matmul: train = 3x.
    ``activation_elements``: q, k, v, context, output (5 B n d), scores and probabilities
    (2 B h n r, or 2 B h n^2 masked), plus for unfold the windowed K and V that the bmms
    need contiguous (2 B n r d).
    """
    b, n, d, h, r = case.batch, case.n, case.d, case.h, case.r
    pairs = b * window_pairs(n, r, case.causal)
    path = stacked_path_length(n, r, case.causal)
    if variant == "unfold":
        act = 5 * b * n * d + 2 * b * h * n * r + 2 * b * n * r * d
        return _cost(case, r, pairs, 6, act, path)
    if variant == "masked":
        return _cost(case, n, pairs, 6, 5 * b * n * d + 2 * b * h * n * n, path)
    raise ValueError(f"attention_local has no variant {variant!r}")


def attention_step_cost(case: LayerCase, variant: str) -> StepCost:
    """One decode step: projections 8 B d^2, q K^T and p V over the n + 1 held keys (the
    new token attends to itself) 4 B (n + 1) d; state: K and V of n positions, 2 B n d.
    Restricted attention holds and reads at most r keys: min(n + 1, r) and min(n, r - 1)."""
    b, n, d, h = case.batch, case.n, case.d, case.h
    keys, held = n + 1, n
    if case.window is not None:
        keys, held = min(n + 1, case.r), min(n, case.r - 1)
    return StepCost(
        flops=8 * b * d * d + 4 * b * keys * d,
        flops_other=4 * b * d + 6 * b * h * keys,
        state_elements=2 * b * held * d,
    )


# --------------------------------------------------------------------------- registration


def _builder(cls: type[nn.Module]) -> Builder:
    """A variant's ``build(case, depth)``: the window only for the restricted layer."""

    def build(case: LayerCase, depth: int) -> nn.Module:
        window = (case.window,) if case.window is not None else ()
        return cls(case.d_model, case.h, *window, case.causal)

    return build


#: Full self-attention's theory. Table 1 gives O(n^2 d); the projections (n d^2) are part
#: of the layer and win for d > n.
DENSE_THEORY = Theory(complexity="O(n^2 d) + O(n d^2) projections", seq_ops="O(1)",
                      path_length="O(1)", terms=("n^2 d", "n d^2"))
#: What the two dense layers share.
_dense = partial(LayerEntry, family="self-attention", params=frozenset({"heads", "causal"}),
                 required=frozenset({"heads"}), cost=attention_cost,
                 step_cost=attention_step_cost, theory=DENSE_THEORY)

LAYERS = [
    _dense(
        name="attention",
        summary="multi-head self-attention, explicit q k^T, softmax, @ v "
                "(O(n^2 d) + O(n d^2) projections)",
        variants={"matmul": _builder(MatmulAttention)},
        default_variant="matmul",
        reference_variant="matmul",
        colour="#de8f05",  # orange
    ),
    _dense(
        name="attention_sdpa",
        summary="multi-head self-attention via F.scaled_dot_product_attention "
                "(O(n^2 d) + O(n d^2) projections)",
        variants={"sdpa": _builder(SdpaAttention)},
        default_variant="sdpa",
        reference_variant="sdpa",
        colour="#d55e00",  # vermillion
    ),
    LayerEntry(
        name="attention_local",
        family="self-attention",
        summary="restricted self-attention over a window of r positions (Vaswani et al.'s r) "
                "(O(r n d) + O(n d^2) projections)",
        params=frozenset({"heads", "window", "causal"}),
        required=frozenset({"heads", "window"}),
        variants={"unfold": _builder(UnfoldLocalAttention),
                  "masked": _builder(MaskedLocalAttention)},
        default_variant="unfold",
        reference_variant="unfold",
        cost=local_attention_cost,
        step_cost=attention_step_cost,
        theory=Theory(complexity="O(r n d) + O(n d^2) projections", seq_ops="O(1)",
                      path_length="O(n/r)", terms=("r n d", "n d^2")),
        colour="#b3a423",  # palette yellow, darkened to read on white
    ),
]
