"""kill -9 of each worker and consumer while it is provably inside a message (held in an AWS call by
shared/faults.py's LLMT_FAULT_HOLD, or the fake trainer held mid-run), then started again: every job still reaches
its terminal state, none is launched twice in SageMaker, no file or artifact is lost."""

from __future__ import annotations

from shared.contracts.files_events import FILE_VALIDATED
from shared.contracts.training_events import JOB_SUCCEEDED
from tests.support.fault_cluster import CallHold, FaultCluster, TrainerHold, chat_file


def test_files_worker_killed_while_validating(faults: FaultCluster) -> None:
    # GIVEN the files worker held inside a file.uploaded, about to record the validation's outcome (the write
    # conditional on the file still being "uploaded")
    hold = CallHold("dynamodb.UpdateItem~#s = :uploaded")
    faults.restart("files-worker", **hold.env())
    user, content = faults.user(), chat_file()
    file_id = faults.upload(user, content)
    hold.wait_held()
    # WHEN it is killed there and started again
    faults.kill("files-worker")
    hold.release()
    faults.start("files-worker")
    # THEN the file is validated all the same, and a job on it runs to the end
    faults.wait_file(user, file_id, "processed")
    assert faults.content(user, file_id) == content
    faults.assert_settled(user, faults.create_job(user, file_id))


def test_files_worker_killed_while_announcing_a_validated_file(faults: FaultCluster) -> None:
    # GIVEN the files worker held as it announces a file it has recorded as validated
    hold = CallHold(f"sns.Publish~{FILE_VALIDATED}")
    faults.restart("files-worker", **hold.env())
    user = faults.user()
    file_id = faults.upload(user, chat_file())
    hold.wait_held()
    # WHEN it is killed there and started again
    faults.kill("files-worker")
    hold.release()
    faults.start("files-worker")
    # THEN training hears of the file all the same: a job on it is launched and succeeds
    faults.assert_settled(user, faults.create_job(user, file_id))


def test_training_worker_killed_while_launching(faults: FaultCluster) -> None:
    user = faults.user()
    file_id = faults.processed_file(user, chat_file())
    # GIVEN the training worker held inside the launch command, at CreateTrainingJob
    hold = CallHold("sagemaker.CreateTrainingJob")
    faults.restart("training-worker", **hold.env())
    job_id = faults.create_job(user, file_id)
    hold.wait_held()
    # WHEN it is killed there and started again
    faults.kill("training-worker")
    hold.release()
    faults.start("training-worker")
    # THEN the job is launched once and succeeds
    faults.assert_settled(user, job_id)


def test_training_worker_killed_while_announcing_success(faults: FaultCluster) -> None:
    user = faults.user()
    trainer = TrainerHold()
    job_id = faults.create_job(user, faults.processed_file(user, chat_file(trainer.token)))
    faults.wait_status(user, job_id, ("running",))
    # GIVEN the training worker held inside SageMaker's Completed, the job moved to succeeded, as it announces it
    # (the reconciler down meanwhile: it would take the Completed from SageMaker's Describe first)
    faults.kill("training-reconciler")
    hold = CallHold(f"sns.Publish~{JOB_SUCCEEDED}")
    faults.restart("training-worker", **hold.env())
    trainer.release()
    hold.wait_held()
    # WHEN it is killed there and started again
    faults.kill("training-worker")
    hold.release()
    faults.start("training-worker")
    faults.start("training-reconciler")
    # THEN the success is announced all the same: the results file is registered
    faults.assert_settled(user, job_id)


def test_reconciler_killed_mid_pass(faults: FaultCluster) -> None:
    user = faults.user()
    trainer = TrainerHold()
    job_id = faults.create_job(user, faults.processed_file(user, chat_file(trainer.token)))
    faults.wait_status(user, job_id, ("running",))
    # GIVEN the reconciler held inside a pass, describing the running job
    hold = CallHold("sagemaker.DescribeTrainingJob")
    faults.restart("training-reconciler", **hold.env())
    hold.wait_held()
    # WHEN it is killed there, started again, and the job's training ends
    faults.kill("training-reconciler")
    hold.release()
    faults.start("training-reconciler")
    trainer.release()
    # THEN the job succeeds, launched once
    faults.assert_settled(user, job_id)


def test_emulator_killed_mid_job(faults: FaultCluster) -> None:
    user = faults.user()
    trainer = TrainerHold()
    running = faults.create_job(user, faults.processed_file(user, chat_file(trainer.token)))
    faults.wait_status(user, running, ("running",))
    waiting_file = faults.processed_file(user, chat_file())
    # WHEN SageMaker (the emulator) dies while the job trains, and a job is created while it is down
    faults.kill("sagemaker-emulator")
    created_meanwhile = faults.create_job(user, waiting_file)
    faults.start("sagemaker-emulator")
    trainer.release()
    # THEN the interrupted training job failed (the emulator cannot resume it) and the job with it, without being
    # launched again; the job created meanwhile is launched once when SageMaker is back, and succeeds
    failed = faults.assert_settled(user, running, expected="failed")
    assert failed["error"]["code"] == "training_failed", failed["error"]
    assert faults.sagemaker_jobs_for(running) == [running]
    faults.assert_settled(user, created_meanwhile)


def test_gateway_replica_killed_while_relaying(faults: FaultCluster) -> None:
    # GIVEN the gateway held inside a live event from its replica queue, before deleting it
    hold = CallHold("sqs.DeleteMessage")
    faults.restart("gateway", **hold.env())
    user = faults.user()
    job_id = faults.create_job(user, faults.processed_file(user, chat_file()))
    hold.wait_held()
    # WHEN it is killed there and started again
    faults.kill("gateway")
    hold.release()
    faults.start("gateway")
    # THEN the platform answers through it again, and the job runs to the end
    faults.user()  # a sign-up goes through the new process
    faults.assert_settled(user, job_id)
