"""Incremental decoding (``mode: decode``): the state a causal layer keeps between tokens.

A module that can decode mixes in :class:`Decoder` and implements

* ``decode_init(batch, capacity, like, *extra) -> State``: an empty state, preallocated for
  ``capacity`` positions where it grows (the KV cache), zeros elsewhere; ``extra`` are the
  layer's inputs after x (``LayerEntry.inputs``: cross attention computes the encoder
  output's K/V here, once), empty for the others;
* ``decode_step(x_t, state, pos) -> y_t``: the output (B, 1, d) at position ``pos`` for the
  input x_t (B, 1, d), given a state that holds positions < ``pos``. It writes what position
  ``pos`` adds to the state *in place*, into a slot that no read for positions <= ``pos``
  needs, so calling it again with the same ``pos`` and x_t gives the same output and leaves
  the same state: a timed call repeated at position n costs the same every time (a KV cache
  writes row n; a window of inputs is a ring buffer of span + 1 slots; a hidden state is a
  ring of two slots, read at pos % 2, written at (pos + 1) % 2; 2D local attention keeps a
  ring of image rows, pixel (r, c) in slot (r mod R) W + c);
* ``state_elements(state, pos) -> int``: the elements the state holds for positions < pos
  (the live part, not spare capacity), and optionally ``decode_prefill(x, state)``, which
  fills the state with x's n positions faster than n steps do.

Decoding token by token from an empty state reproduces the causal full-sequence forward
(tests/test_decode.py checks every layer and variant). A layer whose non-causal form looks at
later positions cannot decode: ``LayerEntry.decode_problem`` says so and the case is skipped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

State = dict[str, Tensor]


class Decoder:
    """The decoding interface; subclasses implement init, step and the state's size."""

    def decode_init(self, batch: int, capacity: int, like: Tensor) -> State:
        raise NotImplementedError

    def decode_step(self, x_t: Tensor, state: State, pos: int) -> Tensor:
        raise NotImplementedError

    def state_elements(self, state: State, pos: int) -> int:
        raise NotImplementedError

    def decode_prefill(self, x: Tensor, state: State) -> None:
        """Fill ``state`` with the positions of x (B, n, d); default: n steps."""
        for t in range(x.shape[1]):
            self.decode_step(x[:, t : t + 1], state, t)


def can_decode(module: Any) -> bool:
    return isinstance(module, Decoder)


class CannotDecode(ValueError):
    """The layer's module has no decoding state (a plugin layer without :class:`Decoder`)."""


def require_decoder(module: Any) -> None:
    if not can_decode(module):
        raise CannotDecode(f"{type(module).__name__} has no decoding state (it does not "
                           "implement harness.layers.decoding.Decoder)")


def prefill(module: Any, x: Tensor, capacity: int, *extra: Tensor) -> State:
    """A state holding x's n positions (B, n, d), room for ``capacity`` positions in all
    (``extra``: the layer's inputs after x, see ``decode_init``)."""
    state = module.decode_init(x.shape[0], capacity, x, *extra)
    if x.shape[1]:
        module.decode_prefill(x, state)
    return state


def decode_sequence(module: Any, x: Tensor, start: int = 0, *extra: Tensor) -> Tensor:
    """Outputs (B, n - start, d) of positions start.. of x, decoded one token at a time
    after a prefill of x's first ``start`` positions."""
    n = x.shape[1]
    state = prefill(module, x[:, :start], n, *extra)
    outs = [module.decode_step(x[:, t : t + 1], state, t) for t in range(start, n)]
    return torch.cat(outs, dim=1) if outs else x[:, :0]


def state_bytes(module: Any, state: State, pos: int) -> int:
    itemsize = next(iter(state.values())).element_size() if state else 0
    return int(module.state_elements(state, pos)) * itemsize


def ring_window(pos: int, kernel: int, dilation: int, device: torch.device) -> Tensor:
    """Slots of a (span + 1)-slot ring buffer holding the k inputs of a causal window ending
    at ``pos`` (positions pos - span + j * dilation; a slot of a position < 0 is still zero)."""
    span = (kernel - 1) * dilation
    taps = torch.arange(kernel, device=device) * dilation + (pos - span)
    return taps.remainder(span + 1)


class WindowDecoder(Decoder):
    """A causal window of k inputs (dilation ``_dilation``): its state is a ring buffer of
    the last span = (k - 1) * dilation inputs plus the slot position ``pos`` writes.

    Subclasses give the window's geometry and ``_window_out(win)``: the output (B, 1, d) of
    the window (B, k, d), oldest tap first. ``_decode_in`` maps the token before it enters
    the buffer (the block's Linear + GLU), ``_decode_out`` the output (the block's Linear).
    """

    kernel: int
    d_model: int

    @property
    def _dilation(self) -> int:
        return 1

    @property
    def _span(self) -> int:
        return (self.kernel - 1) * self._dilation

    def _decode_in(self, x_t: Tensor) -> Tensor:
        return x_t

    def _decode_out(self, y_t: Tensor) -> Tensor:
        return y_t

    def _window_out(self, win: Tensor) -> Tensor:
        raise NotImplementedError

    def decode_init(self, batch: int, capacity: int, like: Tensor) -> State:
        return {"x": like.new_zeros(batch, self._span + 1, self.d_model)}

    def decode_prefill(self, x: Tensor, state: State) -> None:
        n, slots = x.shape[1], self._span + 1
        first = max(0, n - slots)
        state["x"][:, [p % slots for p in range(first, n)]] = self._decode_in(x[:, first:])

    def decode_step(self, x_t: Tensor, state: State, pos: int) -> Tensor:
        buf = state["x"]
        slot = pos % (self._span + 1)
        buf[:, slot : slot + 1] = self._decode_in(x_t)
        win = buf[:, ring_window(pos, self.kernel, self._dilation, buf.device)]  # (B, k, d)
        return self._decode_out(self._window_out(win))

    def state_elements(self, state: State, pos: int) -> int:
        buf = state["x"]
        return buf.shape[0] * min(pos, self._span) * buf.shape[2]


class DecodeStep(nn.Module):
    """One decode step as a module, for the FLOP counters: ``forward(x_t)`` is
    ``layer.decode_step(x_t, state, pos)``, the state held as buffers (so a meta copy moves
    it too). The state's content does not change what a step executes, so it is not filled."""

    def __init__(self, layer: Any, state: State, pos: int) -> None:
        super().__init__()
        self.layer = layer
        self.pos = pos
        self.names = tuple(state)
        for name, tensor in state.items():
            self.register_buffer(f"state_{name}", tensor)

    def forward(self, x_t: Tensor) -> Tensor:
        state = {name: getattr(self, f"state_{name}") for name in self.names}
        return self.layer.decode_step(x_t, state, self.pos)


class DecodeCall:
    """The timed call of a decode case: one step at position n after a prefill of n
    positions; ``state_bytes`` is the live state for those n positions."""

    def __init__(self, module: Any, x: Tensor, *extra: Tensor) -> None:
        require_decoder(module)
        n = x.shape[1] - 1  # x holds the n prefilled positions and the new token
        self.module, self.pos = module, n
        with torch.inference_mode():
            self.state = prefill(module, x[:, :n], n + 1, *extra)
        self.x_t = x[:, n:].contiguous()  # (B, 1, d)
        self.state_bytes = state_bytes(module, self.state, n)

    def __call__(self) -> None:
        with torch.inference_mode():
            self.module.decode_step(self.x_t, self.state, self.pos)
