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

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness import schema
from harness.errors import HarnessInputError, writable_dir
from harness.values import missing

if TYPE_CHECKING:
    from harness.suite.plan import PlannedCase

SCHEMA_VERSION = 1
_META_KEY = b"harness.schema_version"

STATUSES = ("ok", "oom", "timeout", "error", "skipped")

#: Parameters of a case: the public column names (harness.schema).
PARAM_COLUMNS = schema.CASE_COLUMNS
#: Metric columns, units in the names. A metric that was not measured is missing (NaN/None).
METRIC_COLUMNS = schema.column_names("time", "memory", "flops", "structure", "derived")
ID_COLUMNS = tuple(c for c in schema.column_names("identity") if c != "schema_version")
REQUIRED_COLUMNS = ("schema_version", *ID_COLUMNS, *PARAM_COLUMNS)
#: Optional sizes a file written before they were declared lacks: read as missing (the
#: parameter applies to none of its cases), so older results and baselines stay readable.
LATER_OPTIONAL = schema.axis_names("size", optional=True)


class Row(Mapping[str, Any]):
    """A results row while its case is measured: the planned case (frozen, typed) and the
    columns measured so far. Reads like a mapping of every column it has; the case's own
    columns (``case_id``, ``label``, the parameters) are read-only, and setting a column
    :mod:`harness.schema` does not declare is an error. :meth:`RunDirectory.write_case`
    turns it into a dict."""

    def __init__(self, case: PlannedCase, values: Mapping[str, object] | None = None) -> None:
        self.case = case
        self._own: dict[str, object] = {"case_id": case.case_id, "label": case.label,
                                        **case.params()}
        self._values: dict[str, object] = {}
        self.update(values or {})

    def __getitem__(self, name: str) -> Any:
        return self._own[name] if name in self._own else self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter([*self._own, *self._values])

    def __len__(self) -> int:
        return len(self._own) + len(self._values)

    def __setitem__(self, name: str, value: object) -> None:
        if name in self._own:
            raise KeyError(f"{name!r} is a parameter of the case, not a measurement")
        if name not in _WRITABLE:
            raise KeyError(f"{name!r} is not a results column (declare it in harness.schema)")
        self._values[name] = value

    def update(self, values: Mapping[str, object] | None = None, /, **more: object) -> None:
        for name, value in {**(values or {}), **more}.items():
            self[name] = value

    def __repr__(self) -> str:
        return f"Row({self.case.label!r}, {self._values!r})"


_WRITABLE = frozenset(schema.column_names()) - {"schema_version"}
_ARROW = {c.name: {"Int64": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
                   "str": pa.string()}[c.dtype] for c in schema.COLUMNS}


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _table(df: pd.DataFrame) -> pa.Table:
    table = pa.Table.from_pandas(df, preserve_index=False)
    for i, name in enumerate(table.column_names):  # all missing: typed as declared, not null
        if pa.types.is_null(table.schema.field(i).type) and name in _ARROW:
            table = table.set_column(i, name, table.column(i).cast(_ARROW[name]))
    meta = dict(table.schema.metadata or {})
    meta[_META_KEY] = str(SCHEMA_VERSION).encode()
    return table.replace_schema_metadata(meta)


def normalize_row(row: Mapping[str, object]) -> dict[str, object]:
    """A row with every public column present (missing metrics as None), schema stamped,
    in the column order of :mod:`harness.schema`."""
    out: dict[str, object] = {"schema_version": SCHEMA_VERSION}
    for name in _ORDER:
        if name in _ALWAYS or name in row:
            out[name] = row.get(name)
    for name, value in row.items():
        if name not in out and name != "samples_s":
            out[name] = value
    if out["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {out['status']!r}")
    return out


_ORDER = tuple(c for c in schema.column_names() if c != "schema_version")
_ALWAYS = frozenset((*ID_COLUMNS, *PARAM_COLUMNS, *METRIC_COLUMNS))


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
        writable_dir(self.parts, "the output directory", self.path)

    def write_case(self, row: Mapping[str, object], samples_s: Iterable[float] = ()) -> None:
        """Persist one finished case atomically (its row, a :class:`Row` or a mapping of
        columns, and its raw samples)."""
        row = normalize_row(row)
        samples = [float(s) for s in samples_s]
        frame = pd.DataFrame([row])
        frame["samples_s"] = [samples]
        _atomic_write_table(_table(frame), self.parts / f"{row['case_id']}.parquet")

    def _read_parts(self) -> Iterator[pd.DataFrame]:
        """Every part, in name order; unreadable leftovers (a killed write) are skipped."""
        for part in sorted(self.parts.glob("*.parquet")):
            try:
                yield pq.read_table(part).to_pandas()
            except (OSError, pa.ArrowException):
                continue

    def finished(self) -> dict[str, dict[str, object]]:
        """Rows already written, keyed by case_id."""
        return {str(frame.loc[0, "case_id"]): frame.iloc[0].to_dict()
                for frame in self._read_parts() if len(frame) == 1}

    def merge(self) -> pd.DataFrame:
        """Rebuild results.parquet and samples.parquet from the parts (atomic replace)."""
        frames = list(self._read_parts())
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
    """Stable dtypes across parts, as :mod:`harness.schema` declares them: nullable Int64
    and boolean, float64, and text (None where missing)."""
    for column in schema.COLUMNS:
        # a value of another type keeps its column as written: a merge is never lost to it
        if column.name in df:
            with contextlib.suppress(TypeError, ValueError, OverflowError):
                df[column.name] = _COERCE[column.dtype](df[column.name])
    return df


def _as(make: Callable[[Any], object], dtype: str) -> Callable[[pd.Series], object]:
    def coerce(values: pd.Series) -> object:
        return pd.array([None if missing(v) else make(v) for v in values], dtype=dtype)

    return coerce


_COERCE: dict[str, Callable[[pd.Series], object]] = {
    "Int64": _as(int, "Int64"),
    "bool": _as(bool, "boolean"),
    "float": _as(float, "float64"),
    "str": lambda values: values.astype(object).where(values.notna(), None),
}


def read_table(path: Path, what: str) -> pa.Table:
    """A Parquet file as a table; bad input (one line) when it cannot be read."""
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarnessInputError(f"{path}: not a readable {what} ({first})") from None


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
    table = read_table(p, "Parquet results file")
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
    df = with_optional_sizes(table.to_pandas())
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise HarnessInputError(f"{p}: missing columns {', '.join(missing)}")
    return df


def with_optional_sizes(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every optional size column it lacks added as missing (Int64), in place."""
    for name in LATER_OPTIONAL:
        if name not in df.columns:
            df[name] = pd.array([None] * len(df), dtype="Int64")
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
