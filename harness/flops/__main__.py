"""Print the three FLOP sources for every registered layer's default variant.

``python -m harness.flops [n] [d] [heads] [kernel] [window] [batch]``
(defaults 1024 512 8 7 64 1, non-causal).
"""

from __future__ import annotations

import sys
import time

from tabulate import tabulate

from harness.flops.layer import count_layer
from harness.registry import entries
from harness.spec import LayerCase


def _case(argv: list[str]) -> LayerCase:
    defaults = [1024, 512, 8, 7, 64, 1]
    values = [int(a) for a in argv] + defaults[len(argv):]
    n, d, heads, kernel, window, batch = values[:6]
    return LayerCase(seq_len=n, d_model=d, heads=heads, kernel=kernel, window=window,
                     batch=batch)


def main(argv: list[str]) -> int:
    case = _case(argv)
    print(f"forward FLOPs (2 per multiply-add), {case}")
    rows = []
    for entry in entries():
        case_ = entry.normalize(case)
        if entry.problem(case_):
            rows.append((entry.name, "", "", "", "", "", f"skipped: {entry.problem(case_)}"))
            continue
        start = time.perf_counter()
        row = count_layer(entry, case_)
        seconds = time.perf_counter() - start
        uncounted = (*row["uncounted_fvcore"], *row["uncounted_torch"]) or "-"
        rows.append((row["layer"], row["variant"], f"{row['flops_analytic']:,}",
                     f"{row['flops_fvcore']:,}", f"{row['flops_torch']:,}", f"{seconds:.2f}",
                     f"{uncounted} fvcore@{row['device_fvcore']} torch@{row['device_torch']}"))
    print(tabulate(rows, ("layer", "variant", "analytic", "fvcore", "torch", "seconds",
                          "uncounted / devices"),
                   disable_numparse=True, colalign=("left", "left", *["right"] * 4, "left")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
