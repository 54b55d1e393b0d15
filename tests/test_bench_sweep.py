"""bench/sweep.py's verdict: per-seed baseline / camp ratios, their median, and how not-reached counts."""

import importlib.util
from argparse import Namespace
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("bench_sweep", Path(__file__).parent.parent / "bench" / "sweep.py")
bench_sweep = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench_sweep)


def _runs(arm: str, times: dict) -> list[dict]:
    return [{"arm": arm, "seed": seed, "time_to_target_s": seconds, "wall_s": 700.0} for seed, seconds in times.items()]


def test_the_median_of_per_seed_ratios_decides_and_neither_reached_counts_as_no_speed_up():
    by_arm = {"camp": _runs("camp", {42: 100.0, 43: 50.0, 44: None}),
              "baseline": _runs("baseline", {42: 300.0, 43: None, 44: None})}
    out = bench_sweep.per_seed_ratios(by_arm, Namespace(budget=600.0))
    rows = {row["seed"]: row for row in out["per_seed"]}
    assert rows[42]["ratio"] == 3.0 and rows[42]["bound"] == "exact"
    assert rows[43]["ratio"] == 12.0 and rows[43]["bound"] == "lower_bound"  # the budget stands in for the baseline
    assert rows[44]["ratio"] is None and rows[44]["bound"] == "neither_reached"
    assert out["median_ratio"] == 3.0 and out["median_ratio_met"] is True  # median of 3, 12 and 0


@pytest.mark.parametrize("camp_times, met", [({42: 400.0, 43: 100.0, 44: None}, False),
                                             ({42: 100.0, 43: 100.0, 44: 400.0}, True)])
def test_a_seed_where_only_camp_missed_is_at_most_even(camp_times, met):
    by_arm = {"camp": _runs("camp", camp_times), "baseline": _runs("baseline", {42: 500.0, 43: 250.0, 44: 450.0})}
    out = bench_sweep.per_seed_ratios(by_arm, Namespace(budget=600.0))
    assert out["median_ratio_met"] is met
    if camp_times[44] is None:
        assert [row["bound"] for row in out["per_seed"]][-1] == "upper_bound"
        assert out["per_seed"][-1]["ratio"] == 0.75  # 450 / the 600 s budget
