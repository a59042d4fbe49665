"""Recurrent layers (vanilla tanh RNN, LSTM, GRU): one layer, unidirectional, hidden = input = d.

Two variants compute the same function with the same parameter names as torch's modules
(``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``), so weights transfer
with ``load_state_dict``:

* ``fused``: torch's nn.RNN / nn.LSTM / nn.GRU (oneDNN / cuDNN kernels), returning the
  per-step hidden sequence.
* ``unrolled``: an explicit Python loop over time calling :meth:`step` - the unfused
  reference on which sequential ops and path length are measured. Its
  ``initial_state`` / ``step`` / ``forward`` interface is relied on by the structural metrics.

Gate order and formulas follow torch exactly (LSTM: i, f, g, o; GRU: r, z, n with
``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.costs import Cost, StepCost
from harness.layers.decoding import Decoder, State
from harness.registry import LayerEntry
from harness.spec import LayerCase
from harness.theory import Theory

#: Gates per cell: the row blocks of weight_ih_l0 / weight_hh_l0 (torch's layout).
GATES: dict[str, int] = {"rnn": 1, "lstm": 4, "gru": 3}

#: Elementwise FLOPs per (batch, step, hidden unit), 1 per arithmetic op / nonlinearity
#: (harness/costs.py). Every cell pays 3 per gate element: + b_ih, + b_hh, and the sum of
#: the input and hidden projections. On top of that:
#:   rnn:  tanh                                                         -> 3*1 + 1 = 4
#:   lstm: 3 sigmoid + 1 tanh on gates; c = f*c + i*g (2 mul, 1 add);
#:         tanh(c); h = o*tanh(c) (1 mul)                                -> 3*4 + 4 + 3 + 1 + 1 = 21
#:   gru:  r, z: 2 sigmoid; n: r*(W_hn h + b_hn) (1 mul), tanh (1);
#:         h = (1 - z)*n + z*h (1 sub, 2 mul, 1 add)
#:         (the n gate adds its projections after the product, same count) -> 3*3 + 2 + 2 + 4 = 17
OTHER_PER_UNIT: dict[str, int] = {"rnn": 4, "lstm": 21, "gru": 17}


# --------------------------------------------------------------------------- decoding


class _RecurrentDecoder(Decoder):
    """Decoding state: the hidden state h (and the LSTM's cell c) in a ring of two slots,
    read at pos % 2 and written at (pos + 1) % 2, so a repeated step at one position reads
    the same state. Live part: B d (LSTM: 2 B d), whatever the position."""

    hidden_size: int
    kind: str

    def decode_init(self, batch: int, capacity: int, like: Tensor) -> State:
        shape = (2, batch, self.hidden_size)
        state = {"h": like.new_zeros(shape)}
        if self.kind == "lstm":
            state["c"] = like.new_zeros(shape)
        return state

    def decode_step(self, x_t: Tensor, state: State, pos: int) -> Tensor:
        read, write = pos % 2, (pos + 1) % 2
        c = state["c"][read] if "c" in state else None
        h, c_new = self._advance(x_t[:, 0], state["h"][read], c)  # (B, d)
        state["h"][write] = h
        if c_new is not None:
            state["c"][write] = c_new
        return h.unsqueeze(1)  # (B, 1, d)

    def _advance(self, x_t: Tensor, h: Tensor, c: Tensor | None
                 ) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def state_elements(self, state: State, pos: int) -> int:
        return sum(t[0].numel() for t in state.values())


# --------------------------------------------------------------------------- fused


class _FusedMixin(_RecurrentDecoder):
    """Return only the hidden sequence (B, n, d), as every layer of the zoo does."""

    def forward(self, x: Tensor) -> Tensor:  # (B, n, d) -> (B, n, d)
        out, _ = super().forward(x)  # type: ignore[misc]
        return out

    def _advance(self, x_t: Tensor, h: Tensor, c: Tensor | None
                 ) -> tuple[Tensor, Tensor | None]:
        """One step of torch's fused kernel: a length-1 sequence from state (h, c)."""
        hx: Any = h.unsqueeze(0) if c is None else (h.unsqueeze(0), c.unsqueeze(0))
        _, hn = super().forward(x_t.unsqueeze(1), hx)  # type: ignore[misc]
        if c is None:
            return hn[0], None
        return hn[0][0], hn[1][0]


# The mixin narrows torch's forward (input, hx) -> (output, h_n) to x -> output on purpose,
# keeping the parameter names of nn.RNN/LSTM/GRU (the unrolled variants share them).
class FusedRNN(_FusedMixin, nn.RNN):  # type: ignore[misc]
    kind = "rnn"


class FusedLSTM(_FusedMixin, nn.LSTM):  # type: ignore[misc]
    kind = "lstm"


class FusedGRU(_FusedMixin, nn.GRU):  # type: ignore[misc]
    kind = "gru"


_FUSED: dict[str, Callable[..., nn.Module]] = {
    "rnn": FusedRNN, "lstm": FusedLSTM, "gru": FusedGRU,
}


def build_fused(kind: str, case: LayerCase) -> nn.Module:
    d = case.d_model
    return _FUSED[kind](input_size=d, hidden_size=d, num_layers=1, bias=True, batch_first=True)


# --------------------------------------------------------------------------- unrolled


class UnrolledCell(_RecurrentDecoder, nn.Module):
    """A recurrent layer written as a Python loop over time steps (the unfused reference).

    Parameters have torch's names and shapes, so ``load_state_dict`` of a fused module's
    ``state_dict`` gives this module the same function.
    """

    kind: str = ""

    def __init__(self, d: int) -> None:
        super().__init__()
        if d <= 0:
            raise ValueError(f"hidden size must be positive, got {d}")
        g = GATES[self.kind]
        self.hidden_size = d
        self.weight_ih_l0 = nn.Parameter(torch.empty(g * d, d))  # (g*d, d)
        self.weight_hh_l0 = nn.Parameter(torch.empty(g * d, d))  # (g*d, d)
        self.bias_ih_l0 = nn.Parameter(torch.empty(g * d))  # (g*d,)
        self.bias_hh_l0 = nn.Parameter(torch.empty(g * d))  # (g*d,)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's RNN initialisation: every parameter ~ U(-1/sqrt(d), 1/sqrt(d))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def initial_state(self, x: Tensor) -> Any:
        """Zero state for input x of shape (B, n, d)."""
        return x.new_zeros(x.shape[0], self.hidden_size)  # (B, d)

    def _projections(self, x_t: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        gi = F.linear(x_t, self.weight_ih_l0, self.bias_ih_l0)  # (B, g*d)
        gh = F.linear(h, self.weight_hh_l0, self.bias_hh_l0)  # (B, g*d)
        return gi, gh

    def step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def _advance(self, x_t: Tensor, h: Tensor, c: Tensor | None
                 ) -> tuple[Tensor, Tensor | None]:
        out, new = self.step(x_t, h if c is None else (h, c))
        return out, (new[1] if c is not None else None)

    def forward(self, x: Tensor) -> Tensor:  # (B, n, d) -> (B, n, d)
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(
                f"expected input (B, n, {self.hidden_size}), got {tuple(x.shape)}"
            )
        state = self.initial_state(x)
        outputs = []
        for t in range(x.shape[1]):
            h, state = self.step(x[:, t], state)  # (B, d)
            outputs.append(h)
        return torch.stack(outputs, dim=1)  # (B, n, d)


class UnrolledRNN(UnrolledCell):
    kind = "rnn"

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        gi, gh = self._projections(x_t, state)
        h = torch.tanh(gi + gh)  # (B, d)
        return h, h


class UnrolledLSTM(UnrolledCell):
    kind = "lstm"

    def initial_state(self, x: Tensor) -> tuple[Tensor, Tensor]:
        zeros = x.new_zeros(x.shape[0], self.hidden_size)  # (B, d)
        return zeros, zeros.clone()

    def step(
        self, x_t: Tensor, state: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = state
        gi, gh = self._projections(x_t, h)
        i, f, g, o = (gi + gh).chunk(4, dim=1)  # each (B, d), torch's order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class UnrolledGRU(UnrolledCell):
    kind = "gru"

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        gi, gh = self._projections(x_t, state)
        i_r, i_z, i_n = gi.chunk(3, dim=1)  # each (B, d), torch's order r, z, n
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = (1 - z) * n + z * state
        return h, h


_UNROLLED: dict[str, type[UnrolledCell]] = {
    "rnn": UnrolledRNN,
    "lstm": UnrolledLSTM,
    "gru": UnrolledGRU,
}


def build_unrolled(kind: str, case: LayerCase) -> nn.Module:
    return _UNROLLED[kind](case.d_model)


# --------------------------------------------------------------------------- cost


def recurrent_cost(kind: str, case: LayerCase, variant: str = "unrolled") -> Cost:
    """Analytic cost; both variants execute the same matmuls.

    FLOPs: per step, the input and hidden projections, 2*g*B*(d*d + d*d). This is also
    what FlopCounterMode counts where it decomposes nn.RNN / nn.GRU on CPU.
    Train: backward = grad wrt the input and hidden state + grad wrt the weights, 2x forward,
    less the one hidden-state gradient never needed - that of the zero initial state
    (2*g*B*d*d): 3*flops - 2*g*B*d*d, exactly what FlopCounterMode counts on CPU for the
    unrolled variant and for fused nn.RNN / nn.GRU (they decompose into aten ops on CPU).
    The fused LSTM runs oneDNN's kernel on CPU, whose backward computes that gradient too:
    3*flops exactly (cuDNN on GPU likely does the same; not yet checked on a GPU).
    Activations: autograd keeps every step's gate pre-activations (g*B*n*d) and hidden
    outputs (B*n*d); the LSTM also keeps its cell states (B*n*d).
    """
    g = GATES[kind]
    b, n, d = case.batch, case.seq_len, case.d_model
    flops = 2 * g * b * n * (d * d + d * d)
    activations = (g + 1 + (1 if kind == "lstm" else 0)) * b * n * d
    skips_nothing = kind == "lstm" and variant == "fused"
    return Cost(
        flops=flops,
        flops_useful=flops,
        flops_other=OTHER_PER_UNIT[kind] * b * n * d,
        train_flops=3 * flops - (0 if skips_nothing else 2 * g * b * d * d),
        params=g * (2 * d * d + 2 * d),
        activation_elements=activations,
        seq_ops=n,
        path_length=n,  # x_i -> h_i -> h_{i+1} ... -> h_j: j - i + 1 hops, at most n
    )


def recurrent_step_cost(kind: str, case: LayerCase, variant: str = "unrolled") -> StepCost:
    """One decode step: the input and hidden projections of one position, 4 g B d^2
    (RNN 4 B d^2, LSTM 16 B d^2, GRU 12 B d^2); state h (LSTM: h and c), B d or 2 B d,
    whatever n."""
    g = GATES[kind]
    b, d = case.batch, case.d_model
    return StepCost(flops=4 * g * b * d * d, flops_other=OTHER_PER_UNIT[kind] * b * d,
                    state_elements=(2 if kind == "lstm" else 1) * b * d)


# --------------------------------------------------------------------------- registry

_SUMMARIES = {
    "rnn": "vanilla tanh RNN, one layer, hidden = d",
    "lstm": "LSTM (gates i, f, g, o), one layer, hidden = d",
    "gru": "GRU (gates r, z, n), one layer, hidden = d",
}
_COLOURS = {"rnn": "#56b4e9", "lstm": "#0173b2", "gru": "#000000"}  # sky blue, blue, black


def _entry(kind: str) -> LayerEntry:
    def fused(case: LayerCase, depth: int) -> nn.Module:
        return build_fused(kind, case)

    def unrolled(case: LayerCase, depth: int) -> nn.Module:
        return build_unrolled(kind, case)

    def cost(case: LayerCase, variant: str) -> Cost:
        return recurrent_cost(kind, case, variant)

    def step_cost(case: LayerCase, variant: str) -> StepCost:
        return recurrent_step_cost(kind, case, variant)

    return LayerEntry(
        name=kind,
        family="recurrent",
        summary=_SUMMARIES[kind],
        params=frozenset(),
        required=frozenset(),
        variants={"fused": fused, "unrolled": unrolled},
        default_variant="fused",
        step_cost=step_cost,
        reference_variant="unrolled",
        cost=cost,
        theory=Theory(complexity="O(n d^2)", seq_ops="O(n)", path_length="O(n)",
                      terms=("n d^2",)),
        colour=_COLOURS[kind],
    )


LAYERS = [_entry(kind) for kind in GATES]
