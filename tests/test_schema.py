"""The case schema: the docs table, and the places that must keep explicit fields agree
with it (everything else is derived from it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import schema

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
    extra = schema.Axis("src_len", int, "positions", "source length m", "size", optional=True,
                        symbol="m", label="source length m")
    monkeypatch.setattr(schema, "AXES", (*schema.AXES, extra))
    with pytest.raises(AssertionError, match="PLAN_ORDER must name every axis once"):
        schema._check()
    monkeypatch.setattr(schema, "PLAN_ORDER", (*schema.PLAN_ORDER, "src_len"))
    with pytest.raises(AssertionError, match="SIZE_PRIORITY"):
        schema._check()
    monkeypatch.setattr(schema, "SIZE_PRIORITY", (*schema.SIZE_PRIORITY, "src_len"))
    schema._check()
    monkeypatch.setattr(schema, "COLUMNS", (*schema.COLUMNS, schema.COLUMNS[0]))
    with pytest.raises(AssertionError, match="declared twice"):
        schema._check()
