"""``--shard I/N`` and ``harness merge``: shards of a plan are the plan, each case once."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from test_run import TINY, harness

from harness.results import read_results
from harness.shard import Shard, assign, estimate_s, select

# one timing round and no retries: these tests are about which cases run where
FAST = ("--set", "measure.rounds=1", "--set", "measure.retries=0")


def _plan(text: str = TINY):
    import tempfile

    from harness.suite import expand, load_suite

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "suite.yaml"
        path.write_text(text)
        suite = load_suite(path, check_device=False)
    return suite, expand(suite)


def test_shard_spec_parses_and_refuses_nonsense():
    assert Shard.parse(" 2/8 ") == Shard(2, 8)
    assert Shard(2, 8).tag == "shard-2-of-8"
    for bad in ("0/3", "4/3", "1/0", "a/3", "1-3", "2"):
        with pytest.raises(ValueError, match=r"I/N|1 <= I <= N"):
            Shard.parse(bad)


def test_shards_partition_the_plan_deterministically():
    suite, plan = _plan(TINY.replace("seq_len: [8, 12]", "seq_len: [8, 12, 16, 24, 32]"))
    for count in (1, 2, 3, 7, len(plan) + 2):
        picked = [select(plan, Shard(i, count), suite.measure) for i in range(1, count + 1)]
        flat = sorted(i for share in picked for i in share)
        assert flat == list(range(len(plan)))  # every case once
        assert all(share == sorted(share) for share in picked)  # plan order kept
        assert picked == [select(plan, Shard(i, count), suite.measure)
                          for i in range(1, count + 1)]  # same split on every call


def test_shards_balance_estimated_cost_not_count():
    # one large attention case costs more than all the small ones together: it gets a shard
    # of its own instead of a third of the cases
    suite, plan = _plan(TINY.replace("seq_len: [8, 12]", "seq_len: [8, 12, 16384]")
                        .replace("d_model: [8]", "d_model: [256]"))
    costs = [estimate_s(p, suite.measure) for p in plan]
    big = max(range(len(plan)), key=costs.__getitem__)
    assert costs[big] > sum(costs) - costs[big]
    shard_of = assign(plan, 2, lambda p: costs[plan.index(p)])
    assert shard_of.count(shard_of[big]) == 1
    # the classic bound of largest-first greedy: no shard above the mean plus the largest case
    for count in (2, 3, 4):
        shard_of = assign(plan, count, lambda p: costs[plan.index(p)])
        loads = [sum(c for c, s in zip(costs, shard_of, strict=True) if s == k)
                 for k in range(1, count + 1)]
        assert max(loads) <= sum(costs) / count + max(costs)


def test_estimate_grows_with_the_case_and_is_zero_for_a_skipped_one():
    suite, plan = _plan(TINY.replace("heads: [2]", "heads: [2, 3]"))
    skipped = [p for p in plan if not p.runnable]
    assert skipped and all(estimate_s(p, suite.measure) == 0 for p in skipped)
    lstm = {p.case.seq_len: estimate_s(p, suite.measure) for p in plan if p.layer == "lstm"}
    assert lstm[12] > lstm[8] > 0


def test_three_shards_merged_equal_the_unsharded_case_set(tmp_path):
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(TINY)
    _, plan = _plan()
    outs = [tmp_path / f"s{i}" for i in (1, 2, 3)]
    for i, out in enumerate(outs, 1):
        proc = harness("run", str(suite_file), "--shard", f"{i}/3", "--out", str(out), *FAST)
        assert proc.returncode == 0, proc.stderr
        assert f"(shard {i}/3)" in proc.stderr
    merged = tmp_path / "all"
    proc = harness("merge", *map(str, outs), "--out", str(merged))
    assert proc.returncode == 0, proc.stderr
    df = read_results(merged)
    assert list(df["case_id"]) == [p.case_id for p in plan]  # plan order: case_index kept
    assert list(df["case_index"]) == list(range(len(plan)))
    assert set(df["status"]) == {"ok"}
    shares = [set(read_results(out)["case_id"]) for out in outs]
    assert all(shares) and sum(map(len, shares)) == len(plan)

    # refusals: one line, exit 2
    again = harness("merge", str(outs[0]), str(merged), "--out", str(tmp_path / "x"))
    _one_line(again, "is in both")
    other = tmp_path / "other"
    shutil.copytree(outs[1], other)
    (other / "suite.yaml").write_text(TINY.replace("batch: 1", "batch: 2"))
    _one_line(harness("merge", str(outs[0]), str(other), "--out", str(tmp_path / "y")),
              "suite.yaml differs")
    _one_line(harness("merge", *map(str, outs), "--out", str(merged)), "already holds results")
    _one_line(harness("run", str(suite_file), "--shard", "3/2"), "--shard", "1 <= I <= N")
    _one_line(harness("run", str(suite_file), "--ray-address", "127.0.0.1:1"),
              "only with --executor ray")


def _one_line(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    # a plugin that cannot load warns on every command; that is not this command's error
    lines = [line for line in proc.stderr.strip().splitlines()
             if not line.startswith("harness: layer plugin")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_ray_executor_without_ray_names_the_extra(tmp_path, monkeypatch, capsys):
    from harness.cli import main

    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(TINY)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = main(["run", str(suite_file), "--executor", "ray", "--out", str(tmp_path / "r")])
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("harness: layer plugin")]
    assert code == 2
    assert len(err) == 1 and '.[ray]' in err[0], err
    assert not (tmp_path / "r").exists()
