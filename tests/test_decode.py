"""mode: decode - every layer's incremental state (harness.layers.decoding).

Token by token from an empty state == the causal full-sequence forward, prefill-then-decode
== decoding from scratch, for every layer and variant at odd sizes (float64); a repeated
step leaves the state as it was; step FLOPs: analytic == fvcore == torch; the measured
state bytes equal the model's; a non-causal case is a skipped row with its reason.
"""

from __future__ import annotations

import textwrap
from dataclasses import replace

import pytest
import torch

from harness import registry
from harness.flops import count_step
from harness.layers.decoding import (
    DecodeCall,
    can_decode,
    decode_sequence,
    prefill,
    state_bytes,
)
from harness.measure_case import make_call
from harness.spec import LayerCase

N, D, B = 13, 12, 3  # odd sequence length and batch; d = 12 takes heads 3
M = 7  # cross attention's source length (odd, below N)


def _decodes(entry: registry.LayerEntry) -> bool:
    """Whether the layer's modules keep a decoding state (the example plugin does not: its
    decode cases are skipped rows, tested where it is defined). 2D local attention sees a
    1 x N image here (its 2D geometry: tests/test_layers_attention_local2d.py)."""
    case = entry.normalize(LayerCase(seq_len=N, d_model=D, heads=3, kernel=3, window=4,
                                     src_len=M, height=1, width=N, causal=True, batch=B))
    return entry.problem(case) is None and can_decode(entry.build(case))


#: Layers without a decoding state
NO_DECODER = {e.name for e in registry.entries() if not _decodes(e)}


def _extra(name: str, case: LayerCase, dtype: torch.dtype = torch.float64) -> tuple:
    """The layer's inputs after x (cross attention's source), seeded."""
    gen = torch.Generator().manual_seed(2)
    return tuple(torch.randn(s, generator=gen, dtype=dtype)
                 for s in registry.get(name).extra_shapes(case))


def _cases() -> list[tuple[str, str, LayerCase, int]]:
    out = []
    for entry in registry.entries():
        if entry.name in NO_DECODER:
            continue
        for variant in entry.variants:
            kernels = (1, 2, 3, 4) if "kernel" in entry.params else (None,)
            windows = (1, 4, 20) if "window" in entry.params else (None,)
            blocks = (False, True) if "block" in entry.params else (False,)
            depths = (0, 1, 2) if entry.name == "conv_dilated" else (0,)
            for k in kernels:
                for r in windows:
                    for block in blocks:
                        case = entry.normalize(LayerCase(
                            seq_len=N, d_model=D, heads=3, kernel=k, window=r, src_len=M,
                            height=1, width=N, causal=True, block=block, batch=B))
                        out.extend((entry.name, variant, case, depth) for depth in depths)
    return out


CASES = _cases()


def _id(item: tuple[str, str, LayerCase, int]) -> str:
    name, variant, case, depth = item
    return f"{name}-{variant}-k{case.kernel}-r{case.window}-b{int(case.block)}-l{depth}"


def _module(name: str, variant: str, case: LayerCase, depth: int, *,
            decode: bool = False) -> torch.nn.Module:
    """The module, seeded; ``decode``: built for a decode case (seq_len positions held)."""
    torch.manual_seed(0)
    return registry.get(name).build(case, variant, depth, decode=decode).double().eval()


def test_every_builtin_layer_and_variant_is_covered() -> None:
    covered = {(name, variant) for name, variant, _, _ in CASES}
    assert covered == {(e.name, v) for e in registry.entries() for v in e.variants
                       if e.name not in NO_DECODER and e.name in DECODERS}
    assert {"attention", "attention_cross", "attention_relative"} <= set(DECODERS)


@pytest.mark.parametrize("item", CASES, ids=_id)
def test_token_by_token_equals_causal_forward(item: tuple[str, str, LayerCase, int]) -> None:
    module = _module(*item)
    x = torch.randn(B, N, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    extra = _extra(item[0], item[2])
    with torch.no_grad():
        full = module(x, *extra)
        stepped = decode_sequence(module, x, 0, *extra)
        for start in (1, 6, N - 1):  # prefill of `start` positions, then steps
            resumed = decode_sequence(module, x, start, *extra)
            torch.testing.assert_close(resumed, stepped[:, start:], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(stepped, full, rtol=1e-10, atol=1e-12)


DECODERS = [name for name in registry.names() if name not in NO_DECODER]


@pytest.mark.parametrize("name", DECODERS)
def test_repeated_step_leaves_state_and_output_unchanged(name: str) -> None:
    """The timed call: a step at position n, repeated, reads and leaves the same state."""
    entry = registry.get(name)
    case = entry.normalize(LayerCase(seq_len=9, d_model=D, heads=3, kernel=3, window=4,
                                     src_len=M, height=2, width=5, causal=True, batch=B))
    module = _module(name, entry.default_variant, case, 0, decode=True)
    x = torch.randn(B, 10, D, dtype=torch.float64)
    extra = _extra(name, case)
    with torch.no_grad():
        state = prefill(module, x[:, :9], 10, *extra)
        first = module.decode_step(x[:, 9:], state, 9)
        after = {k: v.clone() for k, v in state.items()}
        again = module.decode_step(x[:, 9:], state, 9)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    for key, value in state.items():
        torch.testing.assert_close(value, after[key], rtol=0, atol=0)
    full = module(x, *extra)[:, 9:]
    torch.testing.assert_close(first, full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("n", [1, 5, 17])
def test_step_flops_three_sources_and_state_bytes(name: str, n: int) -> None:
    entry = registry.get(name)
    variant = entry.default_variant
    case = entry.normalize(LayerCase(seq_len=n, d_model=D, heads=3, kernel=3, window=4,
                                     src_len=M, height=1, width=n + 1, causal=True,
                                     block=name == "dynamicconv", batch=B))
    counts = count_step(entry, case, variant)
    assert counts["flops_fvcore"] == counts["flops_torch"] == counts["flops_analytic"], counts
    assert not counts["uncounted_torch"] and not counts["uncounted_fvcore"]
    step = entry.step_cost_of(case, variant)
    assert step is not None
    module = _module(name, variant, case, 0, decode=True).float()
    call = make_call(module, torch.randn(B, n + 1, D), "decode", _extra(name, case, torch.float32))
    assert isinstance(call, DecodeCall)
    assert call.state_bytes == step.state_elements * 4
    call()


def test_state_grows_with_n_for_attention_only() -> None:
    sizes = {}
    for name in DECODERS:
        entry = registry.get(name)
        per_n = []
        for n in (8, 64, 512):
            # 2D local attention: a 64 x 16 image whose ring holds R = 2 + 1 rows (48 pixels)
            case = entry.normalize(LayerCase(seq_len=n, d_model=16, heads=4, kernel=7,
                                             window=16, src_len=24, height=64, width=16,
                                             query_height=2, query_width=4, flange_height=1,
                                             flange_width=2, causal=True, batch=2))
            step = entry.step_cost_of(case)
            assert step is not None
            per_n.append(step.state_elements)
        sizes[name] = per_n
    growing = ("attention", "attention_sdpa", "attention_relative")
    for name in growing:
        assert sizes[name] == [2 * 2 * n * 16 for n in (8, 64, 512)]
    for name, per_n in sizes.items():
        if name not in growing:
            assert per_n[1] == per_n[2], name  # constant once n passes the window (ring)


def test_measured_state_bytes_ignore_spare_capacity() -> None:
    entry = registry.get("attention_sdpa")
    case = LayerCase(seq_len=5, d_model=D, heads=3, causal=True, batch=B)
    module = _module("attention_sdpa", "sdpa", case, 0)
    state = prefill(module, torch.randn(B, 5, D, dtype=torch.float64), 100)  # room for 100
    assert state_bytes(module, state, 5) == 2 * B * 5 * D * 8
    assert entry.step_cost_of(case).state_elements == 2 * B * 5 * D  # type: ignore[union-attr]


def test_non_causal_decode_is_skipped_with_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from harness.suite import load_suite
    from harness.suite.plan import expand

    path = tmp_path / "d.yaml"
    path.write_text(textwrap.dedent("""\
        name: d
        device: cpu
        mode: decode
        layers: [lightconv, {name: attention, causal: [true, false]}, rnn]
        sweep: {seq_len: [8], d_model: [16], heads: [4], kernel: [3]}
    """))
    plan = expand(load_suite(path))
    reasons = {p.label: p.skip_reason for p in plan}
    assert reasons["rnn-n8-d16"] is None
    assert reasons["attention-n8-d16-h4-causal"] is None
    assert "causal: true" in (reasons["attention-n8-d16-h4"] or "")
    assert "causal: true" in (reasons["lightconv-n8-d16-h4-k3"] or "")


def test_decode_row_measures_one_step(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from harness.measure.timing import TimingConfig
    from harness.measure_case import ExecSettings, execute
    from harness.suite.plan import PlannedCase

    case = LayerCase(seq_len=33, d_model=16, heads=4, kernel=3, causal=True, batch=2)
    planned = PlannedCase(layer="dynamicconv", variant="unfold",
                          case=registry.get("dynamicconv").normalize(case), dtype="float32",
                          device="cpu", mode="decode", seed=0, label="dc")
    timing = TimingConfig(budget_s=0.02, min_samples=3, warmup_s=0.0)
    row, _ = execute(planned, ExecSettings(timing=timing, structure=False))
    assert row["status"] == "ok", row["message"]
    step = registry.get("dynamicconv").step_cost_of(planned.case)
    assert step is not None
    assert row["flops_analytic"] == step.flops == row["flops_torch"] == row["flops_fvcore"]
    assert row["state_bytes"] == row["state_bytes_analytic"] == 2 * 2 * 16 * 4
    assert row["tokens_per_s"] == pytest.approx(2 / (row["time_ms_median"] / 1e3))
    plain = replace(planned, case=replace(planned.case, causal=False))
    assert registry.get("dynamicconv").decode_problem(plain.case)
