"""bench/'s pure parts: ratios, aims, the printed line, and which cause a table-size result names."""

from __future__ import annotations

import pytest

from bench.run import Latencies, Plan, emulator_bound_note, parse_plan, table_size_results
from bench.stats import Aim, Result, format_ratio, median, ratio


def test_an_aim_is_met_on_its_boundary_and_not_past_it() -> None:
    assert Aim(">=", 0.5).met(0.5) and not Aim(">=", 0.5).met(0.49)
    assert Aim("<=", 1.2).met(1.2) and not Aim("<=", 1.2).met(1.21)


def test_ratio_and_median_refuse_what_would_print_a_meaningless_figure() -> None:
    with pytest.raises(ValueError):
        ratio(1.0, 0.0)
    with pytest.raises(ValueError):
        median([])
    assert median([3.0, 1.0, 2.0]) == 2.0


def test_a_result_line_names_the_ratio_the_baseline_and_the_verdict() -> None:
    result = Result("gateway_vs_direct_rps", 412 / 580, "gateway 412 rps / direct 580 rps", Aim(">=", 0.5))
    assert result.line() == ("gateway_vs_direct_rps  ratio=0.71  (gateway 412 rps / direct 580 rps)  "
                             "aim >= 0.5: met")
    assert Result("context", 3.0, "x", None).line().endswith("context, no aim")
    assert Result("slow", 2.0, "x", Aim("<=", 1.2)).line().endswith("aim <= 1.2: NOT met")


def test_large_ratios_print_without_false_precision() -> None:
    assert [format_ratio(v) for v in (0.714, 12.345, 123.4)] == ["0.71", "12.3", "123"]


def _latencies(jobs: int, list_ms: float, query_ms: float) -> Latencies:
    return Latencies(jobs, [list_ms / 1000], [query_ms / 1000])


def test_GIVEN_the_emulator_query_grows_with_the_table_and_the_list_no_more_THEN_the_emulator_is_named() -> None:
    results = table_size_results(_latencies(100, 40, 35), _latencies(100_000, 2505, 2500), Plan(jobs=100_000))
    listing, query, beyond = results
    assert listing.met is False and "the emulator is the cause" in listing.note
    assert query.aim is None and query.ratio == pytest.approx(2500 / 35)
    assert beyond.met is True


def test_GIVEN_the_list_grows_more_than_the_query_THEN_our_code_is_named() -> None:
    listing, _, beyond = table_size_results(_latencies(100, 40, 35), _latencies(100_000, 400, 70),
                                            Plan(jobs=100_000))
    assert listing.met is False and "our code" in listing.note
    assert beyond.met is False


def test_GIVEN_the_list_keeps_its_cost_THEN_no_cause_is_named() -> None:
    listing, _, _ = table_size_results(_latencies(100, 40, 35), _latencies(100_000, 44, 36), Plan(jobs=100_000))
    assert listing.met is True and listing.note == ""


def _rps(name: str, direct: list[float]) -> Result:
    return Result(name, 1.0, "x", Aim(">=", 0.5), figures={"direct_rps": direct})


def test_the_full_page_figure_says_when_the_emulator_hides_the_gateway() -> None:
    empty = _rps("gateway_vs_direct_rps_empty_list", [200.0, 210.0])
    assert "gateway_vs_direct_rps_empty_list" in emulator_bound_note(_rps("full", [30.0, 29.0]), empty)
    assert emulator_bound_note(_rps("full", [150.0, 160.0]), empty) == ""


def test_quick_plans_a_smaller_table_and_jobs_overrides_either() -> None:
    assert parse_plan([]).jobs == 100_000
    assert parse_plan(["--quick"]).jobs == 10_000
    assert parse_plan(["--quick", "--jobs", "5000"]).jobs == 5000
    with pytest.raises(SystemExit):
        parse_plan(["--jobs", "100"])
