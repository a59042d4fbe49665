"""``harness run --shard I/N``: one job of an array runs a deterministic share of a plan.

The shares are balanced by an estimate of what each case costs, not by count: a suite that
sweeps n up to 32k has a few cases worth more than all the small ones together. The estimate
is the suite's time budget per case (timing is budgeted in seconds, whatever the case) plus
the analytic FLOPs of the calls a case cannot avoid (warm-ups and the minimum samples) at a
nominal rate. It only has to rank cases; it is not a prediction of the run's duration.

Cases are dealt largest estimate first to the least loaded shard (ties: the lower shard),
in a fixed order (estimate, then case_id), so every job of an array computes the same split
without talking to the others, and the N shares together are the plan, each case once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness import registry
from harness.suite.plan import PlannedCase

#: Nominal FLOP/s by device kind: only the ranking of cases depends on it.
NOMINAL_RATE = {"cpu": 2e10, "cuda": 2e13}
#: What a case costs besides its timing (build, FLOP counters, structure, memory), seconds.
CASE_OVERHEAD_S = 0.5

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 1 <= I <= N")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"2/8"`` -> Shard(2, 8); ValueError with the rule otherwise."""
        match = _SPEC.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not I/N (e.g. 2/8: the second of 8 shards)")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def tag(self) -> str:
        """For folder names: ``shard-2-of-8``."""
        return f"shard-{self.index}-of-{self.count}"


def _flops(planned: PlannedCase) -> int:
    entry = registry.get(planned.layer)
    try:
        if planned.mode == "decode":
            step = entry.step_cost_of(planned.case, planned.variant)
            return step.flops if step is not None else 0
        cost = entry.cost_of(planned.case, planned.variant)
    except ValueError:
        return 0
    return cost.train_flops if planned.mode == "train" else cost.flops


def estimate_s(planned: PlannedCase, measure: Any) -> float:
    """Rough seconds a case costs under a suite's ``measure`` settings (0 for a skipped case)."""
    if planned.skip_reason:
        return 0.0
    rate = NOMINAL_RATE["cuda" if str(planned.device).startswith("cuda") else "cpu"]
    calls = measure.min_warmup + measure.min_samples * measure.rounds
    timed = measure.time_budget_s + measure.warmup_s
    return CASE_OVERHEAD_S + timed + calls * _flops(planned) / rate


def assign(plan: Sequence[PlannedCase], count: int,
           estimate: Callable[[PlannedCase], float]) -> list[int]:
    """The shard (1-based) of each case of ``plan``, balanced by ``estimate``."""
    costs = [estimate(p) for p in plan]
    order = sorted(range(len(plan)), key=lambda i: (-costs[i], plan[i].case_id))
    load = [0.0] * count
    taken = [0] * count
    shard_of = [0] * len(plan)
    for i in order:
        # least estimated load, then fewest cases (spreads the free skipped cases), then lowest
        target = min(range(count), key=lambda s: (load[s], taken[s], s))
        load[target] += costs[i]
        taken[target] += 1
        shard_of[i] = target + 1
    return shard_of


def select(plan: Sequence[PlannedCase], shard: Shard, measure: Any) -> list[int]:
    """Indices into ``plan`` (in plan order) of the cases ``shard`` runs."""
    shard_of = assign(plan, shard.count, lambda p: estimate_s(p, measure))
    return [i for i, s in enumerate(shard_of) if s == shard.index]
