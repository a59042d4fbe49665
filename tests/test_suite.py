"""Declarative suites: loading, one-line errors, overrides, expansion, shipped suites."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_suite as write

from harness import registry
from harness.costs import Cost
from harness.errors import HarnessInputError
from harness.registry import LayerEntry, Theory
from harness.spec import LayerCase
from harness.suite import expand, load_suite, parse_suite, summarize

SUITES = Path(__file__).resolve().parents[1] / "suites"
ALL_LAYERS = (
    "rnn", "lstm", "gru", "conv", "conv_dilated", "conv_separable", "attention",
    "attention_sdpa", "attention_local", "lightconv", "dynamicconv",
)
#: Shipped suite -> (cases, skipped), as documented in each file's header comment.
SHIPPED = {
    "quick": (28, 0),
    "decode": (208, 0),
    "table1": (140, 0),
    "lightconv": (96, 0),
    "heads": (60, 5),
    "kernels": (60, 0),
    "gpu-scale": (154, 0),
    "gpu-check": (24, 0),
}

BASE = """\
name: t
device: cpu
layers: [rnn]
sweep:
  seq_len: [128, 256]
  d_model: [64]
"""


def layers(items: str, base: str = BASE) -> str:
    """BASE with its ``layers:`` line replaced."""
    return base.replace("layers: [rnn]", f"layers: {items}")


def need_layers(*names: str) -> None:
    missing = [name for name in names if name not in registry.names()]
    if missing:
        pytest.skip(f"layers not registered yet: {', '.join(missing)}")


def error_of(path: Path, overrides: tuple[str, ...] = (), **kwargs: object) -> str:
    with pytest.raises(HarnessInputError) as info:
        load_suite(path, overrides, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(autouse=True)
def _recurrent_layers() -> None:
    """Most tests below use rnn / lstm / gru as ordinary layers (their params are empty)."""
    need_layers("rnn", "lstm", "gru")


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# --- fake layers: expansion logic tested without depending on the real layer files ----------


def _fake(name: str, params: set[str], required: set[str], variants: tuple[str, ...] = ("a",),
          check=None) -> LayerEntry:
    def build(case: LayerCase, depth: int) -> torch.nn.Module:
        return torch.nn.Identity()

    def cost(case: LayerCase, variant: str) -> Cost:
        return Cost(0, 0, 0, 0, 0, 0, 1, 1.0)

    extra = {"check": check} if check is not None else {}
    return LayerEntry(
        name=name, family="convolution", summary="fake layer for suite tests",
        params=frozenset(params), required=frozenset(required),
        variants=dict.fromkeys(variants, build), default_variant=variants[0],
        reference_variant=variants[-1], cost=cost, theory=Theory("O(1)", "O(1)", "O(1)"),
        **extra,
    )


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register fake layers for the duration of one test (removed afterwards)."""
    registry.names()  # load the real ones first, so the fakes do not shadow a later import
    entries = [
        _fake("fk_rec", set(), set(), variants=("fused", "unrolled")),
        _fake("fk_attn", {"heads", "causal"}, {"heads"}),
        _fake("fk_conv", {"kernel", "causal"}, {"kernel"}),
        _fake("fk_local", {"heads", "window"}, {"heads", "window"}),
        _fake("fk_light", {"heads", "kernel", "block"}, {"heads", "kernel"}),
        _fake("fk_odd", {"kernel"}, {"kernel"},
              check=lambda case: "kernel must be odd" if case.kernel % 2 == 0 else None),
    ]
    for entry in entries:
        monkeypatch.setitem(registry._REGISTRY, entry.name, entry)


# --- errors: one line naming file, key, value and rule ---------------------------------------


def test_error_type_is_one_line_even_if_given_newlines() -> None:
    assert str(HarnessInputError("a\nb\n  c")) == "a b c"
    assert HarnessInputError("x").exit_code == 2


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert error_of(path) == f"{path}: no such file"


def test_missing_file_suggests_a_sibling(tmp_path: Path) -> None:
    write(tmp_path, BASE, "quick.yaml")
    message = error_of(tmp_path / "quik.yaml")
    wanted = tmp_path / "quick.yaml"
    assert message == f"{tmp_path / 'quik.yaml'}: no such file (did you mean '{wanted}'?)"


def test_directory_is_not_a_suite(tmp_path: Path) -> None:
    assert error_of(tmp_path) == f"{tmp_path}: is a directory, not a suite file"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path) == (
        f"{path}: the file is empty (a suite needs at least 'layers' and 'sweep')"
    )


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nlayers: [rnn\nsweep: {seq_len: [1]}\n")
    message = error_of(path)
    assert message.startswith(f"{path}: line 3, column 6: invalid YAML: ")
    assert "flow sequence that starts on line 2" in message


def test_python_tag_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write(tmp_path, f"""\
        name: t
        layers: [rnn]
        sweep:
          seq_len: !!python/object/apply:os.system ["touch {marker}"]
          d_model: [4]
        """)
    message = error_of(path)
    assert message == (
        f"{path}: line 4, column 12: tag '!!python/object/apply:os.system' is not allowed "
        "(a suite is plain data: mappings, lists, strings, numbers and booleans)"
    )
    assert not marker.exists()


@pytest.mark.parametrize("tag", ["!!python/name:os.system", "!!python/object:builtins.dict {}"])
def test_other_python_tags_are_refused(tmp_path: Path, tag: str) -> None:
    path = write(tmp_path, BASE + f"description: {tag}\n")
    assert "is not allowed" in error_of(path)


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "sweep: {seq_len: [1], d_model: [4]}\n")
    assert error_of(path) == (
        f"{path}: line 7, column 1: key 'sweep' is given twice (first on line 4); keep one"
    )


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- rnn\n- lstm\n")
    assert error_of(path) == (
        f"{path}: the top level must be a mapping of keys (name, layers, sweep, ...), not a list"
    )


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        ("seq_len: [128, 256, -4]", "sweep.seq_len[2]: -4 is not a positive integer"),
        ("seq_len: [128, 0]", "sweep.seq_len[1]: 0 is not a positive integer"),
        ("seq_len: 'abc'", "sweep.seq_len: 'abc' is not an integer"),
        ("seq_len: [1.5]", "sweep.seq_len[0]: 1.5 is not an integer"),
        ("seq_len: [true]", "sweep.seq_len[0]: true is not an integer"),
        ("seq_len: []", "sweep.seq_len: [] is empty (give at least one value)"),
        ("seq_lne: [128]", "sweep.seq_lne: unknown key (did you mean 'seq_len'?)"),
    ],
)
def test_bad_sweep_values(tmp_path: Path, replace: str, expected: str) -> None:
    path = write(tmp_path, BASE.replace("seq_len: [128, 256]", replace))
    assert error_of(path) == f"{path}: {expected}"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("batch: 0", "batch: 0 is not a positive integer"),
        ("batch: -2", "batch: -2 is not a positive integer"),
        ("seed: -1", "seed: -1 is negative (must be 0 or more)"),
        ("seed: 1.5", "seed: 1.5 is not an integer"),
        ("dtype: float33",
         "dtype: 'float33' is not a known dtype (one of float32, float16, bfloat16, float64) "
         "(did you mean 'float32'?)"),
        ("dtype: [float32, int8]",
         "dtype[1]: 'int8' is not a known dtype (one of float32, float16, bfloat16, float64)"),
        ("mode: trian",
         "mode: 'trian' is not a known mode (one of forward, train, decode) "
         "(did you mean 'train'?)"),
        ("mode: 3", "mode: 3 is not a string"),
        ("causal: maybe", "causal: 'maybe' is not true or false"),
        ("variants: fused",
         "variants: 'fused' is not 'default' or 'all' (to pick variants by name, list them per "
         "layer: {name: lstm, variants: [fused, unrolled]})"),
        ("name: 'a b'", "name: 'a b' is not a valid suite name (letters, digits, '.', '_' and "
         "'-'; it names result files)"),
        ("measure: {time_budget_s: -1}", "measure.time_budget_s: -1 is not a positive number"),
        ("measure: {time_budget_s: fast}", "measure.time_budget_s: 'fast' is not a number"),
        ("measure: {flops: 1}", "measure.flops: 1 is not true or false"),
        ("measure: {flop: true}", "measure.flop: unknown key (did you mean 'flops'?)"),
        ("measure: {min_samples: 5, max_samples: 3}",
         "measure.max_samples: 3 is below measure.min_samples (5)"),
        ("measure: 5", "measure: 5 is not a mapping"),
        ("wat: 1", "wat: unknown key (known keys: name, description, device, dtype, mode, batch, "
         "seed, causal, block, variants, layers, sweep, measure)"),
        ("layer: [rnn]", "layer: unknown key (did you mean 'layers'?)"),
    ],
)
def test_bad_top_level_values(tmp_path: Path, line: str, expected: str) -> None:
    key = line.split(":")[0]
    text = "\n".join(x for x in BASE.splitlines() if not x.startswith(f"{key}:")) + f"\n{line}\n"
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}: {expected}"


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("cdua", "'cdua' is not a device (one of auto, cpu, cuda, cuda:N) (did you mean 'cuda'?)"),
        ("gpu", "'gpu' is not a device (one of auto, cpu, cuda, cuda:N) (did you mean 'cuda'?)"),
        ("cuda:x",
         "'cuda:x' is not a device (one of auto, cpu, cuda, cuda:N) (did you mean 'cuda'?)"),
        ("mps", "'mps' is not a device (one of auto, cpu, cuda, cuda:N)"),
    ],
)
def test_unknown_device(tmp_path: Path, device: str, expected: str) -> None:
    path = write(tmp_path, BASE.replace("device: cpu", f"device: {device}"))
    assert error_of(path) == f"{path}: device: {expected}"


def test_cuda_on_a_machine_without_cuda(tmp_path: Path, no_cuda: None) -> None:
    path = write(tmp_path, BASE.replace("device: cpu", "device: [cpu, cuda]"))
    assert error_of(path) == (
        f"{path}: device[1]: 'cuda' is not available: this machine has no CUDA device "
        "(use device=cpu or auto)"
    )
    # the same file validates when the device check is off (a GPU suite checked on a laptop)
    assert load_suite(path, check_device=False).device == ("cpu", "cuda")


def test_cuda_index_beyond_the_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    path = write(tmp_path, BASE.replace("device: cpu", "device: cuda:3"))
    assert error_of(path) == (
        f"{path}: device: 'cuda:3' is not available: this machine has 1 CUDA device(s), "
        "cuda:0..cuda:0"
    )


def test_non_string_keys(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("  d_model: [64]\n", "  d_model: [64]\n  1: [2]\n"))
    assert error_of(path) == (
        f"{path}: sweep: key 1 is not a known key "
        "(known keys: seq_len, d_model, heads, kernel, window, max_relative, src_len, height, "
        "width, "
        "query_height, query_width, flange_height, flange_width, batch, compile)"
    )


def test_missing_required_key(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("  d_model: [64]\n", ""))
    assert error_of(path) == f"{path}: sweep.d_model: required key is missing"
    path = write(tmp_path, "name: t\nlayers: [rnn]\n")
    assert error_of(path) == f"{path}: sweep: required key is missing"


def test_unknown_key_is_reported_before_the_missing_one_it_explains(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("d_model:", "d_modle:"))
    assert error_of(path) == f"{path}: sweep.d_modle: unknown key (did you mean 'd_model'?)"


def test_unknown_layer_did_you_mean(tmp_path: Path) -> None:
    path = write(tmp_path, layers("[rnn, lstn]"))
    assert error_of(path) == (
        f"{path}: layers[1]: 'lstn' is not a registered layer (did you mean 'lstm'?)"
    )
    path = write(tmp_path, layers("[{name: lstn, variants: all}]"))
    assert error_of(path) == (
        f"{path}: layers[0].name: 'lstn' is not a registered layer (did you mean 'lstm'?)"
    )
    path = write(tmp_path, layers("[zzzz]"))
    message = error_of(path)
    assert message.startswith(f"{path}: layers[0]: 'zzzz' is not a registered layer (known: ")


def test_bad_layer_items(tmp_path: Path) -> None:
    path = write(tmp_path, layers("[rnn, 5]"))
    assert error_of(path) == (
        f"{path}: layers[1]: 5 is not a layer name or a mapping like {{name: lstm, ...}}"
    )
    path = write(tmp_path, layers("[{name: lstm, varaints: all}]"))
    assert error_of(path) == f"{path}: layers[0].varaints: unknown key (did you mean 'variants'?)"
    path = write(tmp_path, layers("[{variants: all}]"))
    assert error_of(path) == f"{path}: layers[0].name: required key is missing"
    path = write(tmp_path, layers("[]"))
    assert error_of(path) == f"{path}: layers: [] is empty (give at least one value)"


def test_unknown_variant(tmp_path: Path) -> None:
    path = write(tmp_path, layers("[{name: lstm, variants: [fused, unroled]}]"))
    assert error_of(path) == (
        f"{path}: layers[0].variants[1]: 'unroled' is not a variant of lstm "
        "(one of fused, unrolled, or 'all') (did you mean 'unrolled'?)"
    )
    path = write(tmp_path, layers("[{name: lstm, variants: 3}]"))
    assert error_of(path) == (
        f"{path}: layers[0].variants: 3 is not 'default', 'all' or a non-empty list of "
        "variant names"
    )


def test_per_layer_setting_the_layer_does_not_take(tmp_path: Path) -> None:
    path = write(tmp_path, layers("[{name: lstm, sweep: {heads: [4]}}]"))
    assert error_of(path) == (
        f"{path}: layers[0].sweep.heads: [4] does not apply to lstm "
        "(it takes seq_len, d_model, batch)"
    )
    path = write(tmp_path, layers("[{name: lstm, causal: true}]"))
    assert error_of(path) == (
        f"{path}: layers[0].causal: true does not apply to lstm (it takes seq_len, d_model, batch)"
    )


def test_batch_in_two_places(tmp_path: Path) -> None:
    text = BASE.replace("  d_model: [64]\n", "  d_model: [64]\n  batch: [1, 2]\n") + "batch: 4\n"
    path = write(tmp_path, text)
    assert error_of(path) == (
        f"{path}: sweep.batch: batch is given both at the top level and in sweep; keep one"
    )


# --- overrides ------------------------------------------------------------------------------


def test_overrides_are_applied(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    suite = load_suite(path, ["sweep.seq_len=[32, 64, 96]", "batch=2", "layers=[lstm, gru]",
                              "dtype=float64", "measure.time_budget_s=0.25"])
    assert suite.sweep.seq_len == (32, 64, 96)
    assert suite.batches() == (2,)
    assert [spec.name for spec in suite.layers] == ["lstm", "gru"]
    assert suite.dtype == ("float64",)
    assert suite.measure.time_budget_s == 0.25
    # the file itself is untouched by overrides
    assert load_suite(path).sweep.seq_len == (128, 256)


def test_override_into_a_bare_layer_name(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, BASE), ["layers[0].variants=all"])
    assert suite.layers[0].name == "rnn"
    assert {p.variant for p in expand(suite)} == {"fused", "unrolled"}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("seq_len",
         "override 'seq_len': expected KEY=VALUE, e.g. sweep.seq_len=[128,256] or batch=2"),
        ("a..b=1", "override 'a..b=1': 'a..b' is not a key path (names joined by '.', list items "
         "as [i], e.g. layers[0].variants)"),
        ("=3", "override '=3': '' is not a key path (names joined by '.', list items as [i], e.g. "
         "layers[0].variants)"),
        ("name.x=1", "override 'name.x=1': name is 't', not a mapping or a list"),
        ("layers[3].variants=all", "override 'layers[3].variants=all': layers[3] is out of range "
         "(layers has 1 items)"),
        ("sweep[0]=1", "override 'sweep[0]=1': sweep is not a list"),
    ],
)
def test_malformed_override(tmp_path: Path, override: str, expected: str) -> None:
    assert error_of(write(tmp_path, BASE), (override,)) == expected


def test_override_with_bad_yaml_or_a_tag(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    message = error_of(path, ("sweep.seq_len=[128,",))
    assert message.startswith("override 'sweep.seq_len=[128,': line 1, column ")
    assert "invalid YAML" in message
    marker = tmp_path / "pwned"
    message = error_of(path, (f"seed=!!python/object/apply:os.system ['touch {marker}']",))
    assert "tag '!!python/object/apply:os.system' is not allowed" in message
    assert not marker.exists()


def test_error_from_an_override_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    assert error_of(path, ("sweep.seq_len=[128,-4]",)) == (
        f"{path}: sweep.seq_len[1]: -4 is not a positive integer "
        "(set by override 'sweep.seq_len=[128,-4]')"
    )
    assert error_of(path, ("sweep.seq_lne=[1]",)) == (
        f"{path}: sweep.seq_lne: unknown key (did you mean 'seq_len'?) "
        "(set by override 'sweep.seq_lne=[1]')"
    )


def test_device_override_fixes_a_cuda_suite(tmp_path: Path, no_cuda: None) -> None:
    path = write(tmp_path, BASE.replace("device: cpu", "device: cuda"))
    assert "is not available" in error_of(path)
    suite = load_suite(path, ["device=cpu"])
    assert {p.device for p in expand(suite)} == {"cpu"}


# --- expansion ------------------------------------------------------------------------------

FAKE_SUITE = """\
name: fake
device: cpu
dtype: [float32, float64]
batch: 2
layers: [fk_rec, fk_attn, fk_conv, fk_local, fk_light]
sweep:
  seq_len: [16, 32, 64]
  d_model: [24, 32]
  heads: [2, 3, 4]
  kernel: [3, 5]
  window: [4, 8]
"""


def test_expansion_counts_cross_only_the_axes_a_layer_takes(tmp_path: Path, fakes: None) -> None:
    planned = expand(load_suite(write(tmp_path, FAKE_SUITE)))
    per_layer = {name: [p for p in planned if p.layer == name] for name in
                 ("fk_rec", "fk_attn", "fk_conv", "fk_local", "fk_light")}
    n, d, h, k, r, dtypes = 3, 2, 3, 2, 2, 2
    assert len(per_layer["fk_rec"]) == n * d * dtypes  # 12: no heads, kernel or window
    assert len(per_layer["fk_attn"]) == n * d * h * dtypes  # 36
    assert len(per_layer["fk_conv"]) == n * d * k * dtypes  # 24
    assert len(per_layer["fk_local"]) == n * d * h * r * dtypes  # 72
    assert len(per_layer["fk_light"]) == n * d * h * k * dtypes  # 72
    assert len(planned) == 12 + 36 + 24 + 72 + 72
    for item in per_layer["fk_rec"]:
        assert (item.case.heads, item.case.kernel, item.case.window) == (None, None, None)
    for item in per_layer["fk_attn"]:
        assert (item.case.kernel, item.case.window) == (None, None)
        assert item.case.heads in (2, 3, 4)
    assert all(p.case.batch == 2 and p.device == "cpu" and p.mode == "forward" for p in planned)


def test_skip_reasons_for_heads_not_dividing_d(tmp_path: Path, fakes: None) -> None:
    planned = expand(load_suite(write(tmp_path, FAKE_SUITE)))
    skipped = [p for p in planned if not p.runnable]
    # d=32 with h=3: every layer that takes heads, every n, k, r, dtype; d=24 divides by 2, 3, 4
    assert skipped and all(p.case.d_model == 32 and p.case.heads == 3 for p in skipped)
    assert all(p.skip_reason == "d_model=32 is not divisible by heads=3" for p in skipped)
    expected = 3 * 2 * (1 + 2 + 2)  # n * dtypes * (fk_attn 1 + fk_local r=2 + fk_light k=2)
    assert len(skipped) == expected
    text = summarize(planned)
    assert ["fk_rec", "12", "12", "0"] in [line.split() for line in text.splitlines()]
    assert f"skipped ({expected}):" in text
    assert "  fk_attn-n16-d32-h3-float32: d_model=32 is not divisible by heads=3" in text


def test_layer_check_and_missing_required_axis_are_skips(tmp_path: Path, fakes: None) -> None:
    text = """\
        name: t
        device: cpu
        layers: [fk_odd, fk_attn]
        sweep: {seq_len: [8], d_model: [8], kernel: [3, 4]}
        """
    planned = expand(load_suite(write(tmp_path, text)))
    reasons = {p.label: p.skip_reason for p in planned}
    # even kernels are not dropped by the suite layer: only the layer's own check says so
    assert reasons == {"fk_odd-n8-d8-k3": None, "fk_odd-n8-d8-k4": "kernel must be odd",
                       "fk_attn-n8-d8": "fk_attn needs heads"}


def test_order_is_layers_as_written_then_fixed_axes(tmp_path: Path, fakes: None) -> None:
    text = """\
        name: t
        device: cpu
        mode: [forward, train]
        layers: [fk_conv, fk_rec]
        sweep: {seq_len: [8, 4], d_model: [8, 16], kernel: [3]}
        """
    planned = expand(load_suite(write(tmp_path, text)))
    got = [(p.layer, p.mode, p.case.d_model, p.case.seq_len) for p in planned]
    expected = [(layer, mode, d, n) for layer, mode, d, n in itertools.product(
        ("fk_conv", "fk_rec"), ("forward", "train"), (8, 16), (8, 4))]
    assert got == expected


def test_per_layer_overrides(tmp_path: Path, fakes: None) -> None:
    text = """\
        name: t
        device: cpu
        layers:
          - fk_conv
          - {name: fk_conv, causal: true}
          - {name: fk_local, sweep: {window: [16, 64]}}
          - {name: fk_rec, variants: [fused, unrolled]}
          - {name: fk_light, block: [false, true], sweep: {seq_len: [4]}}
        sweep: {seq_len: [8, 16], d_model: [8], heads: [2], kernel: [3], window: [4]}
        """
    planned = expand(load_suite(write(tmp_path, text)))
    conv = [p for p in planned if p.layer == "fk_conv"]
    assert [(p.case.seq_len, p.case.causal) for p in conv] == [
        (8, False), (16, False), (8, True), (16, True)]
    local = [p for p in planned if p.layer == "fk_local"]
    assert [(p.case.window, p.case.seq_len) for p in local] == [
        (16, 8), (16, 16), (64, 8), (64, 16)]
    rec = [p for p in planned if p.layer == "fk_rec"]
    assert [p.variant for p in rec] == ["fused", "fused", "unrolled", "unrolled"]
    light = [p for p in planned if p.layer == "fk_light"]
    assert [(p.case.seq_len, p.case.block) for p in light] == [(4, False), (4, True)]
    assert len(planned) == 4 + 4 + 4 + 2
    labels = [p.label for p in planned]
    assert "fk_conv-n8-d8-k3-causal" in labels
    assert "fk_local-n16-d8-h2-r64" in labels
    assert "fk_rec-unrolled-n8-d8" in labels
    assert "fk_light-n4-d8-h2-k3-block" in labels


def test_variants_all_and_default(tmp_path: Path, fakes: None) -> None:
    text = layers("[fk_rec, fk_conv]\nvariants: all").replace(
        "d_model: [64]", "d_model: [64]\n  kernel: [3]")
    planned = expand(load_suite(write(tmp_path, text)))
    assert [(p.layer, p.variant) for p in planned] == [
        ("fk_rec", "fused"), ("fk_rec", "fused"), ("fk_rec", "unrolled"), ("fk_rec", "unrolled"),
        ("fk_conv", "a"), ("fk_conv", "a")]
    planned = expand(load_suite(write(tmp_path, text.replace("variants: all", ""))))
    assert {p.variant for p in planned if p.layer == "fk_rec"} == {"fused"}


def test_flags_a_layer_does_not_take_are_not_crossed(tmp_path: Path, fakes: None) -> None:
    text = layers("[fk_rec, fk_conv]\ncausal: [false, true]").replace(
        "d_model: [64]", "d_model: [64]\n  kernel: [3]")
    planned = expand(load_suite(write(tmp_path, text)))
    assert len([p for p in planned if p.layer == "fk_rec"]) == 2  # causal does not apply
    assert len([p for p in planned if p.layer == "fk_conv"]) == 4
    assert all(not p.case.causal for p in planned if p.layer == "fk_rec")


def test_duplicate_cases_are_removed(tmp_path: Path, no_cuda: None) -> None:
    text = BASE.replace("device: cpu", "device: [auto, cpu]").replace(
        "layers: [rnn]", "layers: [rnn, rnn, {name: rnn, variants: [fused]}]").replace(
        "seq_len: [128, 256]", "seq_len: [128, 256, 128]")
    planned = expand(load_suite(write(tmp_path, text)))
    assert [p.label for p in planned] == ["rnn-n128-d64", "rnn-n256-d64"]
    assert all(p.device == "cpu" for p in planned)  # auto resolved without CUDA


def test_sweep_batch_and_scalars(tmp_path: Path) -> None:
    text = BASE.replace("seq_len: [128, 256]", "seq_len: 128\n  batch: [1, 4]")
    planned = expand(load_suite(write(tmp_path, text)))
    assert [(p.case.seq_len, p.case.batch, p.label) for p in planned] == [
        (128, 1, "rnn-n128-d64-b1"), (128, 4, "rnn-n128-d64-b4")]
    planned = expand(load_suite(write(tmp_path, BASE)))
    assert {p.case.batch for p in planned} == {1}  # no batch anywhere: 1


def test_case_id_is_stable_and_distinct(tmp_path: Path) -> None:
    overrides = ["layers=[rnn, lstm]", "mode=[forward, train]"]
    planned = expand(load_suite(write(tmp_path, BASE), overrides))
    ids = [p.case_id for p in planned]
    assert len(set(ids)) == len(ids) == 8
    again = expand(load_suite(write(tmp_path, BASE), overrides))
    assert [p.case_id for p in again] == ids
    first = planned[0]
    # a fixed value: the id must not depend on the process (hash seed) or the run
    assert first.params() == {
        "layer": "rnn", "variant": "fused", "seq_len": 128, "d_model": 64, "heads": None,
        "kernel": None, "window": None, "max_relative": None, "src_len": None,
        "height": None, "width": None,
        "query_height": None, "query_width": None, "flange_height": None,
        "flange_width": None, "causal": False, "block": False, "batch": 1,
        "dtype": "float32", "device": "cpu", "mode": "forward", "compile": False, "seed": 0}
    # the id of version 1: axes added since (compile, cross and 2D sizes) leave it as it was
    assert first.case_id == "7b7d967d4ecc"
    for change in ({"seed": 1}, {"dtype": "float64"}, {"variant": "unrolled"},
                   {"case": dataclasses.replace(first.case, batch=2)},
                   {"case": dataclasses.replace(first.case, compile=True)}):
        assert dataclasses.replace(first, **change).case_id != first.case_id
    # the label and skip reason are presentation, not identity
    assert dataclasses.replace(first, label="x", skip_reason="y").case_id == first.case_id


def test_planned_cases_pickle(tmp_path: Path) -> None:
    """The runner sends planned cases to a worker process."""
    import pickle

    planned = expand(load_suite(write(tmp_path, BASE)))
    assert pickle.loads(pickle.dumps(planned)) == planned


def test_summary_without_skips(tmp_path: Path) -> None:
    text = summarize(expand(load_suite(write(tmp_path, BASE))), title="suite t")
    lines = text.splitlines()
    assert lines[0] == "suite t" and set(lines[2]) == {"-", " "}
    assert [line.split() for line in lines[:2] + lines[3:]] == [
        ["suite", "t"],
        ["layer", "cases", "runnable", "skipped"],
        ["rnn", "2", "2", "0"],
        ["total", "2", "2", "0"],
    ]


def test_planned_cases_and_suites_are_frozen(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, BASE))
    planned = expand(suite)
    with pytest.raises(dataclasses.FrozenInstanceError):
        planned[0].layer = "lstm"  # type: ignore[misc]
    with pytest.raises(ValueError, match="frozen"):
        suite.seed = 3  # type: ignore[misc]
    assert isinstance(suite.sweep.seq_len, tuple)


def test_to_yaml_round_trips(tmp_path: Path) -> None:
    text = layers("[rnn, {name: lstm, variants: [unrolled], sweep: {seq_len: [8]}}]")
    suite = load_suite(write(tmp_path, text), ["mode=[forward, train]", "measure.min_samples=7"])
    saved = suite.to_yaml()
    again = parse_suite(yaml.safe_load(saved), source="saved")
    assert again.to_dict() == suite.to_dict()
    assert expand(again) == expand(suite)
    assert suite.to_dict()["measure"]["min_samples"] == 7
    assert suite.to_dict()["layers"][0] == "rnn"


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    text = BASE.replace("name: t\n", "")
    assert load_suite(write(tmp_path, text, "my-suite.yaml")).name == "my-suite"


def test_layers_all(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, layers("all")),
                       check_device=False)
    assert [spec.name for spec in suite.layers] == registry.names()


# --- the contract and the shipped suites ----------------------------------------------------


def test_design_contract_example_loads() -> None:
    need_layers("rnn", "lstm", "conv", "attention", "attention_sdpa", "lightconv", "dynamicconv")
    data = yaml.safe_load("""
        name: table1-seq-len
        device: auto
        dtype: float32
        mode: forward
        batch: 8
        layers: [rnn, lstm, conv, attention, attention_sdpa, lightconv, dynamicconv]
        sweep:
          seq_len: [128, 256, 512, 1024, 2048, 4096]
          d_model: [512]
          heads: [8]
          kernel: [7]
        """)
    planned = expand(parse_suite(data, source="contract"))
    assert len(planned) == 7 * 6 and all(p.runnable for p in planned)
    assert {p.case.batch for p in planned} == {8}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_suite_loads_and_expands(name: str) -> None:
    path = SUITES / f"{name}.yaml"
    text = path.read_text(encoding="utf-8")
    need_layers(*(layer for layer in ALL_LAYERS if layer in text))
    assert text.startswith("#"), "every shipped suite starts with a header comment"
    suite = load_suite(path, check_device=False)
    assert suite.name == name
    planned = expand(suite)
    cases, skipped = SHIPPED[name]
    assert (len(planned), sum(not p.runnable for p in planned)) == (cases, skipped)
    assert len({p.label for p in planned}) == len(planned)
    assert len({p.case_id for p in planned}) == len(planned)
    assert f"{cases} cases" in text.replace(",", "")  # the header states the count


def test_quick_suite_covers_every_layer_on_cpu() -> None:
    need_layers(*ALL_LAYERS)
    suite = load_suite(SUITES / "quick.yaml")
    planned = expand(suite)
    assert {p.layer for p in planned} == set(ALL_LAYERS)
    assert {p.device for p in planned} == {"cpu"}
    assert len(planned) <= 40
    dilated = [p for p in planned if p.layer == "conv_dilated"]
    assert dilated and all(p.case.causal for p in dilated)


def test_table1_has_both_regimes() -> None:
    need_layers(*ALL_LAYERS)
    planned = expand(load_suite(SUITES / "table1.yaml", check_device=False))
    assert any(p.case.seq_len < p.case.d_model for p in planned)
    assert any(p.case.seq_len > p.case.d_model for p in planned)


def test_gpu_suite_needs_cuda(no_cuda: None) -> None:
    message = error_of(SUITES / "gpu-scale.yaml")
    assert message == (
        f"{SUITES / 'gpu-scale.yaml'}: device: 'cuda' is not available: this machine has no "
        "CUDA device (use device=cpu or auto)"
    )
