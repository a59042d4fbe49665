"""Self-attention layers: same function across variants, masks, analytic costs vs counters."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import build_double, count_flops, random_input
from probes import dependency_depth
from torch import nn

from harness import registry
from harness.layers.attention import window_pairs
from harness.spec import LayerCase

DENSE = [("attention", "matmul"), ("attention_sdpa", "sdpa")]
LOCAL = [("attention_local", "unfold"), ("attention_local", "masked")]
ALL = DENSE + LOCAL


def _case(n: int = 11, d: int = 12, heads: int = 3, window: int | None = 3,
          causal: bool = False, batch: int = 2) -> LayerCase:
    return LayerCase(seq_len=n, d_model=d, heads=heads, window=window, causal=causal,
                     batch=batch)


def _without_window(case: LayerCase) -> LayerCase:
    return dataclasses.replace(case, window=None)


def _reference(module: nn.Module, x: torch.Tensor, window: int | None, causal: bool
               ) -> torch.Tensor:
    """Direct definition, one query at a time, from the module's in_proj/out_proj weights."""
    b, n, d = x.shape
    h = module.heads
    dh = d // h
    q, k, v = (z.view(b, n, h, dh) for z in module.in_proj(x).split(d, dim=-1))
    out = torch.zeros(b, n, h, dh, dtype=x.dtype)
    for t in range(n):
        if window is None:
            lo, hi = (0, t) if causal else (0, n - 1)
        elif causal:
            lo, hi = t - window + 1, t
        else:
            lo, hi = t - (window - 1) // 2, t + window // 2
        keys = list(range(max(lo, 0), min(hi, n - 1) + 1))
        scores = (q[:, t, None] * k[:, keys]).sum(-1) / math.sqrt(dh)  # (B, keys, h)
        p = scores.softmax(dim=1)
        out[:, t] = (p[..., None] * v[:, keys]).sum(1)  # (B, h, dh)
    return module.out_proj(out.reshape(b, n, d))


# --------------------------------------------------------------------------- registry


def test_registered_entries() -> None:
    dense = registry.get("attention")
    assert dense.family == "self-attention"
    assert dense.params == {"heads", "causal"} and dense.required == {"heads"}
    assert list(dense.variants) == ["matmul"] and dense.reference_variant == "matmul"
    assert dense.theory.complexity == "O(n^2 d) + O(n d^2) projections"
    assert dense.theory.terms == ("n^2 d", "n d^2") and dense.theory.path_length == "O(1)"
    assert list(registry.get("attention_sdpa").variants) == ["sdpa"]
    local = registry.get("attention_local")
    assert local.params == {"heads", "window", "causal"}
    assert local.required == {"heads", "window"}
    assert set(local.variants) == {"unfold", "masked"}
    assert local.default_variant == local.reference_variant == "unfold"
    assert local.theory.complexity == "O(r n d) + O(n d^2) projections"
    assert local.theory.path_length == "O(n/r)" and local.theory.path_class == "O(n)"


def test_invalid_cases_are_reported() -> None:
    bad = _case(d=10, heads=3)
    assert "not divisible" in registry.get("attention").problem(bad)
    with pytest.raises(ValueError, match="window"):
        registry.get("attention_local").build(_case(window=None))
    with pytest.raises(ValueError, match="no variant"):
        registry.get("attention").cost_of(_case(), "flash")


# --------------------------------------------------------------------------- function


@pytest.mark.parametrize(("name", "variant"), ALL)
@pytest.mark.parametrize("causal", [False, True])
def test_shape(name: str, variant: str, causal: bool) -> None:
    case = _case(causal=causal)
    y = build_double(name, variant, case)(random_input(case))
    assert y.shape == (case.batch, case.n, case.d)


@pytest.mark.parametrize("causal", [False, True])
def test_dense_variants_and_wide_window_agree(causal: bool) -> None:
    n = 11
    case = _case(n=n, window=2 * n, causal=causal)
    x = random_input(case)
    ref = build_double("attention", "matmul", case)
    expected = ref(x)
    assert torch.allclose(expected, _reference(ref, x, None, causal), atol=1e-12)
    for name, variant in [("attention_sdpa", "sdpa"), *LOCAL]:
        other = build_double(name, variant, case, seed=5)
        other.load_state_dict(ref.state_dict())
        assert torch.allclose(other(x), expected, atol=1e-12), (name, variant)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [1, 2, 3, 4, 5, 7])
def test_local_variants_match_definition(window: int, causal: bool) -> None:
    case = _case(window=window, causal=causal)
    x = random_input(case)
    unfold = build_double("attention_local", "unfold", case)
    masked = build_double("attention_local", "masked", case, seed=5)
    masked.load_state_dict(unfold.state_dict())
    y = unfold(x)
    assert torch.allclose(y, masked(x), atol=1e-12)
    assert torch.allclose(y, _reference(unfold, x, window, causal), atol=1e-12)
    if window < case.n:  # a real restriction changes the result
        dense = build_double("attention", "matmul", _without_window(case))
        dense.load_state_dict(unfold.state_dict())
        assert not torch.allclose(y, dense(x), atol=1e-6)


@pytest.mark.parametrize(("name", "variant"), ALL)
def test_causal_outputs_ignore_the_future(name: str, variant: str) -> None:
    case = _case(causal=True)
    module = build_double(name, variant, case)
    x = random_input(case)
    t = 5
    x2 = x.clone()
    x2[:, t + 1:] += torch.randn_like(x2[:, t + 1:])
    y, y2 = module(x), module(x2)
    assert torch.allclose(y[:, : t + 1], y2[:, : t + 1], atol=1e-12)
    assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:])


@pytest.mark.parametrize("variant", ["unfold", "masked"])
@pytest.mark.parametrize(("window", "causal", "lo", "hi"), [
    (3, False, 4, 6),  # t = 5 sees 4..6
    (4, False, 4, 7),  # even window: the extra key is on the right
    (3, True, 3, 5),   # causal: 3..5
])
def test_local_output_ignores_inputs_outside_its_window(
        variant: str, window: int, causal: bool, lo: int, hi: int) -> None:
    case = _case(window=window, causal=causal)
    module = build_double("attention_local", variant, case)
    x = random_input(case)
    t = 5
    outside = [s for s in range(case.n) if not lo <= s <= hi]
    x_out = x.clone()
    x_out[:, outside] += 1.0
    assert torch.allclose(module(x)[:, t], module(x_out)[:, t], atol=1e-12)
    for s in (lo, hi):  # each edge of the window does matter
        x_in = x.clone()
        x_in[:, s] += 1.0
        assert not torch.allclose(module(x)[:, t], module(x_in)[:, t])


# --------------------------------------------------------------------------- costs


@pytest.mark.parametrize(("name", "variant"), ALL)
@pytest.mark.parametrize("causal", [False, True])
def test_params_match_module(name: str, variant: str, causal: bool) -> None:
    case = _case(n=13, d=24, heads=3, window=5, causal=causal)
    module = build_double(name, variant, case)
    count = sum(p.numel() for p in module.parameters())
    assert registry.get(name).cost_of(case, variant).params == count == 4 * 24 * 24 + 4 * 24


def test_flops_by_hand() -> None:
    # B=1, n=3, d=4, h=2: projections 8*1*3*4*4 = 384; core 4*1*3*3*4 = 144.
    case = LayerCase(seq_len=3, d_model=4, heads=2, window=2, batch=1)
    dense = registry.get("attention").cost_of(case)
    assert (dense.flops, dense.flops_useful) == (528, 528)
    assert dense.train_flops == 1584  # 3 x 528
    sdpa = registry.get("attention_sdpa").cost_of(case)
    assert sdpa.flops == 528
    assert sdpa.train_flops == 1656  # 3*384 + (1 + 2.5)*144 = 1152 + 504
    assert dense.flops_other == 48 + 6 * 18  # biases 4*B*n*d; scale+softmax 6 per score B*h*n*n
    # causal: pairs (t, s<=t) = 6 of 9 -> useful core 4*1*4*6 = 96
    causal = registry.get("attention").cost_of(LayerCase(3, 4, heads=2, causal=True))
    assert (causal.flops, causal.flops_useful) == (528, 480)
    # local r=2 (non-causal: t sees t, t+1): executed core 4*1*3*2*4 = 96;
    # in-sequence pairs (0,0) (0,1) (1,1) (1,2) (2,2) = 5 -> useful core 4*1*4*5 = 80
    local = registry.get("attention_local")
    unfold = local.cost_of(case, "unfold")
    assert (unfold.flops, unfold.flops_useful, unfold.train_flops) == (480, 464, 1440)
    masked = local.cost_of(case, "masked")
    assert (masked.flops, masked.flops_useful) == (528, 464)
    assert window_pairs(3, 2, False) == 5 and window_pairs(3, 2, True) == 5
    assert window_pairs(3, 3, True) == 6 and window_pairs(3, 3, False) == 7


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [1, 4, 11])
def test_wide_window_useful_flops_equal_dense(n: int, causal: bool) -> None:
    case = _case(n=n, window=2 * n, causal=causal)
    dense = registry.get("attention").cost_of(case)
    local = registry.get("attention_local").cost_of(case, "masked")
    assert local.flops_useful == dense.flops_useful
    assert local.flops == dense.flops


@pytest.mark.parametrize(("name", "variant"), [("attention", "matmul"), *LOCAL])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [1, 5])
def test_flops_match_flop_counter(name: str, variant: str, causal: bool, window: int) -> None:
    case = _case(n=13, d=24, heads=3, window=window, causal=causal, batch=2)
    module = build_double(name, variant, case)
    cost = registry.get(name).cost_of(case, variant)
    x = random_input(case)
    assert count_flops(module, x, train=False) == cost.flops
    assert count_flops(module, x, train=True) == cost.train_flops


def test_sdpa_cost_uses_flash_backward_convention() -> None:
    case = _case(n=13, d=24, heads=3)
    b, n, d = case.batch, case.n, case.d
    core = 4 * b * n * n * d
    sdpa = registry.get("attention_sdpa").cost_of(case)
    matmul = registry.get("attention").cost_of(case)
    assert sdpa.flops == matmul.flops
    assert sdpa.train_flops - 3 * 8 * b * n * d * d == core + 5 * core // 2
    assert sdpa.activation_elements < matmul.activation_elements  # no n x n scores kept


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_flops_match_counter_on_cuda(causal: bool) -> None:
    case = _case(n=128, d=128, heads=2, causal=causal, batch=2)
    torch.manual_seed(0)
    module = registry.get("attention_sdpa").build(case).cuda().half()
    x = torch.randn(case.batch, case.n, case.d, device="cuda", dtype=torch.half)
    cost = registry.get("attention_sdpa").cost_of(case)
    assert count_flops(module, x, train=False) == cost.flops
    assert count_flops(module, x, train=True) == cost.train_flops


# --------------------------------------------------------------------------- path length


@pytest.mark.parametrize(("window", "causal", "n", "expected"), [
    (3, False, 10, 9),
    (3, True, 10, 5),
    (4, False, 10, 9),   # back 1, ahead 2: limited by the back reach
    (5, False, 10, 5),
    (7, True, 13, 2),
    (20, False, 10, 1),
    (1, False, 10, math.inf),
    (1, True, 10, math.inf),
    (2, False, 10, math.inf),  # centred even window never looks back
    (2, True, 10, 9),
    (1, False, 1, 1),
])
def test_local_path_length_by_hand(window: int, causal: bool, n: int, expected: float) -> None:
    cost = registry.get("attention_local").cost_of(_case(n=n, window=window, causal=causal))
    assert cost.path_length == expected


def test_dense_path_length_and_seq_ops() -> None:
    for name in ("attention", "attention_sdpa"):
        cost = registry.get(name).cost_of(_case(n=50))
        assert cost.path_length == 1 and cost.seq_ops == 1


@pytest.mark.parametrize(("window", "causal"), [(3, False), (3, True), (4, False)])
def test_measured_path_length_matches_analytic(window: int, causal: bool) -> None:
    n, d = 10, 4
    case = _case(n=n, d=d, heads=2, window=window, causal=causal, batch=1)
    entry = registry.get("attention_local")
    measured = dependency_depth(lambda: entry.build(case, "unfold"), n, d, causal, n)
    assert measured == entry.cost_of(case).path_length


def test_useful_flops_count_each_batch_item_once() -> None:
    """B=2, n=3, d=4, h=2: projections 8*2*3*16 = 768, core 4*2*3*3*4 = 288 -> 1056;
    causal useful pairs 2*(3*4/2) = 12 -> core 4*4*12 = 192 -> 960."""
    dense = LayerCase(seq_len=3, d_model=4, heads=2, batch=2)
    causal = LayerCase(seq_len=3, d_model=4, heads=2, batch=2, causal=True)
    for layer in ("attention", "attention_sdpa"):
        assert registry.get(layer).cost_of(dense).flops_useful == 1056
        assert registry.get(layer).cost_of(causal).flops_useful == 960
        assert registry.get(layer).cost_of(causal).flops == 1056
    wide = LayerCase(seq_len=3, d_model=4, heads=2, batch=2, window=6)
    assert registry.get("attention_local").cost_of(wide).flops_useful == 1056
