"""Results: one row per case, written as each case finishes, merged into one Parquet file.

Layout of a run directory::

    results.parquet     one merged, schema-versioned file (rewritten atomically)
    samples.parquet     raw timing samples, long format (case_id, sample, seconds)
    suite.yaml          the suite as run
    parts/<id>.parquet  one file per finished case; the source of truth while a sweep runs

Each part is written to a temporary name and renamed into place, so a run killed at any
moment (even SIGKILL) leaves only complete parts; ``merge`` rebuilds the merged files from
them. Readers validate the schema version and refuse files they cannot understand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.errors import HarnessInputError
from harness.values import missing

SCHEMA_VERSION = 1
_META_KEY = b"harness.schema_version"

STATUSES = ("ok", "oom", "timeout", "error", "skipped")

#: Parameters of a case: the public column names (DESIGN.md "Results").
PARAM_COLUMNS = (
    "layer", "variant", "seq_len", "d_model", "heads", "kernel", "window", "causal",
    "block", "batch", "dtype", "device", "mode", "seed",
)
#: Metric columns, units in the names. A metric that was not measured is missing (NaN/None).
METRIC_COLUMNS = (
    "time_ms_median", "time_ms_iqr", "time_ms_min", "time_ms_mean", "time_cv",
    "time_samples", "time_calls_per_sample", "time_unreliable", "time_note", "time_timer",
    "time_rounds", "time_rounds_clean", "time_disturbed_frac", "time_sampled_s", "time_wall_s",
    "peak_mem_bytes", "mem_baseline_bytes", "mem_method", "param_count", "param_bytes",
    "act_mem_analytic_bytes",
    "flops_analytic", "flops_useful_analytic", "flops_other_analytic", "flops_fvcore",
    "flops_torch", "flops_forward_analytic", "flops_uncounted", "flops_note",
    "path_length_analytic", "path_length_measured", "seq_ops_analytic", "seq_ops_measured",
    "graph_depth", "structure_note",
    "flops_per_s", "tokens_per_s", "arithmetic_intensity",
)
ID_COLUMNS = ("case_index", "case_id", "label", "status", "message")
REQUIRED_COLUMNS = ("schema_version", *ID_COLUMNS, *PARAM_COLUMNS)

_INT_PARAMS = ("seq_len", "d_model", "heads", "kernel", "window", "batch", "seed")
#: Integer metrics that may be missing (a failed case, an unobservable counter).
_INT_METRICS = ("time_rounds", "time_rounds_clean")


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _table(df: pd.DataFrame) -> pa.Table:
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[_META_KEY] = str(SCHEMA_VERSION).encode()
    return table.replace_schema_metadata(meta)


def normalize_row(row: dict[str, object]) -> dict[str, object]:
    """A row with every public column present (missing metrics as None), schema stamped."""
    out: dict[str, object] = {"schema_version": SCHEMA_VERSION}
    for name in (*ID_COLUMNS, *PARAM_COLUMNS, *METRIC_COLUMNS):
        out[name] = row.get(name)
    for name, value in row.items():
        if name not in out and name != "samples_s":
            out[name] = value
    if out["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {out['status']!r}")
    return out


class RunDirectory:
    """A run's output folder: part files while it runs, merged files when it ends."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.parts = self.path / "parts"

    @property
    def results_file(self) -> Path:
        return self.path / "results.parquet"

    @property
    def samples_file(self) -> Path:
        return self.path / "samples.parquet"

    def create(self) -> None:
        """Create the folder; an unwritable location is bad input (one line, exit 2)."""
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
            probe = self.parts / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise HarnessInputError(
                f"{self.path}: cannot write the output directory ({exc.strerror or exc}); "
                "choose another with --out"
            ) from None

    def write_case(self, row: dict[str, object], samples_s: Iterable[float] = ()) -> None:
        """Persist one finished case atomically (its row and raw samples)."""
        row = normalize_row(row)
        samples = [float(s) for s in samples_s]
        frame = pd.DataFrame([row])
        frame["samples_s"] = [samples]
        _atomic_write_table(_table(frame), self.parts / f"{row['case_id']}.parquet")

    def finished(self) -> dict[str, dict[str, object]]:
        """Rows already written, keyed by case_id (unreadable leftovers are ignored)."""
        rows: dict[str, dict[str, object]] = {}
        if not self.parts.is_dir():
            return rows
        for part in sorted(self.parts.glob("*.parquet")):
            try:
                frame = pq.read_table(part).to_pandas()
            except (OSError, pa.ArrowException):
                continue
            if len(frame) == 1:
                rows[str(frame.loc[0, "case_id"])] = frame.iloc[0].to_dict()
        return rows

    def merge(self) -> pd.DataFrame:
        """Rebuild results.parquet and samples.parquet from the parts (atomic replace)."""
        frames = []
        for part in sorted(self.parts.glob("*.parquet")):
            try:
                frames.append(pq.read_table(part).to_pandas())
            except (OSError, pa.ArrowException):
                continue
        if not frames:
            return pd.DataFrame(columns=list(REQUIRED_COLUMNS))
        merged = pd.concat(frames, ignore_index=True)
        merged = merged.sort_values("case_index", kind="stable").reset_index(drop=True)
        samples = (
            merged[["case_id", "samples_s"]]
            .explode("samples_s")
            .dropna(subset=["samples_s"])
            .rename(columns={"samples_s": "seconds"})
        )
        samples["sample"] = samples.groupby("case_id").cumcount()
        samples["seconds"] = samples["seconds"].astype(float)
        merged = merged.drop(columns=["samples_s"])
        merged = _coerce(merged)
        _atomic_write_table(_table(merged), self.results_file)
        _atomic_write_table(
            _table(samples[["case_id", "sample", "seconds"]].reset_index(drop=True)),
            self.samples_file,
        )
        return merged


def _coerce(df: pd.DataFrame) -> pd.DataFrame:
    """Stable dtypes across parts: nullable ints for integer axes, floats for metrics."""
    for name in (*_INT_PARAMS, *_INT_METRICS):
        if name in df:
            df[name] = pd.array(
                [None if missing(v) else int(v) for v in df[name]], dtype="Int64"
            )
    for name in ("causal", "block", "time_unreliable"):
        if name in df:
            df[name] = pd.array(
                [None if missing(v) else bool(v) for v in df[name]], dtype="boolean"
            )
    return df


def read_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a results file (or a run directory holding one), validated.

    Raises HarnessInputError with one line for a missing, empty, corrupt, wrong-schema or
    newer-schema file.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "results.parquet"
    if not p.exists():
        raise HarnessInputError(f"{p}: no such results file")
    if p.stat().st_size == 0:
        raise HarnessInputError(f"{p}: empty file, not a results file")
    try:
        table = pq.read_table(p)
    except (OSError, pa.ArrowException) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarnessInputError(f"{p}: not a readable Parquet results file ({first})") from None
    meta = table.schema.metadata or {}
    raw = meta.get(_META_KEY)
    if raw is None:
        raise HarnessInputError(
            f"{p}: not a harness results file (no schema version); "
            "produce one with `harness run`"
        )
    try:
        version = int(raw)
    except ValueError:
        raise HarnessInputError(f"{p}: unreadable schema version {raw!r}") from None
    if version > SCHEMA_VERSION:
        raise HarnessInputError(
            f"{p}: schema version {version} is newer than this harness understands "
            f"({SCHEMA_VERSION}); upgrade the harness"
        )
    df = table.to_pandas()
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise HarnessInputError(f"{p}: missing columns {', '.join(missing)}")
    return df


def to_long(df: pd.DataFrame, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """The tidy view for seaborn: one row per (case, metric) with its value."""
    if metrics is None:
        metrics = [
            c for c in METRIC_COLUMNS
            if c in df.columns and pd.api.types.is_numeric_dtype(df[c])
            and not pd.api.types.is_bool_dtype(df[c])
        ]
    metrics = list(metrics)
    ids = [c for c in (*ID_COLUMNS, *PARAM_COLUMNS) if c in df.columns]
    long = df.melt(id_vars=ids, value_vars=metrics, var_name="metric", value_name="value")
    return long.dropna(subset=["value"]).reset_index(drop=True)


def dumps_json(value: object) -> str:
    """JSON for list-like cell values (uncounted ops) kept as strings in Parquet."""
    return json.dumps(value, sort_keys=True)
