"""Third-party layers: the ``harness.layers`` entry-point group and the public API.

In-process tests give the registry fake entry points (a fresh registry per test); the end
to end test writes a real (if tiny) installed distribution - a ``*.dist-info`` folder with
``entry_points.txt`` on PYTHONPATH - and runs ``harness`` in a subprocess, whose spawned
workers must find the plugin's layer the same way.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

import harness
from harness import registry
from harness.analysis import layers as analysis_layers
from harness.results import read_results
from harness.theory import THEORY_COLUMNS

#: A plugin module's source: y = x W + mean_t(x) W, every output reads every input.
PLUGIN = '''
import torch
from torch import nn

from harness import Cost, LayerEntry, Theory


class MeanMix(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.proj = nn.Linear(d, d, bias=False)

    def forward(self, x):  # (B, n, d) -> (B, n, d)
        y = self.proj(x)
        return y + y.mean(dim=1, keepdim=True)


def cost(case, variant):
    b, n, d = case.batch, case.seq_len, case.d_model
    flops = 2 * b * n * d * d
    return Cost(flops=flops, flops_useful=flops, flops_other=2 * b * n * d,
                train_flops=3 * flops, params=d * d, activation_elements=2 * b * n * d,
                seq_ops=1, path_length=1)


LAYERS = [LayerEntry(
    name=NAME, family="mean-mixing", summary="x W plus its mean over time",
    params=frozenset(), required=frozenset(),
    variants={"linear": lambda case, depth: MeanMix(case.d_model)},
    default_variant="linear", reference_variant="linear", cost=cost,
    theory=Theory(complexity="O(n d^2)", seq_ops="O(1)", path_length="O(1)", terms=("n d^2",)),
    colour="#123456", label="mean mix",
)]
'''


@dataclass
class FakeEntryPoint:
    """What the registry reads of an importlib.metadata.EntryPoint."""

    name: str
    value: str
    dist: object
    group: str = registry.ENTRY_POINT_GROUP

    def load(self) -> object:
        return importlib.import_module(self.value)


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[FakeEntryPoint]:
    """A fresh registry whose entry points are the list the test fills; plugin modules are
    written to a folder on sys.path (:func:`_module`) and forgotten afterwards."""
    found: list[FakeEntryPoint] = []
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_PLUGIN_ERRORS", [])
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: [ep for ep in found if ep.group == group])
    monkeypatch.syspath_prepend(str(tmp_path))
    yield found
    for module in tmp_path.glob("*.py"):
        sys.modules.pop(module.stem, None)
    analysis_layers._registered.cache_clear()


def _module(name: str, source: str) -> None:
    folder = Path(sys.path[0])
    (folder / f"{name}.py").write_text(source)
    importlib.invalidate_caches()


def _plugin(plugins, dist: str, layer: str, module: str | None = None) -> None:
    module = module or f"{dist.replace('-', '_')}_layers"
    _module(module, f"NAME = {layer!r}\n{PLUGIN}")
    plugins.append(FakeEntryPoint(layer, module, types.SimpleNamespace(name=dist)))


def test_public_api_names_what_a_layer_author_needs() -> None:
    from harness.costs import Cost
    from harness.registry import LayerEntry, register
    from harness.spec import LayerCase
    from harness.theory import Theory

    assert (harness.Cost, harness.LayerCase, harness.LayerEntry, harness.Theory,
            harness.register) == (Cost, LayerCase, LayerEntry, Theory, register)
    assert set(harness.__all__) >= {"Cost", "LayerCase", "LayerEntry", "Theory", "register"}


def test_an_entry_point_adds_its_layers_after_the_builtins(plugins, capsys):
    _plugin(plugins, "harness-meanmix", "meanmix")
    names = registry.names()
    assert names[-1] == "meanmix" and {"lstm", "attention", "dynamicconv"} <= set(names)
    assert registry.plugin_errors() == [] and capsys.readouterr().err == ""
    entry = registry.get("meanmix")
    assert (entry.family, entry.colour, entry.label) == ("mean-mixing", "#123456", "mean mix")
    row = registry.theory_columns("meanmix", block=True)
    assert set(row) == set(THEORY_COLUMNS)
    assert (row["family"], row["theory_terms"], row["layer_rank"]) == \
        ("mean-mixing", "n d^2", len(names) - 1)


@pytest.mark.parametrize(("source", "reason"), [
    ("raise ImportError('No module named mamba_ssm')", "ImportError: No module named mamba_ssm"),
    ("X = 1", "ValueError: module bad_layers defines no LAYERS"),
    ("LAYERS = [1]", "ValueError: LAYERS holds a int, not a LayerEntry"),
    ("from harness import LayerEntry\nLAYERS = [LayerEntry(name='x', family='f', summary='',"
     " params=frozenset({'depth'}), required=frozenset(), variants={}, default_variant='a',"
     " reference_variant='a', cost=None, theory=None)]",
     "ValueError: layer 'x': theory must be a harness.Theory"),
])
def test_a_broken_plugin_is_one_line_naming_it(plugins, capsys, source, reason):
    _module("bad_layers", source)
    plugins.append(FakeEntryPoint("bad", "bad_layers", types.SimpleNamespace(name="harness-bad")))
    _plugin(plugins, "harness-meanmix", "meanmix")
    names = registry.names()
    assert "lstm" in names and "meanmix" in names  # built-ins and the good plugin still work
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("harness: layer plugin 'harness-bad' (entry point bad = bad_layers) "
                           "not loaded: ")
    assert line.endswith(reason)
    assert registry.plugin_errors() == [line]
    registry.names()
    assert capsys.readouterr().err == ""  # said once


def test_a_duplicate_name_leaves_the_whole_plugin_out(plugins, capsys):
    _plugin(plugins, "harness-meanmix", "meanmix")
    _plugin(plugins, "harness-clash", "lstm", module="clash_layers")
    _plugin(plugins, "harness-again", "meanmix", module="again_layers")
    names = registry.names()
    assert names.count("lstm") == 1 and registry.get("lstm").family == "recurrent"
    assert registry.get("meanmix").summary == "x W plus its mean over time"
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "'harness-clash'" in err[0] and "layer 'lstm' registered twice" in err[0]
    assert "'harness-again'" in err[1] and "layer 'meanmix' registered twice" in err[1]


def test_a_plugin_that_registers_on_import_is_rolled_back_when_it_fails(plugins, capsys):
    _module("eager_layers", f"NAME = 'eager'\n{PLUGIN}\n"
            "from harness import register\nregister(LAYERS[0])\nraise RuntimeError('late')")
    plugins.append(FakeEntryPoint("eager", "eager_layers",
                                  types.SimpleNamespace(name="harness-eager")))
    assert "eager" not in registry.names()
    assert "RuntimeError: late" in capsys.readouterr().err


def test_workers_do_not_repeat_the_line(monkeypatch, plugins, capsys):
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())
    _module("bad_layers", "raise ImportError('nope')")
    plugins.append(FakeEntryPoint("bad", "bad_layers", types.SimpleNamespace(name="harness-bad")))
    assert "lstm" in registry.names()
    assert capsys.readouterr().err == ""
    assert len(registry.plugin_errors()) == 1


def _installed_plugin(site: Path) -> None:
    """A distribution as pip would leave it: the module and a dist-info with entry points."""
    (site / "meanmix_layers.py").write_text(f"NAME = 'meanmix'\n{PLUGIN}")
    info = site / "harness_meanmix-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-meanmix\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.layers]\nmeanmix = meanmix_layers\n")


def test_an_installed_plugin_runs_end_to_end(tmp_path):
    """``harness layers`` lists it; ``harness run`` (spawned workers) measures it: FLOPs from
    three sources, path length and sequential ops measured, its theory in the rows."""
    site = tmp_path / "site"
    site.mkdir()
    _installed_plugin(site)
    suite = tmp_path / "mm.yaml"
    suite.write_text(textwrap.dedent("""\
        name: mm
        device: cpu
        batch: 2
        layers: [meanmix, lstm, {name: meanmix, mode: decode}]
        sweep: {seq_len: [6, 9], d_model: [4]}
        measure: {time_budget_s: 0.02, min_samples: 3, warmup_s: 0.0, min_warmup: 1,
                  timeout_s: 120, structure_max_n: 16}
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                              text=True, timeout=300, env=env, cwd=tmp_path, check=False)

    listed = run("layers")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    assert "meanmix" in listed.stdout and "mean-mixing" in listed.stdout
    done = run("run", str(suite), "--out", str(tmp_path / "out"), "--no-report")
    assert done.returncode == 0, done.stderr
    df = read_results(tmp_path / "out")
    decode = df[(df["layer"] == "meanmix") & (df["mode"] == "decode")]
    assert set(decode["status"]) == {"skipped"}, decode[["status", "message"]]  # no Decoder
    assert decode["message"].str.contains("no decoding state").all()
    mm = df[(df["layer"] == "meanmix") & (df["mode"] == "forward")]
    assert len(mm) == 2 and set(mm["status"]) == {"ok"}
    assert (mm["flops_analytic"] == mm["flops_torch"]).all()
    assert (mm["flops_analytic"] == mm["flops_fvcore"]).all()
    assert (mm["path_length_measured"] == 1).all() and (mm["seq_ops_measured"] == 1).all()
    assert set(mm["family"]) == {"mean-mixing"} and set(mm["layer_colour"]) == {"#123456"}
    assert set(df.loc[df["layer"] == "lstm", "theory_complexity"]) == {"O(n d^2)"}
