"""Cross attention: naive and SDPA agree with a per-pair definition; the encoder output is
a real input of the case (counters, structure probe, decoding, the case runner)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import build_double, random_input, write_suite

from harness import registry
from harness.errors import HarnessInputError
from harness.flops import count_layer, count_step
from harness.layers.decoding import decode_sequence
from harness.measure import structure as S
from harness.spec import LayerCase

NAME = "attention_cross"
VARIANTS = ("naive", "sdpa")


def _case(n: int = 37, m: int = 23, d: int = 12, heads: int = 3, batch: int = 2) -> LayerCase:
    return LayerCase(seq_len=n, d_model=d, heads=heads, src_len=m, batch=batch)


def _source(case: LayerCase, seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(case.batch, case.m, case.d, generator=gen, dtype=torch.float64)


def _definition(module: torch.nn.Module, x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """One (query, source position) pair at a time from the module's weights."""
    b, n, d = x.shape
    m, h, dh = src.shape[1], module.heads, module.d_head
    q = module.q_proj(x).view(b, n, h, dh)
    k, v = (z.view(b, m, h, dh) for z in module.kv_proj(src).split(d, dim=-1))
    out = torch.zeros(b, n, h, dh, dtype=x.dtype)
    for t in range(n):
        logits = torch.stack([(q[:, t] * k[:, s]).sum(-1) for s in range(m)], dim=1)
        p = (logits / math.sqrt(dh)).softmax(dim=1)  # (B, m, h)
        out[:, t] = (p[..., None] * v).sum(1)
    return module.out_proj(out.reshape(b, n, d))


@pytest.mark.parametrize(("n", "m"), [(37, 23), (1, 1), (5, 40)])
def test_variants_equal_definition_forward_and_backward(n: int, m: int) -> None:
    case = _case(n=n, m=m)
    naive = build_double(NAME, "naive", case)
    sdpa = build_double(NAME, "sdpa", case, seed=5)
    sdpa.load_state_dict(naive.state_dict())
    x, src = random_input(case), _source(case)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    sa, sb = src.clone().requires_grad_(True), src.clone().requires_grad_(True)
    ya, yb = naive(xa, sa), sdpa(xb, sb)
    torch.testing.assert_close(ya, yb)
    torch.testing.assert_close(ya, _definition(naive, x, src))
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(sa.grad, sb.grad)  # gradients reach the encoder output
    for pa, pb in zip(naive.parameters(), sdpa.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad)


@pytest.mark.parametrize("variant", VARIANTS)
def test_three_flop_sources_agree(variant: str) -> None:
    row = count_layer(NAME, _case(), variant, train=True)
    assert row["flops_analytic"] == row["flops_fvcore"] == row["flops_torch"]
    assert row["train_flops_analytic"] == row["train_flops_torch"]
    assert not row["uncounted_fvcore"] and not row["uncounted_torch"]
    assert not row["uncounted_torch_train"]


def test_flops_and_params_by_hand() -> None:
    """B=2, n=3, m=5, d=4, h=2: q and out 4*2*3*16 = 384, K/V 4*2*5*16 = 640, core
    4*2*3*5*4 = 480; params 4*16 + 4*4 = 80."""
    case = _case(n=3, m=5, d=4, heads=2)
    entry = registry.get(NAME)
    for v in VARIANTS:
        assert entry.cost_of(case, v).flops == 384 + 640 + 480
        assert entry.cost_of(case, v).params == 80
        assert sum(p.numel() for p in entry.build(case, v).parameters()) == 80


def test_flops_grow_as_n_m_d_in_both_lengths() -> None:
    entry = registry.get(NAME)
    core = {(n, m): entry.cost_of(_case(n=n, m=m, d=8, heads=2, batch=1)).flops
            - entry.cost_of(_case(n=n, m=1, d=8, heads=2, batch=1)).flops
            for n in (4, 8) for m in (9, 17)}
    # subtracting m = 1 leaves 4 n (m - 1) d + 4 (m - 1) d^2: doubling n doubles only n's part
    assert core[(8, 17)] - core[(4, 17)] == 4 * 4 * 16 * 8
    assert core[(8, 9)] - core[(4, 9)] == 4 * 4 * 8 * 8


def test_path_length_from_the_source_and_seq_ops_measured_equal_analytic() -> None:
    case = _case(n=9, m=7, d=4, heads=2, batch=1)
    cost = registry.get(NAME).cost_of(case)
    assert S.measure_path_length(NAME, case) == cost.path_length == 1
    assert S.measure_seq_ops(NAME, case).seq_ops == cost.seq_ops == 1
    module = registry.get(NAME).build(case, "naive")
    source = [torch.randn(1, 7, 4)]
    assert bool(S.source_dependency(module, 9, 4, source).all())  # every output, every s
    own = S.dependency_matrix(S._WithInputs(module, source), 9, 4)
    assert torch.equal(own, torch.eye(9, dtype=torch.bool))  # output t reads x at t only


def test_source_path_length_counts_layers_when_the_source_is_partly_read() -> None:
    """A module reading source position s only from output s, mixing x by a shift: the
    stack needs more than one layer to bring every source position to every output."""

    class Partial(torch.nn.Module):
        def forward(self, x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
            shifted = torch.cat([x[:, :1], x[:, :-1]], dim=1) + x  # t reads t - 1 and t
            return shifted + src[:, : x.shape[1]]  # output t reads source t

    assert S.source_path_length(Partial(), 4, 2, [(1, 4, 2)]) == math.inf  # s never reaches t < s
    assert S.source_path_length(Partial(), 1, 2, [(1, 1, 2)]) == 1.0


def test_decode_step_is_flat_in_n_and_reads_the_source_once() -> None:
    entry = registry.get(NAME)
    steps, counted = set(), set()
    for n in (1, 5, 17, 64):
        case = _case(n=n, m=11, batch=2)
        step = entry.step_cost_of(case)
        assert step is not None and step.state_elements == 2 * 2 * 11 * 12
        counts = count_step(entry, case)
        assert counts["flops_torch"] == counts["flops_fvcore"] == step.flops
        steps.add(step.flops)
        counted.add(counts["flops_torch"])
    assert len(steps) == len(counted) == 1  # no term in n
    more_source = entry.step_cost_of(_case(n=5, m=22, batch=2))
    assert more_source is not None and more_source.flops > next(iter(steps))


def test_decoding_equals_the_forward() -> None:
    case = _case(n=9, m=6)
    module = build_double(NAME, "sdpa", case)
    x, src = random_input(case), _source(case)
    with torch.no_grad():
        torch.testing.assert_close(decode_sequence(module, x, 3, src), module(x, src)[:, 3:])
    with pytest.raises(ValueError, match="one source"):
        module.decode_init(2, 9, x)


def test_case_runner_measures_with_the_source(tmp_path: Path) -> None:
    from harness.measure.timing import TimingConfig
    from harness.measure_case import ExecSettings, execute
    from harness.suite.plan import PlannedCase

    timing = TimingConfig(budget_s=0.02, min_samples=3, warmup_s=0.0)
    for mode in ("forward", "train", "decode"):
        planned = PlannedCase(layer=NAME, variant="naive", case=_case(n=12, m=7, d=8, heads=2),
                              dtype="float32", device="cpu", mode=mode, seed=0, label="c")
        row, _ = execute(planned, ExecSettings(timing=timing))
        assert row["status"] == "ok", row["message"]
        assert row["flops_analytic"] == row["flops_torch"]
        assert row["path_length_measured"] == row["path_length_analytic"] == 1
        assert row["peak_mem_bytes"] > 0
        if mode == "decode":
            assert row["state_bytes"] == row["state_bytes_analytic"] == 2 * 2 * 7 * 8 * 4


def test_src_len_on_a_layer_without_a_source_is_one_line(tmp_path: Path) -> None:
    from harness.suite import load_suite

    path = write_suite(tmp_path, """\
        name: s
        device: cpu
        layers: [{name: attention, sweep: {src_len: [8]}}]
        sweep: {seq_len: [8], d_model: [8], heads: [2]}
    """)
    with pytest.raises(HarnessInputError) as err:
        load_suite(path)
    text = str(err.value)
    assert "src_len" in text and "does not apply to attention" in text and "\n" not in text


def test_suite_level_src_len_crosses_only_cross_attention(tmp_path: Path) -> None:
    from harness.suite import load_suite
    from harness.suite.plan import expand

    path = write_suite(tmp_path, """\
        name: s
        device: cpu
        layers: [attention, attention_cross]
        sweep: {seq_len: [8], d_model: [8], heads: [2], src_len: [4, 16]}
    """)
    plan = expand(load_suite(path))
    labels = {p.label: p.skip_reason for p in plan}
    assert labels == {"attention-n8-d8-h2": None, "attention_cross-n8-d8-h2-m4": None,
                      "attention_cross-n8-d8-h2-m16": None}
    path = write_suite(tmp_path, """\
        name: s
        device: cpu
        layers: [attention_cross]
        sweep: {seq_len: [8], d_model: [8], heads: [2]}
    """)
    (only,) = expand(load_suite(path))
    assert only.skip_reason == "attention_cross needs src_len"
