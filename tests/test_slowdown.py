"""The injected slowdown that checks ``harness compare`` (test machinery, not measurement)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from harness import registry
from harness.bench import slowdown
from harness.spec import LayerCase


def test_parse_reads_layer_factors_and_refuses_the_rest():
    assert slowdown.parse("lstm=1.25, conv=2") == {"lstm": 1.25, "conv": 2.0}
    assert slowdown.parse("") == {}
    for bad in ("lstm", "lstm=fast", "=2", "lstm=0.5"):
        with pytest.raises(ValueError, match="LAYER=FACTOR"):
            slowdown.parse(bad)


@pytest.fixture
def own_registry(monkeypatch: pytest.MonkeyPatch):
    registry.get("lstm")  # load the built-ins, then let install() change only a copy
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_install_wraps_only_the_named_layer_and_keeps_its_output(own_registry):
    case = LayerCase(seq_len=4, d_model=8, heads=2, batch=1)
    torch.manual_seed(0)
    plain = registry.get("lstm").build(case)
    slowdown.install({"lstm": 1.0})
    torch.manual_seed(0)
    slowed = registry.get("lstm").build(case)
    assert type(slowed).__name__ == "Slowed"
    assert type(registry.get("attention").build(case)).__name__ != "Slowed"
    x = torch.randn(1, 4, 8)  # (B, n, d)
    with torch.no_grad():
        assert torch.equal(slowed(x), plain(x))


def test_a_slowed_forward_lasts_factor_times_as_long_on_the_clock(own_registry, monkeypatch):
    now = [0.0]

    def clock() -> float:
        now[0] += 0.001  # every reading costs a little, like a real clock
        return now[0]

    class TenSeconds(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            now[0] += 10.0
            return x

    module = slowdown._slowed_class()(TenSeconds(), 1.25, clock)
    start = clock()
    module(torch.zeros(1))
    assert 12.5 <= clock() - start < 12.6


def test_child_processes_start_with_the_slowdown_installed():
    env = slowdown.child_env({"lstm": 2.0}, "process_time")
    code = ("from harness import registry; from harness.spec import LayerCase; "
            "print(type(registry.get('lstm').build(LayerCase(seq_len=4, d_model=8))).__name__)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "Slowed"
    with pytest.raises(ValueError, match="unknown clock"):
        slowdown.child_env({"lstm": 2.0}, "sundial")
