"""2D local self-attention (Image Transformer, Parmar et al. 2018): an image of H x W
positions in raster order (n = H W, channels = d), split into query blocks of qh x qw
pixels; a query block attends to a memory block that extends it by ``flange_height`` rows
upward and ``flange_width`` columns left and right. ``causal`` (generation): the memory
block stops at the query block's last row and a query sees only raster-earlier-or-equal
positions. Not causal: the memory also extends ``flange_height`` rows downward (as
tensor2tensor's unmasked local_attention_2d), so information flows both ways.

Key s is visible to query t (pixel (r, c) in the block whose top-left pixel is (top, left))
when, inside the image, top - fh <= row(s) <= top + qh - 1 (+ fh when not causal),
left - fw <= col(s) <= left + qw - 1 + fw, and, causal, s <= t in raster order.

Variants, same parameters (``in_proj`` d -> 3d, ``out_proj`` d -> d), same function:

* ``reference``: dense (n, n) scores with the full visibility mask: O(n^2 d), O(n^2) memory.
* ``blocked``: the image padded to whole query blocks; each block's queries score only
  its memory block, K and V gathered by unfolding: O(n M d) for M = (qh + fh [+ fh]) x
  (qw + 2 fw) memory positions, O(n M) memory.

Cost: O(n M d) (+ O(n d^2) projections) against full attention's O(n^2 d), M independent
of the image. Path length: rows and columns spread by one memory flange per layer, so it
grows as the image's height (or width) over the block size.

Decoding (causal, both variants alike): pixels are generated in raster order; a decode case
holds seq_len = n < H W pixels and its step generates pixel n (derived by the planner: the
last pixel, n = H W - 1). The state is a ring of K/V over the last R = min(qh + fh, H) image
rows (the rows any later pixel's memory block can reach); a step writes its own K/V and
reads only the keys it sees (at most M), so its cost is O(M d + d^2) whatever the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from harness.costs import Cost, StepCost
from harness.layers.attention import split_qkv
from harness.layers.decoding import Decoder, State
from harness.registry import Builder, LayerEntry
from harness.spec import LayerCase
from harness.theory import Theory

#: Query-block side used when the case gives none (clipped to the image); the flange
#: defaults to the query block's shape (tensor2tensor's defaults are of this kind).
DEFAULT_BLOCK = 8


@dataclass(frozen=True)
class Geometry:
    """An image and its blocks: H x W pixels, query blocks qh x qw, flanges fh, fw."""

    height: int
    width: int
    qh: int
    qw: int
    fh: int
    fw: int
    causal: bool

    @classmethod
    def of(cls, case: LayerCase) -> Geometry:
        if case.height is None:
            raise ValueError("2D local attention needs height")
        h = case.height
        w = case.width if case.width is not None else h
        qh = case.query_height if case.query_height is not None else min(DEFAULT_BLOCK, h)
        qw = case.query_width if case.query_width is not None else min(DEFAULT_BLOCK, w)
        fh = case.flange_height if case.flange_height is not None else qh
        fw = case.flange_width if case.flange_width is not None else qw
        return cls(h, w, qh, qw, fh, fw, case.causal)

    @property
    def n(self) -> int:
        return self.height * self.width

    @property
    def below(self) -> int:
        """Rows the memory block extends below the query block."""
        return 0 if self.causal else self.fh

    @property
    def padded(self) -> tuple[int, int]:
        """The image padded to whole query blocks."""
        return -(-self.height // self.qh) * self.qh, -(-self.width // self.qw) * self.qw

    @property
    def memory(self) -> tuple[int, int]:
        """Rows and columns of a memory block (padding included)."""
        return self.qh + self.fh + self.below, self.qw + 2 * self.fw

    def problem(self) -> str | None:
        if self.qh > self.height or self.qw > self.width:
            return (f"query block {self.qh}x{self.qw} is larger than the image "
                    f"{self.height}x{self.width}")
        return None

    def row_range(self, row: int) -> tuple[int, int]:
        """Rows (first, last) a query in ``row`` may see, clipped to the image."""
        top = row // self.qh * self.qh
        return max(0, top - self.fh), min(self.height - 1, top + self.qh - 1 + self.below)

    def col_range(self, col: int) -> tuple[int, int]:
        left = col // self.qw * self.qw
        return max(0, left - self.fw), min(self.width - 1, left + self.qw - 1 + self.fw)


def visible(g: Geometry, device: torch.device | None = None) -> torch.Tensor:
    """(n, n) bool: key s visible to query t (the definition in the module docstring)."""
    rows = torch.arange(g.height, device=device)
    cols = torch.arange(g.width, device=device)
    # block tops and lefts by repetition: an integer division would be an op the FLOP
    # counters cannot classify
    hp, wp = g.padded
    top = torch.arange(0, hp, g.qh, device=device).repeat_interleave(g.qh)[: g.height]
    left = torch.arange(0, wp, g.qw, device=device).repeat_interleave(g.qw)[: g.width]
    first_row, last_row = top - g.fh, top + g.qh - 1 + g.below  # per query row
    first_col, last_col = left - g.fw, left + g.qw - 1 + g.fw  # per query column
    row_ok = (rows[None, :] >= first_row[:, None]) & (rows[None, :] <= last_row[:, None])
    col_ok = (cols[None, :] >= first_col[:, None]) & (cols[None, :] <= last_col[:, None])
    # (H query, H key) x (W query, W key) -> (n, n) in raster order
    ok = (row_ok[:, None, :, None] & col_ok[None, :, None, :]).reshape(g.n, g.n)
    if g.causal:
        ok = ok & torch.ones(g.n, g.n, dtype=torch.bool, device=device).tril()
    return ok


class _Local2dAttention(Decoder, nn.Module):
    """Shared projections and decoding; subclasses supply the core over (B, h, n, dh)
    q, k, v."""

    def __init__(self, d_model: int, heads: int, geometry: Geometry) -> None:
        super().__init__()
        if heads < 1 or d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        reason = geometry.problem()
        if reason:
            raise ValueError(reason)
        self.d_model, self.heads, self.g = d_model, heads, geometry
        self.d_head = d_model // heads
        self.scale = 1.0 / math.sqrt(self.d_head)
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=True)
        self.out_proj = nn.Linear(d_model, d_model, bias=True)

    def extra_repr(self) -> str:
        g = self.g
        return (f"d_model={self.d_model}, heads={self.heads}, image={g.height}x{g.width}, "
                f"query={g.qh}x{g.qw}, flange={g.fh}x{g.fw}, causal={g.causal}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n, d) -> (B, n, d)
        b, n, d = x.shape
        if n != self.g.n:
            raise ValueError(f"expected {self.g.height}x{self.g.width} = {self.g.n} positions, "
                             f"got {n}")
        q, k, v = self._qkv(x)  # each (B, h, n, dh)
        ctx = self._core(q, k, v)  # (B, h, n, dh)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, n, d))

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # decoding (causal): a ring of R image rows of K and V, pixel (r, c) in slot
    # (r % R) W + c; writing row r overwrites row r - R, which no pixel >= (r, 0) sees

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return split_qkv(self.in_proj, x, self.heads)  # each (B, h, n, dh)

    def _check_pos(self, pos: int) -> None:
        if not self.g.causal:
            raise ValueError("2D local attention decodes only its causal form")
        if not 0 <= pos < self.g.n:
            raise ValueError(f"position {pos} is outside the {self.g.height}x{self.g.width} "
                             "image")

    def decode_init(self, batch: int, capacity: int, like: torch.Tensor) -> State:
        shape = (batch, self.heads, ring_rows(self.g) * self.g.width, self.d_head)
        return {"k": like.new_zeros(shape), "v": like.new_zeros(shape)}

    def decode_prefill(self, x: torch.Tensor, state: State) -> None:
        n = x.shape[1]
        self._check_pos(n - 1)
        first = max(0, n - state["k"].shape[2])  # the ring keeps only the last R rows
        _, k, v = self._qkv(x[:, first:])
        slots = [ring_slot(self.g, p) for p in range(first, n)]
        state["k"][:, :, slots] = k
        state["v"][:, :, slots] = v

    def decode_step(self, x_t: torch.Tensor, state: State, pos: int) -> torch.Tensor:
        self._check_pos(pos)
        b = x_t.shape[0]
        q, k, v = self._qkv(x_t)  # each (B, h, 1, dh)
        slot = ring_slot(self.g, pos)
        state["k"][:, :, slot : slot + 1] = k
        state["v"][:, :, slot : slot + 1] = v
        seen = _seen_slots(self.g, pos, str(x_t.device))  # (m,): the keys pixel pos sees
        keys, values = state["k"][:, :, seen], state["v"][:, :, seen]  # (B, h, m, dh)
        scores = (q @ keys.transpose(-2, -1)) * self.scale  # (B, h, 1, m): nothing to mask
        ctx = scores.softmax(dim=-1) @ values  # (B, h, 1, dh)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, 1, self.d_model))  # (B, 1, d)

    def state_elements(self, state: State, pos: int) -> int:
        b, h, slots, dh = state["k"].shape
        return 2 * b * h * min(pos, slots) * dh


class ReferenceLocal2dAttention(_Local2dAttention):
    """Dense scores (B, h, n, n) with the full visibility mask: the unfused reference."""

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, h, n, n)
        scores = scores.masked_fill(~visible(self.g, q.device), float("-inf"))
        return scores.softmax(dim=-1) @ v  # (B, h, n, dh)


class BlockedLocal2dAttention(_Local2dAttention):
    """Each query block against its own memory block: scores (B, h, blocks, qh qw, M)."""

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        g = self.g
        b, h, _, dh = q.shape
        hp, wp = g.padded
        nbh, nbw = hp // g.qh, wp // g.qw
        mh, mw = g.memory
        image = (b, h, g.height, g.width, dh)
        # queries: pad to whole blocks, then (B, h, blocks, qh*qw, dh)
        qi = F.pad(q.reshape(image), (0, 0, 0, wp - g.width, 0, hp - g.height))
        qb = (qi.view(b, h, nbh, g.qh, nbw, g.qw, dh).permute(0, 1, 2, 4, 3, 5, 6)
              .reshape(b, h, nbh * nbw, g.qh * g.qw, dh))
        pads = (0, 0, g.fw, wp - g.width + g.fw, g.fh, hp - g.height + g.below)

        def windows(t: torch.Tensor) -> torch.Tensor:  # (B, h, n, dh) -> (B, h, blocks, M, dh)
            padded = F.pad(t.reshape(image), pads)  # (B, h, fh + hp + below, fw + wp + fw, dh)
            win = padded.unfold(2, mh, g.qh).unfold(3, mw, g.qw)  # (B, h, nbh, nbw, dh, mh, mw)
            return win.permute(0, 1, 2, 3, 5, 6, 4).reshape(b, h, nbh * nbw, mh * mw, dh)

        scores = (qb @ windows(k).transpose(-2, -1)) * self.scale  # (B, h, blocks, lq, M)
        scores = scores.masked_fill(~self._block_mask(q.device), float("-inf"))
        out = scores.softmax(dim=-1) @ windows(v)  # (B, h, blocks, lq, dh)
        out = (out.view(b, h, nbh, nbw, g.qh, g.qw, dh).permute(0, 1, 2, 4, 3, 5, 6)
               .reshape(b, h, hp, wp, dh))
        return out[:, :, : g.height, : g.width].reshape(b, h, g.n, dh)

    def _block_mask(self, device: torch.device) -> torch.Tensor:
        """(blocks, qh*qw, M) bool: memory slot visible to the block's query slot. A query
        in the padding sees every key inside the image (its output is cropped)."""
        g = self.g
        hp, wp = g.padded
        mh, mw = g.memory
        br = torch.arange(hp // g.qh, device=device) * g.qh  # block tops
        bc = torch.arange(wp // g.qw, device=device) * g.qw  # block lefts
        key_r = br[:, None] - g.fh + torch.arange(mh, device=device)  # (nbh, mh)
        key_c = bc[:, None] - g.fw + torch.arange(mw, device=device)  # (nbw, mw)
        q_r = br[:, None] + torch.arange(g.qh, device=device)  # (nbh, qh)
        q_c = bc[:, None] + torch.arange(g.qw, device=device)  # (nbw, qw)
        # broadcast to (nbh, nbw, qh, qw, mh, mw)
        kr = key_r[:, None, None, None, :, None]
        kc = key_c[None, :, None, None, None, :]
        qr = q_r[:, None, :, None, None, None]
        qc = q_c[None, :, None, :, None, None]
        ok = (kr >= 0) & (kr < g.height) & (kc >= 0) & (kc < g.width)
        if g.causal:
            real = (qr < g.height) & (qc < g.width)
            earlier = kr * g.width + kc <= qr * g.width + qc
            ok = ok & (earlier | ~real)
        full = (hp // g.qh, wp // g.qw, g.qh, g.qw, mh, mw)
        return ok.expand(full).reshape(full[0] * full[1], g.qh * g.qw, mh * mw)


def ring_rows(g: Geometry) -> int:
    """Image rows a decoding state keeps: a pixel in row r sees rows from its query block's
    top - fh (>= r - qh + 1 - fh) to r, so qh + fh rows (at most the image)."""
    return min(g.qh + g.fh, g.height)


def ring_slot(g: Geometry, pos: int) -> int:
    row, col = divmod(pos, g.width)
    return row % ring_rows(g) * g.width + col


def seen_positions(g: Geometry, pos: int) -> list[int]:
    """Raster positions the causal pixel ``pos`` sees (itself included), in raster order:
    whole memory-block rows above its own row, then its row up to itself."""
    row, col = divmod(pos, g.width)
    first_row = g.row_range(row)[0]
    lo, hi = g.col_range(col)
    above = [r * g.width + c for r in range(first_row, row) for c in range(lo, hi + 1)]
    return above + [row * g.width + c for c in range(lo, col + 1)]


@lru_cache(maxsize=4096)
def _seen_slots(g: Geometry, pos: int, device: str) -> torch.Tensor:
    """Ring slots of :func:`seen_positions`, as an index tensor (built once per position)."""
    slots = [ring_slot(g, p) for p in seen_positions(g, pos)]
    return torch.tensor(slots, dtype=torch.long, device=device)


# --------------------------------------------------------------------------- cost model


def visible_pairs(g: Geometry) -> int:
    """(query, key) pairs the visibility rule allows, over the image (one sequence)."""
    if not g.causal:  # a product of a row rule and a column rule
        rows = sum(hi - lo + 1 for lo, hi in map(g.row_range, range(g.height)))
        cols = sum(hi - lo + 1 for lo, hi in map(g.col_range, range(g.width)))
        return rows * cols
    total = 0
    for r in range(g.height):
        first_row = g.row_range(r)[0]
        for c in range(g.width):
            lo, hi = g.col_range(c)
            total += (r - first_row) * (hi - lo + 1) + (c - lo + 1)  # rows above, then row r
    return total


def _spread(extent: int, block: int, flange: int, start: int) -> int:
    """Layers until the inputs read by an output at ``start`` cover 0..extent-1 along one
    axis (blocks of ``block``, a flange each way); -1 if never."""
    lo = hi = start
    for layers in range(1, extent + 2):
        lo = max(0, lo // block * block - flange)
        hi = min(extent - 1, hi // block * block + block - 1 + flange)
        if lo == 0 and hi == extent - 1:
            return layers
    return -1


def _axis_path(extent: int, block: int, flange: int) -> float:
    spans = [_spread(extent, block, flange, s) for s in range(extent)]
    return math.inf if -1 in spans else float(max(spans))


#: Above this many positions a causal path length that is not inf at once is not modelled
#: (nan: the bitset closure below costs O(n M) big-integer ORs per layer).
CAUSAL_PATH_MAX_N = 4096


@lru_cache(maxsize=64)
def path_length(g: Geometry) -> float:
    """Least stack depth at which every output reads every input it may (causal: every
    raster-earlier-or-equal one).

    Not causal, the rule is a product of a row rule and a column rule that each include
    their own position, so L layers reach the product of the axes' L-layer reaches and the
    path length is the larger of the two axes' (closed iteration per axis: each layer
    widens the reach to the enclosing blocks plus a flange). Causal, no product form: the
    closure of the visibility graph, positions as bits of Python integers; ``inf`` at once
    when a row's last pixel cannot reach the next row's first (no pixel lies between them
    in raster order, so only a direct edge joins them)."""
    if g.n == 1:
        return 1.0
    if not g.causal:
        return max(_axis_path(g.height, g.qh, g.fh), _axis_path(g.width, g.qw, g.fw))
    if g.height > 1 and g.col_range(0)[1] < g.width - 1:
        return math.inf  # (r, W - 1) -> (r + 1, 0): adjacent in raster order, never joined
    if g.n > CAUSAL_PATH_MAX_N:
        return math.nan  # not modelled: the closure would cost too much
    reads = []  # reads[t]: bitmask of the keys query t sees
    for r in range(g.height):
        r0 = g.row_range(r)[0]
        for c in range(g.width):
            lo, hi = g.col_range(c)
            row_bits = ((1 << (hi - lo + 1)) - 1) << lo
            mask = 0
            for rr in range(r0, r):
                mask |= row_bits << (rr * g.width)
            mask |= ((1 << (c - lo + 1)) - 1) << (r * g.width + lo)
            reads.append(mask)
    keys = [[s for s in range(g.n) if m >> s & 1] for m in reads]
    reach = list(reads)
    for layers in range(1, 4 * g.n + 1):
        if all(reach[t] == (1 << (t + 1)) - 1 for t in range(g.n)):
            return float(layers)
        nxt = []
        for t in range(g.n):
            acc = 0
            for s in keys[t]:
                acc |= reach[s]
            nxt.append(acc)
        if nxt == reach:
            return math.inf
        reach = nxt
    return math.nan


def local2d_cost(case: LayerCase, variant: str) -> Cost:
    """Projections 8 B n d^2. Core (q k^T and p v): ``reference`` 4 B n^2 d; ``blocked``
    4 B Hp Wp M d with Hp x Wp the image padded to whole query blocks and M the memory
    block's positions (padding included: executed, then masked). ``flops_useful``: 4 d per
    visible (query, key) pair. Backward: two matmuls per forward matmul, train = 3x.

    ``activation_elements``: q, k, v, context, output (5 B n d); ``reference`` the scores
    and probabilities 2 B h n^2; ``blocked`` the padded queries B Hp Wp d, K and V
    windows 2 B (blocks) M d and scores and probabilities 2 B h Hp Wp M.
    """
    g = Geometry.of(case)
    b, n, d, h = case.batch, g.n, case.d, case.h  # n: the image (a decode case holds less)
    hp, wp = g.padded
    mh, mw = g.memory
    blocks = (hp // g.qh) * (wp // g.qw)
    proj = 8 * b * n * d * d
    if variant == "reference":
        keys_total = n * n  # executed (query, key) pairs per sequence
        act = 5 * b * n * d + 2 * b * h * n * n
    elif variant == "blocked":
        keys_total = hp * wp * mh * mw
        act = 5 * b * n * d + b * hp * wp * d + 2 * b * blocks * mh * mw * d \
            + 2 * b * h * hp * wp * mh * mw
    else:
        raise ValueError(f"attention_local2d has no variant {variant!r}")
    core = 4 * b * keys_total * d
    return Cost(
        flops=proj + core,
        flops_useful=proj + 4 * b * visible_pairs(g) * d,
        # biases (4 B n d) + scaling, masking and softmax (7 per score)
        flops_other=4 * b * n * d + 7 * b * h * keys_total,
        train_flops=3 * (proj + core),
        params=4 * d * d + 4 * d,
        activation_elements=act,
        seq_ops=1,
        path_length=path_length(g),
    )


def local2d_step_cost(case: LayerCase, variant: str) -> StepCost:
    """One decode step generating pixel n = seq_len (both variants): projections 8 B d^2,
    q K^T and p V over the m keys the pixel sees (itself included, m <= M) 4 B m d; other:
    biases 4 B d, scaling and softmax 6 per score. State: K and V of the min(n, R W)
    positions the ring of R = min(qh + fh, H) rows holds, 2 B min(n, R W) d."""
    g = Geometry.of(case)
    b, n, d, h = case.batch, case.n, case.d, case.h
    m = len(seen_positions(g, n))
    return StepCost(
        flops=8 * b * d * d + 4 * b * m * d,
        flops_other=4 * b * d + 6 * b * h * m,
        state_elements=2 * b * min(n, ring_rows(g) * g.width) * d,
    )


def local2d_check(case: LayerCase) -> str | None:
    """The image must be the sequence, and its blocks must fit in it."""
    if case.height is None:
        return None  # the registry reports the missing required axis
    g = Geometry.of(case)
    if g.n != case.seq_len:
        return (f"height x width = {g.height} x {g.width} = {g.n} does not match seq_len = "
                f"{case.seq_len} (give seq_len = height x width, or leave seq_len out of the "
                "layer's sweep: the plan derives it)")
    return g.problem()


def local2d_decode_check(case: LayerCase) -> str | None:
    """A decode case holds seq_len pixels and generates the next: it must lie in the image."""
    if case.height is None:
        return None
    g = Geometry.of(case)
    if case.seq_len >= g.n:
        return (f"decode: pixel seq_len = {case.seq_len} is outside the {g.height} x "
                f"{g.width} image (give seq_len < {g.n}, or leave seq_len out of the layer's "
                f"sweep: the plan derives {g.n - 1}, the last pixel)")
    return g.problem()


def _builder(cls: type[_Local2dAttention]) -> Builder:
    def build(case: LayerCase, depth: int) -> nn.Module:
        return cls(case.d_model, case.h, Geometry.of(case))

    return build


LAYERS = [
    LayerEntry(
        name="attention_local2d",
        family="self-attention",
        summary="Image Transformer local 2D attention: query blocks over an H x W raster "
                "attend to a memory block around them (O(n M d) + O(n d^2) projections)",
        params=frozenset({"heads", "height", "width", "query_height", "query_width",
                          "flange_height", "flange_width", "causal"}),
        required=frozenset({"heads", "height"}),
        variants={"reference": _builder(ReferenceLocal2dAttention),
                  "blocked": _builder(BlockedLocal2dAttention)},
        default_variant="blocked",
        reference_variant="reference",
        cost=local2d_cost,
        check=local2d_check,
        decode_check=local2d_decode_check,
        step_cost=local2d_step_cost,
        # M (the memory block) is fixed by the block shape, not an axis: per layer n M d
        theory=Theory(complexity="O(n M d) + O(n d^2) projections", seq_ops="O(1)",
                      path_length="O(H/q_h)", terms=("n d", "n d^2")),
        colour="#e377c2",
    ),
]
