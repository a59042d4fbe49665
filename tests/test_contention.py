"""Contention: the run-queue wait counter, the per-sample rule, rounds and their selection.

Everything here runs on scripted clocks and counters: no test depends on this machine's
load or speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.measure.contention import (
    ContentionRule,
    SchedstatWait,
    disturbed_flags,
    select_rounds,
    wait_counter,
)
from harness.measure.timing import Samples, TimingConfig, TimingResult, collect_samples
from harness.spec import LayerCase

RULE = ContentionRule(sample_wait=0.05, round_disturbed=0.25)


def test_a_sample_is_disturbed_when_its_threads_waited_more_than_the_rule():
    samples = [0.010, 0.010, 0.010, 0.0]
    waits = [0.0, 0.0004, 0.0006, 0.0]  # 0 %, 4 %, 6 % of the sample
    assert disturbed_flags(samples, waits, RULE) == (False, False, True, False)
    assert disturbed_flags(samples, None, RULE) == (False,) * 4
    with pytest.raises(ValueError, match="3 waits for 4 samples"):
        disturbed_flags(samples, waits[:3], RULE)


def test_rule_rejects_nonsense():
    with pytest.raises(ValueError, match="sample_wait"):
        ContentionRule(sample_wait=1.5)
    with pytest.raises(TypeError, match="round_disturbed"):
        ContentionRule(round_disturbed="lots")  # type: ignore[arg-type]


def test_clean_rounds_give_their_undisturbed_samples():
    quiet = ([1.0, 1.1, 1.2, 5.0], [0.0, 0.0, 0.0, 2.0])  # one disturbed sample of 4: clean
    loaded = ([3.0, 3.0, 3.0, 3.0], [1.5, 1.5, 1.5, 1.5])  # every sample disturbed
    chosen = select_rounds([loaded, quiet], RULE)
    assert chosen.kept == (1.0, 1.1, 1.2)
    assert (chosen.rounds, chosen.clean_rounds, chosen.contended) == (2, 1, False)
    assert chosen.disturbed_frac == pytest.approx(5 / 8)
    assert chosen.note is None


def test_no_clean_round_keeps_the_least_disturbed_and_says_so():
    bad = ([2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0])  # 100 %
    less_bad = ([1.0, 1.5, 1.5, 1.5], [0.0, 0.5, 0.5, 0.5])  # 75 %: not clean
    chosen = select_rounds([bad, less_bad], RULE)
    assert chosen.contended and chosen.clean_rounds == 0
    assert chosen.kept == (1.0,)  # the least disturbed round's undisturbed sample
    assert chosen.note == (
        "contended: threads waited for a CPU in 75%-100% of the samples of all 2 rounds"
    )


def test_unobservable_waits_are_neither_clean_nor_contended():
    chosen = select_rounds([([1.0, 2.0], None)], RULE)
    assert chosen.kept == (1.0, 2.0) and not chosen.contended
    assert chosen.disturbed_frac is None and chosen.note is None


@dataclass
class Scripted:
    """A block timer and a wait counter that replay a script: (seconds, waited) per block."""

    script: list[tuple[float, float]]
    waited: float = 0.0
    calls: list[int] = field(default_factory=list)

    def block(self, calls: int) -> float:
        seconds, waited = self.script.pop(0)
        self.calls.append(calls)
        self.pending = waited
        return seconds

    def wait(self) -> float:
        # read before and after each block: the block's wait shows up at the second read
        self.waited += getattr(self, "pending", 0.0)
        self.pending = 0.0
        return self.waited


def test_engine_reads_the_wait_counter_around_every_kept_block():
    config = TimingConfig(min_warmup=1, warmup_s=0.0, budget_s=0.0, min_samples=3,
                          max_samples=3, min_block_s=0.0)
    script = Scripted([(0.01, 0.0), (0.01, 0.0), (0.02, 0.01), (0.01, 0.0)])
    sampled = collect_samples(script.block, config, fixed_calls=1, wait=script.wait)
    assert sampled.samples == (0.01, 0.02, 0.01)  # the warm-up block is not a sample
    assert sampled.waits == (0.0, 0.01, 0.0)
    assert sampled.wall_s is not None and sampled.wall_s >= 0


def test_engine_without_a_counter_leaves_waits_unknown():
    config = TimingConfig(min_warmup=0, warmup_s=0.0, budget_s=0.0, min_samples=2,
                          max_samples=2, min_block_s=0.0)
    script = Scripted([(0.01, 0.0), (0.01, 0.0)])
    assert collect_samples(script.block, config, fixed_calls=1).waits is None


def _round(samples: list[float], waits: list[float] | None) -> Samples:
    return Samples(tuple(samples), 1, 0, None if waits is None else tuple(waits), wall_s=1.0)


def test_result_from_rounds_is_unreliable_with_its_reasons():
    loaded = _round([3.0, 3.0, 3.1, 3.0], [1.0, 1.0, 1.0, 1.0])
    result = TimingResult.from_rounds([loaded, loaded], rule=RULE)
    assert result.unreliable and result.rounds == 2 and result.rounds_clean == 0
    row = result.as_row()
    assert row["time_unreliable"] is True
    assert row["time_note"].startswith("contended: ")
    assert row["time_rounds"] == 2 and row["time_disturbed_frac"] == 1.0
    assert row["time_wall_s"] == 2.0 and row["time_sampled_s"] == pytest.approx(24.2)


def test_result_from_a_quiet_round_is_reliable_and_spread_still_counts():
    quiet = _round([1.0, 1.0, 1.0, 1.0], [0.0] * 4)
    assert TimingResult.from_rounds([quiet], rule=RULE).note is None
    wide = _round([1.0, 2.0, 3.0, 4.0], [0.0] * 4)
    result = TimingResult.from_rounds([wide], rule=RULE, spread_threshold=0.1)
    assert result.unreliable and result.note == "spread: IQR/median 0.60"


def test_schedstat_counter_sums_threads_and_forgets_the_ones_that_exit(tmp_path: Path):
    tasks = tmp_path / "task"
    for tid, wait_ns in (("10", 2_000_000_000), ("11", 500_000_000)):
        (tasks / tid).mkdir(parents=True)
        (tasks / tid / "schedstat").write_text(f"123 {wait_ns} 7\n")
    counter = wait_counter(tasks)
    assert isinstance(counter, SchedstatWait)
    assert counter() == pytest.approx(2.5)
    (tasks / "11" / "schedstat").write_text("123 900000000 8\n")  # same fd re-read
    assert counter() == pytest.approx(2.9)
    (tasks / "11" / "schedstat").unlink()
    (tasks / "11").rmdir()
    assert counter() == pytest.approx(2.0)
    counter.close()


def test_no_counter_where_schedstat_is_missing(tmp_path: Path):
    assert wait_counter(tmp_path / "nothing") is None
    (tmp_path / "task" / "1").mkdir(parents=True)
    (tmp_path / "task" / "1" / "schedstat").write_text("garbage\n")
    assert wait_counter(tmp_path / "task") is None


# ---- the runner's rounds, with execute/retime replaced by scripted fakes -------------------


_SIZES = LayerCase(seq_len=4, d_model=2)


@dataclass(frozen=True)
class FakeCase:
    case_id: str
    label: str
    skip_reason: str | None = None
    case: LayerCase = _SIZES

    def params(self) -> dict[str, Any]:
        return {"layer": "fake", "seq_len": self.case.seq_len, "batch": self.case.batch}


def _settings(rounds: int, retries: int) -> Any:
    from harness.measure_case import ExecSettings

    return ExecSettings(timing=TimingConfig(), rounds=rounds, retries=retries,
                        env={"env_hostname": "fake"})


def _fake_measurements(monkeypatch: pytest.MonkeyPatch, loaded: set[str]):
    """execute/retime fakes: cases in ``loaded`` have every sample disturbed."""
    import harness.sweep as sweep

    order: list[tuple[str, str]] = []

    def samples_for(case_id: str) -> Samples:
        waits = [0.02] * 4 if case_id in loaded else [0.0] * 4
        return _round([0.01, 0.01, 0.011, 0.01], waits)

    def execute(planned: Any, settings: Any):
        order.append(("case", planned.case_id))
        from harness.measure_case import apply_timing
        from harness.results import Row

        row = Row(planned)  # a fake layer has no registry entry, hence no theory
        row.update(status="ok", flops_analytic=100)
        rounds = [samples_for(planned.case_id)]

        apply_timing(row, rounds, settings)
        return row, rounds

    def retime(planned: Any, settings: Any) -> Samples:
        order.append(("round", planned.case_id))
        return samples_for(planned.case_id)

    monkeypatch.setattr(sweep, "execute", execute)
    monkeypatch.setattr(sweep, "retime", retime)
    return order


def test_rounds_interleave_across_the_sweep_and_retries_come_last(monkeypatch, tmp_path):
    from harness.results import RunDirectory
    from harness.sweep import run_cases

    order = _fake_measurements(monkeypatch, loaded={"b"})
    plan = [FakeCase("a", "A"), FakeCase("b", "B"), FakeCase("c", "C")]
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create()
    progress: list[tuple[int, int]] = []
    outcome = run_cases(plan, run_dir, lambda p: _settings(rounds=3, retries=2), timeout_s=5,
                        isolate=False, progress=lambda d, t, row: progress.append((d, t)))
    assert order == [
        ("case", "a"), ("case", "b"), ("case", "c"),
        ("round", "a"), ("round", "b"), ("round", "c"),
        ("round", "a"), ("round", "b"), ("round", "c"),
        ("round", "b"), ("round", "b"),  # the two retries of the contended case only
    ]
    assert outcome.contended == 1 and outcome.rows_written == 3
    assert progress[-1] == (11, 11)  # 9 rounds planned, 2 retries added
    df = run_dir.merge().set_index("case_id")
    assert list(df["time_rounds"]) == [3, 5, 3]
    assert df.loc["b", "time_unreliable"] and not df.loc["a", "time_unreliable"]
    assert df.loc["b", "time_note"].startswith("contended:")
    assert df.loc["a", "time_rounds_clean"] == 3


def test_a_retry_that_finds_a_quiet_moment_clears_the_flag(monkeypatch, tmp_path):
    from harness.results import RunDirectory
    from harness.sweep import run_cases

    loaded = {"a"}
    order = _fake_measurements(monkeypatch, loaded=loaded)
    import harness.sweep as sweep

    real_retime = sweep.retime

    def retime(planned: Any, settings: Any) -> Samples:
        if sum(1 for kind, _ in order if kind == "round") >= 1:
            loaded.clear()  # the other process has finished by round 2
        return real_retime(planned, settings)

    monkeypatch.setattr(sweep, "retime", retime)
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create()
    outcome = run_cases([FakeCase("a", "A")], run_dir, lambda p: _settings(2, 2),
                        timeout_s=5, isolate=False)
    df = run_dir.merge()
    assert outcome.contended == 0
    # rounds 1-2 disturbed, retry 1 clean: no second retry, and the clean round decides
    assert df.loc[0, "time_rounds"] == 3 and df.loc[0, "time_rounds_clean"] == 1
    assert not df.loc[0, "time_unreliable"]


def test_resume_measures_again_a_case_that_lacks_rounds(monkeypatch, tmp_path):
    from harness.results import RunDirectory
    from harness.sweep import env_fingerprint, run_cases

    order = _fake_measurements(monkeypatch, loaded=set())
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create()
    fingerprint = env_fingerprint({"env_hostname": "fake"})
    for case_id, rounds in (("a", 3), ("b", 1)):  # b was killed after its first round
        run_dir.write_case({"case_id": case_id, "label": case_id, "status": "ok",
                            "time_rounds": rounds, "env_fingerprint": fingerprint})
    outcome = run_cases([FakeCase("a", "A"), FakeCase("b", "B")], run_dir,
                        lambda p: _settings(3, 0), timeout_s=5, resume=True, isolate=False)
    assert outcome.reused == 1
    assert order == [("case", "b"), ("round", "b"), ("round", "b")]
