"""The case schema: the docs table, and the places that must keep explicit fields agree
with it (everything else is derived from it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness import schema
from harness.results import Row
from harness.spec import LayerCase
from harness.suite import LayerSpec, PlannedCase, Suite, expand, parse_suite

DOCS = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def test_the_docs_column_table_is_the_schema() -> None:
    text = DOCS.read_text()
    assert "\n## Columns\n" in text, "docs/metrics.md needs a '## Columns' section"
    section = text.split("\n## Columns\n", 1)[1]
    table = "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))
    assert table == schema.markdown_table(), (
        "docs/metrics.md's column table differs from harness.schema: paste "
        "schema.markdown_table() under '## Columns'"
    )


def test_markdown_table_has_a_row_per_column() -> None:
    lines = schema.markdown_table().splitlines()
    assert lines[0] == "| column | type | unit | meaning |"
    assert len(lines) == 2 + len(schema.COLUMNS)
    assert "| `time_ms_median` | float | ms | median time per call |" in lines


def test_a_broken_declaration_fails_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = schema.Axis("depth", int, "layers", "stack depth", "size", optional=True,
                        symbol="L", label="stack depth L")
    monkeypatch.setattr(schema, "AXES", (*schema.AXES, extra))
    with pytest.raises(AssertionError, match="PLAN_ORDER must name every axis once"):
        schema._check()
    monkeypatch.setattr(schema, "PLAN_ORDER", (*schema.PLAN_ORDER, "depth"))
    with pytest.raises(AssertionError, match="SIZE_PRIORITY"):
        schema._check()
    monkeypatch.setattr(schema, "SIZE_PRIORITY", (*schema.SIZE_PRIORITY, "depth"))
    schema._check()
    monkeypatch.setattr(schema, "COLUMNS", (*schema.COLUMNS, schema.COLUMNS[0]))
    with pytest.raises(AssertionError, match="declared twice"):
        schema._check()


def test_layer_case_has_a_field_per_size_and_flag() -> None:
    assert tuple(f.name for f in dataclasses.fields(LayerCase)) == schema.LAYER_AXES


def test_settings_are_fields_of_a_planned_case_and_a_suite() -> None:
    settings = schema.axis_names("setting")
    assert set(settings) <= {f.name for f in dataclasses.fields(PlannedCase)}
    assert set(settings) <= set(Suite.model_fields)


def test_flags_are_suite_and_per_layer_keys() -> None:
    flags = schema.axis_names("flag", optional=True)  # a layer's flags
    assert [k for k in Suite.model_fields if k in flags] == list(flags)
    assert [k for k in LayerSpec.model_fields if k in flags] == list(flags)
    assert all(Suite.model_fields[f].default == (False,) for f in flags)


def test_sweep_keys_are_the_sizes_and_the_flags_every_layer_takes() -> None:
    suite = parse_suite({"name": "s", "layers": ["lstm"],
                         "sweep": {"seq_len": [8], "d_model": 4, "heads": 2, "kernel": 3,
                                   "window": 5, "max_relative": 2, "src_len": 3, "height": 2,
                                   "width": 4,
                                   "query_height": 1, "query_width": 2, "flange_height": 1,
                                   "flange_width": 1, "batch": 2, "compile": True}},
                        check_device=False)
    swept = tuple(a.name for a in schema.AXES
                  if a.kind == "size" or (a.kind == "flag" and not a.optional))
    assert tuple(suite.sweep.given()) == swept
    assert "compile" not in Suite.model_fields  # a sweep key only
    required = {name for name, f in type(suite.sweep).model_fields.items() if f.is_required()}
    assert required == {a.name for a in schema.AXES if a.required}


def test_case_parameters_come_in_column_order() -> None:
    suite = parse_suite({"name": "s", "device": "cpu", "layers": ["attention"],
                         "sweep": {"seq_len": [8], "d_model": [4], "heads": [2]}})
    (planned,) = expand(suite)
    assert tuple(planned.params()) == schema.CASE_COLUMNS
    assert planned.params()["heads"] == 2 and planned.params()["kernel"] is None


def test_a_row_reads_its_case_as_columns() -> None:
    suite = parse_suite({"name": "s", "device": "cpu", "layers": ["attention"],
                         "sweep": {"seq_len": [8], "d_model": [4], "heads": [2]}})
    (planned,) = expand(suite)
    row = Row(planned)
    assert list(row) == ["case_id", "label", *schema.CASE_COLUMNS]
    assert row["heads"] == 2 and row["kernel"] is None and row["device"] == "cpu"


def test_a_row_refuses_undeclared_columns_and_keeps_its_case() -> None:
    suite = parse_suite({"name": "s", "device": "cpu", "layers": ["lstm"],
                         "sweep": {"seq_len": [8], "d_model": [4]}})
    (planned,) = expand(suite)
    row = Row(planned, {"status": "ok"})
    row.update(time_ms_median=1.5)
    assert row.get("time_ms_median") == 1.5 and "flops_torch" not in row
    with pytest.raises(KeyError, match=r"declare it in harness\.schema"):
        row["time_ms_medain"] = 1.0
    with pytest.raises(KeyError, match="parameter of the case"):
        row.update(seq_len=16)
    assert row["seq_len"] == 8


def test_rows_only_ever_get_declared_columns() -> None:
    """What the measuring code writes into a row is declared: the environment record (with a
    GPU via a stand-in NVML), the timing statistics and the peak record."""
    from harness.measure.env import NVML_KEYS, environment
    from harness.measure.peak_rates import peak
    from harness.measure.timing import TimingResult

    declared = set(schema.column_names())
    assert set(environment("cpu")) <= declared
    assert set(NVML_KEYS) <= declared
    assert set(TimingResult.from_samples([1e-3, 2e-3]).as_row()) <= declared
    assert set(peak("cuda", "float16", "NVIDIA H200")) <= declared
