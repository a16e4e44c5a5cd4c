"""Events the files service publishes (to `llm-tuner-files-events`) and consumes.

Published:
- `file.uploaded`  {file_id, user_id, purpose, filename, bytes, s3_uri}
- `file.validated` {file_id, user_id, purpose, filename, bytes, s3_uri, status: "processed", examples, format,
                    example_type, normalized_uri, report_uri}: a fine-tune file's examples, normalised to one
                    internal form (services/files/formats/examples.py), are at `normalized_uri`: what training reads
- `file.rejected`  {file_id, user_id, purpose, filename, bytes, s3_uri, status: "error", examples, format,
                    example_type, normalized_uri: null, report_uri, error, errors[]}: `errors` are the report's first
                    20 ({line, code, message}); the whole report is at `report_uri`
- `file.deleted`   {file_id, user_id, purpose, filename, bytes, s3_uri, reason: "deleted" | "user_deleted"}
Consumed (its work queue `llm-tuner-files-worker`):
- `file.uploaded` (its own) -> validate the object;
- `user.deleted` (auth's) -> remove every file of that user, all object versions included.
- `training.job.succeeded` (training's) {job_id, user_id, result_file: {file_id, s3_key, bytes, filename}}
  -> register the job's results CSV as a file (purpose fine-tune-results, status processed), once.
"""

FILE_UPLOADED = "file.uploaded"
FILE_VALIDATED = "file.validated"
FILE_REJECTED = "file.rejected"
FILE_DELETED = "file.deleted"
USER_DELETED = "user.deleted"
TRAINING_JOB_SUCCEEDED = "training.job.succeeded"
