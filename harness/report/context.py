"""What every section builder needs: the combined frame, the runs, the figure look, and
helpers to compute an analysis per run (two runs never share a fit)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness import schema
from harness.analysis.frame import ok_mask
from harness.report import fmt
from harness.report.inputs import RunInfo
from harness.report.model import Cell
from harness.report.style import Look, make_look
from harness.results import PARAM_COLUMNS


@dataclass
class Context:
    df: pd.DataFrame
    runs: list[RunInfo]
    look: Look = field(init=False)
    constant: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.look = make_look(self.df, [r.name for r in self.runs])
        self.constant = frozenset(
            p for p in PARAM_COLUMNS if p in self.df.columns
            and len({fmt.plain(v) for v in self.df[p].astype(object).tolist()}) <= 1)

    @property
    def many(self) -> bool:
        """Several runs: tables get a run column, figures a point shape per run."""
        return len(self.runs) > 1

    def run_frames(self) -> Iterable[tuple[RunInfo, pd.DataFrame]]:
        for info in self.runs:
            yield info, self.df[self.df["run"] == info.name]

    def per_run(self, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
        """``fn`` on each run's rows, concatenated, with ``run`` as the first column."""
        parts = []
        for info, sub in self.run_frames():
            out = fn(sub.drop(columns=["run"]))
            if out is None or out.empty:
                continue
            out = out.copy()
            out.insert(0, "run", info.name)
            parts.append(out)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def short(self, description: Any, layer: Any = None) -> str:
        """A fixed-parameter description without what is constant over the report (and,
        given a layer, without its own parameters that never vary: heads=8 of attention)."""
        drop = set(self.constant)
        if layer is not None:
            rows = self.df[self.df["layer"].astype(str) == str(layer)]
            drop |= {p for p in schema.axis_names(optional=True)
                     if p in rows.columns
                     and len({fmt.plain(v) for v in rows[p].astype(object).tolist()}) <= 1}
        return fmt.shorten(fmt.text(description), drop)

    def ok_count(self, df: pd.DataFrame | None = None) -> int:
        frame = self.df if df is None else df
        return int(ok_mask(frame).sum()) if len(frame) else 0

    def sort(self, frame: pd.DataFrame, *then: str) -> pd.DataFrame:
        """Rows in report order: run as given, layers in family order, then ``then``."""
        if frame.empty:
            return frame
        run_rank = {r.name: i for i, r in enumerate(self.runs)}
        keyed = frame.assign(
            _run=frame["run"].map(run_rank) if "run" in frame.columns else 0,
            _layer=frame["layer"].astype(str).map(self.look.rank),
        )
        cols = ["_run", "_layer", *[c for c in ("variant", *then) if c in frame.columns]]
        return keyed.sort_values(cols, kind="stable").drop(columns=["_run", "_layer"])

    def lead(self, row: Any) -> list[Cell]:
        """The run cell, present only when the report compares runs."""
        return [Cell(fmt.text(row["run"]))] if self.many else []

    def lead_columns(self) -> list[str]:
        return ["run"] if self.many else []
