"""Facts about the recurrent layers: shapes, fused == unrolled, parameter counts, FLOPs."""

from __future__ import annotations

import pytest
import torch
from conftest import count_flops

from harness import registry
from harness.spec import LayerCase

KINDS = ("rnn", "lstm", "gru")
VARIANTS = ("fused", "unrolled")


def _build(kind: str, variant: str, case: LayerCase, dtype=torch.float64) -> torch.nn.Module:
    return registry.get(kind).build(case, variant).to(dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_entry_metadata(kind: str) -> None:
    entry = registry.get(kind)
    assert entry.family == "recurrent"
    assert set(entry.variants) == set(VARIANTS)
    assert entry.default_variant == "fused"
    assert entry.reference_variant == "unrolled"
    assert entry.params == frozenset() and entry.required == frozenset()
    assert (entry.theory.complexity, entry.theory.seq_ops, entry.theory.path_length) == (
        "O(n d^2)",
        "O(n)",
        "O(n)",
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_shape(kind: str, variant: str) -> None:
    case = LayerCase(seq_len=7, d_model=5, batch=3)
    y = _build(kind, variant, case, torch.float32)(torch.randn(3, 7, 5))
    assert y.shape == (3, 7, 5)


@pytest.mark.parametrize("kind", KINDS)
def test_unrolled_equals_fused_both_directions(kind: str) -> None:
    torch.manual_seed(0)
    case = LayerCase(seq_len=9, d_model=6, batch=2)
    fused = _build(kind, "fused", case)
    unrolled = _build(kind, "unrolled", case)
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    unrolled.load_state_dict(fused.state_dict())
    torch.testing.assert_close(unrolled(x), fused(x), rtol=1e-12, atol=1e-12)
    # and the other way round, with freshly initialised weights
    unrolled.reset_parameters()
    fused.load_state_dict(unrolled.state_dict())
    torch.testing.assert_close(fused(x), unrolled(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_names_match_torch(kind: str) -> None:
    case = LayerCase(seq_len=3, d_model=4)
    fused = _build(kind, "fused", case)
    unrolled = _build(kind, "unrolled", case)
    names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert sorted(fused.state_dict()) == sorted(names)
    assert {k: v.shape for k, v in fused.state_dict().items()} == {
        k: v.shape for k, v in unrolled.state_dict().items()
    }


@pytest.mark.parametrize("kind", KINDS)
def test_step_interface(kind: str) -> None:
    """forward is the loop of step from initial_state (the structural metrics rely on it)."""
    torch.manual_seed(1)
    case = LayerCase(seq_len=5, d_model=4, batch=2)
    m = _build(kind, "unrolled", case)
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    state = m.initial_state(x)
    if kind == "lstm":
        h0, c0 = state
        assert h0.shape == c0.shape == (2, 4)
        assert not h0.any() and not c0.any()
    else:
        assert state.shape == (2, 4) and not state.any()
    hs = []
    for t in range(5):
        h, state = m.step(x[:, t], state)
        assert h.shape == (2, 4)
        hs.append(h)
    torch.testing.assert_close(torch.stack(hs, dim=1), m(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_causal_in_time(kind: str, variant: str) -> None:
    torch.manual_seed(2)
    case = LayerCase(seq_len=7, d_model=3, batch=2)
    m = _build(kind, variant, case)
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 4:] += torch.randn(2, 3, 3, dtype=torch.float64)
    y, y2 = m(x), m(x2)
    torch.testing.assert_close(y[:, :4], y2[:, :4], rtol=0, atol=0)
    assert not torch.allclose(y[:, 4:], y2[:, 4:])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("n", "d"), [(13, 24), (5, 7), (1, 3)])
def test_params_equal_module(kind: str, variant: str, n: int, d: int) -> None:
    case = LayerCase(seq_len=n, d_model=d, batch=3)
    module = _build(kind, variant, case)
    cost = registry.get(kind).cost_of(case, variant)
    assert cost.params == sum(p.numel() for p in module.parameters())


# B=2, n=5, d=3: flops = 2*g*B*n*(d*d + d*d) = 2*g*2*5*18 = 360*g
HAND_FLOPS = {"rnn": 360, "lstm": 1440, "gru": 1080}
# train = 3*flops - 2*g*B*d*d (no gradient for the zero initial state) = 3*360*g - 36*g
HAND_TRAIN = {"rnn": 1044, "lstm": 4176, "gru": 3132}
# except the fused LSTM: oneDNN's backward computes that gradient too, 3*1440 = 4320
HAND_TRAIN_FUSED_LSTM = 4320
# elementwise: per (b, t, unit) rnn 4, lstm 21, gru 17; B*n*d = 30
HAND_OTHER = {"rnn": 120, "lstm": 630, "gru": 510}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_hand_computed_cost(kind: str, variant: str) -> None:
    case = LayerCase(seq_len=5, d_model=3, batch=2)
    cost = registry.get(kind).cost_of(case, variant)
    assert cost.flops == HAND_FLOPS[kind]
    assert cost.flops_useful == cost.flops
    fused_lstm = (kind, variant) == ("lstm", "fused")
    assert cost.train_flops == (HAND_TRAIN_FUSED_LSTM if fused_lstm else HAND_TRAIN[kind])
    assert cost.flops_other == HAND_OTHER[kind]
    assert cost.params == {"rnn": 24, "lstm": 96, "gru": 72}[kind]  # g*(2*9 + 2*3)
    assert cost.seq_ops == 5
    assert cost.path_length == 5
    # gate pre-activations g*B*n*d + outputs B*n*d (+ LSTM cells B*n*d)
    assert cost.activation_elements == {"rnn": 60, "lstm": 180, "gru": 120}[kind]


@pytest.mark.parametrize(
    ("kind", "variant"),
    [(k, v) for k in KINDS for v in VARIANTS if (k, v) != ("lstm", "fused")],
)
def test_flop_counter_agrees(kind: str, variant: str) -> None:
    """FlopCounterMode counts the unrolled cells and (on CPU) nn.RNN / nn.GRU exactly.

    Fused nn.LSTM counts 0 on CPU (aten.mkldnn_rnn_layer has no formula): skipped here.
    """
    torch.manual_seed(3)
    case = LayerCase(seq_len=5, d_model=3, batch=2)
    m = _build(kind, variant, case, torch.float32)
    x = torch.randn(2, 5, 3)
    assert count_flops(m, x) == HAND_FLOPS[kind]
    assert count_flops(m, x.clone().requires_grad_(True), train=True) == HAND_TRAIN[kind]


def test_seq_ops_and_path_length_grow_with_n() -> None:
    entry = registry.get("gru")
    for n in (1, 8, 64):
        cost = entry.cost_of(LayerCase(seq_len=n, d_model=4), "unrolled")
        assert cost.seq_ops == n and cost.path_length == n


def test_unrolled_rejects_wrong_width() -> None:
    m = _build("rnn", "unrolled", LayerCase(seq_len=3, d_model=4), torch.float32)
    with pytest.raises(ValueError, match="expected input"):
        m(torch.randn(2, 3, 5))
