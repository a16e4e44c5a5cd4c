"""The trainer's METRICS lines, their event messages, estimated_finish and Describe as an event detail."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.training import metrics
from services.training.reconciler import detail_from_describe


def test_a_metrics_line_parses_to_a_record() -> None:
    line = 'METRICS {"step": 3, "epoch": 0.5, "train_loss": 2.3104, "learning_rate": 0.0002, "total_steps": 20}'
    assert metrics.parse_line(line) == {"step": 3, "epoch": 0.5, "train_loss": 2.3104, "learning_rate": 0.0002,
                                        "total_steps": 20}
    assert metrics.parse_line('METRICS {"step": 5.0, "valid_loss": 1.5, "trained_tokens": 321.0}') == {
        "step": 5, "valid_loss": 1.5, "trained_tokens": 321}


@pytest.mark.parametrize("line", [
    "", "loading model", 'metrics {"step": 1}', "METRICS not json", "METRICS [1, 2]", 'METRICS {"loss": 1}',
    'METRICS {"step": -1}', 'METRICS {"step": 1.5}', 'METRICS {"step": true}', 'METRICS {"step": "3"}',
])
def test_other_lines_are_not_metrics(line: str) -> None:
    assert metrics.parse_line(line) is None


def test_odd_values_are_left_out() -> None:
    record = metrics.parse_line('METRICS {"step": 2, "train_loss": NaN, "valid_loss": Infinity, "note": "x", '
                                '"flag": true, "total_steps": -4}')
    assert record == {"step": 2}


def test_messages_read_like_openais() -> None:
    assert metrics.message({"step": 3, "train_loss": 1.23, "total_steps": 20}) == "Step 3/20: training loss=1.23"
    assert metrics.message({"step": 5, "train_loss": 1.0, "valid_loss": 1.4567, "total_steps": 5}) == \
        "Step 5/5: training loss=1, validation loss=1.457"
    assert metrics.message({"step": 7}) == "Step 7"
    assert metrics.event_data({"step": 1, "train_loss": 2.0}) == {"step": 1, "train_loss": 2.0, "total_steps": None}


def test_estimated_finish_follows_the_pace_so_far() -> None:
    # 5 of 20 steps in 100 s: 20 s a step, 15 left, 300 s to go.
    assert metrics.estimated_finish(5, 20, started_at=1000.0, now=1100.0) == 1400
    assert metrics.estimated_finish(20, 20, started_at=1000.0, now=1100.0) == 1100  # done: now
    assert metrics.estimated_finish(0, 20, 1000.0, 1100.0) is None  # no pace yet
    assert metrics.estimated_finish(5, None, 1000.0, 1100.0) is None  # total unknown
    assert metrics.estimated_finish(5, 20, None, 1100.0) is None  # training start unknown
    assert metrics.estimated_finish(5, 20, 1200.0, 1100.0) is None  # clock skew


def test_metrics_event_ids_sort_by_log_time_and_are_stable() -> None:
    first = metrics._event_id(metrics.MetricsLine({"step": 9}, 1_700_000_000_000))
    later = metrics._event_id(metrics.MetricsLine({"step": 10}, 1_700_000_000_001))
    assert first == metrics._event_id(metrics.MetricsLine({"step": 9}, 1_700_000_000_000))
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


def test_secondary_status_is_kept_and_a_change_is_an_event() -> None:
    from tests.unit.test_training_handlers import _create, _file, _launch, _messages, _sagemaker
    from tests.unit.test_training_handlers import deps as make_deps

    deps = make_deps.__wrapped__()  # type: ignore[attr-defined]
    _file(deps)
    job = _create(deps)
    _launch(deps, job)
    transitions = [{"Status": "Downloading", "StatusMessage": "Downloading input data"}]
    _sagemaker(deps, job, "InProgress", SecondaryStatus="Downloading", SecondaryStatusTransitions=transitions)
    _sagemaker(deps, job, "InProgress", SecondaryStatus="Downloading", SecondaryStatusTransitions=transitions)
    _sagemaker(deps, job, "InProgress", SecondaryStatus="Training")
    stored = deps.jobs.jobs[job.job_id]
    assert stored.secondary_status == "Training" and stored.openai()["secondary_status"] == "Training"
    assert _messages(deps, job).count("Downloading: Downloading input data") == 1
    assert "Training job status: Training" in _messages(deps, job)


def test_an_older_secondary_status_never_replaces_a_newer_one() -> None:
    from tests.unit.test_training_handlers import _create, _file, _launch, _sagemaker
    from tests.unit.test_training_handlers import deps as make_deps

    deps = make_deps.__wrapped__()  # type: ignore[attr-defined]
    _file(deps)
    job = _create(deps)
    _launch(deps, job)
    _sagemaker(deps, job, "Completed", SecondaryStatus="Completed", LastModifiedTime=3000)
    _sagemaker(deps, job, "InProgress", SecondaryStatus="Uploading", LastModifiedTime=2000)  # late, out of order
    assert deps.jobs.jobs[job.job_id].secondary_status == "Completed"
