"""Report inputs: results files (or dataframes) -> one dataframe with a ``run`` column.

Several results files compare runs (devices, versions, dtypes): their rows are concatenated
and each keeps the name of its run, derived from its path (``results/<suite>/<stamp>`` ->
"<suite>/<stamp>") or, for a dataframe, from its environment columns. Every analysis is
computed per run, so two runs of the same suite never mix in one fit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import pandas as pd

from harness.errors import HarnessInputError
from harness.results import REQUIRED_COLUMNS, read_results, with_optional_sizes

_STAMP = re.compile(r"\d{8}T\d{6}Z")

Source: TypeAlias = "str | os.PathLike[str] | pd.DataFrame"


@dataclass(frozen=True)
class RunInfo:
    """One input of a report: its display name, where it came from, its suite if known."""

    name: str
    source: str  # the results path, or "dataframe"
    suite: str | None
    description: str | None


def _run_dir(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def _suite_yaml(run_dir: Path) -> dict[str, Any]:
    """The suite's name and description from the suite.yaml a run writes beside its results
    (a label only; a missing or unreadable file is no error)."""
    file = run_dir / "suite.yaml"
    if not file.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: str(data[k]) for k in ("name", "description") if isinstance(data.get(k), str)}


def suite_name(path: str | os.PathLike) -> str | None:
    """The suite a results path belongs to: suite.yaml's name, else the folder above a
    timestamped run folder (``results/<suite>/<stamp>``), else None."""
    run_dir = _run_dir(Path(path))
    name = _suite_yaml(run_dir).get("name")
    if name:
        return name
    if _STAMP.fullmatch(run_dir.name) and run_dir.parent.name:
        return run_dir.parent.name
    return None


def _path_name(path: Path) -> str:
    if not path.is_dir() and path.name != "results.parquet":
        return path.stem
    run_dir = _run_dir(path)
    if _STAMP.fullmatch(run_dir.name) and run_dir.parent.name:
        return f"{run_dir.parent.name}/{run_dir.name}"
    return run_dir.name or str(run_dir)


def _frame_name(df: pd.DataFrame, index: int) -> str:
    if "run" in df.columns:
        names = df["run"].dropna().astype(str).unique()
        if len(names) == 1:
            return str(names[0])
    parts = []
    for column in ("env_device_name", "env_torch_version"):
        if column in df.columns:
            values = df[column].dropna().astype(str).unique()
            if len(values) == 1:
                parts.append(str(values[0]))
    return " ".join(parts) or f"run {index + 1}"


def _check_frame(df: pd.DataFrame, index: int) -> pd.DataFrame:
    df = with_optional_sizes(df.copy())
    need = [c for c in REQUIRED_COLUMNS if c != "schema_version"]
    lacking = [c for c in need if c not in df.columns]
    if lacking:
        raise ValueError(
            f"results dataframe {index + 1} lacks column(s) {', '.join(lacking)}; pass the "
            "dataframe harness.results.read_results returns"
        )
    return df.copy()


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name} #{k}", k + 1
    taken.add(out)
    return out


def load_runs(sources: Source | Sequence[Source]) -> tuple[pd.DataFrame, list[RunInfo]]:
    """Read every source (path, run directory or dataframe) into one frame with ``run``.

    Raises HarnessInputError (one line) for a missing, empty, corrupt, wrong-schema or
    newer-schema file, or when no source is given; ValueError for a dataframe without the
    results columns (a programming error, not user input).
    """
    if isinstance(sources, (str, os.PathLike, pd.DataFrame)) or hasattr(sources, "results_file"):
        sources = [sources]
    sources = list(sources)
    if not sources:
        raise HarnessInputError("no results given; pass one or more results files")
    frames: list[pd.DataFrame] = []
    runs: list[RunInfo] = []
    taken: set[str] = set()
    for index, given in enumerate(sources):
        source: Any = given
        if hasattr(source, "results_file"):  # a RunDirectory
            source = source.path
        if isinstance(source, pd.DataFrame):
            df = _check_frame(source, index)
            info = RunInfo(_unique(_frame_name(df, index), taken), "dataframe", None, None)
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            df = read_results(path)
            meta = _suite_yaml(_run_dir(path))
            info = RunInfo(_unique(_path_name(path), taken), str(path),
                           meta.get("name") or suite_name(path), meta.get("description"))
        else:
            raise TypeError(f"a results source is a path or a DataFrame, got "
                            f"{type(source).__name__}")
        df = df.drop(columns=["run"], errors="ignore")
        df.insert(0, "run", info.name)
        frames.append(df)
        runs.append(info)
    combined = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    combined = combined.reset_index(drop=True)
    return combined, runs
