"""Analytic max path length of a stack of identical windowed layers (conv, local attention).

A layer whose output t sees inputs t - back .. t + ahead (``reach`` in common.py) lets L
stacked layers see t - L*back .. t + L*ahead. Every output depends on every input (causal:
every earlier-or-equal input) once L*back >= n-1 and (non-causal) L*ahead >= n-1, so the
max path length (Vaswani et al. sec. 4) is the least such L: O(n/k).
"""

from __future__ import annotations

import math

from harness.layers.common import reach


def stacked_path_length(seq_len: int, width: int, causal: bool) -> float:
    """Least number L >= 1 of stacked width-``width`` layers connecting all (allowed) pairs.

    ``math.inf`` when a direction that must be covered has reach 0 and ``seq_len`` > 1
    (width 1, or non-causal width 2 which never looks back).
    """
    if seq_len < 1 or width < 1:
        raise ValueError(f"seq_len and width must be >= 1, got {seq_len}, {width}")
    back, ahead = reach(width, causal)
    step = back if causal else min(back, ahead)
    if seq_len == 1:
        return 1
    if step == 0:
        return math.inf
    return max(1, math.ceil((seq_len - 1) / step))
