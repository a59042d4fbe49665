"""Facts every registered layer must satisfy, and `harness layers`."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from harness import registry
from harness.cli import main
from harness.spec import LayerCase
from harness.theory import FAMILIES

CASE = LayerCase(seq_len=11, d_model=12, heads=3, kernel=3, window=4, src_len=5, height=1,
                 width=11, batch=1)


def _pairs():
    for entry in registry.entries():
        for variant in entry.variants:
            yield pytest.param(entry.name, variant, id=f"{entry.name}-{variant}")


@pytest.mark.parametrize(("name", "variant"), list(_pairs()))
@pytest.mark.parametrize("causal", [False, True])
def test_costs_scale_with_batch_and_useful_never_exceeds_executed(name, variant, causal):
    entry = registry.get(name)
    one = entry.cost_of(replace(CASE, causal=causal), variant)
    two = entry.cost_of(replace(CASE, causal=causal, batch=2), variant)
    three = entry.cost_of(replace(CASE, causal=causal, batch=3), variant)
    # (flops_other need not scale: LightConv normalises its weights once per call)
    for field in ("flops", "flops_useful"):
        assert getattr(three, field) == 3 * getattr(one, field), field
    # activations: affine in the batch (relative attention's (n, n, dh) table is shared)
    act = [one.activation_elements, two.activation_elements, three.activation_elements]
    assert act[2] - act[1] == act[1] - act[0] > 0
    assert three.params == one.params
    assert 0 < one.flops_useful <= one.flops
    assert one.train_flops > one.flops


BUILT_IN = ["rnn", "lstm", "gru", "conv", "conv_dilated", "conv_separable", "attention",
            "attention_sdpa", "attention_local", "lightconv", "dynamicconv"]


def test_registry_holds_the_table1_zoo_in_family_order():
    """Every module of harness/layers is found; an installed plugin's layers may come too."""
    names = registry.names()
    assert [n for n in names if n in BUILT_IN] == BUILT_IN
    families = [registry.get(n).family for n in BUILT_IN]
    assert families == sorted(families, key=FAMILIES.index)
    with pytest.raises(ValueError, match="unknown layer 'lstmm'"):
        registry.get("lstmm")


def test_inapplicable_parameters_are_cleared_and_impossible_cases_named():
    lstm = registry.get("lstm")
    assert lstm.normalize(replace(CASE, causal=True)).heads is None
    attention = registry.get("attention")
    assert attention.problem(replace(CASE, heads=5)) == (
        "d_model=12 is not divisible by heads=5"
    )
    assert registry.get("lightconv").problem(replace(CASE, kernel=None)) == (
        "lightconv needs kernel"
    )
    with pytest.raises(ValueError, match="not divisible"):
        attention.build(replace(CASE, heads=5))


def test_layers_command_table_and_json(capsys):
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    assert "O(n^2 d)" in out and "O(log_k n)" in out and "fused,unrolled" in out
    assert main(["layers", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert by_name["lstm"]["seq_ops"] == "O(n)"
    assert by_name["attention_local"]["path_length"] == "O(n/r)"
    assert by_name["lightconv"]["params"] == ["block", "causal", "heads", "kernel"]


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "harness", "--version"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("harness ")
