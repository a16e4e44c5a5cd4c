"""Events the files service publishes (to `llm-tuner-files-events`) and consumes.

Published:
- `file.uploaded`  {file_id, user_id, purpose, filename, bytes, s3_uri}
- `file.validated` {file_id, user_id, purpose, filename, bytes, s3_uri, status: "processed", examples}
- `file.rejected`  {file_id, user_id, purpose, filename, bytes, s3_uri, status: "error", examples, error, errors[]}
- `file.deleted`   {file_id, user_id, purpose, filename, bytes, s3_uri, reason}
Consumed (its work queue `llm-tuner-files-worker`):
- `file.uploaded` (its own) -> validate the object;
- `user.deleted` (auth's) -> remove every file of that user, all object versions included.
"""

FILE_UPLOADED = "file.uploaded"
FILE_VALIDATED = "file.validated"
FILE_REJECTED = "file.rejected"
FILE_DELETED = "file.deleted"
USER_DELETED = "user.deleted"
