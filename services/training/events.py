"""Events the training service publishes (to `llm-tuner-training-events`) and consumes.

Published: `training.job.created`, `training.job.queued`, `training.job.running`, `training.job.succeeded`,
`training.job.failed`, `training.job.cancelled`, each {job_id, user_id, status, ...}. `training.job.succeeded`
adds {fine_tuned_model, model_artifact, result_file: {file_id, s3_key, bytes, filename}}: the results CSV,
already written to `files/{user_id}/{file_id}`, which files registers as a fine-tune-results file.
`training.job.metrics` {job_id, user_id, model, step, train_loss, valid_loss?, total_steps, trained_tokens?,
estimated_finish, ...}: one per trainer step the reconciler reads from the job's log stream (live charts).
Consumed (its work queue `llm-tuner-training-worker`):
- `training.job.launch_requested` {job_id}: the command its own API enqueues;
- `file.uploaded`, `file.validated`, `file.rejected`, `file.deleted`: kept as its own projection of files;
- `sagemaker.training_job.state_changed`: SageMaker's state-change events, through EventBridge;
- `user.deleted` (auth's): stop that user's running jobs and remove its jobs, events, projection, artifacts.
"""

LAUNCH_REQUESTED = "training.job.launch_requested"
USER_DELETED = "user.deleted"
JOB_PREFIX = "training.job."
FILE_EVENTS = ("file.uploaded", "file.validated", "file.rejected", "file.deleted")
