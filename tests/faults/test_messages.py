"""Messages delivered twice, out of order or not at all: training's launch commands (SQS) and SageMaker's state
changes (EventBridge -> SQS), taken off training's queue while its worker is down and sent back so. Every job still
reaches its terminal state (the reconciler makes up for what was dropped), none is launched twice, no file or
artifact is lost."""

from __future__ import annotations

import json
from typing import Any

from tests.support.fault_cluster import (
    FaultCluster,
    TrainerHold,
    chat_file,
    send_back,
    subject,
    take_messages,
    with_new_id,
)


def _about(messages: list[dict[str, Any]], kind: str, job_id: str) -> list[dict[str, Any]]:
    return [m for m in messages if subject(json.loads(m["Body"])) == (kind, job_id)]


def _taken(kinds: set[tuple[str, str]]) -> Any:
    return lambda bodies: kinds <= {subject(b) for b in bodies}


def test_duplicated_reordered_and_dropped_messages(faults: FaultCluster) -> None:
    user = faults.user()
    holds = [TrainerHold() for _ in range(3)]
    files = [faults.processed_file(user, chat_file(hold.token)) for hold in holds]
    # GIVEN training's worker and reconciler down: what reaches its queue waits there
    faults.kill("training-worker")
    faults.kill("training-reconciler")
    twice, late, dropped = jobs = [faults.create_job(user, file_id) for file_id in files]
    commands = take_messages(_taken({("launch", job) for job in jobs}), "the three launch commands")
    # WHEN the launch commands come back duplicated (the same message, and the same command as a new message),
    # behind the file events they were sent after, and one of them not at all
    again = _about(commands, "launch", twice)
    send_back(list(reversed([m for m in commands if subject(json.loads(m["Body"]))[0] == "other"]
                            + again + again + [with_new_id(again[0])] + _about(commands, "launch", late))))
    faults.start("training-worker")
    for job in (twice, late):
        faults.wait_status(user, job, ("running",))
    # ... and SageMaker's state changes come back newest first, the Completed ones repeated, one of them lost
    faults.kill("training-worker")
    holds[0].release()
    holds[1].release()
    changes = take_messages(_taken({("sagemaker:Completed", twice), ("sagemaker:Completed", late)}),
                            "SageMaker's Completed events")
    completed = _about(changes, "sagemaker:Completed", twice)
    kept = [m for m in changes if m not in _about(changes, "sagemaker:Completed", late)]
    send_back(list(reversed(kept)) + completed + completed)
    holds[2].release()
    faults.start("training-worker")
    faults.start("training-reconciler")
    # THEN each job is launched once and succeeds: the dropped launch re-sent and the lost Completed read back by
    # the reconciler
    for job in jobs:
        faults.assert_settled(user, job)
    assert faults.sagemaker_jobs_for(dropped) == [dropped]
