"""The trainer's METRICS lines, their event messages, estimated_finish and Describe as an event detail. (How a
SecondaryStatus change becomes a job event is in test_training_handlers.py, with the other state changes.)"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.training import metrics_from_logs
from services.training.reconciler import detail_from_describe, state_from_describe


def test_a_metrics_line_parses_to_a_record() -> None:
    line = 'METRICS {"step": 3, "epoch": 0.5, "train_loss": 2.3104, "learning_rate": 0.0002, "total_steps": 20}'
    assert metrics_from_logs.parse_line(line) == {"step": 3, "epoch": 0.5, "train_loss": 2.3104,
                                                  "learning_rate": 0.0002, "total_steps": 20}
    assert metrics_from_logs.parse_line('METRICS {"step": 5.0, "valid_loss": 1.5, "trained_tokens": 321.0}') == {
        "step": 5, "valid_loss": 1.5, "trained_tokens": 321}


@pytest.mark.parametrize("line", [
    "", "loading model", 'metrics {"step": 1}', "METRICS not json", "METRICS [1, 2]", 'METRICS {"loss": 1}',
    'METRICS {"step": -1}', 'METRICS {"step": 1.5}', 'METRICS {"step": true}', 'METRICS {"step": "3"}',
])
def test_other_lines_are_not_metrics(line: str) -> None:
    assert metrics_from_logs.parse_line(line) is None


def test_odd_values_are_left_out() -> None:
    record = metrics_from_logs.parse_line('METRICS {"step": 2, "train_loss": NaN, "valid_loss": Infinity, "note": "x", '
                                '"flag": true, "total_steps": -4}')
    assert record == {"step": 2}


def test_messages_read_like_openais() -> None:
    assert metrics_from_logs.message({"step": 3, "train_loss": 1.23, "total_steps": 20}) == \
        "Step 3/20: training loss=1.23"
    assert metrics_from_logs.message({"step": 5, "train_loss": 1.0, "valid_loss": 1.4567, "total_steps": 5}) == \
        "Step 5/5: training loss=1, validation loss=1.457"
    assert metrics_from_logs.message({"step": 7}) == "Step 7"
    assert metrics_from_logs.event_data({"step": 1, "train_loss": 2.0}) == {"step": 1, "train_loss": 2.0,
                                                                            "total_steps": None}


def test_estimated_finish_follows_the_pace_so_far() -> None:
    # 5 of 20 steps in 100 s: 20 s a step, 15 left, 300 s to go.
    assert metrics_from_logs.estimated_finish(5, 20, started_at=1000.0, now=1100.0) == 1400
    assert metrics_from_logs.estimated_finish(20, 20, started_at=1000.0, now=1100.0) == 1100  # done: now
    assert metrics_from_logs.estimated_finish(0, 20, 1000.0, 1100.0) is None  # no pace yet
    assert metrics_from_logs.estimated_finish(5, None, 1000.0, 1100.0) is None  # total unknown
    assert metrics_from_logs.estimated_finish(5, 20, None, 1100.0) is None  # training start unknown
    assert metrics_from_logs.estimated_finish(5, 20, 1200.0, 1100.0) is None  # clock skew


def test_metrics_event_ids_sort_by_log_time_and_are_stable() -> None:
    first = metrics_from_logs.metrics_event_id(metrics_from_logs.MetricsLine({"step": 9}, 1_700_000_000_000))
    later = metrics_from_logs.metrics_event_id(metrics_from_logs.MetricsLine({"step": 10}, 1_700_000_000_001))
    assert first == metrics_from_logs.metrics_event_id(metrics_from_logs.MetricsLine({"step": 9}, 1_700_000_000_000))
    assert first < later and len(first) == len("ftevent-") + 16 + 6


def test_a_describe_answer_becomes_an_event_like_detail() -> None:
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    detail = detail_from_describe({
        "TrainingJobName": "ftjob-x", "TrainingJobStatus": "Completed", "SecondaryStatus": "Completed",
        "TrainingStartTime": started, "SecondaryStatusTransitions": [{"Status": "Training", "StartTime": started}],
        "FinalMetricDataList": [{"MetricName": "trained_tokens", "Value": 321.0, "Timestamp": started}],
        "ResponseMetadata": {"HTTPStatusCode": 200}})
    millis = int(started.timestamp() * 1000)
    assert detail["TrainingStartTime"] == millis and "ResponseMetadata" not in detail
    assert detail["SecondaryStatusTransitions"][0]["StartTime"] == millis
    assert detail["FinalMetricDataList"][0]["Value"] == 321.0
    state = state_from_describe({"TrainingJobName": "ftjob-x", "TrainingJobStatus": "InProgress",
                                 "TrainingStartTime": started, "ResponseMetadata": {}})
    assert (state.TrainingJobName, state.TrainingJobStatus) == ("ftjob-x", "InProgress")
    assert state.TrainingStartTime == millis

