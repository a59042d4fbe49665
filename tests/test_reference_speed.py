"""benchmarks/reference_speed.py: its reference formulations compute each layer's function.

The script times registered variants against formulations written in it (fairseq's
time-major unfold and band, SDPA / nn.MultiheadAttention, torch's fused RNNs, nn.Conv1d);
a ratio means something only if both sides compute the same thing. Nothing here is timed.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest
import torch
from conftest import REPO


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "reference_speed", REPO / "benchmarks" / "reference_speed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["reference_speed"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layer", ["lightconv", "dynamicconv", "attention", "rnn", "lstm",
                                   "gru", "conv", "conv_dilated", "conv_separable"])
def test_references_match_the_registered_variants(bench: ModuleType, layer: str,
                                                  causal: bool) -> None:
    # odd sizes: n = 11, d = 15 (d/H = 5), an even kernel (its extra tap on the right)
    case = bench.layer_case(layer, 11, 15, 3, 4, 2, causal)
    assert case is not None
    torch.manual_seed(1)
    x = torch.randn(case.batch, case.n, case.d, dtype=torch.float64)
    torch.set_default_dtype(torch.float64)  # every module built in float64, references too
    try:
        cands = bench.candidates(layer, case, x)
    finally:
        torch.set_default_dtype(torch.float32)
    names = [c.name for c in cands]
    assert any(c.reference for c in cands) and sum(c.default for c in cands) == 1, names
    with torch.no_grad():
        outputs = {c.name: c.to_bnd(c.call()) for c in cands}
    expected = outputs[next(c.name for c in cands if c.reference)]
    assert expected.shape == (case.batch, case.n, case.d)
    for name, y in outputs.items():
        assert torch.allclose(y, expected, atol=1e-10), name


def test_grids_follow_wu_et_al(bench: ModuleType) -> None:
    args = bench.parse([])
    sizes = list(bench.sizes("dynamicconv", args))
    assert {(c.d, c.heads, c.kernel) for c in sizes} == {
        (d, h, k) for d in (512, 1024) for h in (8, 16) for k in (3, 7, 15, 31)}
    assert sorted({c.n for c in sizes}) == [64, 128, 256, 512, 1024, 2048, 4096]
    picked = bench.parse(["--quick", "--n", "96", "--d", "64", "--kernel", "5", "--batch", "2"])
    assert [(c.n, c.d, c.heads, c.kernel, c.batch) for c in bench.sizes("lightconv", picked)] \
        == [(96, 64, 8, 5, 2)]


def test_bad_sizes_are_one_line_exit_2(bench: ModuleType, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse(["--n", "0"])
    assert exit_info.value.code == 2
    assert "--n values must be positive" in capsys.readouterr().err


class _Waits:
    """A scripted run-queue wait counter: each reading adds ``step`` seconds."""

    def __init__(self, step: float) -> None:
        self.step, self.total = step, 0.0

    def __call__(self) -> float:
        self.total += self.step
        return self.total


@pytest.mark.parametrize(("step", "disturbed"), [(0.0, False), (10.0, True)])
def test_blocks_that_waited_for_a_cpu_are_flagged(bench: ModuleType, step: float,
                                                  disturbed: bool) -> None:
    case = bench.layer_case("lightconv", 16, 8, 2, 3, 1, False)
    torch.manual_seed(1)
    x = torch.randn(case.batch, case.n, case.d)
    cands = bench.candidates("lightconv", case, x)
    args = bench.parse(["--rounds", "2", "--min-run-time", "0.001", "--samples", "2"])
    args.wait = _Waits(step)
    timed = bench.measure(cands, x, args)
    assert all(t.seconds is not None for t in timed)  # every candidate timed, none skipped
    assert [t.note.startswith(bench.DISTURBED) for t in timed] == [disturbed] * len(cands)
    assert {bench._mark(t.note) for t in timed} == {" ?" if disturbed else ""}


def test_only_undisturbed_blocks_count(bench: ModuleType) -> None:
    blocks = [(1.0, 0.0), (0.5, 0.4), (2.0, 0.01)]  # (seconds per call, wait per call)
    assert bench._clean(blocks, bench.RULE) == [1.0, 2.0]  # 0.4 / 0.5 = 80 % waited


def test_paired_ratio_cancels_drift_between_rounds(bench: ModuleType) -> None:
    # the host ran twice as slow in round 2; the candidate is 1.1x the reference in each
    ref = bench.Timed("ref", 1.5, rounds=(1.0, 2.0))
    cand = bench.Timed("cand", 1.65, rounds=(1.1, 2.2))
    assert bench.ratio(cand, ref, "paired") == pytest.approx(1.1)
    # the reference's fastest block came from a fast minute the candidate never met: a
    # minimum over all rounds reads 2.0x, the same-round ratios 1.1x
    ref = bench.Timed("ref", 1.0, rounds=(1.0, 2.0, 2.0))
    cand = bench.Timed("cand", 2.0, rounds=(None, 2.2, 2.2))  # round 1 disturbed
    assert bench.ratio(cand, ref, "min") == pytest.approx(2.0)
    assert bench.ratio(cand, ref, "paired") == pytest.approx(1.1)
    # no round where both were undisturbed: the overall statistics
    apart = bench.Timed("cand", 3.0, rounds=(3.0, None, None))
    assert bench.ratio(apart, bench.Timed("ref", 1.5, rounds=(None, 1.5, 1.5)), "paired") \
        == pytest.approx(2.0)


def test_rounds_rotate_the_candidate_order(bench: ModuleType) -> None:
    order: list[str] = []
    x = torch.zeros(1, 2, 2)

    def call_of(name: str):
        def call() -> torch.Tensor:
            if not order or order[-1] != name:
                order.append(name)
            return x
        return call

    cands = [bench.Candidate(name, name == "a", name == "b", call_of(name), 1)
             for name in ("a", "b", "c")]
    args = bench.parse(["--rounds", "3", "--min-run-time", "0", "--samples", "1"])
    args.wait = None
    timed = bench.measure(cands, x, args)
    assert [len(t.rounds) for t in timed] == [3, 3, 3]
    assert order[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # after the output check


def test_the_heap_is_held_steady_by_default(bench: ModuleType) -> None:
    assert bench.parse([]).malloc == "steady"


def test_variants_keeps_the_default_and_every_reference(bench: ModuleType) -> None:
    args = bench.parse(["--layers", "dynamicconv", "attention", "--variants", "default"])
    case = bench.layer_case("dynamicconv", 11, 15, 3, 9, 2, False)
    cands = bench.candidates("dynamicconv", case, torch.randn(2, 11, 15), args.variants)
    assert [(c.name, c.default, c.reference) for c in cands] == [
        ("auto", True, False), ("fairseq-unfold", False, True), ("fairseq-band", False, True)]
    attention = bench.layer_case("attention", 11, 15, 3, None, 2, False)
    names = [c.name for c in bench.candidates("attention", attention, torch.randn(2, 11, 15),
                                              ["matmul", "default"])]
    assert names[:2] == ["matmul", "attention_sdpa:sdpa"] and len(names) == 4


def test_variants_that_keep_nothing_are_one_line_exit_2(bench: ModuleType, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse(["--layers", "lightconv", "--variants", "shift"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--variants keeps no variant of lightconv" in err and "channels_last" in err
