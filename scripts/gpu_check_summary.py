"""Summary of a gpu-check run: one line per case, status counts, and a pass/fail exit status.

Used by scripts/gpu-check.sh, so the log a GPU loan returns can be read without opening the
parquet file. Passes (exit 0) when every case is ``ok`` or ``oom``: the suite puts naive
attention past its OOM point on purpose. Telemetry columns are shown when the rows have them.

    python scripts/gpu_check_summary.py RUN_DIR/results.parquet
"""

from __future__ import annotations

import sys

import pandas as pd

#: Columns shown, in order, where present.
SHOWN = (
    "layer",
    "seq_len",
    "status",
    "time_ms_median",
    "peak_mem_gib",
    "gpu_sm_clock_mhz_after",
    "gpu_temperature_c_after",
    "gpu_power_w_after",
    "energy_j_per_call",
    "time_note",
    "message",
)
PASSING = ("ok", "oom")


def summarize(df: pd.DataFrame) -> tuple[str, bool]:
    """(printable summary, passed)."""
    view = df.copy()
    if "peak_mem_bytes" in view:
        view["peak_mem_gib"] = view["peak_mem_bytes"] / 2**30
    table = view[[c for c in SHOWN if c in view]].to_string(
        index=False, float_format="{:.4g}".format
    )
    counts = view["status"].value_counts() if "status" in view else pd.Series(dtype=int)
    line = "status: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no rows")
    passed = len(view) > 0 and "status" in view and bool(view["status"].isin(PASSING).all())
    return f"{table}\n{line}", passed


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: gpu_check_summary.py RESULTS.parquet", file=sys.stderr)
        return 2
    try:
        df = pd.read_parquet(argv[0])
    except (OSError, ValueError) as exc:
        print(f"no results to summarise: {exc}")
        return 1
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        text, passed = summarize(df)
    print(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
