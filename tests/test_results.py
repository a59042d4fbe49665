"""Results files: atomic parts, merge, schema checks, the tidy view."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from harness import schema
from harness.errors import HarnessInputError
from harness.results import (
    SCHEMA_VERSION,
    RunDirectory,
    normalize_row,
    read_results,
    to_long,
)


def _row(i: int, status: str = "ok", **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "case_index": i, "case_id": f"id{i}", "label": f"lstm-n{8 * (i + 1)}", "status": status,
        "message": "", "layer": "lstm", "variant": "fused", "seq_len": 8 * (i + 1),
        "d_model": 16, "heads": None, "kernel": None, "window": None, "causal": False,
        "block": False, "batch": 1, "dtype": "float32", "device": "cpu", "mode": "forward",
        "seed": 0, "time_ms_median": 1.0 + i, "flops_analytic": 1000 * (i + 1),
    }
    row.update(extra)
    return row


def test_parts_merge_in_plan_order_with_samples(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.create()
    run.write_case(_row(2), [0.3, 0.31])
    run.write_case(_row(0), [0.1, 0.11, 0.12])
    run.write_case(_row(1, status="oom", message="CUDA out of memory"))
    merged = run.merge()
    assert list(merged["case_index"]) == [0, 1, 2]
    assert list(merged["status"]) == ["ok", "oom", "ok"]
    back = read_results(run.path)
    assert len(back) == 3 and (back["schema_version"] == SCHEMA_VERSION).all()
    assert back["heads"].isna().all()  # a parameter that does not apply is missing
    samples = pd.read_parquet(run.samples_file)
    assert samples.groupby("case_id").size().to_dict() == {"id0": 3, "id2": 2}
    assert list(samples[samples.case_id == "id0"]["seconds"]) == [0.1, 0.11, 0.12]


def test_rewriting_a_case_keeps_one_row(tmp_path):
    run = RunDirectory(tmp_path)
    run.create()
    run.write_case(_row(0, status="error", message="boom"))
    run.write_case(_row(0))
    assert [r["status"] for r in run.finished().values()] == ["ok"]
    assert len(run.merge()) == 1


def test_leftover_temporary_and_garbage_parts_are_ignored(tmp_path):
    run = RunDirectory(tmp_path)
    run.create()
    run.write_case(_row(0))
    (run.parts / ".id1.parquet.tmp-123").write_bytes(b"half a file")
    (run.parts / "id9.parquet").write_bytes(b"not parquet")
    assert list(run.finished()) == ["id0"]
    assert len(run.merge()) == 1


def test_unknown_status_is_rejected():
    with pytest.raises(ValueError, match="status"):
        normalize_row(_row(0, status="fine"))


def test_unwritable_output_directory_is_bad_input(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HarnessInputError, match="cannot write the output directory"):
        RunDirectory(blocker / "run").create()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such results file"),
        (b"", "empty file"),
        (b"PAR1 this is not parquet", "not a readable Parquet results file"),
    ],
)
def test_bad_results_files(tmp_path, content, message):
    path = tmp_path / "results.parquet"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(HarnessInputError, match=message) as info:
        read_results(path)
    assert "\n" not in str(info.value)


def test_foreign_and_newer_schema_files_are_refused(tmp_path):
    foreign = tmp_path / "foreign.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(foreign)
    with pytest.raises(HarnessInputError, match="no schema version"):
        read_results(foreign)

    run = RunDirectory(tmp_path / "run")
    run.create()
    run.write_case(_row(0))
    run.merge()
    table = pq.read_table(run.results_file)
    meta = dict(table.schema.metadata)
    meta[b"harness.schema_version"] = str(SCHEMA_VERSION + 1).encode()
    newer = tmp_path / "newer.parquet"
    pq.write_table(table.replace_schema_metadata(meta), newer)
    with pytest.raises(HarnessInputError, match="newer than this harness"):
        read_results(newer)

    cut = tmp_path / "cut.parquet"
    pq.write_table(table.drop(["layer"]).replace_schema_metadata(table.schema.metadata), cut)
    with pytest.raises(HarnessInputError, match="missing columns layer"):
        read_results(cut)


def test_long_view_has_one_row_per_case_and_metric(tmp_path):
    run = RunDirectory(tmp_path)
    run.create()
    for i in range(3):
        run.write_case(_row(i))
    long = to_long(run.merge(), ["time_ms_median", "flops_analytic"])
    assert len(long) == 6
    assert set(long["metric"]) == {"time_ms_median", "flops_analytic"}
    wide = long.pivot(index="case_id", columns="metric", values="value")
    assert wide.loc["id2", "flops_analytic"] == 3000


def test_missing_and_plain_cell_values():
    from harness.values import missing, plain

    for value in (None, math.nan, np.float32("nan"), np.float64("nan"), pd.NA, pd.NaT):
        assert missing(value) and plain(value) is None
    for value in (0, 0.0, "", "nan", math.inf, False, [1]):
        assert not missing(value)
    assert type(plain(np.int64(3))) is int and type(plain(np.float32(0.5))) is float
    assert plain(np.bool_(True)) is True and plain("x") == "x"


def test_merged_dtypes_are_the_schemas_whatever_each_part_held(tmp_path):
    """A column's dtype does not depend on which cases failed or what a part happened to hold:
    an int metric missing in one row stays an integer, an all-missing column is still typed."""
    run = RunDirectory(tmp_path)
    run.create()
    run.write_case(_row(0, time_rounds=3, peak_mem_bytes=1024, time_unreliable=False,
                        gpu_power_w_before=None, time_note=None))
    run.write_case(_row(1, status="error", message="boom", time_ms_median=None,
                        flops_analytic=None))
    run.merge()
    back = read_results(run.path)
    expected = {"Int64": {"Int64"}, "bool": {"boolean"}, "float": {"float64"},
                "str": {"str", "object"}}  # pandas 3 reads text as "str", pandas 2 as object
    for name in back.columns:
        assert str(back[name].dtype) in expected[schema.column(name).dtype], name
    assert back["flops_analytic"].tolist() == [1000, pd.NA]
    arrow = pq.read_schema(run.results_file)
    assert str(arrow.field("gpu_power_w_before").type) == "double"
    assert str(arrow.field("time_note").type) == "string"
