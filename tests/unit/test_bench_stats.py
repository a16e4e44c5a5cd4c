"""bench/'s pure parts: ratios, aims, the printed line, and which cause a table-size result names."""

from __future__ import annotations

import pytest

from bench import seed
from bench.run import Latencies, Plan, backends_for, emulator_bound_note, parse_plan, table_size_results
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


def test_GIVEN_moto_THEN_the_list_is_context_and_the_emulator_is_named_while_the_list_grows_no_more() -> None:
    results = table_size_results(_latencies(100, 40, 35), _latencies(100_000, 2505, 2500), Plan(jobs=100_000),
                                 "moto")
    listing, query, beyond = results
    assert [r.name for r in results] == ["list_latency_large_vs_small_table_moto",
                                         "emulator_query_large_vs_small_table_moto",
                                         "list_growth_beyond_emulator_query_moto"]
    assert listing.aim is None and "the emulator is the cause" in listing.note and "moto" in listing.note
    assert query.aim is None and query.ratio == pytest.approx(2500 / 35)
    assert beyond.met is True


def test_GIVEN_dynalite_THEN_the_list_is_held_to_the_aim_under_the_plain_name() -> None:
    listing, query, beyond = table_size_results(_latencies(100, 12, 5), _latencies(100_000, 12.6, 5.1),
                                                Plan(jobs=100_000), "dynalite")
    assert listing.name == "list_latency_large_vs_small_table" and listing.met is True and listing.note == ""
    assert "on dynalite" in listing.detail and listing.figures["dynamodb"] == "dynalite"
    assert query.aim is None and beyond.aim is None  # the list itself has the aim here
    grown, _, _ = table_size_results(_latencies(100, 12, 5), _latencies(100_000, 60, 50), Plan(jobs=100_000))
    assert grown.met is False and "dynalite's own GSI Query" in grown.note


def test_GIVEN_the_list_grows_more_than_the_query_THEN_our_code_is_named() -> None:
    listing, _, _ = table_size_results(_latencies(100, 40, 35), _latencies(100_000, 400, 70), Plan(jobs=100_000))
    assert listing.met is False and "our code" in listing.note
    listing, _, beyond = table_size_results(_latencies(100, 40, 35), _latencies(100_000, 400, 70),
                                            Plan(jobs=100_000), "moto")
    assert "our code" in listing.note and beyond.met is False


def test_GIVEN_the_list_keeps_its_cost_THEN_no_cause_is_named() -> None:
    for backend in ("dynalite", "moto"):
        listing, _, _ = table_size_results(_latencies(100, 40, 35), _latencies(100_000, 44, 36),
                                           Plan(jobs=100_000), backend)
        assert listing.note == ""


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


def test_dynamodb_defaults_to_both_when_dynalite_can_be_had_and_else_to_moto_with_a_note() -> None:
    assert parse_plan([]).dynamodb is None and parse_plan(["--dynamodb", "moto"]).dynamodb == "moto"
    assert backends_for(None, None) == (("dynalite", "moto"), "")
    backends, note = backends_for(None, "no `node` on PATH")
    assert backends == ("moto",) and "dynalite unavailable (no `node` on PATH)" in note
    assert backends_for("dynalite", None) == (("dynalite",), "")
    assert backends_for("moto", "no `node` on PATH") == (("moto",), "")


def test_asked_for_by_name_a_missing_dynalite_ends_the_run() -> None:
    for choice in ("both", "dynalite"):
        with pytest.raises(SystemExit, match="unavailable: no `npm`"):
            backends_for(choice, "no `npm` on PATH to install it with")


def test_rewrites_put_the_same_items_again_and_no_batch_holds_one_twice() -> None:
    items = [{"job_id": {"S": f"ftjob-{i}"}} for i in range(30)]
    written = list(seed.rewrites(items, 100))
    assert len(written) == 100 and {i["job_id"]["S"] for i in written} == {i["job_id"]["S"] for i in items}
    for start in range(0, len(written), seed.BATCH):
        batch = [i["job_id"]["S"] for i in written[start:start + seed.BATCH]]
        assert len(set(batch)) == len(batch)
    with pytest.raises(ValueError):
        seed.rewrites(items[:seed.BATCH - 1], 100)
