"""The example plugin's facts: the math, equal variants, the three FLOP sources, structure.

Run after ``pip install -e examples/linear-attention``; without the install only the
entry-point test is skipped (the layer is then registered by hand for the others).
"""

from __future__ import annotations

import math
from dataclasses import replace
from importlib import metadata

import pytest
import torch
from harness_linear_attention import LAYERS, feature_map
from harness_linear_attention.layer import EPS

from harness import LayerCase, registry
from harness.flops import count_layer
from harness.measure import structure

CASE = LayerCase(seq_len=12, d_model=16, heads=4, batch=2)
CASES = [replace(CASE, causal=causal, **extra) for causal in (False, True)
         for extra in ({}, {"seq_len": 7, "heads": 2, "batch": 1}, {"d_model": 24, "heads": 3})]


@pytest.fixture(scope="module")
def entry():
    """The registered layer: from the entry point when installed, else registered here."""
    if "linear_attention" not in registry.names():
        registry.register(LAYERS[0])
    return registry.get("linear_attention")


def test_the_entry_point_registers_the_layer():
    try:
        dist = metadata.distribution("harness-linear-attention")
    except metadata.PackageNotFoundError:
        pytest.skip("harness-linear-attention is not installed (pip install -e .)")
    (point,) = [ep for ep in dist.entry_points if ep.group == "harness.layers"]
    assert point.value == "harness_linear_attention"
    assert registry.get("linear_attention") is LAYERS[0]
    assert not [e for e in registry.plugin_errors() if "harness-linear-attention" in e]


def _build(entry, case, variant, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return entry.build(case, variant).double().eval()


def _naive(module, x):
    """Katharopoulos et al. eq. 4-5 the quadratic way: (phi(Q) phi(K)^T, masked) V, normalised."""
    b, n, d = x.shape
    h, e = module.heads, module.d_head
    q, k, v = module.in_proj(x).view(b, n, 3, h, e).permute(2, 0, 3, 1, 4).unbind(0)
    sim = feature_map(q) @ feature_map(k).transpose(-2, -1)  # (B, h, n, n)
    if module.causal:
        sim = sim.tril()
    ctx = (sim @ v) / (sim.sum(dim=-1, keepdim=True) + EPS)
    return module.out_proj(ctx.transpose(1, 2).reshape(b, n, d))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_both_variants_compute_linear_attention(entry, case):
    x = torch.randn(case.batch, case.seq_len, case.d_model, dtype=torch.float64)
    parallel = _build(entry, case, "parallel")
    recurrent = _build(entry, case, "recurrent", seed=1)
    recurrent.load_state_dict(parallel.state_dict())
    expected = _naive(parallel, x)
    torch.testing.assert_close(parallel(x), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(recurrent(x), expected, rtol=1e-10, atol=1e-12)


def test_it_takes_softmax_attentions_weights(entry):
    attention = registry.get("attention").build(CASE)
    mine = entry.build(CASE)
    mine.load_state_dict(attention.state_dict())  # same names and shapes
    assert entry.cost_of(CASE).params == sum(p.numel() for p in mine.parameters())


@pytest.mark.parametrize("variant", ["parallel", "recurrent"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_analytic_flops_equal_both_counters(entry, case, variant):
    counted = count_layer(entry, case, variant, train=True)
    assert counted["flops_analytic"] == counted["flops_fvcore"] == counted["flops_torch"]
    assert counted["train_flops_analytic"] == counted["train_flops_torch"]
    assert not counted["uncounted_fvcore"] and not counted["uncounted_torch"]


def test_cost_grows_as_the_theory_says(entry):
    def slope(axis: str, a: int, b: int, **fixed: int) -> float:
        base = replace(CASE, batch=1, **fixed)
        one, two = (entry.cost_of(replace(base, **{axis: v})).flops for v in (a, b))
        return math.log2(two / one) / math.log2(b / a)

    theory = entry.theory
    assert slope("seq_len", 2**10, 2**11) == pytest.approx(theory.exponent("seq_len")[0])
    assert slope("d_model", 2**12, 2**13, heads=8) == pytest.approx(
        theory.exponent("d_model")[0], abs=0.01)
    low, high = theory.exponent("heads")[1], theory.exponent("heads")[0]
    assert low <= slope("heads", 2, 4, d_model=64) <= high


@pytest.mark.parametrize("causal", [False, True])
def test_measured_path_length_and_seq_ops_are_one(entry, causal):
    for n in (8, 24):
        case = replace(CASE, seq_len=n, causal=causal)
        assert structure.measure_path_length("linear_attention", case) == 1
        assert structure.measure_seq_ops("linear_attention", case).seq_ops == 1
        assert entry.cost_of(case, "recurrent").path_length == 1


def test_causal_outputs_never_read_the_future(entry):
    case = replace(CASE, causal=True)
    matrix = structure.dependency_matrix(_build(entry, case, "parallel"), 12, 16)
    assert torch.equal(matrix, torch.ones(12, 12, dtype=torch.bool).tril())  # all the past


def test_the_recurrent_form_is_sequential_the_parallel_is_not(entry):
    """Why the reference is the parallel form: the loop's graph grows with n, the layer's
    does not (the layer's sequential operations are O(1), as Table 1 counts them)."""
    def depth(variant: str, n: int) -> int:
        case = replace(CASE, seq_len=n, causal=True)
        x = torch.randn(1, n, case.d_model, dtype=torch.float64)
        return structure.graph_depth(_build(entry, case, variant), x)

    assert depth("parallel", 8) == depth("parallel", 16)
    assert depth("recurrent", 16) > depth("recurrent", 8)
