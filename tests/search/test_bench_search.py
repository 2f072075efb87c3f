"""bench/search.py's accounting: the random search's exact expectation, each search's pick
and the compute it took, on hand-made reports (the benchmark's verdict rests on these)."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics

import pytest
from benches import bench_module


@pytest.fixture(scope="module")
def bench():
    with bench_module("search") as module:
        yield module


def report(trial, iteration, top1, seconds, diverged=False):
    return {
        "trial_id": trial,
        "iteration": iteration,
        "val_top1": top1,
        "time_total_s": seconds,
        "full": 20,
        "diverged": diverged,
    }


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_expected_pick_is_the_mean_over_every_draw(bench, k):
    pool = [(0.30, 0.45), (0.36, 0.49), (0.22, 0.42), (0.35, 0.45), (0.15, 0.23)]
    brute = statistics.mean(max(draw)[1] for draw in itertools.combinations(pool, k))
    assert bench.expected_pick(pool, k) == pytest.approx(brute)
    assert bench.expected_pick(pool, len(pool)) == pytest.approx(0.49)  # all: the top score's


def test_expected_pick_counts_ties_at_their_mean_and_takes_all_when_short(bench):
    """Two draws tie on the score: a search keeps either, blind to their judged value."""
    pool = [(0.5, 0.40), (0.5, 0.60), (0.1, 0.20)]
    assert bench.expected_pick(pool, 1) == pytest.approx(0.40)
    assert bench.expected_pick(pool, 2) == pytest.approx((0.50 + 0.40 + 0.60) / 3)
    assert bench.expected_pick(pool, 3) == pytest.approx(0.50)
    assert bench.expected_pick(pool, 8) == pytest.approx(0.50)  # a diverged draw left 3 of 8
    assert math.isnan(bench.expected_pick([], 8))


def test_curve_counts_compute_and_follows_the_pick(bench):
    reports = [
        report("b", 5, 0.30, 10.0),
        report("b", 20, 0.34, 40.0),  # complete: the pick
        report("a", 5, 0.10, 8.0),  # stopped at its first rung
        report("c", 5, 0.31, 9.0),
        report("c", math.nan, math.nan, 12.0, diverged=True),  # counted up to its next eval
        report("d", 20, 0.34, 41.0),  # ties the pick with a higher id: not taken
        report("a2", 20, 0.34, 39.0),  # ties with a lower id: taken, as the search would
    ]
    points = bench.curve(reports, eval_every=5)
    assert [p[0] for p in points] == [5, 20, 25, 30, 35, 55, 75]
    assert points[-1][1] == pytest.approx(40 + 8 + 12 + 41 + 39)
    assert [p[3] for p in points] == [None, "b", "b", "b", "b", "b", "a2"]
    assert bench.reached(points, 0.34) == (20, 40.0)
    assert bench.reached(points, 0.35) is None
    judged = {"b": 0.40, "a2": 0.47}
    assert bench.reached(points, 0.45, lambda best, pick: judged[pick]) == (75, 140.0)


def test_rank_correlation(bench):
    assert bench.rank_correlation([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)
    assert bench.rank_correlation([1, 1, 2], [5, 5, 9]) == pytest.approx(1.0)
    assert bench.rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(bench.rank_correlation([1, 2, 3], [0, 0, 0]))  # smoke runs score 0


def test_judged_sets_are_keyed_by_what_judging_reads(bench, tmp_path):
    def saved(name, tensors=b"\x00\x01", own_eval=None):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "tensors.safetensors").write_bytes(tensors)
        manifest = {"trial": name} | ({"eval": own_eval} if own_eval is not None else {})
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return bench.set_digest(folder)

    same = saved("t1"), saved("t2")  # the same set from two experiments: judged once
    assert same[0] == same[1]
    assert saved("t3", tensors=b"\x00\x02") != same[0]
    assert saved("t4", own_eval={"syn_lr": 0.01}) != same[0]


@pytest.mark.parametrize(
    ("space", "smoke", "iterations", "max_start_epoch"),
    [("quickstart", False, 20, 2), ("quickstart", True, 2, None), ("full", False, None, None)],
)
def test_quickstart_problem_is_the_published_one_and_a_smoke_run_stays_small(
    bench, space, smoke, iterations, max_start_epoch
):
    """The bench keeps the problem its figures were measured on; a smoke run keeps its sizing."""
    from s2d_ray.search.config import SearchConfig, load_config_space
    from s2d_ray.search.spaces import load_space

    full = bench.ROOT / "tune_spaces" / "embedded_ipc1_s2d-mtt.yaml"
    path = bench.QUICKSTART if space == "quickstart" else full
    args = argparse.Namespace(space=str(path), smoke_test=smoke)
    config = SearchConfig(space=str(path), overrides=bench.problem(args), smoke=smoke)
    loaded, shipped = load_config_space(config), load_space(path, [])
    assert loaded.budget.iterations == (iterations or shipped.budget.iterations)
    if max_start_epoch is not None:
        assert loaded.fixed["max_start_epoch"] == max_start_epoch
    elif not smoke:
        assert loaded.fixed == shipped.fixed
